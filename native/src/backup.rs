//! Backups: `GET /_clusterc/<id>/snapshot` streams the committed state of a running node, and
//! the snapshot file that `clusterconsensus snapshot save` writes and `snapshot restore` turns
//! into the data directory of a new one-member cluster.
//!
//! The endpoint answers one line of JSON, `{"cluster","seq","members","learners"}`, then the
//! app's snapshot bytes ([`SnapshotSource`]) as they are written. The state is a frozen view
//! taken on the cluster's task at its commit `seq` (O(1) for an app whose snapshot is a
//! persistent map); it is serialized on a blocking thread while the cluster goes on, so a
//! backup of a large state never stalls the log. A stream that breaks off is a transport
//! error, never a short body that looks whole.
//!
//! The file: one line of JSON (the header), then the snapshot bytes:
//!
//! ```text
//! {"format":"clusterconsensus-snapshot","version":1,"cluster":"c1","seq":1234,"members":[...],"learners":[...],"bytes":5678,"crc32":305419896}
//! <5678 bytes>
//! ```
//!
//! `crc32` (CRC-32 as the write-ahead log uses it) covers the bytes, a newline and the header
//! without its `crc32` field, so damage to the seq or the member list is caught as well as
//! damage to the state. `save` writes the file under a temporary name and renames it when it
//! is complete and durable; `restore` checks everything (format, length, checksum, that the
//! app decodes the state) before it writes anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use clusterconsensus::wire::Learner;
use clusterconsensus::{ErrorCode, Snapshot, SnapshotSource, StateMachine, Status, Stored};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::Access;
use crate::client::HttpClient;
use crate::cluster::Cluster;
use crate::http::{self, ResponseBody, Shared};
use crate::storage::Store;
use crate::App;

/// The `format` of a snapshot file's header.
pub const FORMAT: &str = "clusterconsensus-snapshot";
/// The only version written and read.
pub const VERSION: u32 = 1;

/// Bytes asked of [`SnapshotSource::fill`] per part of the stream.
const PART: usize = 256 << 10;
/// Parts serialized ahead of the connection: the memory a slow reader can hold up.
const AHEAD: usize = 4;
/// The longest header line accepted (the member list is in it).
const MAX_HEADER: usize = 1 << 20;

/// The first line of the endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    pub cluster: String,
    /// The commit the state is at.
    pub seq: u64,
    /// The voters at that commit.
    pub members: Vec<String>,
    #[serde(default)]
    pub learners: Vec<Learner>,
}

/// A snapshot file's header, without its checksum: what the checksum covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub format: String,
    pub version: u32,
    pub cluster: String,
    pub seq: u64,
    pub members: Vec<String>,
    #[serde(default)]
    pub learners: Vec<Learner>,
    /// The length of the snapshot bytes after the header line.
    pub bytes: u64,
}

/// A snapshot file's header line.
#[derive(Serialize, Deserialize)]
struct FileHead {
    #[serde(flatten)]
    meta: FileMeta,
    crc32: u32,
}

/// The checksum of a file: the bytes, a newline, the header without its checksum.
fn checksum(bytes_crc: crc32fast::Hasher, meta: &FileMeta) -> Result<u32, String> {
    let mut h = bytes_crc;
    h.update(b"\n");
    h.update(&serde_json::to_vec(meta).map_err(|e| format!("encode header: {e}"))?);
    Ok(h.finalize())
}

// ---------------------------------------------------------------------------------------------
// The endpoint
// ---------------------------------------------------------------------------------------------

/// `GET snapshot`: the head line, then the snapshot bytes as a stream. Needs the client token
/// (it is every byte of the state) and counts as one client call while it streams.
pub(crate) async fn route<S: App>(
    shared: &Shared<S>,
    cluster: &Cluster<S>,
    req: &hyper::Request<Incoming>,
) -> hyper::Response<ResponseBody> {
    let whole = |r: http::HttpResponse| r.map(Either::Left);
    if req.method() != Method::GET {
        return whole(http::method_not_allowed("GET, OPTIONS"));
    }
    if let Some(denied) = http::check_auth(shared, req, Access::Protected) {
        return whole(denied);
    }
    let Some(permit) = http::admit(shared) else {
        return whole(http::overloaded());
    };
    // The frozen view and what it is a view of, taken together on the cluster's task.
    let taken = cluster
        .inspect(|p, _| {
            let h = p.hard_state();
            if h.status != Status::Joined {
                return None;
            }
            let head = StreamHead {
                cluster: p.cluster().to_string(),
                seq: p.commit(),
                members: p.members().to_vec(),
                learners: p.learners().to_vec(),
            };
            Some((head, p.state().snapshot()))
        })
        .await;
    let (head, mut source) = match taken {
        Ok(Some(t)) => t,
        Ok(None) => {
            return whole(http::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::State,
                "this node is not a member of the cluster: it holds no state to back up",
            ))
        }
        Err(gone) => return whole(http::unavailable(gone)),
    };
    let mut first = serde_json::to_vec(&head).unwrap_or_default();
    first.push(b'\n');
    let (tx, rx) = mpsc::channel::<Part>(AHEAD);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = Vec::with_capacity(PART);
        let more = source.fill(&mut buf, PART);
        if !buf.is_empty() && tx.blocking_send(Part::Data(Bytes::from(buf))).is_err() {
            return; // the client hung up
        }
        if !more {
            let _ = tx.blocking_send(Part::End);
            return;
        }
    });
    let body = SnapshotStream {
        head: Some(Bytes::from(first)),
        rx,
        ended: false,
        _permit: permit,
    };
    let mut res = hyper::Response::new(Either::Right(Either::Right(body)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    res
}

/// What the serializing thread hands the stream.
enum Part {
    Data(Bytes),
    /// Every byte was sent: without it a closed channel is a serializer that died midway.
    End,
}

/// The endpoint's body: the head line, then the parts the serializing thread sends.
pub struct SnapshotStream {
    head: Option<Bytes>,
    rx: mpsc::Receiver<Part>,
    ended: bool,
    /// A place among the client calls, held while the snapshot streams.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotStream")
    }
}

impl Body for SnapshotStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(h) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Part::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Part::End)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            // An error aborts the response, so the client cannot take the part for the whole.
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other(
                "the snapshot's serialization stopped before its end",
            )))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// save
// ---------------------------------------------------------------------------------------------

/// What [`save`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub meta: FileMeta,
    pub crc32: u32,
}

/// Streams the snapshot of `cluster` from `node` into `file` (see the module doc): the bytes
/// into `<file>.part`, then header and bytes into `<file>.tmp`, fsynced and renamed to `file`.
/// Each read of the stream must make progress within the client's timeout.
pub async fn save(
    client: &HttpClient,
    node: &str,
    cluster: &str,
    file: &Path,
) -> Result<Saved, String> {
    let url = clusterconsensus::wire::url(node.trim().trim_end_matches('/'), cluster, "snapshot");
    let res = client.open(&url, &[]).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let mut body = res.into_body();
    if status != 200 {
        let bytes = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(crate::client::http_error(&url, status, &bytes).to_string());
    }
    let part = with_suffix(file, ".part");
    let mut out =
        std::fs::File::create(&part).map_err(|e| format!("create {}: {e}", part.display()))?;
    let written = async {
        let mut head: Vec<u8> = Vec::new();
        let mut parsed: Option<StreamHead> = None;
        let mut crc = crc32fast::Hasher::new();
        let mut n = 0u64;
        loop {
            let frame = match tokio::time::timeout(client.timeout(), body.frame()).await {
                Err(_) => return Err(format!("{url}: the stream stalled")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(format!("{url}: the stream broke off: {e}")),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if parsed.is_none() {
                let nl = data.iter().position(|&b| b == b'\n');
                let take = nl.map_or(data.len(), |i| i + 1);
                head.extend_from_slice(&data[..take]);
                data = data.slice(take..);
                if head.len() > MAX_HEADER {
                    return Err(format!(
                        "{url}: no head line in the first {MAX_HEADER} bytes"
                    ));
                }
                if nl.is_none() {
                    continue;
                }
                let h: StreamHead = serde_json::from_slice(&head)
                    .map_err(|e| format!("{url}: the head line does not decode: {e}"))?;
                parsed = Some(h);
            }
            crc.update(&data);
            n += data.len() as u64;
            out.write_all(&data)
                .map_err(|e| format!("write {}: {e}", part.display()))?;
        }
        let head = parsed.ok_or_else(|| format!("{url}: the answer ended before its head line"))?;
        Ok((head, crc, n))
    }
    .await;
    drop(out);
    let (head, crc, n) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    let meta = FileMeta {
        format: FORMAT.into(),
        version: VERSION,
        cluster: head.cluster,
        seq: head.seq,
        members: head.members,
        learners: head.learners,
        bytes: n,
    };
    let done = assemble(file, &part, &meta, crc);
    let _ = std::fs::remove_file(&part);
    done
}

/// Writes the header and the bytes in `part` to `<file>.tmp`, makes it durable and renames it
/// to `file`.
fn assemble(
    file: &Path,
    part: &Path,
    meta: &FileMeta,
    crc: crc32fast::Hasher,
) -> Result<Saved, String> {
    let crc32 = checksum(crc, meta)?;
    let head = FileHead {
        meta: meta.clone(),
        crc32,
    };
    let mut line = serde_json::to_vec(&head).map_err(|e| format!("encode header: {e}"))?;
    line.push(b'\n');
    let tmp = with_suffix(file, ".tmp");
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let write = || -> Result<(), String> {
        let mut out = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        out.write_all(&line).map_err(|e| io("write", &tmp, e))?;
        let mut src = std::fs::File::open(part).map_err(|e| io("open", part, e))?;
        std::io::copy(&mut src, &mut out).map_err(|e| io("write", &tmp, e))?;
        out.sync_all().map_err(|e| io("sync", &tmp, e))?;
        std::fs::rename(&tmp, file).map_err(|e| io("rename to", file, e))?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", &dir, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Saved {
        meta: meta.clone(),
        crc32,
    })
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

// ---------------------------------------------------------------------------------------------
// restore
// ---------------------------------------------------------------------------------------------

/// Reads and checks a snapshot file: its header, its length and its checksum. The snapshot's
/// bytes (UTF-8, as every snapshot is) with the header.
pub fn read_file(file: &Path) -> Result<(FileMeta, String), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    (&mut r)
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read {}: {e}", file.display()))?;
    let what = file.display();
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "{what}: not a snapshot file, or truncated in its header (no complete header line)"
        ));
    }
    let head: FileHead = serde_json::from_slice(&line)
        .map_err(|e| format!("{what}: not a snapshot file, or its header is damaged ({e})"))?;
    let meta = head.meta;
    if meta.format != FORMAT {
        return Err(format!(
            "{what}: format {:?}, expected {FORMAT:?}",
            meta.format
        ));
    }
    if meta.version != VERSION {
        return Err(format!(
            "{what}: snapshot file version {}, this program reads version {VERSION}",
            meta.version
        ));
    }
    let mut data = Vec::new();
    (&mut r)
        .take(meta.bytes.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| format!("read {}: {e}", file.display()))?;
    let n = data.len() as u64;
    if n < meta.bytes {
        return Err(format!(
            "{what}: truncated: the header announces {} bytes of state, the file holds {n}",
            meta.bytes
        ));
    }
    if n > meta.bytes {
        return Err(format!(
            "{what}: damaged: more bytes follow the {} bytes of state the header announces",
            meta.bytes
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&data);
    let sum = checksum(crc, &meta)?;
    if sum != head.crc32 {
        return Err(format!(
            "{what}: damaged: checksum {sum:#010x}, the header says {:#010x}",
            head.crc32
        ));
    }
    let text = String::from_utf8(data)
        .map_err(|e| format!("{what}: the state is not UTF-8 (every snapshot is): {e}"))?;
    Ok((meta, text))
}

/// What [`restore`] prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub meta: FileMeta,
    /// The write-ahead log it wrote.
    pub wal: PathBuf,
}

/// Checks `file` (see [`read_file`]) and that `app` decodes its state, then writes a data
/// directory from which a node advertising `advertise` starts as the only member of cluster
/// `cluster` holding that state (through the write-ahead log's own format: the node replays it
/// like any stored state). Nothing is written unless every check passed; a directory that
/// already holds data for `cluster` is refused.
pub fn restore<S: StateMachine>(
    file: &Path,
    data_dir: &Path,
    cluster: &str,
    advertise: &str,
    app: &S,
) -> Result<Restored, String> {
    let advertise = crate::server::trim_addr(advertise);
    clusterconsensus::Config::new(cluster, &advertise)
        .validate()
        .map_err(|e| format!("cluster {cluster:?}: {e}"))?;
    let (meta, data) = read_file(file)?;
    clusterconsensus::restore_from(app, data.as_bytes()).map_err(|e| {
        format!(
            "{}: the state does not decode as this app's: {e}",
            file.display()
        )
    })?;
    let wal = data_dir.join(format!("{cluster}.wal"));
    match std::fs::metadata(&wal) {
        Ok(m) if m.len() > 0 => {
            return Err(format!(
                "{} already holds data for cluster {cluster:?}: restore into an empty directory",
                wal.display()
            ))
        }
        _ => {}
    }
    let store = Store::open(data_dir, cluster)?;
    let snapshot = Snapshot {
        seq: meta.seq,
        data,
    };
    store.apply(&Stored::from_backup(cluster, &advertise, snapshot))?;
    Ok(Restored { meta, wal })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterconsensus::kv::KvStore;

    fn file_with(meta: &FileMeta, data: &[u8]) -> Vec<u8> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        let head = FileHead {
            meta: meta.clone(),
            crc32: checksum(crc, meta).unwrap(),
        };
        let mut out = serde_json::to_vec(&head).unwrap();
        out.push(b'\n');
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_file_reads_back_and_any_damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("cc-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.snap");
        let data = br#"{"a":"1"}"#;
        let meta = FileMeta {
            format: FORMAT.into(),
            version: VERSION,
            cluster: "c".into(),
            seq: 7,
            members: vec!["http://a".into()],
            learners: vec![],
            bytes: data.len() as u64,
        };
        let good = file_with(&meta, data);
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            read_file(&path).unwrap(),
            (meta.clone(), String::from_utf8(data.to_vec()).unwrap())
        );
        let line = good.iter().position(|&b| b == b'\n').unwrap();

        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_file(&path).unwrap_err()
        };
        let e = refused(&good[..good.len() - 1]);
        assert!(
            e.ends_with(&format!(
                "truncated: the header announces {} bytes of state, the file holds {}",
                data.len(),
                data.len() - 1
            )),
            "{e}"
        );
        let e = refused(&good[..line - 3]);
        assert!(e.contains("truncated in its header"), "{e}");
        let mut flipped = good.clone();
        flipped[line + 3] ^= 0x01;
        assert!(refused(&flipped).contains("damaged: checksum"));
        // The seq is covered too.
        let seq = String::from_utf8(good.clone())
            .unwrap()
            .replacen("\"seq\":7", "\"seq\":8", 1);
        assert!(refused(seq.as_bytes()).contains("damaged: checksum"));
        let mut longer = good.clone();
        longer.push(b'x');
        assert!(refused(&longer).contains("more bytes follow"));
        assert!(refused(b"hello\n").contains("not a snapshot file"));

        // restore: a damaged file writes nothing; a good one a log that restores.
        let data_dir = dir.join("data");
        std::fs::write(&path, &flipped).unwrap();
        assert!(restore(&path, &data_dir, "n", "http://x", &KvStore::new()).is_err());
        assert!(!data_dir.exists());
        let mut app = KvStore::new();
        let _ = app.apply(7, r#"{"op":"set","key":"a","value":"1"}"#);
        let kv = clusterconsensus::snapshot_to_string(app.snapshot()).unwrap();
        let meta = FileMeta {
            bytes: kv.len() as u64,
            ..meta
        };
        std::fs::write(&path, file_with(&meta, kv.as_bytes())).unwrap();
        let r = restore(&path, &data_dir, "n", "http://x/", &KvStore::new()).unwrap();
        assert_eq!(r.wal, data_dir.join("n.wal"));
        let stored = Store::open(&data_dir, "n").unwrap().load().unwrap();
        let hard = stored.hard.clone().unwrap();
        assert_eq!(
            (hard.commit, hard.members),
            (7, vec!["http://x".to_string()])
        );
        let node = clusterconsensus::Participant::restore(
            clusterconsensus::Config::new("n", "http://x"),
            KvStore::new(),
            stored,
            0,
        )
        .unwrap();
        assert_eq!(node.state().get("a"), Some("1"));
        // Not over existing data.
        let e = restore(&path, &data_dir, "n", "http://x", &KvStore::new()).unwrap_err();
        assert!(e.contains("already holds data"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
