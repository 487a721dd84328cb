//! The change stream: `GET /_clusterc/<id>/watch?from=SEQ` follows the cluster's committed
//! entries as this node applies them, on any member (follower or master).
//!
//! ```text
//! id: 7
//! data: {"seq":7,"chg":["{\"op\":\"set\",\"key\":\"a\",\"value\":\"1\"}"]}
//!
//! id: 8
//! event: members
//! data: {"seq":8,"members":["http://a","http://b"],"learners":[]}
//!
//! event: progress
//! data: {"commit":8}
//!
//! event: error
//! data: {"code":"ERR_GAP","err":"...","oldest":120}
//! ```
//!
//! - One event per committed entry from `from` on, in commit order; an entry's `id` is its seq,
//!   so `Last-Event-ID: S` (which overrides `from`) resumes after S, on this node or another.
//!   Entries without changes (a new master's confirmation) are events too, with `"chg":[]`:
//!   without a prefix the seqs a watcher sees are consecutive, which is how it knows it missed
//!   nothing.
//! - `event: progress` at least every second while nothing else was sent: everything up to
//!   `commit` was sent (or filtered out).
//! - `event: error`, then the end of the stream: `ERR_GAP` with `oldest` when `from` is older
//!   than what this node holds (re-read the state, then watch from after the read: as with
//!   etcd's compacted revisions, the entries before `oldest` are gone from here); `ERR_STATE`
//!   when the watcher fell behind (its next entry left the window while it was not reading),
//!   when the node installed a snapshot over entries the watcher still needed, or when the node
//!   left the cluster. After `ERR_STATE` resume with `Last-Event-ID` on this node or another.
//! - `wait=MS` (long poll) answers JSON instead: `{"events":[DATA, ...],"commit":N}` as soon as
//!   there is an event, or with no events once `MS` passed; a gap is `410` with the error body.
//!
//! **Where old entries come from.** The node keeps a window of the entries it applied last, in
//! memory, bounded by a count and by bytes ([`Limits`](crate::Limits): `watch_window`,
//! `watch_window_bytes`); it starts empty when the node starts, and again when the node
//! installs a snapshot. A `from` older than the window is a gap.
//!
//! **Cost.** Each entry is serialized once, on the cluster's task, into the window; watchers
//! share those bytes (reference-counted, written as they are: no copy per watcher). A watcher
//! is a response body that hyper polls when the connection can take more, so a consumer that
//! does not read costs a cursor and the handful of events hyper has queued, not a buffer that
//! grows: once its next entry has left the window it is sent `ERR_STATE` and the stream ends
//! (as soon as the connection moves again). One task per cluster wakes the watchers that wait
//! (after new entries, and every [`TICK`] for progress), so the cluster's task does not do work
//! in proportion to the number of watchers; under load it spaces its rounds (see
//! [`FAN_OUT_EVERY`]), so each watcher takes many entries per wake-up and per write, and wakes
//! them in slices, so the node's other tasks run between. Before each round it joins the entries
//! since the last one into a run, once: every watcher it wakes writes a slice of that run (no
//! copy, no allocation per watcher). A prefix watcher parses the changes of each entry and, when
//! it keeps only some of them, serializes its own copy. A connection that opens with a stream is
//! served on threads of their own at a lower priority ([`STREAM_NICE`]): the kernel's copying
//! of every event once per watcher, most of what a thousand watchers cost, then takes the time
//! the consensus work leaves rather than delaying it.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use clusterconsensus::{ErrorCode, Event, Payload};
use hyper::body::{Body, Frame};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tracing::warn;

use crate::reads::ChangeFilter;

/// How often idle watchers are woken to send progress: a watcher that sent nothing since the
/// previous tick sends `event: progress`, so an idle stream carries one at least every second.
pub const TICK: Duration = Duration::from_millis(500);
/// After waking the waiting watchers the fan-out waits at least this, and [`FAN_OUT_PER_WATCHER`]
/// for each watcher it woke, before it wakes them again: under load, entries come far more
/// often, and each watcher then takes all the new ones at once, in one write, rather than being
/// woken and writing once per entry. The cost of a round (a wake-up and a write per watcher) is
/// what it is; spacing the rounds in proportion bounds the share of the machine the watchers
/// take whatever the commit rate: 1,000 watchers are woken at most 10 times a second (a
/// delivery delay of at most 100 ms under load). An entry after a quiet spell goes out at once
/// (to the first [`FAN_OUT_SLICE`] watchers; the rest follow over the round).
pub const FAN_OUT_EVERY: Duration = Duration::from_millis(10);
pub const FAN_OUT_PER_WATCHER: Duration = Duration::from_micros(100);
/// The fan-out wakes this many watchers at a time, [`FAN_OUT_PER_WATCHER`] apiece apart: a
/// round's writes are spread over its interval, so the node's other tasks (the cluster's task,
/// the peers' requests, the clients' submits) and the machine's other processes run between
/// slices rather than behind a thousand watchers' writes. The first slice goes at once.
pub const FAN_OUT_SLICE: usize = 50;
/// The most bytes of events a watch stream joins into one frame.
const FRAME_BYTES: usize = 256 << 10;
/// Entries a watcher takes from the window at a time.
const BATCH: usize = 64;
/// The most bytes of runs a window keeps: they are copies of its newest entries' events, so
/// this much memory on top of the window's own bytes; a watcher further behind than the runs
/// reach takes its entries one by one (joined into a frame of its own, as before runs).
const RUN_BYTES: usize = 8 << 20;
/// The most events, and bytes of them, one long-poll answer carries.
const POLL_EVENTS: usize = 1000;
const POLL_BYTES: usize = 4 << 20;

/// One committed entry as every watcher sends it.
#[derive(Clone, Debug)]
struct Item {
    seq: u64,
    /// The whole event: `id: S\n[event: members\n]data: JSON\n\n`.
    sse: Bytes,
    /// Where the JSON data lies in `sse`.
    data: Range<usize>,
    members: bool,
}

impl Item {
    fn new(seq: u64, members: bool, data: &[u8]) -> Item {
        let head = if members {
            format!("id: {seq}\nevent: members\ndata: ")
        } else {
            format!("id: {seq}\ndata: ")
        };
        let mut sse = Vec::with_capacity(head.len() + data.len() + 2);
        sse.extend_from_slice(head.as_bytes());
        sse.extend_from_slice(data);
        sse.extend_from_slice(b"\n\n");
        Item {
            seq,
            data: head.len()..head.len() + data.len(),
            sse: Bytes::from(sse),
            members,
        }
    }

    /// `{"seq":S,"chg":[...]}` (written by hand: `seq` first, as the protocol shows it).
    fn changes<T: serde::Serialize>(seq: u64, chg: &[T]) -> Item {
        let mut data = format!("{{\"seq\":{seq},\"chg\":").into_bytes();
        data.extend_from_slice(&serde_json::to_vec(chg).unwrap_or_default());
        data.push(b'}');
        Item::new(seq, false, &data)
    }

    /// `{"seq":S,"members":[...],"learners":[...]}`.
    fn members(seq: u64, members: &[String], learners: &[&str]) -> Item {
        let list = |l: Vec<u8>| String::from_utf8(l).unwrap_or_default();
        let data = format!(
            "{{\"seq\":{seq},\"members\":{},\"learners\":{}}}",
            list(serde_json::to_vec(members).unwrap_or_default()),
            list(serde_json::to_vec(learners).unwrap_or_default()),
        );
        Item::new(seq, true, data.as_bytes())
    }

    /// The event's data: the JSON object alone (what a long poll answers).
    fn data(&self) -> Bytes {
        self.sse.slice(self.data.clone())
    }

    /// This entry as a watcher with `filter` sees it: only the changes it keeps, or nothing
    /// when it keeps none. Membership entries always pass.
    fn filtered(&self, filter: &ChangeFilter) -> Option<Item> {
        #[derive(Deserialize)]
        struct Entry {
            chg: Vec<String>,
        }
        if self.members {
            return Some(self.clone());
        }
        let entry: Entry = serde_json::from_slice(&self.sse[self.data.clone()]).ok()?;
        let keep: Vec<&String> = entry.chg.iter().filter(|c| filter(c)).collect();
        match keep.len() {
            0 => None,
            n if n == entry.chg.len() => Some(self.clone()),
            _ => Some(Item::changes(self.seq, &keep)),
        }
    }
}

/// Consecutive entries' events joined once, by the fan-out, for every watcher that takes them:
/// a watcher woken in a round writes a slice of the round's run (reference-counted, uncopied)
/// rather than joining its own copy of the same events. Seqs `first ..= last()`; the event
/// of seq `first + i` ends at `ends[i]` in `sse`.
#[derive(Debug)]
struct Run {
    first: u64,
    ends: Vec<usize>,
    sse: Bytes,
}

impl Run {
    fn last(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }

    /// The events of seqs `from ..= to`, both in this run.
    fn slice(&self, from: u64, to: u64) -> Bytes {
        let start = match from - self.first {
            0 => 0,
            i => self.ends[i as usize - 1],
        };
        self.sse.slice(start..self.ends[(to - self.first) as usize])
    }
}

/// Why a watch ended: the `event: error` (or the long poll's error answer)
/// `{"code","err"[,"oldest"]}`. `ERR_GAP`: the node no longer holds the entries asked for
/// (`oldest` is the oldest it has); `ERR_STATE`: try again, here or elsewhere; `ERR_DENIED`:
/// the token is missing or wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchError {
    pub code: ErrorCode,
    pub err: String,
    /// For a gap: the oldest seq this node holds.
    pub oldest: Option<u64>,
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.err)?;
        if let Some(o) = self.oldest {
            write!(f, " (oldest: {o})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WatchError {}

impl WatchError {
    pub(crate) fn gap(from: u64, oldest: u64) -> WatchError {
        WatchError {
            code: ErrorCode::Gap,
            err: format!(
                "this node holds entries from {oldest} on, not {from}: re-read the state and \
                 watch from after it"
            ),
            oldest: Some(oldest),
        }
    }

    pub(crate) fn state(err: String) -> WatchError {
        WatchError {
            code: ErrorCode::State,
            err,
            oldest: None,
        }
    }

    /// The JSON body (of the error event, or of a long poll's error answer).
    pub fn body(&self) -> Vec<u8> {
        let mut v = json!({"code": self.code.as_str(), "err": self.err});
        if let Some(o) = self.oldest {
            v["oldest"] = json!(o);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The whole `event: error`.
    pub fn event(&self) -> Bytes {
        let mut out = b"event: error\ndata: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

fn progress_event(commit: u64) -> Bytes {
    Bytes::from(format!(
        "event: progress\ndata: {{\"commit\":{commit}}}\n\n"
    ))
}

/// The recent entries, seqs `first .. first + items.len()`, contiguous.
#[derive(Debug)]
struct Window {
    items: VecDeque<Item>,
    /// The seq of the first item (of the next one when empty): the oldest this node can serve.
    first: u64,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    /// The runs the fan-out joined, contiguous, oldest first, ending before `sealed`; at most
    /// [`RUN_BYTES`] of them (older entries are taken one by one, as entries after `sealed`).
    runs: VecDeque<Run>,
    run_bytes: usize,
    /// The seq after the last one joined into a run.
    sealed: u64,
    /// Counts resets (snapshots), so a run joined across one is not kept.
    resets: u64,
    /// Why this node serves no watch now (it left the cluster).
    closed: Option<String>,
}

impl Window {
    /// The last seq applied here.
    fn commit(&self) -> u64 {
        self.first + self.items.len() as u64 - 1
    }

    fn push(&mut self, item: Item) {
        let expected = self.first + self.items.len() as u64;
        if item.seq < expected {
            warn!(
                seq = item.seq,
                expected, "watch: an entry applied twice? ignored"
            );
            return;
        }
        if item.seq > expected {
            // Not expected from the core (it applies every seq in order or installs a
            // snapshot); if it happens, watchers before it get ERR_STATE rather than a gap.
            warn!(
                seq = item.seq,
                expected, "watch: entries skipped, window restarts"
            );
            self.reset(item.seq - 1);
        }
        self.bytes += item.sse.len();
        self.items.push_back(item);
        // The newest entry stays whatever its size: a current watcher must be able to read it.
        while self.items.len() > 1
            && (self.items.len() > self.max_items || self.bytes > self.max_bytes)
        {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.sse.len();
                self.first += 1;
            }
        }
        self.trim_runs();
    }

    /// Drops the runs no cursor may take: those before the window, and the oldest past
    /// [`RUN_BYTES`].
    fn trim_runs(&mut self) {
        while let Some(r) = self.runs.front() {
            if r.last() >= self.first && self.run_bytes <= RUN_BYTES {
                break;
            }
            self.run_bytes -= r.sse.len();
            self.runs.pop_front();
        }
    }

    /// The run that holds `seq`, if one does.
    fn run_at(&self, seq: u64) -> Option<&Run> {
        let front = self.runs.front()?;
        if seq < front.first || seq >= self.sealed {
            return None;
        }
        let i = self
            .runs
            .partition_point(|r| r.first <= seq)
            .checked_sub(1)?;
        self.runs.get(i).filter(|r| r.last() >= seq)
    }

    /// The state is now that at commit `seq` (a snapshot): nothing before `seq + 1` is here.
    fn reset(&mut self, seq: u64) {
        self.items.clear();
        self.bytes = 0;
        self.first = seq + 1;
        self.runs.clear();
        self.run_bytes = 0;
        self.sealed = seq + 1;
        self.resets += 1;
    }
}

/// The sizes of a cluster's window.
#[derive(Clone, Copy, Debug)]
pub struct WindowLimits {
    pub entries: usize,
    pub bytes: usize,
}

/// What the cluster's task does to the window, in its order.
#[derive(Debug)]
enum Update {
    Push(Item),
    /// A snapshot at this seq.
    Reset(u64),
    /// Why the node serves no watch now, or `None` again.
    Close(Option<String>),
}

/// One cluster's change stream: the window of recent entries (written by the cluster's task)
/// and the watchers waiting for more.
#[derive(Debug)]
pub struct Hub {
    window: RwLock<Window>,
    /// Updates the cluster's task made while the window was locked (watchers were reading it):
    /// it never waits for the window, since the watchers' threads run at a lower priority and
    /// one of them may hold the lock while it waits for a core. The next update that finds the
    /// window free, or the fan-out's next round, applies them, in order.
    incoming: Mutex<Vec<Update>>,
    /// A membership entry whose member list comes with the next `MembersChanged` (the cluster's
    /// task alone uses it).
    pending_members: Mutex<Option<u64>>,
    /// Watchers waiting for a new entry or a tick, by cursor id.
    waiting: Mutex<BTreeMap<u64, Waker>>,
    /// New entries (or a closed window) for the fan-out task.
    changed: Notify,
    /// Counts [`TICK`]s.
    tick: AtomicU64,
    ids: AtomicU64,
}

impl Hub {
    /// The hub of a cluster whose state is at `commit`.
    pub fn new(commit: u64, limits: WindowLimits) -> Arc<Hub> {
        Arc::new(Hub {
            window: RwLock::new(Window {
                items: VecDeque::new(),
                first: commit + 1,
                bytes: 0,
                max_items: limits.entries.max(1),
                max_bytes: limits.bytes,
                closed: None,
                runs: VecDeque::new(),
                run_bytes: 0,
                sealed: commit + 1,
                resets: 0,
            }),
            incoming: Mutex::new(Vec::new()),
            pending_members: Mutex::new(None),
            waiting: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            tick: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        })
    }

    fn window(&self) -> std::sync::RwLockReadGuard<'_, Window> {
        self.window.read().unwrap_or_else(|e| e.into_inner())
    }

    fn window_mut(&self) -> std::sync::RwLockWriteGuard<'_, Window> {
        self.window.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster's task reports each event of its participant here, in order: committed
    /// entries go into the window (serialized once, before any lock), a snapshot empties it.
    /// Never waits for the window: when watchers are reading it the update is queued for the
    /// next one, or for the fan-out.
    pub fn on_event(&self, e: &Event) {
        let mut updates = Vec::new();
        {
            let mut pending = self
                .pending_members
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match e {
                Event::Committed { seq, payload } => {
                    if let Some(m) = pending.take() {
                        // Its member list never came (not expected): say the entry without it.
                        updates.push(Update::Push(Item::members(m, &[], &[])));
                    }
                    match payload {
                        Payload::Changes(chg) => {
                            updates.push(Update::Push(Item::changes(*seq, chg)))
                        }
                        // The member list after it comes with the `MembersChanged` that follows.
                        _ => *pending = Some(*seq),
                    }
                }
                Event::MembersChanged {
                    members,
                    learners,
                    version,
                } => {
                    if *pending == Some(*version) {
                        *pending = None;
                        let learners: Vec<&str> =
                            learners.iter().map(|l| l.addr.as_str()).collect();
                        updates.push(Update::Push(Item::members(*version, members, &learners)));
                    }
                }
                Event::SnapshotInstalled { seq } => {
                    *pending = None;
                    updates.push(Update::Reset(*seq));
                }
                Event::Removed => updates.push(Update::Close(Some(
                    "this node was removed from the cluster: watch another member".into(),
                ))),
                Event::Joined => updates.push(Update::Close(None)),
                Event::BecameMaster { .. } | Event::LostMastership { .. } => return,
            }
        }
        if updates.is_empty() {
            return;
        }
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(updates);
        let free = match self.window.try_write() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut w) = free {
            self.apply(&mut w);
        }
        self.changed.notify_one();
    }

    /// Applies the queued updates to the window (whose write lock the caller holds), in order.
    fn apply(&self, w: &mut Window) {
        let updates = std::mem::take(&mut *self.incoming.lock().unwrap_or_else(|e| e.into_inner()));
        for u in updates {
            match u {
                Update::Push(item) => w.push(item),
                Update::Reset(seq) => w.reset(seq),
                Update::Close(why) => w.closed = why,
            }
        }
    }

    /// Wakes the watchers that wait: after new entries, and every [`TICK`] (for progress).
    /// Runs for as long as the cluster does.
    pub async fn fan_out(self: Arc<Hub>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = ticker.tick() => {
                    self.tick.fetch_add(1, Ordering::AcqRel);
                }
            }
            self.apply(&mut self.window_mut());
            self.seal();
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            let woken = waiting.len();
            let next_round =
                tokio::time::Instant::now() + FAN_OUT_EVERY.max(FAN_OUT_PER_WATCHER * woken as u32);
            for (i, w) in waiting.into_values().enumerate() {
                w.wake();
                if i % FAN_OUT_SLICE == FAN_OUT_SLICE - 1 && i + 1 < woken {
                    // The round is spread over its interval, a slice at a time: the node's
                    // other work (and the other processes of the machine) runs in between,
                    // rather than waiting behind a burst of a thousand writes.
                    tokio::time::sleep(FAN_OUT_PER_WATCHER * FAN_OUT_SLICE as u32).await;
                }
            }
            // Entries pushed meanwhile leave a permit in `changed`: the next round follows.
            tokio::time::sleep_until(next_round).await;
        }
    }

    /// Joins the entries applied since the last round into runs (of at most [`FRAME_BYTES`]),
    /// once, for all the watchers this round wakes. Copies them outside the window's lock, so
    /// the cluster's task is not held up.
    fn seal(&self) {
        let (from, events, resets) = {
            let w = self.window();
            let from = w.sealed.max(w.first);
            if from > w.commit() {
                return;
            }
            let events: Vec<Bytes> = w
                .items
                .iter()
                .skip((from - w.first) as usize)
                .map(|i| i.sse.clone())
                .collect();
            (from, events, w.resets)
        };
        let mut runs = Vec::new();
        let (mut first, mut sse, mut ends) = (from, Vec::new(), Vec::new());
        for (i, e) in events.iter().enumerate() {
            if !sse.is_empty() && sse.len() + e.len() > FRAME_BYTES {
                runs.push(Run {
                    first,
                    ends: std::mem::take(&mut ends),
                    sse: Bytes::from(std::mem::take(&mut sse)),
                });
                first = from + i as u64;
            }
            sse.extend_from_slice(e);
            ends.push(sse.len());
        }
        runs.push(Run {
            first,
            ends,
            sse: Bytes::from(sse),
        });
        let mut w = self.window_mut();
        if w.resets != resets {
            return;
        }
        if w.sealed != from {
            // Entries left the window before they were joined: the older runs are not
            // contiguous with these (and are before the window).
            w.runs.clear();
            w.run_bytes = 0;
        }
        for r in runs {
            w.sealed = r.last() + 1;
            w.run_bytes += r.sse.len();
            w.runs.push_back(r);
        }
        w.trim_runs();
    }

    /// The last seq applied on this node.
    pub fn commit(&self) -> u64 {
        self.window().commit()
    }

    /// The oldest seq this node can serve.
    #[cfg(test)]
    pub fn oldest(&self) -> u64 {
        self.window().first
    }

    /// A cursor at `from` (`None`: after the last entry applied), or why the node cannot serve
    /// it.
    pub fn cursor(
        self: &Arc<Hub>,
        from: Option<u64>,
        filter: Option<ChangeFilter>,
    ) -> Result<Cursor, WatchError> {
        let w = self.window();
        if let Some(why) = &w.closed {
            return Err(WatchError::state(why.clone()));
        }
        let next = from.unwrap_or(w.commit() + 1).max(1);
        if next < w.first {
            return Err(WatchError::gap(next, w.first));
        }
        drop(w);
        Ok(Cursor {
            hub: self.clone(),
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            next,
            filter,
            tick: self.tick.load(Ordering::Acquire),
        })
    }

    fn wait(&self, id: u64, waker: &Waker) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get(&id) {
            Some(w) if w.will_wake(waker) => {}
            _ => {
                waiting.insert(id, waker.clone());
            }
        }
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// What a cursor found.
#[derive(Debug)]
pub enum Next {
    /// Entries (filtered), and the commit they were read at.
    Items(Vec<ItemRef>, u64),
    /// Entries as the bytes of their events, to be written as they are, one frame each
    /// ([`Cursor::poll_sse`]).
    Sse(Vec<Bytes>),
    /// A tick passed with nothing new: everything up to `commit` was seen.
    Tick(u64),
    /// The watch ends here.
    End(WatchError),
}

/// An entry handed to a watcher.
#[derive(Debug)]
pub struct ItemRef(Item);

impl ItemRef {
    #[cfg(test)]
    pub fn seq(&self) -> u64 {
        self.0.seq
    }
}

/// One watcher's place in a cluster's stream.
pub struct Cursor {
    hub: Arc<Hub>,
    id: u64,
    /// The seq of the next entry to hand out.
    next: u64,
    filter: Option<ChangeFilter>,
    /// The last tick seen.
    tick: u64,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("next", &self.next)
            .field("filtered", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.hub.forget(self.id);
    }
}

impl Cursor {
    /// The next entries (up to `max` of them, or `max_bytes` past the first), or a tick, or the
    /// end; `Pending` (woken by the hub) while there is none of these.
    pub fn poll_next(&mut self, cx: &mut Context<'_>, max: usize, max_bytes: usize) -> Poll<Next> {
        self.poll(cx, max, max_bytes, false)
    }

    /// As [`poll_next`](Self::poll_next), but entries come as [`Next::Sse`] when the cursor has
    /// no filter: slices of the fan-out's runs (shared by every watcher, not copied), and the
    /// entries not in a run joined into one buffer; up to `max` entries (a run is taken whole).
    pub fn poll_sse(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Next> {
        self.poll(cx, max, usize::MAX, true)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        max_bytes: usize,
        sse: bool,
    ) -> Poll<Next> {
        let mut waiting = false;
        loop {
            // The commit up to which everything was handed out: what a progress event says.
            let commit = {
                let w = self.hub.window();
                if let Some(why) = &w.closed {
                    return Poll::Ready(Next::End(WatchError::state(why.clone())));
                }
                if self.next < w.first {
                    return Poll::Ready(Next::End(WatchError::state(format!(
                        "fell behind: entry {} left this node's window (it holds {} on); \
                         resume with Last-Event-ID, here or on another node",
                        self.next, w.first
                    ))));
                }
                let commit = w.commit();
                if sse && self.filter.is_none() && self.next <= commit {
                    let mut out = Vec::new();
                    let mut loose = Vec::new();
                    let mut taken = 0;
                    while self.next <= commit && taken < max && loose.len() < FRAME_BYTES {
                        let from = self.next;
                        if let Some(run) = w.run_at(from) {
                            if !loose.is_empty() {
                                out.push(Bytes::from(std::mem::take(&mut loose)));
                            }
                            let to = run.last().min(commit);
                            out.push(run.slice(from, to));
                            self.next = to + 1;
                        } else {
                            loose.extend_from_slice(&w.items[(from - w.first) as usize].sse);
                            self.next = from + 1;
                        }
                        taken += (self.next - from) as usize;
                    }
                    if !loose.is_empty() {
                        out.push(Bytes::from(loose));
                    }
                    return Poll::Ready(Next::Sse(out));
                }
                if self.next <= commit {
                    let start = (self.next - w.first) as usize;
                    let mut out = Vec::new();
                    let mut bytes = 0;
                    for item in w.items.iter().skip(start) {
                        if out.len() >= max || bytes >= max_bytes {
                            break;
                        }
                        self.next = item.seq + 1;
                        let item = match &self.filter {
                            None => item.clone(),
                            Some(f) => match item.filtered(f) {
                                Some(i) => i,
                                None => continue,
                            },
                        };
                        bytes += item.sse.len();
                        out.push(ItemRef(item));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Next::Items(out, commit));
                    }
                    // All filtered out: look again (the next batch, or wait).
                    continue;
                }
                commit
            };
            let tick = self.hub.tick.load(Ordering::Acquire);
            if tick != self.tick {
                self.tick = tick;
                return Poll::Ready(Next::Tick(commit));
            }
            if waiting {
                return Poll::Pending;
            }
            // Registered before the second look, so an entry pushed in between wakes us.
            self.hub.wait(self.id, cx.waker());
            waiting = true;
        }
    }
}

/// A watch as a response body: hyper polls it when the connection can take more.
pub struct WatchStream {
    cursor: Cursor,
    queue: VecDeque<Bytes>,
    /// Something was sent since the last tick (then no progress is due).
    sent: bool,
    done: bool,
    /// A place among the node's watchers, given back when the stream is dropped.
    _slot: OwnedSemaphorePermit,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("cursor", &self.cursor)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    pub fn new(cursor: Cursor, slot: OwnedSemaphorePermit) -> WatchStream {
        WatchStream {
            cursor,
            queue: VecDeque::new(),
            sent: false,
            done: false,
            _slot: slot,
        }
    }
}

impl Body for WatchStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            // What a wake-up brought goes out in few frames (one chunk and one write each):
            // slices of the fan-out's runs, or (filtered) the entries joined into one.
            match this.cursor.poll_sse(cx, BATCH) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Next::Sse(frames)) => {
                    this.queue.extend(frames);
                    this.sent = true;
                }
                Poll::Ready(Next::Items(items, _)) => {
                    let joined = match &items[..] {
                        [one] => one.0.sse.clone(),
                        _ => {
                            let mut out = Vec::new();
                            for i in &items {
                                out.extend_from_slice(&i.0.sse);
                            }
                            Bytes::from(out)
                        }
                    };
                    this.queue.push_back(joined);
                    this.sent = true;
                }
                Poll::Ready(Next::Tick(commit)) => {
                    if !this.sent {
                        this.queue.push_back(progress_event(commit));
                    }
                    this.sent = false;
                }
                Poll::Ready(Next::End(refusal)) => {
                    this.queue.push_back(refusal.event());
                    this.done = true;
                }
            }
        }
    }
}

/// How much lower than the node's other threads the threads that serve watch streams run
/// (a nice value, Linux): the kernel then runs the consensus work (the cluster's task, the
/// peers' and the clients' requests) first, and the streams' writes, whose cost is mostly the
/// kernel copying every event once per watcher, in the time that is left. A watcher is late by
/// what the machine cannot spare, never the writers; one left too far behind is cut off with
/// `ERR_STATE` as any slow consumer (the window bounds what it may lag).
pub const STREAM_NICE: i32 = 10;
/// Sets [`STREAM_NICE`] for one process (`0`: streams are served with everything else, on the
/// node's own runtime), to measure what the lower priority does (README, Performance, Watchers).
pub const STREAM_NICE_ENV: &str = "CLUSTERCONSENSUS_WATCH_NICE";

/// [`STREAM_NICE`], or what [`STREAM_NICE_ENV`] says (0 to 19).
pub(crate) fn stream_nice() -> i32 {
    static NICE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *NICE.get_or_init(|| {
        std::env::var(STREAM_NICE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map_or(STREAM_NICE, |n| n.clamp(0, 19))
    })
}

/// The runtime that serves watch streams (connections whose first request is a `watch`
/// stream): as many threads as the node's own runtime, each at [`stream_nice`]. One per
/// process, started by the first stream.
fn stream_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("watch-stream")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .expect("a runtime for the watch streams")
    })
}

/// Lowers the calling thread's scheduling priority by [`stream_nice`] (a thread's own nice
/// value on Linux; elsewhere nothing changes).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // `None`: the calling thread (Linux keeps a nice value per thread).
        use rustix::process::{getpriority_process, setpriority_process};
        let now = getpriority_process(None).unwrap_or(0);
        let _ = setpriority_process(None, (now + stream_nice()).min(19));
    }
}

/// Runs a stream's connection on the streams' runtime (see [`STREAM_NICE`]) and waits for it;
/// dropping the returned future (the node stops) ends the connection too. `None`: it panicked.
pub(crate) async fn on_stream_runtime<F>(serve: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(stream_runtime().spawn(serve));
    (&mut task.0).await.ok()
}

/// Whether a connection's first request, as far as it has arrived (`head`), asks for a watch
/// stream: `GET /_clusterc/<id>/watch?...` without `wait=` (a long poll is an ordinary
/// request). Only a complete request line counts; anything else is served as usual.
pub(crate) fn is_stream_request(head: &[u8]) -> bool {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let Ok(line) = std::str::from_utf8(&head[..end]) else {
        return false;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(rest) = path.strip_prefix("/_clusterc/") else {
        return false;
    };
    matches!(rest.split_once('/'), Some((id, "watch")) if !id.is_empty())
        && !query.split('&').any(|p| p.starts_with("wait="))
}

/// A long poll: the entries from the cursor on as soon as there are some, or none once `wait`
/// passed. `Ok(body)` is `{"events":[...],"commit":N}`; `Err` the watch's end (the node left
/// the cluster, or the cursor fell out of the window).
pub async fn long_poll(mut cursor: Cursor, wait: Duration) -> Result<Vec<u8>, WatchError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let next = std::future::poll_fn(|cx| cursor.poll_next(cx, POLL_EVENTS, POLL_BYTES));
        let (items, commit) = match tokio::time::timeout_at(until, next).await {
            Ok(Next::Items(items, commit)) => (items, commit),
            // (`Sse` comes from `poll_sse` alone.)
            Ok(Next::Tick(_) | Next::Sse(..)) => continue,
            Ok(Next::End(refusal)) => return Err(refusal),
            // Nothing came: everything before the cursor was handed out. Not the hub's commit
            // alone: an entry applied after the cursor's last look is not handed out, and a
            // commit past it would tell the client to resume after an entry it never saw.
            Err(_) => (Vec::new(), (cursor.next - 1).min(cursor.hub.commit())),
        };
        let mut out = b"{\"events\":[".to_vec();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&item.0.data());
        }
        out.extend_from_slice(format!("],\"commit\":{commit}}}").as_bytes());
        return Ok(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterconsensus::wire::Learner;
    use serde_json::Value;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    fn hub(entries: usize, bytes: usize) -> Arc<Hub> {
        Hub::new(0, WindowLimits { entries, bytes })
    }

    fn commit(h: &Hub, seq: u64, chg: &[&str]) {
        let chg = chg.iter().map(|c| c.to_string()).collect();
        h.on_event(&Event::Committed {
            seq,
            payload: Payload::Changes(chg),
        });
    }

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(c: &mut Cursor) -> Poll<Next> {
        let waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        c.poll_next(&mut Context::from_waker(&waker), 10, usize::MAX)
    }

    fn seqs(p: Poll<Next>) -> Vec<u64> {
        match p {
            Poll::Ready(Next::Items(items, _)) => items.iter().map(ItemRef::seq).collect(),
            other => panic!("not items: {other:?}"),
        }
    }

    fn sse(p: Poll<Next>) -> Vec<String> {
        match p {
            Poll::Ready(Next::Items(items, _)) => items
                .iter()
                .map(|i| String::from_utf8(i.0.sse.to_vec()).unwrap())
                .collect(),
            other => panic!("not items: {other:?}"),
        }
    }

    fn frames(c: &mut Cursor) -> (Vec<Bytes>, u64) {
        let waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        match c.poll_sse(&mut Context::from_waker(&waker), 64) {
            Poll::Ready(Next::Sse(frames)) => (frames, c.next - 1),
            other => panic!("not sse: {other:?}"),
        }
    }

    #[test]
    fn a_stream_writes_slices_of_the_fan_out_runs_and_the_same_bytes_as_entry_by_entry() {
        let h = hub(100, 1 << 20);
        for seq in 1..=5 {
            commit(&h, seq, &["a"]);
        }
        h.seal();
        commit(&h, 6, &["b"]);
        commit(&h, 7, &["c"]);
        let event =
            |seq: u64, c: &str| format!("id: {seq}\ndata: {{\"seq\":{seq},\"chg\":[\"{c}\"]}}\n\n");
        for from in 1..=7u64 {
            let mut c = h.cursor(Some(from), None).unwrap();
            let (got, commit) = frames(&mut c);
            let want: String = (from..=7)
                .map(|s| event(s, ["a", "a", "a", "a", "a", "b", "c"][s as usize - 1]))
                .collect();
            let joined: Vec<u8> = got.iter().flat_map(|f| f.to_vec()).collect();
            assert_eq!((String::from_utf8(joined).unwrap(), commit), (want, 7));
            // The run's slice, then 6 and 7 joined.
            assert_eq!(got.len(), if from <= 5 { 2 } else { 1 });
            assert!(matches!(poll(&mut c), Poll::Pending));
        }
        // Two watchers at the same place write the same bytes, not copies of them.
        let (a, _) = frames(&mut h.cursor(Some(2), None).unwrap());
        let (b, _) = frames(&mut h.cursor(Some(2), None).unwrap());
        assert_eq!(a[0].as_ptr(), b[0].as_ptr());
        // The next round joins 6 and 7.
        h.seal();
        let (got, _) = frames(&mut h.cursor(Some(4), None).unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Bytes::from(event(6, "b") + &event(7, "c")));
    }

    #[test]
    fn runs_follow_the_window_out_and_a_snapshot_drops_them() {
        let h = hub(3, 1 << 20);
        for seq in 1..=5 {
            commit(&h, seq, &["a"]);
        }
        h.seal();
        assert_eq!(h.oldest(), 3);
        let (got, _) = frames(&mut h.cursor(Some(3), None).unwrap());
        let events = String::from_utf8_lossy(&got[0]).matches("id: ").count();
        assert_eq!((got.len(), events), (1, 3));
        commit(&h, 6, &["a"]);
        commit(&h, 7, &["a"]);
        // 3 and 4 left the window (their run stays only while it holds seqs in the window).
        assert_eq!(h.oldest(), 5);
        let (got, _) = frames(&mut h.cursor(Some(5), None).unwrap());
        assert_eq!(got.len(), 2);
        h.on_event(&Event::SnapshotInstalled { seq: 20 });
        commit(&h, 21, &["z"]);
        let (got, _) = frames(&mut h.cursor(Some(21), None).unwrap());
        assert_eq!(
            got,
            [Bytes::from(
                "id: 21\ndata: {\"seq\":21,\"chg\":[\"z\"]}\n\n"
            )]
        );
        h.seal();
        let w = h.window();
        assert_eq!((w.runs.len(), w.runs[0].first, w.sealed), (1, 21, 22));
    }

    #[test]
    fn entries_and_members_in_the_stream_format() {
        let h = hub(100, 1 << 20);
        commit(&h, 1, &["a", "b\"c"]);
        h.on_event(&Event::Committed {
            seq: 2,
            payload: Payload::Add("http://x".into()),
        });
        h.on_event(&Event::MembersChanged {
            members: vec!["http://w".into(), "http://x".into()],
            learners: vec![Learner {
                addr: "http://l".into(),
                promote: true,
            }],
            version: 2,
        });
        commit(&h, 3, &[]);
        let mut c = h.cursor(Some(1), None).unwrap();
        assert_eq!(
            sse(poll(&mut c)),
            [
                "id: 1\ndata: {\"seq\":1,\"chg\":[\"a\",\"b\\\"c\"]}\n\n",
                "id: 2\nevent: members\ndata: {\"seq\":2,\"members\":[\"http://w\",\"http://x\"],\"learners\":[\"http://l\"]}\n\n",
                "id: 3\ndata: {\"seq\":3,\"chg\":[]}\n\n",
            ]
        );
        assert_eq!(h.commit(), 3);
        assert!(poll(&mut c).is_pending());
    }

    #[test]
    fn the_window_is_bounded_by_count_and_bytes_and_a_late_from_is_a_gap() {
        let h = hub(5, 1 << 20);
        for s in 1..=12 {
            commit(&h, s, &["x"]);
        }
        assert_eq!((h.oldest(), h.commit()), (8, 12));
        let gap = h.cursor(Some(7), None).unwrap_err();
        assert_eq!((gap.code, gap.oldest), (ErrorCode::Gap, Some(8)));
        let body: Value = serde_json::from_slice(&gap.body()).unwrap();
        assert_eq!(body["code"], "ERR_GAP");
        assert_eq!(body["oldest"], 8);
        assert_eq!(
            seqs(poll(&mut h.cursor(Some(8), None).unwrap())),
            [8, 9, 10, 11, 12]
        );
        // No from: from now on.
        let mut now = h.cursor(None, None).unwrap();
        assert!(poll(&mut now).is_pending());
        commit(&h, 13, &["y"]);
        assert_eq!(seqs(poll(&mut now)), [13]);

        // Bytes: `id: 10\ndata: {"seq":10,"chg":["x"]}\n\n` is 37 bytes; 100 bytes hold two.
        let h = hub(1000, 100);
        for s in 1..=10 {
            commit(&h, s, &["x"]);
        }
        assert_eq!(h.oldest(), 9);
        // One entry larger than the bound stays, alone.
        commit(&h, 11, &[&"z".repeat(500)]);
        assert_eq!((h.oldest(), h.commit()), (11, 11));
    }

    #[test]
    fn a_cursor_that_falls_out_of_the_window_ends_with_err_state() {
        let h = hub(3, 1 << 20);
        commit(&h, 1, &["x"]);
        let mut c = h.cursor(Some(1), None).unwrap();
        for s in 2..=6 {
            commit(&h, s, &["x"]);
        }
        match poll(&mut c) {
            Poll::Ready(Next::End(r)) => {
                assert_eq!(r.code, ErrorCode::State);
                assert!(r.err.contains("fell behind"), "{}", r.err);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_snapshot_restarts_the_window() {
        let h = hub(100, 1 << 20);
        commit(&h, 1, &["x"]);
        let mut behind = h.cursor(Some(2), None).unwrap();
        h.on_event(&Event::SnapshotInstalled { seq: 9 });
        assert_eq!((h.oldest(), h.commit()), (10, 9));
        assert!(
            matches!(poll(&mut behind), Poll::Ready(Next::End(r)) if r.code == ErrorCode::State)
        );
        let mut current = h.cursor(Some(10), None).unwrap();
        commit(&h, 10, &["y"]);
        assert_eq!(seqs(poll(&mut current)), [10]);
        assert_eq!(h.cursor(Some(5), None).unwrap_err().oldest, Some(10));
    }

    #[test]
    fn a_filter_keeps_some_changes_and_skips_empty_entries() {
        let h = hub(100, 1 << 20);
        commit(&h, 1, &["keep:1", "drop:1"]);
        commit(&h, 2, &["drop:2"]);
        commit(&h, 3, &["keep:3"]);
        let f: ChangeFilter = Arc::new(|c: &str| c.starts_with("keep"));
        let mut c = h.cursor(Some(1), Some(f)).unwrap();
        assert_eq!(
            sse(poll(&mut c)),
            [
                "id: 1\ndata: {\"seq\":1,\"chg\":[\"keep:1\"]}\n\n",
                "id: 3\ndata: {\"seq\":3,\"chg\":[\"keep:3\"]}\n\n",
            ]
        );
        commit(&h, 4, &["drop:4"]);
        assert!(
            poll(&mut c).is_pending(),
            "an entry without a kept change is skipped"
        );
    }

    #[test]
    fn only_a_watch_stream_request_line_goes_to_the_streams_threads() {
        let yes = [
            &b"GET /_clusterc/c1/watch?from=5 HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"GET /_clusterc/c1/watch HTTP/1.1\r\n",
            b"GET /_clusterc/c1/watch?prefix=a&from=1 HTTP/1.1\n",
        ];
        for head in yes {
            assert!(is_stream_request(head), "{}", String::from_utf8_lossy(head));
        }
        let no = [
            // A long poll is an ordinary request.
            &b"GET /_clusterc/c1/watch?from=5&wait=1000 HTTP/1.1\r\n"[..],
            b"GET /_clusterc/c1/watch?wait=1000 HTTP/1.1\r\n",
            b"POST /_clusterc/c1/watch?from=5 HTTP/1.1\r\n",
            b"OPTIONS /_clusterc/c1/watch HTTP/1.1\r\n",
            b"GET /_clusterc/c1/status HTTP/1.1\r\n",
            b"GET /_clusterc/c1/kv?key=watch HTTP/1.1\r\n",
            b"GET /_clusterc//watch HTTP/1.1\r\n",
            b"GET /_clusterc/c1/watch/x HTTP/1.1\r\n",
            // The request line has not all arrived.
            b"GET /_clusterc/c1/watch?from=5 HTT",
            b"",
            b"\x16\x03\x01\x02\x00\x01",
        ];
        for head in no {
            assert!(
                !is_stream_request(head),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_waiting_cursor_is_woken_by_the_fan_out_and_removal_ends_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = hub(100, 1 << 20);
            tokio::spawn(h.clone().fan_out());
            let mut c = h.cursor(None, None).unwrap();
            let h2 = h.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                commit(&h2, 1, &["x"]);
            });
            loop {
                match std::future::poll_fn(|cx| c.poll_next(cx, 10, usize::MAX)).await {
                    Next::Items(items, commit) => {
                        assert_eq!((items.len(), commit), (1, 1));
                        break;
                    }
                    Next::Tick(_) => {}
                    Next::End(r) => panic!("{r:?}"),
                    Next::Sse(..) => panic!("poll_next gave Sse"),
                }
            }
            // Idle: ticks come.
            let next = std::future::poll_fn(|cx| c.poll_next(cx, 10, usize::MAX)).await;
            assert!(matches!(next, Next::Tick(1)), "{next:?}");
            h.on_event(&Event::Removed);
            let next = std::future::poll_fn(|cx| c.poll_next(cx, 10, usize::MAX)).await;
            assert!(
                matches!(next, Next::End(ref r) if r.code == ErrorCode::State),
                "{next:?}"
            );
            assert!(h.cursor(None, None).is_err());
            h.on_event(&Event::Joined);
            assert!(h.cursor(None, None).is_ok());
        });
    }

    #[test]
    fn a_long_poll_answers_events_or_nothing_after_the_wait() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = hub(100, 1 << 20);
            tokio::spawn(h.clone().fan_out());
            commit(&h, 1, &["a"]);
            let body = long_poll(h.cursor(Some(1), None).unwrap(), Duration::from_secs(5))
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v,
                json!({"events": [{"seq": 1, "chg": ["a"]}], "commit": 1})
            );
            let body = long_poll(h.cursor(Some(2), None).unwrap(), Duration::from_millis(50))
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v, json!({"events": [], "commit": 1}));
        });
    }
}
