//! The change stream (`GET /_clusterc/<id>/watch`) on real node processes: a watcher on a
//! follower sees what the master commits, in commit order; a watch resumes on another node
//! after a `kill -9` with `Last-Event-ID`, without gap or duplicate; a `from` before the window
//! is `ERR_GAP` with the oldest seq; a consumer that stops reading is cut off with `ERR_STATE`
//! while the node's memory stays bounded; the long poll, the prefix filter, the watcher limit,
//! the token, the CORS preflight; and the CLI's `put`, `del`, `cas` and `watch`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterconsensus_tests::*;

const ID: &str = "c1";

/// One event of a stream: its `event:` (`message` without one), its `id:`, its data.
#[derive(Clone, Debug)]
struct Ev {
    kind: String,
    id: Option<u64>,
    data: Value,
}

impl Ev {
    fn seq(&self) -> Option<u64> {
        self.data["seq"].as_u64()
    }

    fn changes(&self) -> Vec<String> {
        self.data["chg"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A watch read straight off the socket: the HTTP/1.1 head, then the chunked body split into
/// events, read only when asked (so a test can stop reading).
struct Stream {
    sock: TcpStream,
    status: u16,
    head: String,
    /// Bytes received and not yet decoded from chunks.
    raw: Vec<u8>,
    /// Decoded body not yet split into events.
    body: Vec<u8>,
    /// The last chunk came (or the connection closed).
    ended: bool,
}

impl Stream {
    fn open(node: &str, query: &str, headers: &[(&str, &str)]) -> Stream {
        let addr = node.strip_prefix("http://").unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let req = format!(
            "GET /_clusterc/{ID}/watch{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        );
        sock.write_all(req.as_bytes()).unwrap();
        let mut s = Stream {
            sock,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let split = loop {
            if let Some(i) = s.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(s.fill(deadline), "no answer head from {node}");
        };
        s.head = String::from_utf8_lossy(&s.raw[..split]).into_owned();
        s.raw.drain(..split + 4);
        s.status = s.head.split_whitespace().nth(1).unwrap().parse().unwrap();
        s
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// Reads more from the socket (until `deadline`); false once nothing more can come.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.sock.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 64 << 10];
        match self.sock.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves whole chunks from `raw` to `body` (all of `raw` for a body of a stated length,
    /// as an error event alone is sent).
    fn dechunk(&mut self) {
        if let Some(len) = self.header("content-length") {
            let len: usize = len.parse().unwrap();
            if self.raw.len() >= len {
                self.body.extend(self.raw.drain(..len));
                self.ended = true;
            }
            return;
        }
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..eol]).unwrap(), 16)
                .expect("a chunk size");
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next event within `within`, or `None` if the stream ended (or stayed silent).
    fn next(&mut self, within: Duration) -> Option<Ev> {
        let deadline = Instant::now() + within;
        loop {
            self.dechunk();
            if let Some(i) = self.body.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.body[..i].to_vec()).unwrap();
                self.body.drain(..i + 2);
                let mut ev = Ev {
                    kind: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                for line in text.lines() {
                    let (k, v) = line.split_once(": ").unwrap_or((line, ""));
                    match k {
                        "event" => ev.kind = v.to_string(),
                        "id" => ev.id = Some(v.parse().unwrap()),
                        "data" => ev.data = serde_json::from_str(v).unwrap(),
                        other => panic!("unexpected field {other:?} in {text:?}"),
                    }
                }
                return Some(ev);
            }
            if self.ended || !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Entries (and membership changes) until `done` says so, skipping progress; panics on an
    /// error event or a silence of 20 s.
    fn entries_until(&mut self, mut done: impl FnMut(&[Ev]) -> bool) -> Vec<Ev> {
        let mut out = Vec::new();
        while !done(&out) {
            let ev = self
                .next(Duration::from_secs(20))
                .expect("an event within 20 s");
            match ev.kind.as_str() {
                "progress" => {}
                "message" | "members" => out.push(ev),
                _ => panic!("unexpected event {ev:?}"),
            }
        }
        out
    }
}

fn commit_of(node: &str) -> u64 {
    status(node, ID).unwrap()["commit"].as_u64().unwrap()
}

/// Seqs strictly increasing by one: nothing missing, nothing twice.
fn assert_consecutive(evs: &[Ev]) {
    for w in evs.windows(2) {
        assert_eq!(
            w[1].seq(),
            w[0].seq().map(|s| s + 1),
            "{:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

fn one_node(tag: &str, args: &[&str]) -> Cluster {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Cluster::start(tag, 1, &[ID], &args)
}

#[test]
fn a_watcher_on_a_follower_gets_10000_changes_in_commit_order() {
    let c = Cluster::start("watch-follower", 3, &[ID], &[]);
    let m = c.wait_master(ID, Duration::from_secs(10));
    let follower = c.nodes[(m + 1) % 3].url.clone();
    let master = c.nodes[m].url.clone();
    let from = commit_of(&follower) + 1;
    let mut s = Stream::open(&follower, &format!("?from={from}"), &[]);
    assert_eq!(s.status, 200);
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("text/event-stream")
    );

    // 8 writers, 125 submits of 10 changes each, through the master; each answer's seq.
    let answers = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (master, answers) = (master.clone(), answers.clone());
            std::thread::spawn(move || {
                for b in 0..125 {
                    let chg: Vec<String> = (0..10)
                        .map(|i| set(&format!("w{w}/{b}/{i}"), &format!("{w}.{b}.{i}")))
                        .collect();
                    let a = submit_ok(&master, ID, &chg).unwrap();
                    answers
                        .lock()
                        .unwrap()
                        .push((a["seq"].as_u64().unwrap(), chg));
                }
            })
        })
        .collect();
    let want = 10_000;
    let evs = s.entries_until(|e| e.iter().map(|e| e.changes().len()).sum::<usize>() >= want);
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(evs[0].seq(), Some(from));
    assert_consecutive(&evs);
    for e in &evs {
        assert_eq!(e.id, e.seq(), "the event id is the seq");
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 1000);
    // Each submit's changes are in the entry at the seq it was answered with, together and in
    // order (the master batches the submits that wait into one entry).
    for (seq, chg) in answers.iter() {
        let e = evs
            .iter()
            .find(|e| e.seq() == Some(*seq))
            .expect("the entry");
        let within = e.changes().windows(chg.len()).any(|w| w == chg.as_slice());
        assert!(
            within,
            "entry {seq}: {:?} does not hold {chg:?}",
            e.changes()
        );
    }
    let all: Vec<String> = evs.iter().flat_map(Ev::changes).collect();
    assert_eq!(all.len(), want);
    assert_eq!(
        all.iter().collect::<BTreeSet<_>>().len(),
        want,
        "no change twice"
    );
}

#[test]
fn a_watch_resumes_on_another_node_after_a_kill_without_gap_or_duplicate() {
    let mut c = Cluster::start("watch-kill", 3, &[ID], &[]);
    let m = c.wait_master(ID, Duration::from_secs(10));
    let from = commit_of(&c.nodes[m].url) + 1;
    // Watch the master itself: the node that dies is the one that orders the log.
    let mut first = Stream::open(&c.nodes[m].url, &format!("?from={from}"), &[]);
    let write = |c: &Cluster, i: u64| {
        let change =
            json!({"op": "set", "key": format!("k{i}"), "value": "v", "client": "t", "req": i + 1})
                .to_string();
        wait_for(Duration::from_secs(20), "a write to commit", || {
            c.nodes
                .iter()
                .filter(|n| n.pid().is_some())
                .find_map(|n| submit_ok(&n.url, ID, std::slice::from_ref(&change)).ok())
        });
    };
    for i in 0..30 {
        write(&c, i);
    }
    let before =
        first.entries_until(|e| e.iter().filter(|e| !e.changes().is_empty()).count() >= 30);
    let last = before.last().unwrap().seq().unwrap();
    c.nodes[m].kill();
    for i in 30..60 {
        write(&c, i);
    }
    // Another node, told only Last-Event-ID (a `from` of 1 would be a gap: the header wins).
    let other = c.nodes[(m + 1) % 3].url.clone();
    let id = last.to_string();
    let mut second = Stream::open(&other, "?from=1", &[("Last-Event-ID", &id)]);
    let after = second.entries_until(|e| {
        let keys: BTreeSet<String> = e.iter().flat_map(Ev::changes).collect();
        keys.iter().any(|k| k.contains("\"k59\""))
    });
    assert_eq!(
        after[0].seq(),
        Some(last + 1),
        "resumed right after the last seen"
    );
    let all: Vec<Ev> = before.into_iter().chain(after).collect();
    assert_consecutive(&all);
    let keys: Vec<String> = all
        .iter()
        .flat_map(Ev::changes)
        .map(|c| {
            serde_json::from_str::<Value>(&c).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // A write retried after the kill may be an entry twice (applied once): each key's first
    // entry, in order, is the check for gaps.
    let mut firsts: Vec<String> = Vec::new();
    for k in keys {
        if !firsts.contains(&k) {
            firsts.push(k);
        }
    }
    assert_eq!(firsts, (0..60).map(|i| format!("k{i}")).collect::<Vec<_>>());
}

#[test]
fn a_from_before_the_window_is_err_gap_with_the_oldest_seq() {
    let c = one_node("watch-gap", &["--watch-window", "5"]);
    let node = c.nodes[0].url.clone();
    let start = commit_of(&node);
    for i in 0..20 {
        submit_ok(&node, ID, &[set(&format!("g{i}"), "v")]).unwrap();
    }
    let oldest = start + 20 - 5 + 1;
    let mut s = Stream::open(&node, "?from=1", &[]);
    assert_eq!(s.status, 200);
    let ev = s.next(Duration::from_secs(10)).expect("the error event");
    assert_eq!(ev.kind, "error");
    assert_eq!(ev.data["code"], "ERR_GAP");
    assert_eq!(ev.data["oldest"], json!(oldest));
    assert!(
        s.next(Duration::from_secs(10)).is_none(),
        "then the stream ends"
    );
    assert!(s.ended);

    // The oldest itself is served.
    let mut s = Stream::open(&node, &format!("?from={oldest}"), &[]);
    let evs = s.entries_until(|e| e.len() == 5);
    assert_eq!(evs[0].seq(), Some(oldest));

    // The long poll says it with 410.
    let a = http("GET", &cluster_url(&node, ID, "watch?from=3&wait=100"), b"").unwrap();
    assert_eq!(a.status, 410);
    assert_eq!(
        (a.json()["code"].clone(), a.json()["oldest"].clone()),
        (json!("ERR_GAP"), json!(oldest))
    );
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_consumer_that_stops_reading_is_cut_off_while_memory_stays_bounded() {
    let c = one_node(
        "watch-stuck",
        &["--watch-window", "100", "--watch-window-bytes", "1048576"],
    );
    let node = c.nodes[0].url.clone();
    let pid = c.nodes[0].pid().unwrap();
    let from = commit_of(&node) + 1;
    let mut stuck = Stream::open(&node, &format!("?from={from}"), &[]);
    assert_eq!(stuck.status, 200);
    let rss_before = rss(pid);

    // 96 MiB of changes (one 32 KiB value, one key: the state stays small) while the watcher
    // reads nothing: far more than the socket buffers and the 1 MiB window hold. The node
    // keeps the newest 8 MiB of changes anyway (to catch followers up, Config::catchup_bytes)
    // and compacts its log every 8 MiB of changes, so its own share is about 16 MiB whatever a
    // watcher does; a stuck watcher's buffer would be the whole 96.
    let value = "x".repeat(32 << 10);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (node, value) = (node.clone(), value.clone());
            std::thread::spawn(move || {
                for i in 0..768 {
                    submit_ok(&node, ID, &[set("big", &format!("{w}.{i}.{value}"))]).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let written = 4 * 768 * (32u64 << 10);
    let grew = rss(pid).saturating_sub(rss_before);
    eprintln!(
        "watch-stuck: wrote {} MiB, node RSS {} -> {} MiB",
        written >> 20,
        rss_before >> 20,
        rss(pid) >> 20
    );
    assert!(
        grew < written / 4,
        "the node's memory grew by {grew} bytes while {written} bytes went to a stuck watcher"
    );

    // Reading again: what was in flight, then the error, then the end.
    let mut seqs = Vec::new();
    let end = loop {
        let ev = stuck
            .next(Duration::from_secs(20))
            .expect("an event or the error");
        match ev.kind.as_str() {
            "message" => seqs.push(ev.seq().unwrap()),
            "progress" => {}
            _ => break ev,
        }
    };
    assert_eq!(end.kind, "error");
    assert_eq!(end.data["code"], "ERR_STATE", "{:?}", end.data);
    assert!(end.data["err"].as_str().unwrap().contains("fell behind"));
    assert!(
        stuck.next(Duration::from_secs(10)).is_none(),
        "the stream ends"
    );
    assert!(
        !seqs.is_empty() && (seqs.len() as u64) < 2048,
        "{} entries before the cut",
        seqs.len()
    );
    assert_eq!(seqs[0], from);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn long_poll_prefix_limit_token_and_preflight() {
    let dir = TempDir::new("watch-token");
    let token_file = dir.path().join("token");
    let token = "watch-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let tf = token_file.display().to_string();
    let c = one_node("watch-misc", &["--max-watchers", "2", "--token-file", &tf]);
    let node = c.nodes[0].url.clone();
    let write = |k: &str| {
        let url = cluster_url(&node, ID, "submit");
        let body = json!({"chg": [set(k, "v")]}).to_string();
        let a = http_request(
            "POST",
            &url,
            Some(token),
            body.as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(a.status, 200);
    };
    let poll = |q: &str| http("GET", &cluster_url(&node, ID, &format!("watch?{q}")), b"").unwrap();

    // A long poll waits for the next entry and answers it at once.
    let from = commit_of(&node) + 1;
    let waiting = {
        let node = node.clone();
        std::thread::spawn(move || {
            http(
                "GET",
                &cluster_url(&node, ID, &format!("watch?from={from}&wait=20000")),
                b"",
            )
            .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write("user/1");
    let a = waiting.join().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        json!({"events": [{"seq": from, "chg": [set("user/1", "v")]}], "commit": from})
    );
    // Nothing new: an empty answer once the wait is over.
    let a = poll(&format!("from={}&wait=200", from + 1));
    assert_eq!(a.json(), json!({"events": [], "commit": from}));

    // The prefix keeps the matching changes.
    write("other");
    write("user/2");
    let a = poll(&format!("from={from}&wait=0&prefix=user%2F"));
    let seqs: Vec<u64> = a.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [from, from + 2]);
    assert_eq!(a.json()["commit"], json!(from + 2));
    // Bad numbers are 400.
    assert_eq!(poll("from=x").status, 400);
    assert_eq!(poll("from=1&wait=soon").status, 400);

    // Two watchers at most on this node: the third is refused, and a place frees up when one
    // goes.
    let s1 = Stream::open(&node, "", &[]);
    let _s2 = Stream::open(&node, "", &[]);
    assert_eq!((s1.status, _s2.status), (200, 200));
    let a = poll("from=1&wait=0");
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["code"], "ERR_STATE");
    drop(s1);
    wait_for(
        Duration::from_secs(10),
        "a watcher place to free up",
        || (poll(&format!("from={from}&wait=0")).status == 200).then_some(()),
    );

    // The CORS preflight lets a page send Last-Event-ID.
    let a = http("OPTIONS", &cluster_url(&node, ID, "watch"), b"").unwrap();
    assert_eq!(a.status, 204);
    assert!(a
        .header("access-control-allow-headers")
        .unwrap()
        .contains("last-event-id"));
}

#[test]
fn with_auth_reads_a_watch_needs_the_token() {
    let dir = TempDir::new("watch-auth");
    let token_file = dir.path().join("token");
    let token = "watch-token-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let tf = token_file.display().to_string();
    let args: Vec<String> = ["--token-file", &tf, "--auth-reads"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dir2 = TempDir::new("watch-auth-node");
    let node = Node::start(
        dir2.path(),
        "n1",
        &[ID],
        &[args, vec!["--bootstrap".into()]].concat(),
    );
    let url = cluster_url(&node.url, ID, "watch?wait=0");
    let a = http("GET", &url, b"").unwrap();
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (401, json!("ERR_DENIED"))
    );
    let wrong = http_request(
        "GET",
        &url,
        Some("wrong-token-0123456789"),
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let a = wait_for(Duration::from_secs(10), "a watch with the token", || {
        let a = http_request("GET", &url, Some(token), b"", Duration::from_secs(5)).ok()?;
        (a.status == 200).then_some(a)
    });
    assert!(a.json()["events"].is_array());
    let mut s = Stream::open(
        &node.url,
        "",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(s.status, 200);
    let ev = s.next(Duration::from_secs(5)).expect("progress");
    assert_eq!(ev.kind, "progress");
}

#[test]
fn the_cli_writes_compares_and_sets_and_watches_across_a_kill() {
    let mut c = Cluster::start("watch-cli", 3, &[ID], &[]);
    let m = c.wait_master(ID, Duration::from_secs(10));
    let (a, b) = ((m + 1) % 3, (m + 2) % 3);
    let urls = c.urls();
    let url = |i: usize| urls[i].clone();
    let cli = |args: &[&str]| {
        let (code, out, err) = run_cli(args);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        (code, v, err)
    };
    let from = (commit_of(&url(a)) + 1).to_string();

    // The watcher: through a, then b (it is given both).
    let mut watcher = Command::new(binary())
        .args([
            "watch",
            "--cluster",
            ID,
            "--from",
            &from,
            "--node",
            &url(a),
            "--node",
            &url(b),
        ])
        .args(["--count", "7", "--idle-timeout-ms", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = watcher.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                lines
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&l.unwrap()).unwrap());
            }
        })
    };

    let n = url(b);
    let target = ["--node", &n, "--cluster", ID];
    let (code, v, _) = cli(&[&["put"][..], &target, &["k", "1"]].concat());
    assert_eq!((code, v["prev"].clone()), (0, Value::Null));
    assert!(v["seq"].as_u64().is_some());
    let (code, v, err) = cli(&[
        &["cas"][..],
        &target,
        &["k", "--expect", "2", "--value", "3"],
    ]
    .concat());
    assert_eq!(
        (code, v["ok"].clone(), v["value"].clone()),
        (1, json!(false), json!("1")),
        "{err}"
    );
    let (code, v, _) = cli(&[
        &["cas"][..],
        &target,
        &["k", "--expect", "1", "--value", "3"],
    ]
    .concat());
    assert_eq!(
        (code, v["ok"].clone(), v["value"].clone()),
        (0, json!(true), json!("3"))
    );
    let (code, v, _) = cli(&[
        &["cas"][..],
        &target,
        &["k", "--expect-absent", "--value", "4"],
    ]
    .concat());
    assert_eq!((code, v["ok"].clone()), (1, json!(false)));
    wait_for(
        Duration::from_secs(20),
        "the watcher to see 4 entries",
        || (lines.lock().unwrap().len() >= 4).then_some(()),
    );
    // The watched node dies; the watcher moves to b.
    c.nodes[a].kill();
    let (code, v, _) = cli(&[&["del"][..], &target, &["k"]].concat());
    assert_eq!((code, v["prev"].clone()), (0, json!("3")));
    let (code, v, _) = cli(&[&["cas"][..], &target, &["k", "--expect-absent", "--del"]].concat());
    assert_eq!(
        (code, v["ok"].clone(), v["value"].clone()),
        (0, json!(true), Value::Null)
    );
    let (code, _, err) = cli(&[&["cas"][..], &target, &["k", "--value", "x"]].concat());
    assert_eq!(code, 2, "a cas without --expect is a usage error: {err}");
    let (code, _, _) = cli(&[&["put"][..], &target, &["k2", "z"]].concat());
    assert_eq!(code, 0);

    let status = wait_exit(&mut watcher, Duration::from_secs(30)).expect("the watcher to exit");
    reader.join().unwrap();
    let mut err = String::new();
    watcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status, 0, "{err}");
    assert!(err.contains(&format!("now on {}", url(b))), "{err}");
    let lines = lines.lock().unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 7);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let ops: Vec<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "entry");
            let c: Value = serde_json::from_str(l["chg"][0].as_str().unwrap()).unwrap();
            c["op"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ops, ["set", "cas", "cas", "cas", "del", "cas", "set"]);
}
