//! Durable storage of one participant: one redb database file per cluster.
//!
//! The core says what to store ([`Persist`]) and this module stores it exactly as
//! [`Stored::apply`] describes, as one write transaction committed with
//! [`Durability::Immediate`] (redb fsyncs before `commit` returns). Nothing else is written, so
//! after `kill -9` the file holds the state of the last [`Persist`] that returned, never half of
//! one.
//!
//! Layout: table `meta` holds `hard` (the [`HardState`](clusterconsensus::HardState), JSON) and
//! `snapshot` (the [`Snapshot`](clusterconsensus::Snapshot), JSON); table `entries` maps each
//! committed seq to its payload (JSON). JSON keeps the file inspectable and reuses the core's
//! serde types; these values are small next to an fsync.

use std::path::{Path, PathBuf};

use clusterconsensus::{Entry, Persist, Stored};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// Where one cluster's state lives: a redb file, or nowhere (`--memory`).
pub enum Store {
    Disk { db: Database, path: PathBuf },
    Memory,
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
    /// Opens (or creates) `<dir>/<cluster>.redb`.
    pub fn open(dir: &Path, cluster: &str) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| err(&format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("{cluster}.redb"));
        let db =
            Database::create(&path).map_err(|e| err(&format!("open {}", path.display()), e))?;
        // Create the tables once so that reads of a fresh file find them.
        let tx = db.begin_write().map_err(|e| err("begin", e))?;
        tx.open_table(META).map_err(|e| err("meta table", e))?;
        tx.open_table(ENTRIES)
            .map_err(|e| err("entries table", e))?;
        tx.commit().map_err(|e| err("commit", e))?;
        Ok(Store::Disk { db, path })
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Store::Disk { path, .. } => Some(path),
            Store::Memory => None,
        }
    }

    /// Everything stored, for [`Participant::restore`](clusterconsensus::Participant::restore).
    pub fn load(&self) -> Result<Stored, String> {
        let Store::Disk { db, .. } = self else {
            return Ok(Stored::default());
        };
        let tx = db.begin_read().map_err(|e| err("begin read", e))?;
        let meta = tx.open_table(META).map_err(|e| err("meta table", e))?;
        let mut stored = Stored::default();
        if let Some(v) = meta.get("hard").map_err(|e| err("read hard state", e))? {
            stored.hard =
                Some(serde_json::from_slice(v.value()).map_err(|e| err("hard state", e))?);
        }
        if let Some(v) = meta.get("snapshot").map_err(|e| err("read snapshot", e))? {
            stored.snapshot =
                Some(serde_json::from_slice(v.value()).map_err(|e| err("snapshot", e))?);
        }
        let entries = tx
            .open_table(ENTRIES)
            .map_err(|e| err("entries table", e))?;
        for row in entries.iter().map_err(|e| err("read entries", e))? {
            let (seq, payload) = row.map_err(|e| err("read entry", e))?;
            let payload = serde_json::from_slice(payload.value())
                .map_err(|e| err(&format!("entry {}", seq.value()), e))?;
            stored.entries.push(Entry {
                seq: seq.value(),
                payload,
            });
        }
        Ok(stored)
    }

    /// Applies one [`Persist`] as one durable transaction (the order of [`Stored::apply`]):
    /// snapshot (dropping every entry), entries, hard state. Blocks for the fsync.
    pub fn apply(&self, p: &Persist) -> Result<(), String> {
        let Store::Disk { db, .. } = self else {
            return Ok(());
        };
        let mut tx = db.begin_write().map_err(|e| err("begin write", e))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err("durability", e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err("meta table", e))?;
            let mut entries = tx
                .open_table(ENTRIES)
                .map_err(|e| err("entries table", e))?;
            if let Some(s) = &p.snapshot {
                let v = serde_json::to_vec(s).map_err(|e| err("encode snapshot", e))?;
                meta.insert("snapshot", v.as_slice())
                    .map_err(|e| err("write snapshot", e))?;
                entries
                    .retain(|_, _| false)
                    .map_err(|e| err("drop entries", e))?;
            }
            for e in &p.entries {
                let v = serde_json::to_vec(&e.payload).map_err(|x| err("encode entry", x))?;
                entries
                    .insert(e.seq, v.as_slice())
                    .map_err(|x| err("write entry", x))?;
            }
            let v = serde_json::to_vec(&p.hard).map_err(|e| err("encode hard state", e))?;
            meta.insert("hard", v.as_slice())
                .map_err(|e| err("write hard state", e))?;
        }
        tx.commit().map_err(|e| err("commit", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterconsensus::{HardState, Payload, Snapshot, Status};

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
            members_version: 0,
        }
    }

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            payload: Payload::Changes(vec![format!("c{seq}")]),
        }
    }

    #[test]
    fn persists_survive_reopen_like_stored_apply() {
        let dir = std::env::temp_dir().join(format!("cc-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut model = Stored::default();
        let steps = vec![
            Persist {
                id: 1,
                hard: hard(0),
                entries: vec![],
                snapshot: None,
            },
            Persist {
                id: 2,
                hard: hard(2),
                entries: vec![entry(1), entry(2)],
                snapshot: None,
            },
            Persist {
                id: 3,
                hard: hard(4),
                entries: vec![entry(4)],
                snapshot: Some(Snapshot {
                    seq: 3,
                    data: "{}".into(),
                }),
            },
            Persist {
                id: 4,
                hard: hard(5),
                entries: vec![entry(5)],
                snapshot: None,
            },
        ];
        {
            let store = Store::open(&dir, "c1").unwrap();
            assert_eq!(store.load().unwrap(), Stored::default());
            for p in &steps {
                store.apply(p).unwrap();
                model.apply(p);
                assert_eq!(store.load().unwrap(), model);
            }
        }
        let store = Store::open(&dir, "c1").unwrap();
        assert_eq!(store.load().unwrap(), model);
        assert_eq!(
            model.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5]
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
