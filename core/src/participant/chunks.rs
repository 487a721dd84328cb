//! Chunked snapshot transfer (docs/PROTOCOL.md section 11): a snapshot larger than one `start`
//! body travels as a sequence of `start`s, each carrying the snapshot's text from `offset` on,
//! the last one with the CRC-32 of the whole text.
//!
//! The sender (the master) drives one transfer per follower, one chunk at a time: it sends the
//! next chunk when the previous one is answered with the offset that follows it, re-sends a
//! chunk after a cut (the follower's answer says which offset it holds), and starts over from a
//! fresh snapshot at its current commit when the follower holds nothing it can resume from (it
//! restarted, or it took a newer snapshot's first chunk). The receiver feeds each chunk into
//! [`StateMachine::restore`]'s sink as it arrives (it never holds the whole text), answers a
//! chunk at any offset other than the one it expects with that offset (never applying it), and
//! installs the new state only once the last chunk arrived and the checksum matched.
//!
//! Who fills the bytes: the core keeps the frozen [`StateMachine::Snapshot`] of each transfer
//! and fills one chunk from it when the previous chunk is answered. That is the simpler of the
//! two designs (the other: a `Send` saying "fill chunk O of snapshot S" that the host fills from
//! a copy it keeps), and it keeps a large state's serialization off the critical path all the
//! same: taking the frozen view is O(1) for an application that follows
//! [`StateMachine::snapshot`]'s contract (a persistent map), and each step serializes at most
//! one chunk (`Config::snapshot_chunk`, 1 MiB by default: a millisecond or so), so no input
//! takes time in proportion to the state. The memory per transfer is about two chunks.

use alloc::string::String;
use alloc::vec::Vec;

use crate::crc32::Crc32;
use crate::{SnapshotSink, SnapshotSource};

/// One chunk cut from a snapshot: the text of bytes `[offset, offset + text.len())`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    pub offset: u64,
    pub text: String,
    /// More chunks follow.
    pub more: bool,
    /// With the last chunk: the CRC-32 of the whole text.
    pub crc: Option<u32>,
}

impl Chunk {
    /// The offset that follows this chunk.
    pub fn end(&self) -> u64 {
        self.offset + self.text.len() as u64
    }
}

/// The sender's side of one transfer: the frozen snapshot and the chunk in flight.
pub(super) struct Outgoing<T> {
    /// The commit the snapshot is at.
    pub seq: u64,
    source: T,
    /// Bytes filled from the source and not yet cut into a chunk.
    buf: Vec<u8>,
    /// The source has written its last bytes.
    drained: bool,
    /// Bytes cut into chunks so far, and their checksum.
    cut: u64,
    crc: Crc32,
    /// The chunk last sent, kept to re-send it after a cut.
    pub sent: Option<Chunk>,
}

impl<T: SnapshotSource> Outgoing<T> {
    pub fn new(seq: u64, source: T) -> Outgoing<T> {
        Outgoing {
            seq,
            source,
            buf: Vec::new(),
            drained: false,
            cut: 0,
            crc: Crc32::new(),
            sent: None,
        }
    }

    /// Cuts the next chunk, whose `snap` field encodes to at most `limit` bytes (at least one
    /// character), and remembers it as sent. `Err` if the snapshot is not UTF-8 text.
    pub fn next_chunk(&mut self, limit: usize) -> Result<Chunk, String> {
        // Look one byte past the limit ahead, so that a chunk knows whether it is the last.
        while !self.drained && self.buf.len() <= limit {
            let before = self.buf.len();
            let more = self.source.fill(&mut self.buf, limit);
            // A source that writes nothing and says it has more would loop forever: end it
            // there (the receiver then refuses the cut-short snapshot, never installs it).
            self.drained = !more || self.buf.len() == before;
        }
        let n = cut_point(&self.buf, limit);
        let text = core::str::from_utf8(&self.buf[..n])
            .map_err(|e| alloc::format!("snapshot is not UTF-8 text: {e}"))?;
        let text = String::from(text);
        self.crc.update(&self.buf[..n]);
        self.buf.drain(..n);
        let offset = self.cut;
        self.cut += n as u64;
        let more = !(self.drained && self.buf.is_empty());
        let chunk = Chunk {
            offset,
            text,
            more,
            crc: (!more).then(|| self.crc.value()),
        };
        self.sent = Some(chunk.clone());
        Ok(chunk)
    }
}

/// How many bytes of `buf` go into a chunk whose JSON string encoding is at most `limit` bytes:
/// (quotes included): the longest such prefix that ends on a character boundary, and at least one character.
fn cut_point(buf: &[u8], limit: usize) -> usize {
    let mut cost = 2; // the quotes
    let mut n = 0;
    for (i, b) in buf.iter().enumerate() {
        // serde_json's escapes: `\"`, `\\`, `\n`-style pairs, `\u00XX` for other controls.
        cost += match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        };
        if cost > limit && n > 0 {
            break;
        }
        // A boundary before every byte that does not continue a UTF-8 sequence.
        if buf.get(i + 1).is_none_or(|next| next & 0xC0 != 0x80) {
            n = i + 1;
        }
    }
    n
}

/// The receiver's side of one transfer: the sink building the new state.
#[derive(Debug)]
pub(super) struct Incoming<K> {
    /// The commit the snapshot is at.
    pub seq: u64,
    /// Bytes received so far (the offset expected next), and their checksum.
    pub held: u64,
    crc: Crc32,
    sink: K,
}

/// Why a chunk was not taken: the error to answer with, and the offset the receiver expects.
pub(super) type Refusal = (crate::Error, u64);

impl<K: SnapshotSink> Incoming<K> {
    pub fn new(seq: u64, sink: K) -> Incoming<K> {
        Incoming {
            seq,
            held: 0,
            crc: Crc32::new(),
            sink,
        }
    }

    /// Feeds the chunk at `held`.
    pub fn write(&mut self, text: &str) -> Result<(), String> {
        self.sink.write(text.as_bytes())?;
        self.crc.update(text.as_bytes());
        self.held += text.len() as u64;
        Ok(())
    }

    /// The state, if the checksum of every byte received is `crc` and the sink decodes it.
    pub fn finish(self, crc: Option<u32>) -> Result<K::State, String> {
        let got = self.crc.value();
        if crc != Some(got) {
            return Err(alloc::format!(
                "snapshot checksum {got:08x} does not match {:08x}",
                crc.unwrap_or(0)
            ));
        }
        self.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32::crc32;
    use crate::{WholeRestore, WholeSnapshot};

    fn chunks(text: &str, limit: usize) -> Vec<Chunk> {
        let mut o = Outgoing::new(7, WholeSnapshot::new(text));
        let mut v = Vec::new();
        loop {
            let c = o.next_chunk(limit).unwrap();
            let more = c.more;
            v.push(c);
            if !more {
                return v;
            }
        }
    }

    #[test]
    fn chunks_cover_the_text_in_order_and_the_last_carries_the_crc() {
        let v = chunks("abcdefghij", 6);
        let texts: Vec<(u64, &str, bool)> = v
            .iter()
            .map(|c| (c.offset, c.text.as_str(), c.more))
            .collect();
        assert_eq!(
            texts,
            [(0, "abcd", true), (4, "efgh", true), (8, "ij", false)]
        );
        assert_eq!(v[2].crc, Some(crc32(b"abcdefghij")));
        assert_eq!((v[0].crc, v[1].crc), (None, None));
        // Exactly one chunk's worth: one chunk, the last.
        let v = chunks("abcd", 6);
        assert_eq!(
            (v.len(), v[0].more, v[0].crc),
            (1, false, Some(crc32(b"abcd")))
        );
        let v = chunks("", 6);
        assert_eq!((v.len(), v[0].text.as_str(), v[0].more), (1, "", false));
    }

    #[test]
    fn a_chunk_is_cut_by_its_escaped_size_and_on_a_character_boundary() {
        // `"` encodes to two bytes: two of them and the quotes fill a limit of 6.
        let v = chunks("\"\"\"ab", 6);
        assert_eq!(v[0].text, "\"\"");
        // `é` is two bytes: never split.
        let v = chunks("aéé", 6);
        let texts: Vec<&str> = v.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["aé", "é"]);
        // A control character costs 6: one character at least, even above the limit.
        let v = chunks("\u{1}\u{1}", 6);
        assert_eq!(v[0].text, "\u{1}");
    }

    #[test]
    fn the_receiver_installs_only_with_the_right_checksum() {
        let parse = |t: &str| Ok::<String, String>(String::from(t));
        let mut i = Incoming::new(7, WholeRestore::new(parse));
        i.write("abcd").unwrap();
        i.write("ef").unwrap();
        assert_eq!(i.held, 6);
        assert_eq!(i.finish(Some(crc32(b"abcdef"))), Ok(String::from("abcdef")));
        let mut i = Incoming::new(7, WholeRestore::new(parse));
        i.write("abcd").unwrap();
        let e = i.finish(Some(crc32(b"abcdef"))).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
    }
}
