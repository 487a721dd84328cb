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
//! Compaction: a `Persist` with a snapshot (one installed from a master) drops every entry
//! before it, so instead of appending it the store writes it as the only record of a fresh
//! `<cluster>.wal.tmp`, fsyncs it, renames it over the log and fsyncs the directory. A crash
//! before the rename leaves the old log (and a stale `.tmp`, removed on open); after it, the
//! new one. Either is a state whose `apply` had not returned.
//!
//! Periodic snapshots live beside the log, in `<cluster>.snap-<seq>` (format version 3). Every
//! `snapshot_every` commits the core hands out a frozen view of the state
//! ([`SnapshotJob`](clusterconsensus::SnapshotJob)); [`SnapshotFiles::save`] streams it, on a
//! thread of its own and never on the cluster task or the writer thread, into
//! `<cluster>.snap-<seq>.tmp` (the bytes, then a trailer of their length and CRC-32), fsyncs
//! it, renames it and fsyncs the directory. Only then does the core emit a `Persist` with
//! `compact: Some(seq)`, which this store applies as a compaction: the new log holds one
//! record naming the snapshot (`"base": seq`) with the entries after `seq` (those committed
//! while the file was written: few), and the files of older snapshots are deleted. The log
//! meanwhile kept every entry, so a crash at any point loses nothing: before the rename the
//! `.tmp` is removed on open; after it and before the compaction the file is not named by the
//! log and is removed on open too (the log still holds the entries); after the compaction the
//! log names it. A snapshot file that cannot be written is not fatal: the node logs it, the log
//! keeps its entries, and the next periodic snapshot tries again. Opening reads the named
//! snapshot file whole into [`Stored::snapshot`] (one copy of the state's text, not streamed).
//!
//! Crash recovery ([`Store::open`]): only the last record can be incomplete, because each
//! `apply` returns (and the next one starts) only after its fdatasync, and a failed write stops
//! the node (and no later write is attempted). So a short header or body, a CRC mismatch or an undecodable body at the end is a
//! torn write that was never acknowledged: the file is truncated to the last good record, so
//! later records do not follow garbage. A bad record followed by a good one is not a torn write
//! but damage to acknowledged state, and opening fails rather than forget it.
//!
//! A failed write or sync (a full disk, an I/O error) is never reported durable, so nothing
//! that depends on it leaves the core; the store refuses every later write (the file's tail is
//! unknown) and the node stops (`cluster::spawn_writer`). What the failed write left behind is
//! the torn tail above, cut off at the next open, or a complete record that was never
//! acknowledged, which is what a crash between write and fdatasync leaves too.
//!
//! Format version: the first record of a log is `{"version":N}` ([`FORMAT_VERSION`]), written
//! when the log is created and again by every compaction. A log whose first record is a state
//! record is version 1 (written before the version record existed) and is read as before; a
//! version 2 log (periodic snapshots inside the log) is read as before too, and becomes
//! version 3 at its first compaction. A log of a version newer than this build's is refused,
//! naming both versions, rather than misread.
//!
//! Test-only fault seam: `CC_TEST_DISK_FAULT=write:N` or `fsync:N`, read once by
//! [`Store::open`], makes the Nth record write (of which half is written first, as a torn
//! write) or the Nth record sync since the open fail with an I/O error (the version record
//! that `open` writes to a new log is not counted). Unset, it costs one branch per write; it
//! exists so tests can make a node's disk fail without root or a shim. Snapshot files are not
//! counted: their failure is not fatal (above).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clusterconsensus::{Entry, HardState, Persist, Snapshot, SnapshotSource, Stored};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Header: body length, then CRC-32 of the body, both little-endian u32.
const HEADER: usize = 8;

/// The log format this build writes and the newest it reads. 1: no version record; 2: the
/// first record is `{"version":2}`; 3: periodic snapshots in `<cluster>.snap-<seq>` files
/// that a record names with `"base"`.
pub const FORMAT_VERSION: u32 = 3;

/// A snapshot file's trailer: the length of the snapshot bytes (u64 LE) and their CRC-32 (u32
/// LE).
const TRAILER: usize = 12;

/// The test-only fault seam's environment variable (see the module doc).
pub const FAULT_ENV: &str = "CC_TEST_DISK_FAULT";

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
    /// The state at this seq is in the file `<cluster>.snap-<seq>`; no entry at or below it
    /// is needed (format version 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<u64>,
}

/// The first record's body in a log of version 2 or later: `{"version":N}`. A state record
/// has no `version` field, so it does not decode as this.
#[derive(Serialize, Deserialize)]
struct VersionRecord {
    version: u32,
}

/// One record's body as read.
#[derive(Deserialize)]
struct Record {
    hard: HardState,
    entries: Vec<Entry>,
    #[serde(default)]
    snapshot: Option<Snapshot>,
    #[serde(default)]
    base: Option<u64>,
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
    /// Each record that holds entries: its offset in the log and its last entry's seq. A
    /// compaction at seq S reads back only the records after S (those written while the
    /// snapshot was saved: few), so no copy of the log's entries is kept in memory.
    index: Vec<(u64, u64)>,
    /// Set when a write or sync failed: the file's tail is then unknown, so nothing more may be
    /// written (and the node stops anyway, see `cluster::spawn_writer`).
    failed: bool,
    /// The test-only fault to inject, if any, and the writes and syncs counted towards it.
    fault: Option<Fault>,
    writes: Cell<u64>,
    syncs: Cell<u64>,
}

/// A test-only injected failure (see the module doc): the `nth` record write or sync fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub op: FaultOp,
    pub nth: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Fsync,
}

impl Fault {
    /// Parses `write:N` or `fsync:N` (N >= 1).
    pub fn parse(s: &str) -> Result<Fault, String> {
        let bad = || format!("{FAULT_ENV}={s:?}: expected write:N or fsync:N with N >= 1");
        let (op, n) = s.split_once(':').ok_or_else(bad)?;
        let op = match op {
            "write" => FaultOp::Write,
            "fsync" => FaultOp::Fsync,
            _ => return Err(bad()),
        };
        let nth = n.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
        Ok(Fault { op, nth })
    }

    /// The fault `CC_TEST_DISK_FAULT` asks for, if it is set.
    fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(s) => Fault::parse(&s).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{FAULT_ENV}: {e}")),
        }
    }

    fn error(&self) -> std::io::Error {
        let op = match self.op {
            FaultOp::Write => "write",
            FaultOp::Fsync => "fsync",
        };
        std::io::Error::other(format!(
            "injected I/O error ({FAULT_ENV}={op}:{})",
            self.nth
        ))
    }
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
    /// The test-only fault seam `CC_TEST_DISK_FAULT` is read here (see the module doc).
    pub fn open(dir: &Path, cluster: &str) -> Result<Store, String> {
        Store::open_with(dir, cluster, Fault::from_env()?)
    }

    /// [`Store::open`] with an injected `fault` instead of the environment's.
    pub fn open_with(dir: &Path, cluster: &str, fault: Option<Fault>) -> Result<Store, String> {
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
        // Only the snapshot the log names is needed: others are left by a crash before their
        // compaction (or during their write), or were superseded.
        let base = log.base;
        for (seq, tmp) in snapshot_files(&path)? {
            if tmp || Some(seq) != base {
                let f = snapshot_path(&path, seq, tmp);
                std::fs::remove_file(&f).map_err(|e| err(&format!("remove {}", f.display()), e))?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
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
        let mut end = log.end;
        if end == 0 {
            // A new (or empty) log starts with its version record.
            let mut head = Vec::new();
            encode_version(&mut head)?;
            file.write_all_at(&head, 0)
                .and_then(|()| file.sync_all())
                .map_err(|e| err(&format!("write {}", path.display()), e))?;
            end = head.len() as u64;
            len = len.max(end);
        }
        // Makes the file's creation (or the last rename) durable before anything is acknowledged.
        sync_dir(dir)?;
        Ok(Store::Disk {
            path,
            wal: Box::new(Mutex::new(Wal {
                dir: dir.to_path_buf(),
                tmp,
                file,
                end,
                len,
                buf: Vec::new(),
                index: log.index,
                recovered: Some(log.stored),
                failed: false,
                fault,
                writes: Cell::new(0),
                syncs: Cell::new(0),
            })),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Store::Disk { path, .. } => Some(path),
            Store::Memory => None,
        }
    }

    /// Where this store's periodic snapshots are saved (`None` for memory storage: there is
    /// nothing to compact).
    pub fn snapshot_files(&self) -> Option<SnapshotFiles> {
        match self {
            Store::Disk { path, .. } => Some(SnapshotFiles { wal: path.clone() }),
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
        wal.buf.clear();
        let compact = p.compact.filter(|&seq| {
            let file = snapshot_path(path, seq, false);
            let there = file.exists();
            if !there {
                // Never happens (the core compacts only after the file was synced); keeping
                // the entries is always safe.
                warn!("{}: missing, the log is not compacted", file.display());
            }
            there
        });
        let written = if let Some(seq) = compact {
            // The new log: its version record, then one record naming the snapshot, with the
            // entries after it.
            let mut entries = wal.entries_after(path, seq)?;
            entries.extend(p.entries.iter().cloned());
            encode_version(&mut wal.buf)?;
            let head = wal.buf.len() as u64;
            let record = RecordRef {
                hard: &p.hard,
                entries: &entries,
                snapshot: None,
                base: Some(seq),
            };
            frame(&mut wal.buf, |b| serde_json::to_writer(b, &record))?;
            let written = wal.replace(path);
            if written.is_ok() {
                wal.index = entries.last().map(|e| (head, e.seq)).into_iter().collect();
                remove_snapshots_below(path, seq);
            }
            written
        } else if let Some(s) = &p.snapshot {
            // The compacted log is a new log: its version record, then this record.
            encode_version(&mut wal.buf)?;
            let head = wal.buf.len() as u64;
            encode(&mut wal.buf, p)?;
            let written = wal.replace(path);
            if written.is_ok() {
                wal.index = p
                    .entries
                    .last()
                    .map(|e| (head, e.seq))
                    .into_iter()
                    .collect();
                remove_snapshots_below(path, s.seq.saturating_add(1));
            }
            written
        } else {
            encode(&mut wal.buf, p)?;
            let at = wal.end;
            let written = wal.append(path);
            if let (Ok(()), Some(e)) = (&written, p.entries.last()) {
                wal.index.push((at, e.seq));
            }
            written
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
    /// The entries of the log after `seq`, read back from the records that hold them.
    fn entries_after(&self, path: &Path, seq: u64) -> Result<Vec<Entry>, String> {
        let Some(&(from, _)) = self.index.iter().find(|(_, last)| *last > seq) else {
            return Ok(Vec::new());
        };
        let mut data = vec![0; (self.end - from) as usize];
        self.file
            .read_exact_at(&mut data, from)
            .map_err(|e| err(&format!("read {}", path.display()), e))?;
        let mut entries = Vec::new();
        let mut at = 0;
        while let Some((record, size)) = record_at(&data[at..]) {
            entries.extend(record.entries.into_iter().filter(|e| e.seq > seq));
            at += size;
        }
        if at != data.len() {
            return Err(format!(
                "{}: the record at byte {} does not read back",
                path.display(),
                from + at as u64
            ));
        }
        Ok(entries)
    }
    /// Writes the record in `buf` at the log's end, with fresh zeros after it if it does not fit.
    fn append(&mut self, path: &Path) -> Result<(), String> {
        let record = self.buf.len() as u64;
        let next = self.end + record;
        if next > self.len {
            // Part of the same write, so the extension costs one size change per PREALLOCATE.
            self.buf.resize(self.buf.len() + PREALLOCATE, 0);
        }
        self.write(&self.file, record as usize, self.end)
            .map_err(|e| err(&format!("write {}", path.display()), e))?;
        self.sync(&self.file, false)
            .map_err(|e| err(&format!("sync {}", path.display()), e))?;
        self.len = self.len.max(self.end + self.buf.len() as u64);
        self.end = next;
        Ok(())
    }

    /// Compaction: the records in `buf` (version and snapshot) become the whole log.
    fn replace(&mut self, path: &Path) -> Result<(), String> {
        let tmp = &self.tmp;
        let ctx = |what: &str, e: std::io::Error| err(&format!("{what} {}", tmp.display()), e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| ctx("create", e))?;
        self.write(&file, self.buf.len(), 0)
            .map_err(|e| ctx("write", e))?;
        self.sync(&file, true).map_err(|e| ctx("sync", e))?;
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

    /// Writes `buf` at `at` in `file`, unless the fault seam fails this write: then only the
    /// first half of the `record` bytes is written, as a write torn by a crash would leave it.
    fn write(&self, file: &File, record: usize, at: u64) -> std::io::Result<()> {
        let n = self.count(FaultOp::Write);
        if let Some(f) = self.fault.filter(|f| f.op == FaultOp::Write && f.nth == n) {
            file.write_all_at(&self.buf[..record.min(self.buf.len()) / 2], at)?;
            return Err(f.error());
        }
        file.write_all_at(&self.buf, at)
    }

    /// fdatasync (`all`: fsync) of `file`, unless the fault seam fails this one.
    fn sync(&self, file: &File, all: bool) -> std::io::Result<()> {
        let n = self.count(FaultOp::Fsync);
        if let Some(f) = self.fault.filter(|f| f.op == FaultOp::Fsync && f.nth == n) {
            return Err(f.error());
        }
        if all {
            file.sync_all()
        } else {
            file.sync_data()
        }
    }

    /// Counts one record write or sync for the fault seam; its number since the open.
    fn count(&self, op: FaultOp) -> u64 {
        let c = match op {
            FaultOp::Write => &self.writes,
            FaultOp::Fsync => &self.syncs,
        };
        c.set(c.get() + 1);
        c.get()
    }
}

/// Writes the version record of a log of [`FORMAT_VERSION`] after what `buf` holds.
fn encode_version(buf: &mut Vec<u8>) -> Result<(), String> {
    let version = VersionRecord {
        version: FORMAT_VERSION,
    };
    frame(buf, |b| serde_json::to_writer(b, &version))
}

/// Writes header and body of `p`'s record after what `buf` holds.
fn encode(buf: &mut Vec<u8>, p: &Persist) -> Result<(), String> {
    let record = RecordRef {
        hard: &p.hard,
        entries: &p.entries,
        snapshot: p.snapshot.as_ref(),
        base: None,
    };
    frame(buf, |b| serde_json::to_writer(b, &record))
}

/// Appends one record to `buf`: a header, then the body `body` writes.
fn frame(
    buf: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    body(&mut *buf).map_err(|e| err("encode record", e))?;
    let body = &buf[start + HEADER..];
    let len = u32::try_from(body.len())
        .map_err(|_| format!("record of {} bytes is too large", body.len()))?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The body of the record at the start of `data` and the record's total length, or `None` if
/// it is incomplete or fails its CRC (a header of zeros is an empty body that fails it).
fn frame_at(data: &[u8]) -> Option<(&[u8], usize)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = data.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((body, HEADER + len))
}

/// The state record at the start of `data`: its body's decoded value and its total length, or
/// `None` if it is incomplete, fails its CRC or does not decode.
fn record_at(data: &[u8]) -> Option<(Record, usize)> {
    let (body, size) = frame_at(data)?;
    let record = serde_json::from_slice(body).ok()?;
    Some((record, size))
}

/// The version of the log that starts with `data` and the length of its version record (0 for
/// version 1, which has none).
fn version_of(data: &[u8]) -> (u32, usize) {
    match frame_at(data) {
        Some((body, size)) => match serde_json::from_slice::<VersionRecord>(body) {
            Ok(v) => (v.version, size),
            Err(_) => (1, 0),
        },
        None => (1, 0),
    }
}

/// What a log file holds.
struct Log {
    stored: Stored,
    /// Each record holding entries: its offset and its last entry's seq (see `Wal::index`).
    index: Vec<(u64, u64)>,
    /// The snapshot file it names, if any.
    base: Option<u64>,
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
    let (version, mut at) = version_of(&data);
    if version == 0 || version > FORMAT_VERSION {
        return Err(format!(
            "{}: log format version {version}, but this build reads versions 1 to \
             {FORMAT_VERSION}; run the clusterconsensus that wrote it (or a newer one)",
            path.display()
        ));
    }
    let mut stored = Stored::default();
    let mut base = None;
    let mut index = Vec::new();
    while let Some((record, size)) = record_at(&data[at..]) {
        if let Some(e) = record.entries.last() {
            index.push((at as u64, e.seq));
        }
        // Folded by the core's own rule, so what loads is what `Stored::apply` would hold.
        let mut p = Persist::record(record.hard, record.entries, record.snapshot);
        if p.snapshot.is_some() {
            base = None;
        }
        if let Some(seq) = record.base {
            // Entries first, then the compaction: the record holds those after `seq`.
            // The log names this snapshot: it is the stored one (not merely a saved one, which
            // `Stored::save_snapshot` would keep apart until a compaction).
            let snap = read_snapshot(path, seq)?;
            if stored.snapshot.as_ref().is_none_or(|s| s.seq < snap.seq) {
                stored.snapshot = Some(snap);
            }
            stored.entries.retain(|e| e.seq > seq);
            base = Some(seq);
        }
        p.compact = None;
        stored.apply(&p);
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
        index,
        base,
        end: at as u64,
        len: data.len() as u64,
        torn,
    })
}

/// Saves periodic snapshots beside one log (see the module doc); cheap to clone into the
/// thread that writes one.
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    wal: PathBuf,
}

impl SnapshotFiles {
    /// Streams `source` into `<cluster>.snap-<seq>`: a `.tmp` file, the bytes and their
    /// trailer, fsync, rename, fsync of the directory. Returns the bytes written. Blocks for
    /// as long as the state takes to serialize: run it on a thread of its own. On failure the
    /// `.tmp` is removed (or left for the next open) and nothing else changed.
    pub fn save(&self, seq: u64, mut source: impl SnapshotSource) -> Result<u64, String> {
        let tmp = snapshot_path(&self.wal, seq, true);
        let ctx = |what: &str, e: std::io::Error| err(&format!("{what} {}", tmp.display()), e);
        let written = (|| {
            let file = File::create(&tmp).map_err(|e| ctx("create", e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
            let mut crc = crc32fast::Hasher::new();
            let mut len = 0u64;
            let mut chunk = Vec::with_capacity(1 << 20);
            loop {
                chunk.clear();
                let more = source.fill(&mut chunk, 1 << 20);
                crc.update(&chunk);
                len += chunk.len() as u64;
                std::io::Write::write_all(&mut out, &chunk).map_err(|e| ctx("write", e))?;
                if !more {
                    break;
                }
            }
            let mut trailer = [0u8; TRAILER];
            trailer[..8].copy_from_slice(&len.to_le_bytes());
            trailer[8..].copy_from_slice(&crc.finalize().to_le_bytes());
            std::io::Write::write_all(&mut out, &trailer).map_err(|e| ctx("write", e))?;
            std::io::Write::flush(&mut out).map_err(|e| ctx("write", e))?;
            drop(out);
            file.sync_all().map_err(|e| ctx("sync", e))?;
            Ok(len)
        })();
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dst = snapshot_path(&self.wal, seq, false);
        std::fs::rename(&tmp, &dst)
            .map_err(|e| err(&format!("rename {} to {}", tmp.display(), dst.display()), e))?;
        sync_dir(self.wal.parent().unwrap_or(Path::new(".")))?;
        Ok(len)
    }
}

/// `<cluster>.snap-<seq>` (`tmp`: with `.tmp` after it) beside the log `wal`.
fn snapshot_path(wal: &Path, seq: u64, tmp: bool) -> PathBuf {
    let tail = if tmp { ".tmp" } else { "" };
    wal.with_extension(format!("snap-{seq}{tail}"))
}

/// The snapshot files beside the log `wal`: (seq, is a `.tmp`).
fn snapshot_files(wal: &Path) -> Result<Vec<(u64, bool)>, String> {
    let dir = wal.parent().unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.snap-",
        wal.file_stem().unwrap_or_default().to_string_lossy()
    );
    let mut found = Vec::new();
    let list = std::fs::read_dir(dir).map_err(|e| err(&format!("list {}", dir.display()), e))?;
    for f in list {
        let f = f.map_err(|e| err(&format!("list {}", dir.display()), e))?;
        let name = f.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let (digits, tmp) = match rest.strip_suffix(".tmp") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if let Ok(seq) = digits.parse::<u64>() {
            found.push((seq, tmp));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes the snapshot files below `seq` that a compaction superseded (a failure is only
/// logged: the next open removes what is left).
fn remove_snapshots_below(wal: &Path, seq: u64) {
    let Ok(files) = snapshot_files(wal) else {
        return;
    };
    for (s, tmp) in files {
        if !tmp && s < seq {
            let f = snapshot_path(wal, s, false);
            if let Err(e) = std::fs::remove_file(&f) {
                warn!("remove {}: {e}", f.display());
            }
        }
    }
}

/// Reads the snapshot file at `seq` beside the log `wal`, checking its trailer.
fn read_snapshot(wal: &Path, seq: u64) -> Result<Snapshot, String> {
    let path = snapshot_path(wal, seq, false);
    let mut data = std::fs::read(&path).map_err(|e| err(&format!("read {}", path.display()), e))?;
    let bad = |why: &str| format!("{}: {why}; refusing to start", path.display());
    if data.len() < TRAILER {
        return Err(bad("shorter than its trailer"));
    }
    let at = data.len() - TRAILER;
    let len = u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(data[at + 8..].try_into().unwrap_or_default());
    data.truncate(at);
    if len != at as u64 || crc32fast::hash(&data) != crc {
        return Err(bad("damaged (length or CRC-32 does not match)"));
    }
    let data = String::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
    Ok(Snapshot { seq, data })
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
            payload: Payload::Changes(vec![format!("c{seq}")].into()),
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

    /// The length of the version record that starts every new log.
    fn version_len() -> u64 {
        let mut buf = Vec::new();
        encode_version(&mut buf).unwrap();
        buf.len() as u64
    }

    /// Start offsets of the state records in the log (after its version record), which ends at a
    /// header of zeros or the file's end.
    fn offsets(path: &Path) -> Vec<u64> {
        let data = std::fs::read(path).unwrap();
        let (version, mut at) = version_of(&data);
        assert_eq!(version, FORMAT_VERSION);
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
        assert_eq!(size(&dir.wal()), version_len());
        assert_eq!(
            Store::open(&dir.0, "c1").unwrap().load().unwrap(),
            Stored::default()
        );
        assert_eq!(size(&dir.wal()), version_len());
        // An empty file (left by a crash at creation) gets its version record too.
        std::fs::write(dir.wal(), b"").unwrap();
        Store::open(&dir.0, "c1").unwrap();
        assert_eq!(offsets(&dir.wal()), Vec::<u64>::new());
        assert_eq!(size(&dir.wal()), version_len());
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
        let big = Payload::Changes(vec!["x".repeat(10_000)].into());
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
        assert_eq!(offsets(&dir.wal()), [version_len()]);
        let mut buf = Vec::new();
        encode(&mut buf, &p).unwrap();
        assert_eq!(after, version_len() + buf.len() as u64);
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

    /// Rewrites the log's version record to say `version`.
    fn set_version(wal: &Path, version: u32) {
        let data = std::fs::read(wal).unwrap();
        let (_, head) = version_of(&data);
        assert!(head > 0);
        let mut buf = Vec::new();
        frame(&mut buf, |b| {
            serde_json::to_writer(b, &VersionRecord { version })
        })
        .unwrap();
        buf.extend_from_slice(&data[head..]);
        std::fs::write(wal, buf).unwrap();
    }

    #[test]
    fn new_log_starts_with_its_version_record() {
        let dir = TempDir::new("version");
        four(&dir.0);
        let data = std::fs::read(dir.wal()).unwrap();
        let (body, size) = frame_at(&data).unwrap();
        assert_eq!(body, br#"{"version":3}"#);
        assert_eq!(version_of(&data), (3, size));
        assert_eq!(offsets(&dir.wal())[0], size as u64);
    }

    #[test]
    fn future_version_is_refused_naming_both_versions() {
        let dir = TempDir::new("future");
        four(&dir.0);
        set_version(&dir.wal(), 4);
        let data = std::fs::read(dir.wal()).unwrap();
        let e = Store::open(&dir.0, "c1").unwrap_err();
        assert_eq!(
            e,
            format!(
                "{}: log format version 4, but this build reads versions 1 to 3; run the \
                 clusterconsensus that wrote it (or a newer one)",
                dir.wal().display()
            )
        );
        assert_eq!(std::fs::read(dir.wal()).unwrap(), data);
        set_version(&dir.wal(), 0);
        let e = Store::open(&dir.0, "c1").unwrap_err();
        assert!(
            e.contains(": log format version 0, but this build reads versions 1 to 3"),
            "{e}"
        );
    }

    #[test]
    fn version_1_log_without_version_record_is_read_and_extended() {
        let dir = TempDir::new("v1");
        std::fs::create_dir_all(&dir.0).unwrap();
        // Version 1: state records from the first byte, no version record.
        let mut model = Stored::default();
        let mut buf = Vec::new();
        for id in 1..=3 {
            let p = persist(id, vec![entry(id)], None);
            encode(&mut buf, &p).unwrap();
            model.apply(&p);
        }
        std::fs::write(dir.wal(), &buf).unwrap();

        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        let p = persist(4, vec![entry(4)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        drop(store);
        let data = std::fs::read(dir.wal()).unwrap();
        assert_eq!(version_of(&data), (1, 0));
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // Compaction writes a log of the current version.
        let p = persist(6, vec![entry(6)], Some(5));
        store.apply(&p).unwrap();
        model.apply(&p);
        drop(store);
        let data = std::fs::read(dir.wal()).unwrap();
        assert_eq!(version_of(&data).0, 3);
        assert_eq!(Store::open(&dir.0, "c1").unwrap().load().unwrap(), model);
    }

    /// A kv state of `n` keys at `seq`, and its snapshot text.
    fn kv_state(n: u64) -> (clusterconsensus::kv::KvStore, String) {
        use clusterconsensus::StateMachine;
        let mut kv = clusterconsensus::kv::KvStore::new();
        for i in 0..n {
            let c = clusterconsensus::kv::KvChange::set(format!("k{i}"), "v").encode();
            let _ = kv.apply(i + 1, &c);
        }
        let text = clusterconsensus::snapshot_to_string(kv.snapshot()).unwrap();
        (kv, text)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_saved_snapshot_file_then_its_compaction_leave_a_small_log_naming_it() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("snapfile");
        let mut model = four(&dir.0).pop().unwrap();
        let store = Store::open(&dir.0, "c1").unwrap();
        let (kv, text) = kv_state(3000);
        let files = store.snapshot_files().unwrap();
        // Streamed in parts, with a trailer.
        let bytes = files.save(3, kv.snapshot()).unwrap();
        assert_eq!(bytes, text.len() as u64);
        assert_eq!(
            size(&dir.0.join("c1.snap-3")),
            text.len() as u64 + TRAILER as u64
        );
        model.save_snapshot(Snapshot {
            seq: 3,
            data: text.clone(),
        });
        // Entry 5 arrives while the snapshot is written; the compaction keeps 4 and 5.
        let p = persist(5, vec![entry(5)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        let c = Persist::compaction(hard(6), vec![entry(6)], 3);
        store.apply(&c).unwrap();
        model.apply(&c);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(offsets(&dir.wal()).len(), 1);
        assert!(size(&dir.wal()) < 1024, "the log holds no state");
        // A later snapshot supersedes it: the older file is deleted at its compaction.
        files.save(6, kv.snapshot()).unwrap();
        model.save_snapshot(Snapshot {
            seq: 6,
            data: text.clone(),
        });
        let c = Persist::compaction(hard(6), vec![], 6);
        store.apply(&c).unwrap();
        model.apply(&c);
        assert_eq!(names(&dir.0), ["c1.snap-6", "c1.wal"]);
        drop(store);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert!(model.entries.is_empty());
    }

    #[test]
    fn a_crash_at_any_point_of_a_snapshot_save_loses_nothing() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("snapcrash");
        let model = four(&dir.0).pop().unwrap();
        let (kv, text) = kv_state(100);
        // Crash during the write: a `.tmp` is left; reopening removes it, the log is whole.
        std::fs::write(dir.0.join("c1.snap-4.tmp"), &text.as_bytes()[..50]).unwrap();
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(names(&dir.0), ["c1.wal"]);
        // Crash after the rename, before the compaction: the file is not named by the log,
        // so reopening removes it and the log still holds every entry.
        store
            .snapshot_files()
            .unwrap()
            .save(4, kv.snapshot())
            .unwrap();
        assert_eq!(names(&dir.0), ["c1.snap-4", "c1.wal"]);
        drop(store);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(names(&dir.0), ["c1.wal"]);
        // A compaction whose file is missing keeps the entries (never emitted by the core).
        let c = Persist::compaction(hard(5), vec![entry(5)], 4);
        store.apply(&c).unwrap();
        let mut want = model.clone();
        want.apply(&Persist::record(hard(5), vec![entry(5)], None));
        drop(store);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), want);
        // After the compaction: restart holds the snapshot and the entries after it.
        store
            .snapshot_files()
            .unwrap()
            .save(4, kv.snapshot())
            .unwrap();
        store
            .apply(&Persist::compaction(hard(5), vec![], 4))
            .unwrap();
        drop(store);
        let stored = Store::open(&dir.0, "c1").unwrap().load().unwrap();
        assert_eq!(
            stored.snapshot.as_ref().map(|s| (s.seq, &s.data)),
            Some((4, &text))
        );
        assert_eq!(
            stored.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [5]
        );
    }

    #[test]
    fn a_snapshot_file_that_cannot_be_written_changes_nothing() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("snapfail");
        let model = four(&dir.0).pop().unwrap();
        let store = Store::open(&dir.0, "c1").unwrap();
        // A directory where the `.tmp` goes: the create fails (even for root).
        std::fs::create_dir(dir.0.join("c1.snap-4.tmp")).unwrap();
        let (kv, _) = kv_state(10);
        let e = store
            .snapshot_files()
            .unwrap()
            .save(4, kv.snapshot())
            .unwrap_err();
        assert!(e.starts_with("create "), "{e}");
        std::fs::remove_dir(dir.0.join("c1.snap-4.tmp")).unwrap();
        // The log is untouched and still takes writes; the next job succeeds.
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(names(&dir.0), ["c1.wal"]);
        store
            .snapshot_files()
            .unwrap()
            .save(4, kv.snapshot())
            .unwrap();
    }

    #[test]
    fn a_compaction_inside_a_record_keeps_the_entries_after_it() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("snapmid");
        let mut model = four(&dir.0).pop().unwrap();
        let store = Store::open(&dir.0, "c1").unwrap();
        let p = persist(7, vec![entry(5), entry(6), entry(7)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        let (kv, text) = kv_state(5);
        store
            .snapshot_files()
            .unwrap()
            .save(6, kv.snapshot())
            .unwrap();
        model.save_snapshot(Snapshot { seq: 6, data: text });
        let c = Persist::compaction(hard(8), vec![entry(8)], 6);
        store.apply(&c).unwrap();
        model.apply(&c);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [7, 8]
        );
        assert_eq!(store.load().unwrap(), model);
        // The next compaction reads back from the new log.
        let q = persist(9, vec![entry(9)], None);
        store.apply(&q).unwrap();
        model.apply(&q);
        store
            .snapshot_files()
            .unwrap()
            .save(8, kv.snapshot())
            .unwrap();
        let text = clusterconsensus::snapshot_to_string(kv.snapshot()).unwrap();
        model.save_snapshot(Snapshot { seq: 8, data: text });
        let c = Persist::compaction(hard(9), vec![], 8);
        store.apply(&c).unwrap();
        model.apply(&c);
        drop(store);
        assert_eq!(Store::open(&dir.0, "c1").unwrap().load().unwrap(), model);
        assert_eq!(model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [9]);
    }

    #[test]
    fn a_damaged_snapshot_file_refuses_to_open() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("snapdamage");
        four(&dir.0);
        let store = Store::open(&dir.0, "c1").unwrap();
        let (kv, _) = kv_state(100);
        store
            .snapshot_files()
            .unwrap()
            .save(4, kv.snapshot())
            .unwrap();
        store
            .apply(&Persist::compaction(hard(4), vec![], 4))
            .unwrap();
        drop(store);
        let f = dir.0.join("c1.snap-4");
        let mut data = std::fs::read(&f).unwrap();
        data[10] ^= 1;
        std::fs::write(&f, data).unwrap();
        let e = Store::open(&dir.0, "c1").unwrap_err();
        assert_eq!(
            e,
            format!(
                "{}: damaged (length or CRC-32 does not match); refusing to start",
                f.display()
            )
        );
    }

    #[test]
    fn a_version_2_log_with_its_snapshot_inside_is_read_and_upgraded() {
        use clusterconsensus::StateMachine;
        let dir = TempDir::new("v2");
        let mut model = four(&dir.0).pop().unwrap();
        // What version 2 wrote at a periodic snapshot: the snapshot inside the log.
        let store = Store::open(&dir.0, "c1").unwrap();
        let (kv, text) = kv_state(10);
        let p = Persist::record(hard(5), vec![], Some(Snapshot { seq: 5, data: text }));
        store.apply(&p).unwrap();
        model.apply(&p);
        drop(store);
        set_version(&dir.wal(), 2);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        let q = persist(6, vec![entry(6)], None);
        store.apply(&q).unwrap();
        model.apply(&q);
        // Its first compaction makes it version 3, the snapshot in a file.
        store
            .snapshot_files()
            .unwrap()
            .save(6, kv.snapshot())
            .unwrap();
        let text = clusterconsensus::snapshot_to_string(kv.snapshot()).unwrap();
        model.save_snapshot(Snapshot { seq: 6, data: text });
        let c = Persist::compaction(hard(6), vec![], 6);
        store.apply(&c).unwrap();
        model.apply(&c);
        drop(store);
        assert_eq!(version_of(&std::fs::read(dir.wal()).unwrap()).0, 3);
        assert_eq!(Store::open(&dir.0, "c1").unwrap().load().unwrap(), model);
    }

    #[test]
    fn fault_seam_parses_write_and_fsync() {
        assert_eq!(
            Fault::parse("fsync:3"),
            Ok(Fault {
                op: FaultOp::Fsync,
                nth: 3
            })
        );
        assert_eq!(
            Fault::parse("write:1"),
            Ok(Fault {
                op: FaultOp::Write,
                nth: 1
            })
        );
        for bad in ["fsync:0", "fsync", "disk:2", "write:x", ""] {
            assert_eq!(
                Fault::parse(bad),
                Err(format!(
                    "CC_TEST_DISK_FAULT={bad:?}: expected write:N or fsync:N with N >= 1"
                ))
            );
        }
    }

    /// Applies four Persists with `fault` injected: the first two succeed, the third fails
    /// with `expected`, the fourth is refused. Returns the models after each, as [`four`].
    fn four_with_fault(dir: &Path, fault: Fault, expected: &str) -> Vec<Stored> {
        let store = Store::open_with(dir, "c1", Some(fault)).unwrap();
        let mut model = Stored::default();
        let mut models = vec![model.clone()];
        for id in 1..=4 {
            let p = persist(id, vec![entry(id)], None);
            let res = store.apply(&p);
            match id {
                1 | 2 => res.unwrap(),
                3 => assert_eq!(res, Err(expected.to_string())),
                _ => assert_eq!(
                    res,
                    Err(format!(
                        "{}: an earlier write failed",
                        dir.join("c1.wal").display()
                    ))
                ),
            }
            model.apply(&p);
            models.push(model.clone());
        }
        models
    }

    #[test]
    fn failed_fsync_fails_that_apply_and_every_later_one() {
        let dir = TempDir::new("fault-fsync");
        let fault = Fault {
            op: FaultOp::Fsync,
            nth: 3,
        };
        let expected = format!(
            "sync {}: injected I/O error (CC_TEST_DISK_FAULT=fsync:3)",
            dir.wal().display()
        );
        let models = four_with_fault(&dir.0, fault, &expected);
        // The third record was written, only its sync failed: it may come back, as after a
        // crash between write and sync (it was never acknowledged either way).
        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(store.load().unwrap(), models[3]);
        assert_eq!(offsets(&dir.wal()).len(), 3);
    }

    #[test]
    fn failed_write_leaves_a_torn_tail_that_reopen_cuts() {
        let dir = TempDir::new("fault-write");
        let fault = Fault {
            op: FaultOp::Write,
            nth: 3,
        };
        let expected = format!(
            "write {}: injected I/O error (CC_TEST_DISK_FAULT=write:3)",
            dir.wal().display()
        );
        let models = four_with_fault(&dir.0, fault, &expected);
        // Half of the third record, after the second.
        let torn = offsets(&dir.wal())[2];
        let data = std::fs::read(dir.wal()).unwrap();
        assert_ne!(data[torn as usize..torn as usize + 4], [0; 4]);
        assert!(record_at(&data[torn as usize..]).is_none());

        let store = Store::open(&dir.0, "c1").unwrap();
        assert_eq!(size(&dir.wal()), torn);
        let mut model = models[2].clone();
        assert_eq!(store.load().unwrap(), model);
        let p = persist(9, vec![entry(9)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        drop(store);
        assert_eq!(Store::open(&dir.0, "c1").unwrap().load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 9]
        );
    }

    #[test]
    fn failed_compaction_leaves_the_old_log() {
        let dir = TempDir::new("fault-compact");
        let mut model = four(&dir.0).pop().unwrap();
        let fault = Fault {
            op: FaultOp::Write,
            nth: 1,
        };
        let store = Store::open_with(&dir.0, "c1", Some(fault)).unwrap();
        let e = store
            .apply(&persist(6, vec![entry(6)], Some(5)))
            .unwrap_err();
        assert_eq!(
            e,
            format!(
                "write {}: injected I/O error (CC_TEST_DISK_FAULT=write:1)",
                dir.0.join("c1.wal.tmp").display()
            )
        );
        drop(store);
        let store = Store::open(&dir.0, "c1").unwrap();
        assert!(!dir.0.join("c1.wal.tmp").exists());
        assert_eq!(store.load().unwrap(), model);
        let p = persist(7, vec![entry(7)], None);
        store.apply(&p).unwrap();
        model.apply(&p);
        assert_eq!(store.load().unwrap(), model);
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
                payload: Payload::Changes(vec![change.clone()].into()),
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
