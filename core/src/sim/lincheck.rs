//! A linearizability checker for histories of operations on keys, fast on ordinary histories
//! and bounded on all of them.
//!
//! The search is Wing & Gong's with Lowe's memoization, as Porcupine's `checkSingle` does it:
//! the history becomes a list of call and return entries in real-time order; the search
//! linearizes, one at a time, an operation whose call comes before the first return still in
//! the list (removing both of its entries), and backtracks when the model refuses every such
//! operation. A cache of (set of linearized operations, model state) pairs already reached cuts
//! every branch that another order already explored. Linearizability is local, so each key is
//! checked on its own.
//!
//! An operation whose outcome is unknown ([`Event::Info`], or no return by the end of the
//! history) may have taken effect at any point after its invocation, or never: it has no
//! return entry (its return is at +infinity), it may be linearized whenever it is invoked, and
//! the search succeeds once every *completed* operation is linearized.
//!
//! Three things keep ordinary histories (many overlapping writes, reads of old and new values,
//! a few hundred writes of unknown outcome) from exploding, each sound on its own and checked
//! against a brute-force search in the tests:
//! - order: at each point the operation that returns first is tried first (Lowe's "just in
//!   time" linearization), operations of unknown outcome last;
//! - dead ends: a path is dropped as soon as an operation still to linearize requires a state
//!   that nothing left can produce ([`Model::requires`], [`Model::effect`]): a write placed
//!   before a concurrent read of the value it overwrote fails at once, not after every order
//!   of what lies between them;
//! - operations of unknown outcome: one is tried only while an operation that could tell
//!   whether it took effect is still to be linearized ([`Model::observers`]), and the cache
//!   takes a point as explored when it was reached with fewer of them used (they are optional),
//!   so each one costs about one more pass instead of doubling the search.
//!
//! The work is bounded by a count of search steps, not by a clock: the same history gives the
//! same verdict on any machine. A check that runs out of steps is [`Verdict::Undecided`], and
//! a caller MUST treat that as a failure, never as a pass: an undecided check can hide a
//! violation.
//!
//! ```
//! use clusterconsensus::sim::lincheck::{check, Event, Register, RegisterOp, RegisterRet, Verdict};
//!
//! let k = String::from("k");
//! let v = |s: &str| Some(String::from(s));
//! let history = [
//!     Event::Invoke { id: 1, key: k.clone(), op: RegisterOp::Write(v("a")) },
//!     Event::Invoke { id: 2, key: k.clone(), op: RegisterOp::Read },
//!     Event::Return { id: 1, ret: RegisterRet::Ok },
//!     Event::Return { id: 2, ret: RegisterRet::Value(v("a")) },
//! ];
//! let checked = check(&Register, &history, 10_000).unwrap();
//! assert_eq!(checked.verdict, Verdict::Ok);
//! ```

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A sequential specification of one key's object.
pub trait Model {
    type State: Clone + Ord + fmt::Debug;
    type Op: fmt::Debug;
    type Ret: PartialEq + fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `op` to `state`: the state after it and what it returns.
    fn apply(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Ret);

    /// For each operation of one key (`ret` is `None` when its outcome is unknown), the
    /// operations (indices into `ops`) that could tell whether it took effect, were its
    /// outcome unknown; `None` for "any" (the default, always sound).
    ///
    /// The search stops trying an operation of unknown outcome once all of them are
    /// linearized (at once if there are none). That is sound when, in any linearization where
    /// it takes effect and none of them comes after it, it can be removed together with
    /// operations of unknown outcome that then have no effect, leaving a linearization.
    fn observers(&self, ops: &[(&Self::Op, Option<&Self::Ret>)]) -> Vec<Option<Vec<usize>>> {
        vec![None; ops.len()]
    }

    /// The only state a completed operation that returned `ret` can take effect in, if there
    /// is one (a read that returned `v`: the value `v`). `None` (the default) says nothing.
    fn requires(&self, op: &Self::Op, ret: &Self::Ret) -> Option<Self::State> {
        let _ = (op, ret);
        None
    }

    /// Which states `op` can leave behind besides the one it found. [`Effect::Any`] (the
    /// default) says nothing.
    fn effect(&self, op: &Self::Op) -> Effect<Self::State> {
        let _ = op;
        Effect::Any
    }
}

/// What an operation can do to the state ([`Model::effect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<S> {
    /// It never changes the state.
    Keeps,
    /// It leaves the state it found, or this one.
    Sets(S),
    /// It may leave any state.
    Any,
}

/// One key's register: absent (`None`) until written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Register;

/// An operation on a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Read,
    /// Sets the value; `None` deletes the key.
    Write(Option<String>),
    /// Sets `new` if the value is `expect`.
    Cas {
        expect: Option<String>,
        new: Option<String>,
    },
}

/// What a [`RegisterOp`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterRet {
    /// A write's answer.
    Ok,
    /// A read's answer: the value.
    Value(Option<String>),
    /// A compare-and-set's answer: whether it applied, and the value after it.
    Cas { ok: bool, current: Option<String> },
}

impl Model for Register {
    type State = Option<String>;
    type Op = RegisterOp;
    type Ret = RegisterRet;

    fn init(&self) -> Option<String> {
        None
    }

    fn apply(&self, state: &Option<String>, op: &RegisterOp) -> (Option<String>, RegisterRet) {
        match op {
            RegisterOp::Read => (state.clone(), RegisterRet::Value(state.clone())),
            RegisterOp::Write(v) => (v.clone(), RegisterRet::Ok),
            RegisterOp::Cas { expect, new } if expect == state => (
                new.clone(),
                RegisterRet::Cas {
                    ok: true,
                    current: new.clone(),
                },
            ),
            RegisterOp::Cas { .. } => (
                state.clone(),
                RegisterRet::Cas {
                    ok: false,
                    current: state.clone(),
                },
            ),
        }
    }

    /// A read changes nothing: nothing observes it. A write or compare-and-set that sets `v`
    /// is observed by the operations that mention `v`: completed reads and compare-and-sets
    /// that returned it, and compare-and-sets that expect it. In a linearization where it
    /// takes effect, every operation after it up to the next one that changes the value sees
    /// `v`: a completed one there would mention `v` (a read returns it, a compare-and-set
    /// that fails returns it, one that succeeds expects it), so if no observer comes after it,
    /// those are all of unknown outcome, without effect (a compare-and-set that does not
    /// expect `v` fails), and it can be removed with them.
    fn observers(&self, ops: &[(&RegisterOp, Option<&RegisterRet>)]) -> Vec<Option<Vec<usize>>> {
        let mut mentions: BTreeMap<&Option<String>, Vec<usize>> = BTreeMap::new();
        for (i, (op, ret)) in ops.iter().enumerate() {
            let mut mention = |v| mentions.entry(v).or_default().push(i);
            match (op, ret) {
                (RegisterOp::Cas { expect, .. }, ret) => {
                    mention(expect);
                    if let Some(RegisterRet::Cas { current, .. }) = ret {
                        if current != expect {
                            mention(current);
                        }
                    }
                }
                (_, Some(RegisterRet::Value(v))) => mention(v),
                _ => {}
            }
        }
        ops.iter()
            .enumerate()
            .map(|(i, (op, _))| match op {
                RegisterOp::Read => Some(Vec::new()),
                RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. } => Some(
                    mentions
                        .get(v)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|o| *o != i)
                        .collect(),
                ),
            })
            .collect()
    }

    fn requires(&self, op: &RegisterOp, ret: &RegisterRet) -> Option<Option<String>> {
        match (op, ret) {
            (RegisterOp::Read, RegisterRet::Value(v)) => Some(v.clone()),
            (RegisterOp::Cas { expect, .. }, RegisterRet::Cas { ok: true, .. }) => {
                Some(expect.clone())
            }
            (RegisterOp::Cas { .. }, RegisterRet::Cas { ok: false, current }) => {
                Some(current.clone())
            }
            _ => None,
        }
    }

    fn effect(&self, op: &RegisterOp) -> Effect<Option<String>> {
        match op {
            RegisterOp::Read => Effect::Keeps,
            RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. } => Effect::Sets(v.clone()),
        }
    }
}

/// One entry of a history, in real-time order.
///
/// `id` names an operation while it is in flight (a client's thread id will do); it may be
/// used again once the operation returned, failed or was given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<O, R> {
    /// An operation on `key` starts.
    Invoke { id: u64, key: String, op: O },
    /// It completed with `ret`.
    Return { id: u64, ret: R },
    /// Its outcome is unknown: it took effect at some point after its invocation, or never.
    /// An operation still in flight at the end of the history counts as this.
    Info { id: u64 },
    /// It definitely had no effect (refused for good, a read that was never answered): it is
    /// left out.
    Fail { id: u64 },
}

/// A [`Register`] history.
pub type RegisterEvent = Event<RegisterOp, RegisterRet>;

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Ok,
    /// The history of `key` is not; `detail` says how far it gets and what cannot go next.
    Violation { key: String, detail: String },
    /// The check of `key` ran out of its `steps` before deciding: a failure, not a pass.
    Undecided { key: String, steps: u64 },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => write!(f, "linearizable"),
            Verdict::Violation { key, detail } => {
                write!(
                    f,
                    "the history of key {key:?} is not linearizable: {detail}"
                )
            }
            Verdict::Undecided { key, steps } => write!(
                f,
                "the linearizability check of key {key:?} did not decide within {steps} steps \
                 (undecided counts as a failure)"
            ),
        }
    }
}

/// A check's verdict and what it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub verdict: Verdict,
    /// Keys checked (all of them, unless the verdict is a violation).
    pub keys: usize,
    /// Operations in the history, left-out failures included.
    pub ops: usize,
    /// Search steps over all keys checked.
    pub steps: u64,
    /// The most steps one key took.
    pub max_key_steps: u64,
}

/// A history that is not one: an event that contradicts the ones before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadHistory {
    /// Its index in the history.
    pub event: usize,
    pub detail: String,
}

impl fmt::Display for BadHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad history at event {}: {}", self.event, self.detail)
    }
}

/// Checks `history` against `model`, key by key (in key order), each key's search bounded by
/// `budget` steps. Stops at the first violation; a key that runs out of steps is reported only
/// if no later key has a violation.
pub fn check<M: Model>(
    model: &M,
    history: &[Event<M::Op, M::Ret>],
    budget: u64,
) -> Result<Checked, BadHistory> {
    let (ops, by_key) = split(history)?;
    let mut checked = Checked {
        verdict: Verdict::Ok,
        keys: 0,
        ops: ops.len(),
        steps: 0,
        max_key_steps: 0,
    };
    for (key, indices) in by_key {
        let key_ops: Vec<&Recorded<'_, M::Op, M::Ret>> = indices.iter().map(|i| &ops[*i]).collect();
        let mut search = Search::new(model, &key_ops);
        let outcome = search.run(budget);
        checked.keys += 1;
        checked.steps += search.steps;
        checked.max_key_steps = checked.max_key_steps.max(search.steps);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::OutOfSteps => {
                if checked.verdict.is_ok() {
                    checked.verdict = Verdict::Undecided {
                        key: String::from(key),
                        steps: search.steps,
                    };
                }
            }
            Outcome::Violation => {
                checked.verdict = Verdict::Violation {
                    key: String::from(key),
                    detail: search.explain(),
                };
                return Ok(checked);
            }
        }
    }
    Ok(checked)
}

/// An operation as the history recorded it.
#[derive(Debug)]
struct Recorded<'h, O, R> {
    id: u64,
    key: &'h str,
    op: &'h O,
    /// Its outcome; `None` while unknown.
    ret: Option<&'h R>,
    /// The index of its invocation, and of its return (if it returned).
    call: usize,
    returned: Option<usize>,
    failed: bool,
}

type Split<'h, O, R> = (Vec<Recorded<'h, O, R>>, BTreeMap<&'h str, Vec<usize>>);

/// The history's operations, and for each key the indices of its operations that can have had
/// an effect.
fn split<O, R>(history: &[Event<O, R>]) -> Result<Split<'_, O, R>, BadHistory> {
    let mut ops: Vec<Recorded<'_, O, R>> = Vec::new();
    let mut in_flight: BTreeMap<u64, usize> = BTreeMap::new();
    for (at, e) in history.iter().enumerate() {
        let bad = |detail: String| BadHistory { event: at, detail };
        match e {
            Event::Invoke { id, key, op } => {
                if in_flight.insert(*id, ops.len()).is_some() {
                    return Err(bad(format!("operation {id} invoked while in flight")));
                }
                ops.push(Recorded {
                    id: *id,
                    key,
                    op,
                    ret: None,
                    call: at,
                    returned: None,
                    failed: false,
                });
            }
            Event::Return { id, ret } => {
                let i = in_flight
                    .remove(id)
                    .ok_or_else(|| bad(format!("return of operation {id}, not in flight")))?;
                ops[i].ret = Some(ret);
                ops[i].returned = Some(at);
            }
            Event::Info { id } => {
                in_flight
                    .remove(id)
                    .ok_or_else(|| bad(format!("outcome of operation {id}, not in flight")))?;
            }
            Event::Fail { id } => {
                let i = in_flight
                    .remove(id)
                    .ok_or_else(|| bad(format!("failure of operation {id}, not in flight")))?;
                ops[i].failed = true;
            }
        }
    }
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if !o.failed {
            by_key.entry(o.key).or_default().push(i);
        }
    }
    Ok((ops, by_key))
}

const NIL: usize = usize::MAX;
const NO_STATE: u32 = u32::MAX;
/// The list's head: entry 0, before every call and return.
const HEAD: usize = 0;

/// A point on the current path: the operations that may go next there, and how the search
/// got there.
#[derive(Debug)]
struct Level {
    /// Its candidates are `arena[start..end]`, tried from `next` on.
    start: usize,
    next: usize,
    end: usize,
    /// The operation linearized to get here, and the state before it (none at the start).
    via: Option<(usize, u32)>,
}

enum Outcome {
    Linearizable,
    Violation,
    OutOfSteps,
}

/// A set of small numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }

    /// Writes the set to `out` in few words: how many leading words are full, then the words
    /// from there to the last one that is not empty. The sets of completed operations a search
    /// reaches are a prefix of them (numbered by invocation) and a window after it, so this
    /// stays short however long the history: what keeps the cache small.
    fn pack(&self, out: &mut Vec<u64>) {
        let full = self.0.iter().take_while(|w| **w == u64::MAX).count();
        let end = self.0.iter().rposition(|w| *w != 0).map_or(full, |i| i + 1);
        out.clear();
        out.push(full as u64);
        out.extend_from_slice(&self.0[full..end.max(full)]);
    }
}

/// The points the search reached: for each set of completed operations linearized and the
/// state after them, the sets of operations of unknown outcome linearized with them (none a
/// subset of another).
///
/// A point is not worth exploring if it was reached before with a subset of its operations of
/// unknown outcome used up: everything that can follow it can follow that one (the unused
/// ones are optional, and only completed operations constrain the order). Lowe's cache is the
/// case of equal sets; the subsets are what keep an operation of unknown outcome, which may
/// take effect at any point after its invocation, from doubling the search at every point it
/// could.
#[derive(Debug)]
struct Cache {
    /// By state, by set of completed operations ([`Bits::pack`]ed).
    seen: BTreeMap<u32, BTreeMap<Vec<u64>, Vec<Bits>>>,
    packed: Vec<u64>,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            seen: BTreeMap::new(),
            packed: Vec::new(),
        }
    }

    /// Records the point; false if it was reached before (with a subset of `chosen`).
    fn first_visit(&mut self, done: &Bits, chosen: &Bits, state: u32) -> bool {
        done.pack(&mut self.packed);
        let by_done = self.seen.entry(state).or_default();
        let Some(seen) = by_done.get_mut(self.packed.as_slice()) else {
            by_done.insert(self.packed.clone(), vec![chosen.clone()]);
            return true;
        };
        if seen.iter().any(|s| s.is_subset_of(chosen)) {
            return false;
        }
        seen.retain(|s| !chosen.is_subset_of(s));
        seen.push(chosen.clone());
        true
    }
}

/// One key's search.
struct Search<'m, 'h, M: Model> {
    model: &'m M,
    /// The key's operations that take part: the completed ones, and those of unknown outcome
    /// that some operation observes ([`Model::observers`]).
    ops: Vec<&'h Recorded<'h, M::Op, M::Ret>>,
    /// The doubly linked list of call and return entries of completed operations, entry 0 the
    /// head: the operation, whether the entry is its call, its time (history index), its
    /// neighbours, and for a call the entry of its return.
    entry_op: Vec<usize>,
    entry_call: Vec<bool>,
    entry_time: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    entry_return: Vec<usize>,
    /// The operations of unknown outcome, by invocation.
    unknown: Vec<usize>,
    /// Each operation's bit: its number among the completed operations, or its place in
    /// `unknown`.
    slot: Vec<usize>,
    /// Each completed operation's call entry.
    call_entry: Vec<usize>,
    /// For each operation, the operations of unknown outcome (places in `unknown`) it
    /// observes; for each of those, how many of its observers the path has not linearized
    /// (`usize::MAX`: it cannot tell). At 0 the search stops trying it.
    observes: Vec<Vec<usize>>,
    unseen: Vec<usize>,
    /// Per operation, the state it requires ([`Model::requires`]) and the one it can set
    /// ([`Effect::Sets`]), as numbers (`NO_STATE`: none).
    requires: Vec<u32>,
    sets: Vec<u32>,
    /// Per operation, whether it can set any state ([`Effect::Any`]).
    any: Vec<bool>,
    /// Per state number: the completed operations left that require it, and the operations
    /// left that can set it; the operations left that can set any state; and how many states
    /// are required but cannot be set ("starved"). A path is dead when a starved state is not
    /// the current one.
    demand: Vec<u32>,
    supply: Vec<u32>,
    wildcards: usize,
    starved: usize,
    completed: usize,
    /// States by number, and numbers by state: the cache holds numbers.
    states: Vec<M::State>,
    state_ids: BTreeMap<M::State, u32>,
    steps: u64,
    best: Best,
}

/// The longest path the search found, by completed operations linearized: what a violation is
/// explained from. Kept in time proportional to the search's pushes, not to the path's length
/// at every improvement: the first `agree` operations of `path` are on the current path too,
/// and only the rest is copied.
#[derive(Debug, Default)]
struct Best {
    linearized: usize,
    path: Vec<usize>,
    /// The state after it.
    state: u32,
    agree: usize,
}

impl Best {
    /// `current` grew by one operation.
    fn pushed(&mut self, current: &[usize]) {
        let depth = current.len() - 1;
        if self.agree == depth && self.path.get(depth) == current.last() {
            self.agree += 1;
        }
    }

    /// `current` shrank to `len` operations.
    fn popped(&mut self, len: usize) {
        self.agree = self.agree.min(len);
    }

    fn reached(&mut self, linearized: usize, current: &[usize], state: u32) {
        if linearized > self.linearized {
            self.linearized = linearized;
            self.path.truncate(self.agree);
            self.path.extend_from_slice(&current[self.agree..]);
            self.agree = current.len();
            self.state = state;
        }
    }
}

impl<'m, 'h, M: Model> Search<'m, 'h, M> {
    fn new(model: &'m M, all: &[&'h Recorded<'h, M::Op, M::Ret>]) -> Self {
        let pairs: Vec<(&M::Op, Option<&M::Ret>)> = all.iter().map(|o| (o.op, o.ret)).collect();
        let observers = model.observers(&pairs);
        // Leave out the operations of unknown outcome that nothing observes; `kept` maps an
        // index in `all` to one in `ops`, `origin` the other way.
        let mut ops: Vec<&Recorded<'_, M::Op, M::Ret>> = Vec::new();
        let mut kept = vec![NIL; all.len()];
        let mut origin = Vec::new();
        for (i, o) in all.iter().enumerate() {
            if o.ret.is_some() || observers[i].as_ref().is_none_or(|v| !v.is_empty()) {
                kept[i] = ops.len();
                origin.push(i);
                ops.push(*o);
            }
        }
        // (time, op, is call), sorted by time: history indices are distinct.
        let mut times: Vec<(usize, usize, bool)> = Vec::new();
        let mut unknown = Vec::new();
        let mut slot = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            match (o.ret, o.returned) {
                (Some(_), Some(r)) => {
                    slot.push(times.len() / 2);
                    times.push((o.call, i, true));
                    times.push((r, i, false));
                }
                _ => {
                    slot.push(unknown.len());
                    unknown.push(i);
                }
            }
        }
        times.sort_unstable();
        let n = times.len() + 1;
        let mut s = Search {
            model,
            completed: times.len() / 2,
            ops,
            entry_op: vec![NIL; n],
            entry_call: vec![false; n],
            entry_time: vec![0; n],
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            entry_return: vec![NIL; n],
            unknown,
            slot,
            call_entry: Vec::new(),
            observes: Vec::new(),
            unseen: Vec::new(),
            requires: Vec::new(),
            sets: Vec::new(),
            any: Vec::new(),
            demand: Vec::new(),
            supply: Vec::new(),
            wildcards: 0,
            starved: 0,
            states: Vec::new(),
            state_ids: BTreeMap::new(),
            steps: 0,
            best: Best::default(),
        };
        let mut call_entry = vec![NIL; s.ops.len()];
        for (e, (time, op, call)) in times.into_iter().enumerate() {
            let e = e + 1;
            s.entry_op[e] = op;
            s.entry_call[e] = call;
            s.entry_time[e] = time;
            if call {
                call_entry[op] = e;
            } else {
                s.entry_return[call_entry[op]] = e;
            }
        }
        s.call_entry = call_entry;
        // Count each kept operation of unknown outcome's observers that take part (one left
        // out is never linearized: it came out of every linearization with it).
        s.observes = vec![Vec::new(); s.ops.len()];
        s.unseen = vec![0; s.unknown.len()];
        for (k, op) in s.unknown.iter().enumerate() {
            match &observers[origin[*op]] {
                None => s.unseen[k] = usize::MAX,
                Some(by) => {
                    for o in by.iter().map(|o| kept[*o]).filter(|o| *o != NIL) {
                        s.observes[o].push(k);
                        s.unseen[k] += 1;
                    }
                }
            }
        }
        for i in 0..s.ops.len() {
            let o = s.ops[i];
            let required = o.ret.and_then(|r| model.requires(o.op, r));
            let required = required.map_or(NO_STATE, |r| s.intern(r));
            s.requires.push(required);
            let effect = model.effect(o.op);
            s.any.push(effect == Effect::Any);
            let sets = match effect {
                Effect::Sets(v) => s.intern(v),
                Effect::Keeps | Effect::Any => NO_STATE,
            };
            s.sets.push(sets);
        }
        s.demand = vec![0; s.states.len()];
        s.supply = vec![0; s.states.len()];
        for i in 0..s.ops.len() {
            if s.requires[i] != NO_STATE {
                s.demand[s.requires[i] as usize] += 1;
            }
            if s.sets[i] != NO_STATE {
                s.supply[s.sets[i] as usize] += 1;
            }
        }
        s.wildcards = s.any.iter().filter(|a| **a).count();
        s.starved = (0..s.states.len())
            .filter(|v| s.demand[*v] > 0 && s.supply[*v] == 0)
            .count();
        s
    }

    fn intern(&mut self, state: M::State) -> u32 {
        if let Some(id) = self.state_ids.get(&state) {
            return *id;
        }
        let id = self.states.len() as u32;
        self.states.push(state.clone());
        self.state_ids.insert(state, id);
        id
    }

    /// Removes a call entry and its return entry from the list.
    fn lift(&mut self, call: usize) {
        for e in [call, self.entry_return[call]] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = n;
            if n != NIL {
                self.prev[n] = p;
            }
        }
    }

    /// Puts back what [`Search::lift`] removed (in the reverse order, so every link it
    /// changed is restored).
    fn unlift(&mut self, call: usize) {
        for e in [self.entry_return[call], call] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = e;
            if n != NIL {
                self.prev[n] = e;
            }
        }
    }

    /// Counts `op`'s linearization (or taking it back): for the operations of unknown outcome
    /// it observes, and for the states it required and could set.
    fn account(&mut self, op: usize, linearized: bool) {
        for k in &self.observes[op] {
            let unseen = &mut self.unseen[*k];
            if *unseen != usize::MAX {
                *unseen = if linearized { *unseen - 1 } else { *unseen + 1 };
            }
        }
        let starved = |d: &Vec<u32>, s: &Vec<u32>, v: usize| d[v] > 0 && s[v] == 0;
        for (v, is_supply) in [(self.requires[op], false), (self.sets[op], true)] {
            if v == NO_STATE {
                continue;
            }
            let v = v as usize;
            let before = starved(&self.demand, &self.supply, v);
            let count = if is_supply {
                &mut self.supply[v]
            } else {
                &mut self.demand[v]
            };
            *count = if linearized { *count - 1 } else { *count + 1 };
            match (before, starved(&self.demand, &self.supply, v)) {
                (false, true) => self.starved += 1,
                (true, false) => self.starved -= 1,
                _ => {}
            }
        }
        if self.any[op] {
            if linearized {
                self.wildcards -= 1;
            } else {
                self.wildcards += 1;
            }
        }
    }

    /// Whether no completion is possible from `state`: an operation left requires a state
    /// that is not this one and that nothing left can set.
    fn dead(&self, state: u32) -> bool {
        let here = (state as usize) < self.demand.len()
            && self.demand[state as usize] > 0
            && self.supply[state as usize] == 0;
        self.wildcards == 0 && self.starved > usize::from(here)
    }

    /// The state after `op` in `state`, if the op's recorded outcome allows it there.
    fn try_op(&mut self, op: usize, state: u32) -> Option<u32> {
        let o = self.ops[op];
        let (after, ret) = self.model.apply(&self.states[state as usize], o.op);
        if o.ret.is_some_and(|r| *r != ret) {
            return None;
        }
        Some(self.intern(after))
    }

    /// Pushes onto `arena` the operations that may go next: the completed operations invoked
    /// before the first return still in the list, the one that returns first first (Lowe's
    /// "just in time" order: an operation that must go soon is tried before one that may go
    /// late, so a wrong guess fails at once instead of after a subtree), then those of unknown
    /// outcome invoked before that return, not used yet, and still observable.
    fn candidates(&self, chosen: &Bits, arena: &mut Vec<usize>) {
        let start = arena.len();
        let mut e = self.next[HEAD];
        while e != NIL && self.entry_call[e] {
            arena.push(self.entry_op[e]);
            e = self.next[e];
        }
        let limit = if e == NIL {
            usize::MAX
        } else {
            self.entry_time[e]
        };
        arena[start..].sort_unstable_by_key(|op| self.ops[*op].returned);
        for (k, op) in self.unknown.iter().enumerate() {
            if self.ops[*op].call >= limit {
                break;
            }
            if !chosen.get(k) && self.unseen[k] > 0 {
                arena.push(*op);
            }
        }
    }

    fn run(&mut self, budget: u64) -> Outcome {
        let mut state = self.intern(self.model.init());
        self.best = Best {
            state,
            ..Best::default()
        };
        // The operations linearized, in order.
        let mut path: Vec<usize> = Vec::new();
        let mut remaining = self.completed;
        if remaining == 0 {
            return Outcome::Linearizable;
        }
        // Which completed operations, and which of unknown outcome, the path linearized.
        let mut done = Bits::new(self.completed);
        let mut chosen = Bits::new(self.unknown.len());
        let mut cache = Cache::new();
        let mut arena: Vec<usize> = Vec::new();
        self.candidates(&chosen, &mut arena);
        let mut levels = vec![Level {
            start: 0,
            next: 0,
            end: arena.len(),
            via: None,
        }];
        while let Some(level) = levels.last_mut() {
            if level.next == level.end {
                // Nothing more can go next here: take back the operation that led here.
                arena.truncate(level.start);
                let Some((op, before)) = level.via else {
                    return Outcome::Violation;
                };
                levels.pop();
                path.pop();
                self.best.popped(path.len());
                state = before;
                self.account(op, false);
                if self.ops[op].returned.is_some() {
                    done.flip(self.slot[op]);
                    self.unlift(self.call_entry[op]);
                    remaining += 1;
                } else {
                    chosen.flip(self.slot[op]);
                }
                continue;
            }
            if self.steps >= budget {
                return Outcome::OutOfSteps;
            }
            self.steps += 1;
            let op = arena[level.next];
            level.next += 1;
            let Some(next_state) = self.try_op(op, state) else {
                continue;
            };
            self.account(op, true);
            if self.dead(next_state) {
                self.account(op, false);
                continue;
            }
            let completed = self.ops[op].returned.is_some();
            let set = if completed { &mut done } else { &mut chosen };
            set.flip(self.slot[op]);
            if !cache.first_visit(&done, &chosen, next_state) {
                // Reached before, by another order, with no more operations of unknown outcome
                // used up: explored from there.
                let set = if completed { &mut done } else { &mut chosen };
                set.flip(self.slot[op]);
                self.account(op, false);
                continue;
            }
            if completed {
                self.lift(self.call_entry[op]);
                remaining -= 1;
                if remaining == 0 {
                    return Outcome::Linearizable;
                }
            }
            path.push(op);
            self.best.pushed(&path);
            if completed {
                let linearized = self.completed - remaining;
                self.best.reached(linearized, &path, next_state);
            }
            let start = arena.len();
            self.candidates(&chosen, &mut arena);
            levels.push(Level {
                start,
                next: start,
                end: arena.len(),
                via: Some((op, state)),
            });
            state = next_state;
        }
        Outcome::Violation
    }

    /// What a violation looks like from the longest path found: how many completed operations
    /// it linearizes, how it ends, and the operations that could go next there, none of which
    /// the model accepts.
    fn explain(&self) -> String {
        let Best {
            linearized: done,
            path,
            state,
            ..
        } = &self.best;
        let on_path: BTreeSet<usize> = path.iter().copied().collect();
        let state = &self.states[*state as usize];
        let describe = |op: usize| {
            let o = self.ops[op];
            match (o.ret, o.returned) {
                (Some(ret), Some(r)) => format!(
                    "#{} {:?} -> {:?} (events {}..{})",
                    o.id, o.op, ret, o.call, r
                ),
                _ => format!("#{} {:?} -> unknown (from event {})", o.id, o.op, o.call),
            }
        };
        let mut s = format!(
            "at most {done} of its {} completed operations linearize",
            self.completed
        );
        if !path.is_empty() {
            let tail = path.len().saturating_sub(3);
            let last: Vec<String> = path[tail..].iter().map(|op| describe(*op)).collect();
            let more = if tail > 0 { "..., " } else { "" };
            s += &format!("; the longest order found ends {more}{}", last.join(", "));
        }
        s += &format!(", leaving {state:?}");
        // The first return of an operation not yet linearized bounds what can go next.
        let limit = (0..self.ops.len())
            .filter(|op| !on_path.contains(op))
            .filter_map(|op| self.ops[op].returned)
            .min()
            .unwrap_or(usize::MAX);
        let left: Vec<usize> = (0..self.ops.len())
            .filter(|op| !on_path.contains(op))
            .collect();
        let next: Vec<String> = left
            .iter()
            .copied()
            .filter(|op| self.ops[*op].call < limit && self.ops[*op].ret.is_some())
            .take(6)
            .map(|op| {
                let (after, would) = self.model.apply(state, self.ops[op].op);
                if self.ops[op].ret != Some(&would) {
                    return format!("{} (would return {would:?})", describe(op));
                }
                // The model takes it: then something left requires a state nothing left
                // can set.
                let after = self.state_ids.get(&after).copied().unwrap_or(NO_STATE);
                let can_set = |v: u32| {
                    left.iter()
                        .any(|o| *o != op && (self.sets[*o] == v || self.any[*o]))
                };
                let starved = left.iter().copied().find(|o| {
                    let v = self.requires[*o];
                    *o != op && v != NO_STATE && v != after && !can_set(v)
                });
                match starved {
                    Some(o) => format!(
                        "{} (after it nothing left can set {:?}, which {} requires)",
                        describe(op),
                        self.states[self.requires[o] as usize],
                        describe(o)
                    ),
                    None => format!("{} (every order after it was tried)", describe(op)),
                }
            })
            .collect();
        if !next.is_empty() {
            s += &format!(
                "; then no completed operation can go next: {}",
                next.join("; ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rng;
    use alloc::string::ToString;

    const BUDGET: u64 = 1_000_000;

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }
    fn invoke(id: u64, key: &str, op: RegisterOp) -> RegisterEvent {
        Event::Invoke {
            id,
            key: key.to_string(),
            op,
        }
    }
    fn write(id: u64, value: &str) -> RegisterEvent {
        invoke(id, "k", RegisterOp::Write(v(value)))
    }
    fn read(id: u64) -> RegisterEvent {
        invoke(id, "k", RegisterOp::Read)
    }
    fn cas(id: u64, expect: Option<&str>, new: &str) -> RegisterEvent {
        let expect = expect.map(str::to_string);
        invoke(
            id,
            "k",
            RegisterOp::Cas {
                expect,
                new: v(new),
            },
        )
    }
    fn ok(id: u64) -> RegisterEvent {
        Event::Return {
            id,
            ret: RegisterRet::Ok,
        }
    }
    fn got(id: u64, value: Option<&str>) -> RegisterEvent {
        let ret = RegisterRet::Value(value.map(str::to_string));
        Event::Return { id, ret }
    }
    fn cas_ret(id: u64, ok: bool, current: &str) -> RegisterEvent {
        let current = v(current);
        let ret = RegisterRet::Cas { ok, current };
        Event::Return { id, ret }
    }
    fn verdict(h: &[RegisterEvent]) -> Verdict {
        check(&Register, h, BUDGET)
            .expect("a well-formed history")
            .verdict
    }
    fn violation(h: &[RegisterEvent]) -> String {
        match verdict(h) {
            Verdict::Violation { key, detail } => {
                assert_eq!(key, "k");
                detail
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = [
            read(1),
            got(1, None),
            write(1, "a"),
            ok(1),
            read(2),
            got(2, Some("a")),
            cas(1, Some("a"), "b"),
            cas_ret(1, true, "b"),
            cas(2, Some("a"), "c"),
            cas_ret(2, false, "b"),
            invoke(3, "k", RegisterOp::Write(None)),
            ok(3),
            read(3),
            got(3, None),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
    }

    #[test]
    fn a_stale_read_is_a_violation_and_the_detail_names_it() {
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            ok(2),
            read(3),
            got(3, Some("a")),
        ];
        let detail = violation(&h);
        assert_eq!(
            detail,
            "at most 1 of its 3 completed operations linearize; the longest order found ends \
             #1 Write(Some(\"a\")) -> Ok (events 0..1), leaving Some(\"a\"); then no completed \
             operation can go next: #2 Write(Some(\"b\")) -> Ok (events 2..3) (after it nothing \
             left can set Some(\"a\"), which #3 Read -> Value(Some(\"a\")) (events 4..5) \
             requires)"
        );
        // Where the model refuses the next operation, what it would have returned: a read of
        // a value written only after it returned.
        let h = [
            write(1, "a"),
            ok(1),
            read(3),
            got(3, Some("b")),
            write(2, "b"),
            ok(2),
        ];
        let detail = violation(&h);
        assert!(
            detail.contains(
                "#3 Read -> Value(Some(\"b\")) (events 2..3) (would return Value(Some(\"a\")))"
            ),
            "{detail}"
        );
    }

    #[test]
    fn a_lost_write_is_a_violation() {
        // Acknowledged, then a later read does not see it.
        let h = [write(1, "a"), ok(1), read(2), got(2, None)];
        violation(&h);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_a_violation() {
        let h = [write(1, "a"), read(2), ok(1), got(2, Some("z"))];
        violation(&h);
    }

    #[test]
    fn a_cas_that_succeeded_against_a_wrong_expect_is_a_violation() {
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("b"), "c"),
            cas_ret(2, true, "c"),
        ];
        violation(&h);
        // And one that failed although the value was what it expected.
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("a"), "c"),
            cas_ret(2, false, "a"),
        ];
        violation(&h);
    }

    #[test]
    fn concurrent_overlapping_operations_may_take_effect_in_either_order() {
        // w(a) overlaps everything: it may take effect after w(b) and the first read.
        let h = [
            write(1, "a"),
            write(2, "b"),
            read(3),
            got(3, Some("b")),
            ok(2),
            ok(1),
            read(4),
            got(4, Some("a")),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // Two concurrent cas from the same value: only one can succeed...
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("a"), "b"),
            cas(3, Some("a"), "c"),
            cas_ret(3, false, "b"),
            cas_ret(2, true, "b"),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // ...not both.
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("a"), "b"),
            cas(3, Some("a"), "c"),
            cas_ret(3, true, "c"),
            cas_ret(2, true, "b"),
        ];
        violation(&h);
    }

    #[test]
    fn reads_that_see_concurrent_writes_in_two_orders_are_a_violation() {
        // a, then b, then a again, with one write of each.
        let h = [
            write(1, "a"),
            write(2, "b"),
            read(3),
            got(3, Some("a")),
            read(3),
            got(3, Some("b")),
            read(3),
            got(3, Some("a")),
            ok(1),
            ok(2),
        ];
        violation(&h);
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_or_not() {
        let info = |id| Event::Info { id };
        // It took effect.
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            info(2),
            read(3),
            got(3, Some("b")),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // It did not.
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            info(2),
            read(3),
            got(3, Some("a")),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // Later, after a read saw it: still in flight at the end, no Info at all.
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            read(3),
            got(3, Some("a")),
            read(3),
            got(3, Some("b")),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // Once seen it cannot be undone.
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            info(2),
            read(3),
            got(3, Some("b")),
            read(3),
            got(3, Some("a")),
        ];
        violation(&h);
        // Nor take effect before it was invoked.
        let h = [
            write(1, "a"),
            ok(1),
            read(3),
            got(3, Some("b")),
            write(2, "b"),
            info(2),
        ];
        violation(&h);
        // A failed write had no effect at all.
        let h = [
            write(1, "a"),
            ok(1),
            write(2, "b"),
            Event::Fail { id: 2 },
            read(3),
            got(3, Some("b")),
        ];
        violation(&h);
    }

    #[test]
    fn an_indeterminate_cas_counts_by_what_it_would_have_done() {
        let info = |id| Event::Info { id };
        // A cas from a that may have applied, seen by a later cas.
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("a"), "b"),
            info(2),
            cas(3, Some("b"), "c"),
            cas_ret(3, true, "c"),
        ];
        assert_eq!(verdict(&h), Verdict::Ok);
        // A cas from x could not have applied: nothing ever wrote x.
        let h = [
            write(1, "a"),
            ok(1),
            cas(2, Some("x"), "b"),
            info(2),
            read(3),
            got(3, Some("b")),
        ];
        violation(&h);
    }

    #[test]
    fn many_unobserved_indeterminate_writes_do_not_multiply_the_search() {
        // 40 writes of unknown outcome that no read saw, around a stale read: left out, the
        // violation is found in a few steps (kept, the search would try 2^40 subsets).
        let mut h = vec![write(1, "a"), ok(1)];
        for id in 10..50 {
            h.push(write(id, &format!("u{id}")));
        }
        h.extend([write(2, "b"), ok(2), read(3), got(3, Some("a"))]);
        for id in 10..50 {
            h.push(Event::Info { id });
        }
        let checked = check(&Register, &h, BUDGET).unwrap();
        assert!(matches!(checked.verdict, Verdict::Violation { .. }));
        assert!(checked.steps < 100, "{} steps", checked.steps);
        // One that was seen stays in, and explains the read.
        h.extend([read(4), got(4, Some("u20")), read(4), got(4, Some("u20"))]);
        let pos = h.iter().position(|e| *e == got(3, Some("a"))).unwrap();
        h[pos] = got(3, Some("b"));
        assert_eq!(verdict(&h), Verdict::Ok);
    }

    #[test]
    fn keys_are_checked_apart_and_the_violating_key_is_named() {
        let on = |id, key: &str, op| invoke(id, key, op);
        let h = [
            on(1, "x", RegisterOp::Write(v("a"))),
            on(2, "y", RegisterOp::Write(v("a"))),
            ok(1),
            ok(2),
            on(3, "y", RegisterOp::Read),
            on(4, "x", RegisterOp::Read),
            got(3, Some("a")),
            got(4, None),
        ];
        let checked = check(&Register, &h, BUDGET).unwrap();
        match checked.verdict {
            Verdict::Violation { key, .. } => assert_eq!(key, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn running_out_of_steps_is_undecided_not_ok() {
        let h = [
            write(1, "a"),
            write(2, "b"),
            ok(1),
            ok(2),
            read(3),
            got(3, Some("b")),
        ];
        let checked = check(&Register, &h, 2).unwrap();
        assert_eq!(
            checked.verdict,
            Verdict::Undecided {
                key: "k".to_string(),
                steps: 2
            }
        );
        assert!(!checked.verdict.is_ok());
        assert!(checked.verdict.to_string().contains("did not decide"));
        assert_eq!(check(&Register, &h, BUDGET).unwrap().verdict, Verdict::Ok);
    }

    #[test]
    fn a_malformed_history_is_an_error() {
        let err = check(&Register, &[ok(1)], BUDGET).unwrap_err();
        assert_eq!(err.event, 0);
        assert!(err.to_string().contains("not in flight"), "{err}");
        let err = check(&Register, &[read(1), read(1)], BUDGET).unwrap_err();
        assert_eq!(err.event, 1);
        let err = check(&Register, &[read(1), ok(1), Event::Info { id: 1 }], BUDGET);
        assert_eq!(err.unwrap_err().event, 2);
    }

    /// A random history that is linearizable by construction: a sequential execution of
    /// random operations on `keys` keys, each given an interval around its point in it. Some
    /// operations have an unknown outcome (`unknown` per cent of the writes and cas: they took
    /// effect, or never did); `span` sets how far intervals reach, so how many overlap.
    fn random_history(
        rng: &mut Rng,
        keys: u64,
        ops: u64,
        span: u64,
        unknown: u64,
    ) -> Vec<RegisterEvent> {
        let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
        // (time, order, event)
        let mut timed: Vec<(u64, u64, RegisterEvent)> = Vec::new();
        for i in 0..ops {
            let key = format!("k{}", rng.range(0, keys));
            let current = state.get(&key).cloned().flatten();
            let op = match rng.range(0, 10) {
                0..=3 => RegisterOp::Read,
                4 => RegisterOp::Write(None),
                5..=7 => RegisterOp::Write(Some(format!("v{i}"))),
                _ => RegisterOp::Cas {
                    expect: if rng.range(0, 2) == 0 {
                        current.clone()
                    } else {
                        Some(format!("v{}", rng.range(0, i + 1)))
                    },
                    new: Some(format!("v{i}")),
                },
            };
            let at = 1000 * i + span;
            let call = at - rng.range(0, span);
            let returned = at + 1 + rng.range(0, span);
            timed.push((
                call,
                timed.len() as u64,
                Event::Invoke {
                    id: i,
                    key: key.clone(),
                    op: op.clone(),
                },
            ));
            let unknown = !matches!(op, RegisterOp::Read) && rng.range(0, 100) < unknown;
            let took_effect = !unknown || rng.range(0, 2) == 0;
            if took_effect {
                let (after, ret) = Register.apply(&current, &op);
                state.insert(key, after);
                if !unknown {
                    timed.push((returned, timed.len() as u64, Event::Return { id: i, ret }));
                    continue;
                }
            }
            // Unknown: sometimes an Info, sometimes still in flight at the end.
            if rng.range(0, 2) == 0 {
                timed.push((returned, timed.len() as u64, Event::Info { id: i }));
            }
        }
        timed.sort_by_key(|(t, order, _)| (*t, *order));
        timed.into_iter().map(|(_, _, e)| e).collect()
    }

    /// Changes what one completed read or cas returned; false if there is none.
    fn corrupt(rng: &mut Rng, h: &mut [RegisterEvent]) -> bool {
        let returns: Vec<usize> = (0..h.len())
            .filter(|i| {
                matches!(
                    &h[*i],
                    Event::Return {
                        ret: RegisterRet::Value(_) | RegisterRet::Cas { .. },
                        ..
                    }
                )
            })
            .collect();
        if returns.is_empty() {
            return false;
        }
        let i = returns[rng.range(0, returns.len() as u64) as usize];
        let value = match rng.range(0, 4) {
            0 => None,
            1 => Some("never written".to_string()),
            _ => Some(format!("v{}", rng.range(0, h.len() as u64 / 2))),
        };
        if let Event::Return { ret, .. } = &mut h[i] {
            *ret = match ret {
                RegisterRet::Cas { ok, .. } if rng.range(0, 2) == 0 => RegisterRet::Cas {
                    ok: !*ok,
                    current: value,
                },
                RegisterRet::Cas { ok, .. } => RegisterRet::Cas {
                    ok: *ok,
                    current: value,
                },
                _ => RegisterRet::Value(value),
            };
        }
        true
    }

    /// The definition, by brute force: some order of each key's operations that respects real
    /// time, in which every completed one returns what it returned and those of unknown
    /// outcome appear or not.
    fn brute_force(h: &[RegisterEvent]) -> bool {
        fn search(
            ops: &[&Recorded<'_, RegisterOp, RegisterRet>],
            used: &mut [bool],
            state: &Option<String>,
        ) -> bool {
            if (0..ops.len()).all(|i| used[i] || ops[i].ret.is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                let blocked = (0..ops.len())
                    .any(|j| !used[j] && ops[j].returned.is_some_and(|r| r < ops[i].call));
                if used[i] || blocked {
                    continue;
                }
                let (after, ret) = Register.apply(state, ops[i].op);
                if ops[i].ret.is_some_and(|r| *r != ret) {
                    continue;
                }
                used[i] = true;
                if search(ops, used, &after) {
                    return true;
                }
                used[i] = false;
            }
            false
        }
        let (ops, by_key) = split(h).unwrap();
        by_key.values().all(|indices| {
            let key_ops: Vec<_> = indices.iter().map(|i| &ops[*i]).collect();
            search(&key_ops, &mut vec![false; key_ops.len()], &None)
        })
    }

    #[test]
    fn random_histories_agree_with_brute_force() {
        let mut rng = Rng::new(42);
        let (mut violations, mut corrupted) = (0, 0);
        for round in 0..1000 {
            let ops = rng.range(2, 13);
            let span = rng.range(1, 3000);
            // Half of the rounds with many operations of unknown outcome.
            let unknown = if round % 2 == 0 { 10 } else { 50 };
            let mut h = random_history(&mut rng, 2, ops, span, unknown);
            assert_eq!(verdict(&h), Verdict::Ok, "{h:?}");
            assert!(brute_force(&h), "{h:?}");
            if !corrupt(&mut rng, &mut h) {
                continue;
            }
            corrupted += 1;
            let expected = brute_force(&h);
            match verdict(&h) {
                Verdict::Ok => assert!(expected, "missed a violation in {h:?}"),
                Verdict::Violation { .. } => {
                    assert!(!expected, "a false violation in {h:?}");
                    violations += 1;
                }
                Verdict::Undecided { .. } => panic!("undecided on {h:?}"),
            }
        }
        // Most corruptions break the history: the comparison is not vacuous.
        assert!(
            corrupted > 700 && violations > corrupted / 2,
            "{violations} of {corrupted}"
        );
    }

    /// Makes a read in the second half of `h` return the value of a write that a later write
    /// overwrote before the read began: a stale read.
    fn make_a_read_stale(h: &mut [RegisterEvent]) -> Option<String> {
        let (ops, _) = split(h).unwrap();
        let write_of = |o: &Recorded<'_, RegisterOp, RegisterRet>| match (o.op, o.ret) {
            (RegisterOp::Write(Some(v)), Some(_)) => Some(v.clone()),
            _ => None,
        };
        for read in ops.iter().filter(|o| o.call > h.len() / 2) {
            let (RegisterOp::Read, Some(returned)) = (read.op, read.returned) else {
                continue;
            };
            let same_key = |o: &&Recorded<'_, _, _>| o.key == read.key && write_of(o).is_some();
            let done_before = |o: &&Recorded<'_, _, _>, t| o.returned.is_some_and(|r| r < t);
            let last_done_before = |t| ops.iter().rfind(|o| same_key(o) && done_before(o, t));
            let Some(later) = last_done_before(read.call) else {
                continue;
            };
            let Some(stale) = last_done_before(later.call) else {
                continue;
            };
            let (key, value) = (read.key.to_string(), write_of(stale));
            h[returned] = Event::Return {
                id: read.id,
                ret: RegisterRet::Value(value),
            };
            return Some(key);
        }
        None
    }

    #[test]
    fn a_long_concurrent_history_is_decided() {
        let mut rng = Rng::new(7);
        // About 16 operations in flight at a time, on 3 keys, 5% of the writes and cas of
        // unknown outcome.
        let mut h = random_history(&mut rng, 3, 3000, 16_000, 5);
        let checked = check(&Register, &h, BUDGET).unwrap();
        assert_eq!(checked.verdict, Verdict::Ok);
        assert_eq!(checked.keys, 3);
        let key = make_a_read_stale(&mut h).expect("a read to make stale");
        let checked = check(&Register, &h, BUDGET).unwrap();
        match checked.verdict {
            Verdict::Violation { key: k, .. } => assert_eq!(k, key),
            other => panic!("{other:?}"),
        }
    }
}
