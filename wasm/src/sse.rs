//! An incremental parser of a `text/event-stream` body (the HTML standard's "event stream
//! interpretation"), fed the bytes of each chunk as they arrive.
//!
//! It keeps only what the event being read needs: the bytes of an unfinished line and the
//! `data` lines of the event so far, together at most `max_event` bytes. A longer event is an
//! error rather than memory that grows with whatever the server sends. Lines end with `\n`,
//! `\r\n` or `\r`, also when a chunk ends between the `\r` and the `\n`; a chunk may also end
//! inside a UTF-8 sequence, since lines are decoded only once complete.

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `"message"` when there is none.
    pub event: String,
    /// The `id:` field of this event, if it had one. (Unlike `EventSource`, an id is not carried
    /// over to later events: the watch stream gives every entry its own id and progress none.)
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The event being read was longer than the parser's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    pub max_event: usize,
}

#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` first in the next one ends nothing.
    after_cr: bool,
    event: String,
    id: Option<String>,
    data: String,
    /// The event so far has at least one `data` line (an empty one counts).
    has_data: bool,
}

impl SseParser {
    pub fn new(max_event: usize) -> SseParser {
        SseParser {
            max_event,
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            id: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// Parses `chunk`, appending each event it completes to `out`. After an error the parser
    /// is in an unspecified state: the stream is to be dropped.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLong> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.check()?;
            let line = core::mem::take(&mut self.line);
            self.line_done(&line, out);
            self.line = line;
            self.line.clear();
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        self.check()
    }

    /// Bytes held for the event being read (the bound the parser keeps).
    pub fn held(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len()
    }

    fn check(&self) -> Result<(), TooLong> {
        if self.held() > self.max_event {
            return Err(TooLong {
                max_event: self.max_event,
            });
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: if self.event.is_empty() {
                        "message".into()
                    } else {
                        core::mem::take(&mut self.event)
                    },
                    id: self.id.take(),
                    data: core::mem::take(&mut self.data),
                });
            }
            // An event without data is not dispatched, but its fields end with it.
            self.event.clear();
            self.id = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment (servers send them to keep a connection open)
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = value.into_owned(),
            // The standard ignores an id containing NUL.
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            _ => {} // `retry` and unknown fields: the client has its own reconnect policy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            id: id.map(Into::into),
            data: data.into(),
        }
    }

    const STREAM: &str = "id: 7\ndata: {\"seq\":7,\"chg\":[\"a\"]}\n\n\
        event: progress\ndata: {\"commit\":7}\n\n\
        : keep-alive\n\n\
        id: 8\r\nevent: members\r\ndata: {\"seq\":8,\r\ndata:\"members\":[\"x\"]}\r\n\r\n\
        event: error\rdata: {\"code\":\"ERR_GAP\",\"oldest\":3}\r\r";

    fn whole() -> Vec<SseEvent> {
        vec![
            ev("message", Some("7"), r#"{"seq":7,"chg":["a"]}"#),
            ev("progress", None, r#"{"commit":7}"#),
            ev("members", Some("8"), "{\"seq\":8,\n\"members\":[\"x\"]}"),
            ev("error", None, r#"{"code":"ERR_GAP","oldest":3}"#),
        ]
    }

    #[test]
    fn a_whole_stream_at_once() {
        assert_eq!(parse_in(&[STREAM.as_bytes()]), whole());
    }

    #[test]
    fn split_at_every_byte_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                parse_in(&[&bytes[..cut], &bytes[cut..]]),
                whole(),
                "cut at {cut}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_in(&singles), whole());
    }

    #[test]
    fn a_chunk_may_end_inside_a_utf8_character() {
        let s = "data: caf\u{e9} \u{1f600}\n\n".as_bytes();
        for cut in 0..=s.len() {
            assert_eq!(
                parse_in(&[&s[..cut], &s[cut..]]),
                vec![ev("message", None, "caf\u{e9} \u{1f600}")]
            );
        }
    }

    #[test]
    fn field_rules_of_the_standard() {
        // No space after the colon; a field without a colon; an event without data; an
        // unfinished event at the end is not dispatched.
        let out = parse_in(&[b"data:x\ndata\nevent: progress\n\nid: 9\n\ndata: tail"]);
        assert_eq!(out, vec![ev("progress", None, "x\n")]);
        // Only one space is stripped.
        assert_eq!(
            parse_in(&[b"data:  two\n\n"]),
            vec![ev("message", None, " two")]
        );
    }

    #[test]
    fn memory_is_bounded_by_the_event_not_the_stream() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        // Many small events: the parser holds nothing between them.
        for i in 0..1000 {
            p.push(
                format!("id: {i}\ndata: {{\"seq\":{i}}}\n\n").as_bytes(),
                &mut out,
            )
            .unwrap();
            assert_eq!(p.held(), 0);
        }
        assert_eq!(out.len(), 1000);
        // One line longer than the limit fails while it arrives, before its end.
        let mut p = SseParser::new(64);
        p.push(b"data: ", &mut out).unwrap();
        assert_eq!(
            p.push(&[b'x'; 100], &mut out),
            Err(TooLong { max_event: 64 })
        );
        // So does an event of many short data lines.
        let mut p = SseParser::new(64);
        let r = (0..20).try_for_each(|_| p.push(b"data: 0123456789\n", &mut out));
        assert_eq!(r, Err(TooLong { max_event: 64 }));
    }
}
