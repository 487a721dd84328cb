//! Durable storage of one participant: one write-ahead log per cluster, `<dir>/<cluster>.wal`.
//!
//! The core says what to store ([`Persist`]) and this module stores it exactly as
//! [`Stored::apply`] describes: each `Persist` is one record written after the last one with one
//! `write` and made durable with one `fdatasync` before [`Store::apply`] returns. (A redb
//! transaction wrote about eight 4 KiB pages per `Persist`.)
//!
//! Record: `[len: u32 LE][crc32 of the body: u32 LE]` then `len` bytes of body, the `Persist`'s
//! hard state, entries and snapshot as JSON (inspectable, and the core's serde types). Reading
//! folds the records in order the way [`Stored::apply`] does. The log ends at the end of the
//! file or at a header of zeros.
//!
//! Preallocation: the file is extended with written zeros `PREALLOCATE` bytes at a time and
//! records overwrite them. An fdatasync that does not change the file's size need not commit
//! the inode to the journal: 120-140 us against 180-200 us for a true append on this ext4 disk.
//!
//! Compaction: a `Persist` with a snapshot drops every entry before it, so instead of appending
//! it the store writes it as the only record of a fresh `<cluster>.wal.tmp`, fsyncs it, renames
//! it over the log and fsyncs the directory. The core snapshots every `snapshot_every` commits,
//! so the log stays bounded. A crash before the rename leaves the old log (and a stale `.tmp`,
//! removed on open); after it, the new one. Either is a state whose `apply` had not returned.
//!
//! Crash recovery ([`Store::open`]): only the last record can be incomplete, because each
//! `apply` returns (and the next one starts) only after its fdatasync, and a failed write stops
//! the node (and no later write is attempted). So a short header or body, a CRC mismatch or an undecodable body at the end is a
//! torn write that was never acknowledged: the file is truncated to the last good record, so
//! later records do not follow garbage. A bad record followed by a good one is not a torn write
//! but damage to acknowledged state, and opening fails rather than forget it.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clusterconsensus::{Entry, HardState, Persist, Snapshot, Stored};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Header: body length, then CRC-32 of the body, both little-endian u32.
const HEADER: usize = 8;

/// Zeros written past the log's end when a record does not fit in what is already allocated.
/// Larger means rarer but longer extending writes (about 0.7 ms at 256 KiB, once per ~400
/// small records).
const PREALLOCATE: usize = 256 << 10;

/// A write buffer grown beyond this (by a snapshot) is released after the write, so one snapshot
/// does not pin its size in memory until the next.
const KEEP_BUF: usize = 1 << 20;

/// One record's body as written: borrowed from the `Persist`, nothing cloned.
#[derive(Serialize)]
struct RecordRef<'a> {
    hard: &'a HardState,
    entries: &'a [Entry],
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a Snapshot>,
}

/// One record's body as read.
#[derive(Deserialize)]
struct Record {
    hard: HardState,
    entries: Vec<Entry>,
    #[serde(default)]
    snapshot: Option<Snapshot>,
}

/// Where one cluster's state lives: a write-ahead log, or nowhere (`--memory`).
pub enum Store {
    Disk { path: PathBuf, wal: Box<Mutex<Wal>> },
    Memory,
}

/// The open log. Only the cluster's writer thread writes; the mutex gives `apply(&self)` its
/// buffer and file handle through the shared `Arc<Store>`.
pub struct Wal {
    dir: PathBuf,
    tmp: PathBuf,
    file: File,
    /// Where the next record goes: the end of the last one.
    end: u64,
    /// The file's length; `end..len` is zeros.
    len: u64,
    /// Header and body of the record being written, reused across `apply` calls.
    buf: Vec<u8>,
    /// What `open` read, handed out by the first `load` so startup parses the log once.
    recovered: Option<Stored>,
    /// Set when a write or sync failed: the file's tail is then unknown, so nothing more may be
    /// written (and the node stops anyway, see `cluster::spawn_writer`).
    failed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Disk { path, .. } => write!(f, "Store({})", path.display()),
            Store::Memory => f.write_str("Store(memory)"),
        }
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Store {
    /// Opens (or creates) `<dir>/<cluster>.wal`, recovering from a crash: a torn last record is
    /// cut off, a stale `<cluster>.wal.tmp` removed. Refuses a directory that holds only the
    /// redb file of an older version.
    pub fn open(dir: &Path, cluster: &str) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| err(&format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("{cluster}.wal"));
        let tmp = dir.join(format!("{cluster}.wal.tmp"));
        let redb = dir.join(format!("{cluster}.redb"));
        if redb.exists() && !path.exists() {
            return Err(format!(
                "{}: data directory written by an older version (redb); start with a fresh --data-dir",
                redb.display()
            ));
        }
        match std::fs::remove_file(&tmp) {
            Ok(()) => warn!(
                "removed {}, left by a crash during compaction",
                tmp.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(err(&format!("remove {}", tmp.display()), e)),
        }

        let log = read_log(&path)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&format!("open {}", path.display()), e))?;
        let mut len = log.len;
        if log.torn {
            warn!(
                "{}: dropped {} bytes after the last complete record (a write torn by a crash, never acknowledged)",
                path.display(),
                log.len - log.end
            );
            file.set_len(log.end)
                .map_err(|e| err(&format!("truncate {}", path.display()), e))?;
            file.sync_all()
                .map_err(|e| err(&format!("sync {}", path.display()), e))?;
            len = log.end;
        }
        // Makes the file's creation (or the last rename) durable before anything is acknowledged.
        sync_dir(dir)?;
        Ok(Store::Disk {
            path,
            wal: Box::new(Mutex::new(Wal {
                dir: dir.to_path_buf(),
                tmp,
                file,
                end: log.end,
                len,
                buf: Vec::new(),
                recovered: Some(log.stored),
                failed: false,
            })),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Store::Disk { path, .. } => Some(path),
            Store::Memory => None,
        }
    }

    /// Everything stored, for [`Participant::restore`](clusterconsensus::Participant::restore).
    pub fn load(&self) -> Result<Stored, String> {
        let Store::Disk { path, wal } = self else {
            return Ok(Stored::default());
        };
        let mut wal = wal.lock().map_err(|e| err("storage lock", e))?;
        if let Some(stored) = wal.recovered.take() {
            return Ok(stored);
        }
        let log = read_log(path)?;
        if log.torn || log.end != wal.end {
            return Err(format!(
                "{}: the log ends at byte {}, expected {}",
                path.display(),
                log.end,
                wal.end
            ));
        }
        Ok(log.stored)
    }

    /// Makes one [`Persist`] durable as one record (see the module doc), the order of
    /// [`Stored::apply`]: snapshot (dropping every entry), entries, hard state. Blocks for the
    /// fdatasync; the caller may act on the `Persist` once this returns `Ok`.
    pub fn apply(&self, p: &Persist) -> Result<(), String> {
        let Store::Disk { path, wal } = self else {
            return Ok(());
        };
        let mut wal = wal.lock().map_err(|e| err("storage lock", e))?;
        if wal.failed {
            return Err(format!("{}: an earlier write failed", path.display()));
        }
        // A later `load` reads the file, which then differs from what `open` read.
        wal.recovered = None;
        encode(&mut wal.buf, p)?;
        let written = if p.snapshot.is_some() {
            wal.replace(path)
        } else {
            wal.append(path)
        };
        if written.is_err() {
            wal.failed = true;
        }
        if wal.buf.capacity() > KEEP_BUF {
            wal.buf = Vec::new();
        }
        written
    }
}

impl Wal {
    /// Writes the record in `buf` at the log's end, with fresh zeros after it if it does not fit.
    fn append(&mut self, path: &Path) -> Result<(), String> {
        let record = self.buf.len() as u64;
        let next = self.end + record;
        if next > self.len {
            // Part of the same write, so the extension costs one size change per PREALLOCATE.
            self.buf.resize(self.buf.len() + PREALLOCATE, 0);
        }
        self.file
            .write_all_at(&self.buf, self.end)
            .map_err(|e| err(&format!("write {}", path.display()), e))?;
        self.file
            .sync_data()
            .map_err(|e| err(&format!("sync {}", path.display()), e))?;
        self.len = self.len.max(self.end + self.buf.len() as u64);
        self.end = next;
        Ok(())
    }

    /// Compaction: the record in `buf` becomes the whole log.
    fn replace(&mut self, path: &Path) -> Result<(), String> {
        let tmp = &self.tmp;
        let ctx = |what: &str, e: std::io::Error| err(&format!("{what} {}", tmp.display()), e);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| ctx("create", e))?;
        file.write_all_at(&self.buf, 0)
            .map_err(|e| ctx("write", e))?;
        file.sync_all().map_err(|e| ctx("sync", e))?;
        std::fs::rename(tmp, path).map_err(|e| {
            err(
                &format!("rename {} to {}", tmp.display(), path.display()),
                e,
            )
        })?;
        sync_dir(&self.dir)?;
        // The handle follows the inode, now named `path`.
        self.file = file;
        self.end = self.buf.len() as u64;
        self.len = self.end;
        Ok(())
    }
}

/// Writes header and body of `p`'s record into `buf`.
fn encode(buf: &mut Vec<u8>, p: &Persist) -> Result<(), String> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    let record = RecordRef {
        hard: &p.hard,
        entries: &p.entries,
        snapshot: p.snapshot.as_ref(),
    };
    serde_json::to_writer(&mut *buf, &record).map_err(|e| err("encode record", e))?;
    let body = &buf[HEADER..];
    let len = u32::try_from(body.len())
        .map_err(|_| format!("record of {} bytes is too large", body.len()))?;
    let crc = crc32fast::hash(body);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The record at the start of `data`: its body's decoded value and its total length, or `None`
/// if it is incomplete, fails its CRC or does not decode (a header of zeros does not decode).
fn record_at(data: &[u8]) -> Option<(Record, usize)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = data.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let record = serde_json::from_slice(body).ok()?;
    Some((record, HEADER + len))
}

/// What a log file holds.
struct Log {
    stored: Stored,
    /// The end of the last complete record.
    end: u64,
    /// The file's length.
    len: u64,
    /// `end..len` is not all zeros: the remains of a torn last write.
    torn: bool,
}

/// Reads the log at `path` (missing or empty: nothing stored).
fn read_log(path: &Path) -> Result<Log, String> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(&format!("read {}", path.display()), e)),
    };
    let mut stored = Stored::default();
    let mut at = 0;
    while let Some((record, size)) = record_at(&data[at..]) {
        // Folded by the core's own rule, so what loads is what `Stored::apply` would hold.
        stored.apply(&Persist::record(
            record.hard,
            record.entries,
            record.snapshot,
        ));
        at += size;
    }
    let torn = data[at..].iter().any(|&b| b != 0);
    // A torn write is the last record. If an intact record starts anywhere after the end, the
    // record there was complete once and acknowledged: refuse rather than forget it and what
    // follows. (JSON bodies hold no NUL byte, so no header of a feasible length hides inside
    // one; a damaged length field is caught too.)
    if torn && (at + 1..data.len()).any(|i| record_at(&data[i..]).is_some()) {
        return Err(format!(
            "{}: damaged record at byte {at} followed by intact ones; refusing to start",
            path.display()
        ));
    }
    Ok(Log {
        stored,
        end: at as u64,
        len: data.len() as u64,
        torn,
    })
}

/// Makes entries created, renamed or removed in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(&format!("sync {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterconsensus::{Payload, Status};

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("cc-storage-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn wal(&self) -> PathBuf {
            self.0.join("c1.wal")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hard(commit: u64) -> HardState {
        HardState {
            cluster: "c1".into(),
            self_addr: "http://a".into(),
            status: Status::Joined,
            promised: 3,
            promised_master: Some("http://a".into()),
            commit,
            staged: None,
            members: vec!["http://a".into()],
            learners: vec![],
            members_version: 0,
        }
    }

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            payload: Payload::Changes(vec![format!("c{seq}")]),
        }
    }

    fn persist(id: u64, entries: Vec<Entry>, snapshot: Option<u64>) -> Persist {
        let snapshot = snapshot.map(|seq| Snapshot {
            seq,
            data: format!("{{\"at\":{seq}}}"),
        });
        Persist::record(hard(id), entries, snapshot)
    }

    /// Four plain Persists, applied to a fresh store; returns the model after each.
    fn four(dir: &Path) -> Vec<Stored> {
        let store = Store::open(dir, "c1").unwrap();
        let mut model = Stored::default();
        let mut models = vec![model.clone()];
        for id in 1..=4 {
            let p = persist(id, vec![entry(id)], None);
            store.apply(&p).unwrap();
            model.apply(&p);
            models.push(model.clone());
        }
        models
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// Start offsets of the records in the log, which ends at a header of zeros or the file's end.
    fn offsets(path: &Path) -> Vec<u64> {
        let data = std::fs::read(path).unwrap();
        let mut at = 0;
        let mut starts = Vec::new();
        while at < data.len() && data[at..at + 4] != [0; 4] {
            starts.push(at as u64);
            at += HEADER + u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        }
        assert!(at <= data.len());
        assert!(data[at..].iter().all(|&b| b == 0));
        starts
    }

    /// Where the next record goes.
    fn end(path: &Path) -> u64 {
        let data = std::fs::read(path).unwrap();
        let last = *offsets(path).last().unwrap() as usize;
        (last + HEADER + u32::from_le_bytes(data[last..last + 4].try_into().unwrap()) as usize)
            as u64
    }

    #[test]
    fn persists_survive_reopen_like_stored_apply() {
        let dir = TempDir::new("reopen");
        let mut model = Stored::default();
        let steps = vec![
            persist(1, vec![], None),
            persist(2, vec![entry(1), entry(2)], None),
            persist(4, vec![entry(4)], Some(3)),
            persist(5, vec![entry(5)], None),
        ];
        {
            let store = Store::open(&dir.0, "c1").unwrap();
            assert_eq!(store.load().unwrap(), Stored::default());
            for p in &steps {
                store.apply(p).unwrap();
                model.apply(p);
                assert_eq!(store.load().unwrap(), model);
            }
        }
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(model.snapshot.as_ref().map(|s| s.seq), Some(3));
        assert_eq!(model.hard.as_ref().map(|h| h.commit), Some(5));
        assert_eq!(offsets(&dir.wal()).len(), 2);
    }

    #[test]
    fn missing_or_empty_log_is_nothing_stored() {
        let dir = TempDir::new("empty");
        assert_eq!(
            Store::open(&dir.0, "c1").unwrap().load().unwrap(),
            Stored::default()
        );
        assert_eq!(size(&dir.wal()), 0);
        assert_eq!(
            Store::open(&dir.0, "c1").unwrap().load().unwrap(),
            Stored::default()
        );
    }

    /// Reopens after damaging the log's last record; expects the model without it, then checks
    /// that the next record lands right after the last good one. Damage that leaves anything
    /// but zeros behind the last good record must be cut off.
    fn torn_tail_is_dropped(name: &str, cut: bool, damage: impl FnOnce(&Path, u64)) {
        let dir = TempDir::new(name);
        let models = four(&dir.0);
        let last = *offsets(&dir.wal()).last().unwrap();
        damage(&dir.wal(), last);

        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(offsets(&dir.wal()).len(), 3);
        if cut {
            assert_eq!(size(&dir.wal()), last);
        }
        let mut model = models[3].clone();
        assert_eq!(store.load().unwrap(), model);
        let p = persist(9, vec![entry(9)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        drop(store);

        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 9]
        );
        assert_eq!(offsets(&dir.wal()).len(), 4);
    }

    #[test]
    fn torn_tail_short_body_is_dropped() {
        torn_tail_is_dropped("short-body", true, |wal, _| {
            let f = OpenOptions::new().write(true).open(wal).unwrap();
            f.set_len(end(wal) - 3).unwrap();
        });
    }

    #[test]
    fn torn_tail_short_header_is_dropped() {
        torn_tail_is_dropped("short-header", true, |wal, last| {
            let f = OpenOptions::new().write(true).open(wal).unwrap();
            f.set_len(last + 5).unwrap();
        });
    }

    #[test]
    fn torn_tail_flipped_byte_is_dropped() {
        torn_tail_is_dropped("flipped", true, |wal, last| {
            let mut data = std::fs::read(wal).unwrap();
            data[last as usize + HEADER + 10] ^= 0x20;
            std::fs::write(wal, data).unwrap();
        });
    }

    #[test]
    fn torn_tail_lost_header_is_dropped() {
        // The header's page never reached the disk, the body's did.
        torn_tail_is_dropped("lost-header", true, |wal, last| {
            let mut data = std::fs::read(wal).unwrap();
            data[last as usize..last as usize + HEADER].fill(0);
            std::fs::write(wal, data).unwrap();
        });
    }

    #[test]
    fn torn_tail_of_zeros_is_the_end() {
        // The size reached the disk but the data did not: zeros, as after the preallocation.
        torn_tail_is_dropped("zeros", false, |wal, last| {
            let mut data = std::fs::read(wal).unwrap();
            data[last as usize..].fill(0);
            std::fs::write(wal, data).unwrap();
        });
    }

    #[test]
    fn records_cross_preallocated_space() {
        let dir = TempDir::new("prealloc");
        let big = Payload::Changes(vec!["x".repeat(10_000)]);
        let mut model = Stored::default();
        let mut sizes = Vec::new();
        {
            let store = Store::open(&dir.0, "c1").unwrap();
            for id in 1..=60 {
                let mut p = persist(id, vec![entry(id)], None);
                p.entries[0].payload = big.clone();
                store.apply(&p).unwrap();
                model.apply(&p);
                sizes.push(size(&dir.wal()));
            }
        }
        sizes.dedup();
        // 60 records of about 10 KB: two extensions, each leaving zeros after the last record.
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(size(&dir.wal()) > end(&dir.wal()));
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(offsets(&dir.wal()).len(), 60);
        assert_eq!(model.entries.len(), 60);
    }

    /// Damages the second of four records; opening must fail and leave the file alone.
    fn damaged_record_refuses_to_open(name: &str, damage: impl FnOnce(&mut [u8])) {
        let dir = TempDir::new(name);
        four(&dir.0);
        let second = offsets(&dir.wal())[1] as usize;
        let mut data = std::fs::read(dir.wal()).unwrap();
        damage(&mut data[second..]);
        std::fs::write(dir.wal(), &data).unwrap();

        let e = Store::open(&dir.0, "c1").unwrap_err();
        assert!(
            e.contains(&format!(
                "damaged record at byte {second} followed by intact ones"
            )),
            "{e}"
        );
        assert_eq!(std::fs::read(dir.wal()).unwrap(), data);
    }

    #[test]
    fn damaged_body_before_intact_records_refuses_to_open() {
        damaged_record_refuses_to_open("damaged-body", |r| r[HEADER + 10] ^= 0x20);
    }

    #[test]
    fn damaged_length_before_intact_records_refuses_to_open() {
        damaged_record_refuses_to_open("damaged-len", |r| r[1] ^= 0x01);
    }

    #[test]
    fn snapshot_compacts_the_log() {
        let dir = TempDir::new("compact");
        let mut model = four(&dir.0).pop().unwrap();
        let before = size(&dir.wal());
        std::fs::write(dir.0.join("c1.wal.tmp"), b"stale").unwrap();

        let store = Store::open(&dir.0, "c1").unwrap();
        assert!(!dir.0.join("c1.wal.tmp").exists());
        let p = persist(6, vec![entry(6)], Some(5));
        store.apply(&p).unwrap();
        model.apply(&p);
        let after = size(&dir.wal());
        assert!(after < before, "{after} >= {before}");
        assert_eq!(offsets(&dir.wal()), [0]);
        let mut buf = Vec::new();
        encode(&mut buf, &p).unwrap();
        assert_eq!(after, buf.len() as u64);
        assert!(!dir.0.join("c1.wal.tmp").exists());

        // Appends continue in the new file.
        let q = persist(7, vec![entry(7)], None);
        store.apply(&q).unwrap();
        model.apply(&q);
        drop(store);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [6, 7]
        );
        assert_eq!(offsets(&dir.wal()).len(), 2);
    }

    #[test]
    fn redb_data_dir_is_refused() {
        let dir = TempDir::new("redb");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("c1.redb"), b"old").unwrap();
        let e = Store::open(&dir.0, "c1").unwrap_err();
        assert!(
            e.contains(
                "data directory written by an older version (redb); start with a fresh --data-dir"
            ),
            "{e}"
        );
        assert!(!dir.wal().exists());
        // Another cluster in the same directory is not affected.
        Store::open(&dir.0, "c2").unwrap();
    }

    /// CPU time of the calling thread, in microseconds (Linux).
    fn thread_cpu_us() -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e3
    }

    /// 2000 small writes in a row (across several preallocation steps) reload exactly; prints
    /// their latency, which only measures this disk, so nothing asserts on it:
    /// `cargo test -p clusterconsensus-server --release wal_apply_latency -- --nocapture`
    #[test]
    fn wal_apply_latency() {
        let dir = TempDir::new("bench");
        let store = Store::open(&dir.0, "c1").unwrap();
        let mut h = hard(0);
        h.members = (1..=5)
            .map(|i| format!("http://node-{i}.example:7000"))
            .collect();
        let mut p = Persist::record(h, vec![], None);
        let change = format!(
            "{{\"op\":\"set\",\"key\":\"k\",\"value\":\"{}\"}}",
            "v".repeat(70)
        );
        let mut times = Vec::new();
        let cpu = thread_cpu_us();
        for i in 1..=2000 {
            p.hard.commit = i;
            p.entries = vec![Entry {
                seq: i,
                payload: Payload::Changes(vec![change.clone()]),
            }];
            let t = std::time::Instant::now();
            store.apply(&p).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let hard_len = serde_json::to_vec(&p.hard).unwrap().len();
        let entry_len = serde_json::to_vec(&p.entries[0]).unwrap().len();
        let cpu = (thread_cpu_us() - cpu) / 2000.0;
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "wal apply, {} x (hard {hard_len} B + 1 entry {entry_len} B): mean {mean:.0} us, p50 {:.0} us, p99 {:.0} us, max {:.0} us, CPU {cpu:.0} us/apply",
            times.len(),
            at(0.5),
            at(0.99),
            times[times.len() - 1]
        );
        drop(store);
        let stored = Store::open(&dir.0, "c1").unwrap().load().unwrap();
        assert_eq!(stored.hard, Some(p.hard.clone()));
        assert_eq!(stored.entries.len(), 2000);
        assert!(stored.entries.iter().zip(1..).all(|(e, i)| e.seq == i));
    }
}
