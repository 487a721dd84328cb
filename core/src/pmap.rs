//! A persistent ordered map from strings to strings: a B+tree whose nodes are shared through
//! `Arc`, so that a copy costs O(1) and a write copies only the nodes on its path that a copy
//! still shares.
//!
//! Why: the key-value app must freeze a state of hundreds of MB and serialize it on another
//! thread while writes go on (a snapshot), and a node's memory must stay within a small factor
//! of its state. So:
//!
//! - [`PMap::clone`] bumps one reference count. The first write to a leaf after a clone copies
//!   that leaf (about [`LEAF_BYTES`]) and the internal nodes above it; later writes to it are in
//!   place (`Arc::make_mut`). A key that is not there is looked up before a `remove`, so a miss
//!   copies nothing.
//! - A leaf packs its keys and values into one `String` with one `u32` end offset per key and
//!   per value: 8 bytes per entry and three allocations per leaf, where a `BTreeMap<String,
//!   String>` pays two allocations and 48 bytes of `String`s per entry. Buffers grow by a
//!   sixteenth, not by doubling, so a leaf's spare room stays small (doubling would leave a
//!   quarter of every buffer empty on average). 1M entries of 16-byte keys and 100-byte values
//!   take 1.15x their bytes on the heap inserted in random order, 1.10x built from sorted
//!   entries (`core/tests/pmap_memory.rs`; a `BTreeMap<String, String>` takes 1.64x).
//! - Internal nodes hold up to [`FANOUT`] children and, packed the same way, the shortest
//!   separator keys that tell their children apart.
//! - [`PMap::cursor`] walks a frozen copy without borrowing it, so it can move to another thread
//!   and outlive the map; [`Builder`] makes full leaves directly from sorted entries (a restore).
//!
//! Limits: an entry (key plus value) must be under 1 GiB, since offsets are `u32` and a leaf may
//! hold two such entries for a moment. [`Builder::push`] refuses a larger one; [`PMap::insert`]
//! panics (the hosts' request body limits keep such entries far away).
//!
//! Invariants, checked by the tests after every batch of operations: all leaves are at the same
//! depth; keys are strictly ascending; child `i` of an internal node holds keys `k` with
//! `sep[i-1] <= k < sep[i]`; a leaf other than the root holds at least a quarter of
//! [`LEAF_BYTES`] and an internal node other than the root at least a quarter of [`FANOUT`]
//! children (a write that leaves a node below that merges it with a sibling, and a split never
//! makes one); the root is a non-empty leaf or has two children or more.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::iter::FusedIterator;
use core::ops::Deref;

/// A leaf splits when its keys, values and offsets (8 bytes an entry) pass this many bytes and
/// it has two entries or more; it is the unit that a write after a clone copies.
pub const LEAF_BYTES: usize = 4096;

/// An internal node splits when it has more children than this.
pub const FANOUT: usize = 64;

/// The largest entry (key plus value) accepted, in bytes, exclusive.
const MAX_ENTRY: usize = 1 << 30;

/// A leaf merges with a sibling when it falls below this many bytes, an internal node when it
/// falls below this many children: a quarter, so that a delete after a split does not merge
/// again at once.
const LEAF_MIN: usize = LEAF_BYTES / 4;
const FANOUT_MIN: usize = FANOUT / 4;

/// An ordered map from string keys to string values whose [`Clone`] is O(1): the copy shares
/// every node with the original, and either side copies a node only when it first writes to it.
///
/// ```
/// use clusterconsensus::pmap::PMap;
///
/// let mut map = PMap::new();
/// map.insert("b", "2");
/// map.insert("a", "1");
/// let frozen = map.clone(); // O(1)
/// assert_eq!(map.insert("a", "one"), Some("1".into()));
/// assert_eq!(frozen.get("a"), Some("1")); // the copy did not change
/// assert_eq!(map.iter().collect::<Vec<_>>(), [("a", "one"), ("b", "2")]);
/// assert_eq!(map.bytes(), 6); // "a" + "one" + "b" + "2"
/// ```
#[derive(Clone, Default)]
pub struct PMap {
    /// `None` when empty, so that an empty map allocates nothing.
    root: Option<Arc<Node>>,
    len: usize,
    bytes: usize,
}

impl PMap {
    /// An empty map.
    pub const fn new() -> PMap {
        PMap {
            root: None,
            len: 0,
            bytes: 0,
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sum of the lengths of all keys and values, in bytes (what a snapshot carries).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Internal(int) => node = int.children.get(int.child_index(key))?,
                Node::Leaf(leaf) => return leaf.find(key).ok().map(|i| leaf.value(i)),
            }
        }
    }

    /// Sets `key` to `value`; returns the value it replaced.
    ///
    /// Panics if the key and value together are 1 GiB or more.
    pub fn insert(&mut self, key: &str, value: &str) -> Option<String> {
        assert!(
            key.len() + value.len() < MAX_ENTRY,
            "pmap: an entry (key plus value) must be under 1 GiB"
        );
        let root = self
            .root
            .get_or_insert_with(|| Arc::new(Node::Leaf(Leaf::default())));
        let (old, split) = insert_into(root, key, value);
        if let Some((sep, right)) = split {
            let left = root.clone();
            let mut keys = Packed::default();
            keys.insert(0, &[&sep]);
            *root = Arc::new(Node::Internal(Internal {
                keys,
                children: alloc::vec![left, right],
            }));
        }
        match &old {
            Some(old) => self.bytes = self.bytes - old.len() + value.len(),
            None => {
                self.len += 1;
                self.bytes += key.len() + value.len();
            }
        }
        self.shrink_root(); // a shorter value may have merged the root's last two children
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        // A miss must not copy the nodes that a frozen copy shares.
        self.get(key)?;
        let old = remove_from(self.root.as_mut()?, key)?;
        self.len -= 1;
        self.bytes -= key.len() + old.len();
        self.shrink_root();
        Some(old)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_after(None)
    }

    /// The entries whose keys are strictly greater than `after` (all of them for `None`), in
    /// order: the next page after a pagination cursor.
    pub fn range_after(&self, after: Option<&str>) -> Iter<'_> {
        let start = match after {
            Some(key) => Start::After(key),
            None => Start::First,
        };
        Iter {
            walk: Walk::new(self.root.as_deref(), start),
            prefix: String::new(),
        }
    }

    /// The entries whose keys start with `prefix`, in order.
    pub fn prefix(&self, prefix: &str) -> Iter<'_> {
        Iter {
            walk: Walk::new(self.root.as_deref(), Start::AtLeast(prefix)),
            prefix: prefix.into(),
        }
    }

    /// A cursor over this map as it is now, which holds no borrow: it can move to another
    /// thread and run to the end while this map changes or is dropped. Costs what a clone does.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            walk: Walk::new(self.root.clone(), Start::First),
        }
    }

    /// Replaces a root that has a single child with the child, and drops an empty root leaf.
    fn shrink_root(&mut self) {
        while let Some(root) = &self.root {
            let next = match &**root {
                Node::Internal(int) if int.children.len() == 1 => Some(int.children[0].clone()),
                Node::Leaf(leaf) if leaf.len() == 0 => None,
                _ => return,
            };
            self.root = next;
        }
    }
}

/// A separator key and the new right sibling of a node that split.
type Split = Option<(String, Arc<Node>)>;

/// Inserts into the subtree at `node`, copying each node on the way first if it is shared.
/// Returns the value replaced, and the split of `node` if it grew too big.
fn insert_into(node: &mut Arc<Node>, key: &str, value: &str) -> (Option<String>, Split) {
    let node = Arc::make_mut(node);
    let old = match node {
        Node::Leaf(leaf) => leaf.insert(key, value),
        Node::Internal(int) => {
            let c = int.child_index(key);
            let (old, split) = insert_into(&mut int.children[c], key, value);
            // A longer value can split the child, a shorter one leave it underfull.
            int.settle(c, split);
            old
        }
    };
    (old, node.split())
}

/// Removes `key` from the subtree at `node` (the caller checked that it is there), copying each
/// node on the way first if it is shared.
fn remove_from(node: &mut Arc<Node>, key: &str) -> Option<String> {
    match Arc::make_mut(node) {
        Node::Leaf(leaf) => leaf.remove(key),
        Node::Internal(int) => {
            let c = int.child_index(key);
            let old = remove_from(&mut int.children[c], key)?;
            int.settle(c, None);
            Some(old)
        }
    }
}

/// A tree node. All leaves are at the same depth.
#[derive(Clone)]
enum Node {
    Leaf(Leaf),
    Internal(Internal),
}

impl Node {
    fn underfull(&self) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.kv.weight() < LEAF_MIN,
            Node::Internal(int) => int.children.len() < FANOUT_MIN,
        }
    }

    /// If the node is too big, splits off its right half; returns the separator between the
    /// halves and that half.
    fn split(&mut self) -> Split {
        match self {
            Node::Leaf(leaf) => {
                let (sep, right) = leaf.split()?;
                Some((sep, Arc::new(Node::Leaf(right))))
            }
            Node::Internal(int) => {
                let (sep, right) = int.split()?;
                Some((sep, Arc::new(Node::Internal(right))))
            }
        }
    }

    /// Appends `right`, the next sibling at the same depth, whose keys are at or above `sep`.
    fn merge(&mut self, sep: &str, right: &Node) {
        match (self, right) {
            (Node::Leaf(left), Node::Leaf(right)) => left.kv.append(&right.kv),
            (Node::Internal(left), Node::Internal(right)) => {
                left.keys.insert(left.keys.len(), &[sep]);
                left.keys.append(&right.keys);
                left.children.extend(right.children.iter().cloned());
            }
            _ => unreachable!("siblings are at the same depth"),
        }
    }

    /// The number of entries, for a leaf.
    fn entries(&self) -> usize {
        match self {
            Node::Leaf(leaf) => leaf.len(),
            Node::Internal(_) => 0,
        }
    }
}

/// Strings packed into one buffer: string `i` is `data[ends[i - 1]..ends[i]]`.
#[derive(Clone, Default)]
struct Packed {
    data: String,
    ends: Vec<u32>,
}

/// A buffer offset. A node holds at most two entries under 1 GiB plus a few KiB, so it fits.
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("pmap: a node holds under 4 GiB")
}

/// Panics unless a buffer of `len` bytes can be addressed with `u32` offsets.
fn assert_fits(len: usize) {
    offset(len);
}

impl Packed {
    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        }
    }

    #[inline]
    fn get(&self, i: usize) -> &str {
        &self.data[self.start(i)..self.ends[i] as usize]
    }

    /// The heap bytes this holds when its buffers are exact.
    fn weight(&self) -> usize {
        self.data.len() + 4 * self.ends.len()
    }

    /// The number of strings at or below `key`, if they are ascending.
    #[inline]
    fn upper_bound(&self, key: &str) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Makes room for `bytes` more data and `strings` more strings, with a sixteenth more to
    /// spare: doubling would leave a quarter of every leaf empty on average, and growing by
    /// exactly what is needed would reallocate on every insert.
    fn reserve(&mut self, bytes: usize, strings: usize) {
        if self.data.capacity() - self.data.len() < bytes {
            self.data.reserve_exact(bytes + self.data.len() / 16);
        }
        if self.ends.capacity() - self.ends.len() < strings {
            self.ends.reserve_exact(strings + self.ends.len() / 16);
        }
    }

    /// Gives spare room beyond an eighth back, after the strings shrank.
    fn fit(&mut self) {
        if self.data.capacity() > self.data.len() + self.data.len() / 8 + 16 {
            self.data.shrink_to_fit();
        }
        if self.ends.capacity() > self.ends.len() + self.ends.len() / 8 + 4 {
            self.ends.shrink_to_fit();
        }
    }

    /// Inserts `parts` as strings `i`, `i + 1`, ...
    fn insert(&mut self, i: usize, parts: &[&str]) {
        let total: usize = parts.iter().map(|s| s.len()).sum();
        assert_fits(self.data.len() + total);
        self.reserve(total, parts.len());
        let mut at = self.start(i);
        for (j, s) in parts.iter().enumerate() {
            self.data.insert_str(at, s);
            at += s.len();
            self.ends.insert(i + j, offset(at));
        }
        for end in &mut self.ends[i + parts.len()..] {
            *end += total as u32;
        }
    }

    /// Appends `s` as the last string.
    fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.ends.push(offset(self.data.len()));
    }

    /// Replaces string `i` with `s`; returns the string it was.
    fn replace(&mut self, i: usize, s: &str) -> String {
        let (a, b) = (self.start(i), self.ends[i] as usize);
        let old = String::from(&self.data[a..b]);
        if s.len() > old.len() {
            assert_fits(self.data.len() + s.len() - old.len());
            self.reserve(s.len() - old.len(), 0);
        }
        self.data.replace_range(a..b, s);
        for end in &mut self.ends[i..] {
            // Two's complement: adding the wrapped difference subtracts when `s` is shorter.
            *end = end.wrapping_add(s.len().wrapping_sub(old.len()) as u32);
        }
        if s.len() < old.len() {
            self.fit();
        }
        old
    }

    /// Removes strings `i..i + n`.
    fn remove(&mut self, i: usize, n: usize) {
        let (a, b) = (self.start(i), self.start(i + n));
        self.data.drain(a..b);
        self.ends.drain(i..i + n);
        for end in &mut self.ends[i..] {
            *end -= (b - a) as u32;
        }
        self.fit();
    }

    /// Moves strings `i..` into a new `Packed` with exact buffers.
    fn split_off(&mut self, i: usize) -> Packed {
        let at = self.start(i);
        let right = Packed {
            data: String::from(&self.data[at..]),
            ends: self.ends[i..].iter().map(|e| e - at as u32).collect(),
        };
        self.data.truncate(at);
        self.ends.truncate(i);
        self.fit();
        right
    }

    /// Appends every string of `other`.
    fn append(&mut self, other: &Packed) {
        let base = offset(self.data.len());
        assert_fits(self.data.len() + other.data.len());
        self.reserve(other.data.len(), other.len());
        self.data.push_str(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// Entries in key order: key `i` is string `2i` of `kv`, its value string `2i + 1`.
#[derive(Clone, Default)]
struct Leaf {
    kv: Packed,
}

impl Leaf {
    fn len(&self) -> usize {
        self.kv.len() / 2
    }

    #[inline]
    fn key(&self, i: usize) -> &str {
        self.kv.get(2 * i)
    }

    #[inline]
    fn value(&self, i: usize) -> &str {
        self.kv.get(2 * i + 1)
    }

    #[inline]
    fn entry(&self, i: usize) -> (&str, &str) {
        (self.key(i), self.value(i))
    }

    /// `Ok(i)` if entry `i` has `key`, else `Err(i)` where it would go.
    #[inline]
    fn find(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn insert(&mut self, key: &str, value: &str) -> Option<String> {
        match self.find(key) {
            Ok(i) => Some(self.kv.replace(2 * i + 1, value)),
            Err(i) => {
                self.kv.insert(2 * i, &[key, value]);
                None
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.find(key).ok()?;
        let old = String::from(self.value(i));
        self.kv.remove(2 * i, 2);
        Some(old)
    }

    /// Where to split a leaf over [`LEAF_BYTES`]: at the entry where the left part reaches half
    /// the bytes, or the one before, so that neither part is underfull. `None` if it fits, or if
    /// no split can do that (a leaf of one entry bigger than a leaf and a few small ones stays
    /// whole, rather than leave a sliver beside it).
    fn split_point(&self) -> Option<usize> {
        let (n, total) = (self.len(), self.kv.weight());
        if n < 2 || total <= LEAF_BYTES {
            return None;
        }
        let left = |i: usize| self.kv.ends[2 * i - 1] as usize + 8 * i;
        let mut i = 1;
        while i + 1 < n && left(i) < total / 2 {
            i += 1;
        }
        [i, i - 1]
            .into_iter()
            .find(|&i| i > 0 && left(i) >= LEAF_MIN && total - left(i) >= LEAF_MIN)
    }

    /// If the leaf is too big, splits off the right part; returns the separator and that part.
    fn split(&mut self) -> Option<(String, Leaf)> {
        let i = self.split_point()?;
        let right = Leaf {
            kv: self.kv.split_off(2 * i),
        };
        let sep = separator(self.key(i - 1), right.key(0)).into();
        Some((sep, right))
    }
}

/// The shortest prefix of `right` (cut at a character boundary) that is greater than `left`,
/// for `left < right`: it sorts after every key of the left node and at or before every key of
/// the right one, and it is usually a few bytes where keys are long.
fn separator<'a>(left: &str, right: &'a str) -> &'a str {
    let common = left
        .bytes()
        .zip(right.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    // `left < right`, so `right` goes on past the common prefix and differs (or `left` ended).
    let mut end = (common + 1).min(right.len());
    while !right.is_char_boundary(end) {
        end += 1;
    }
    &right[..end]
}

/// Children with the separators between them: child `i` holds the keys `k` with
/// `keys[i - 1] <= k < keys[i]`.
#[derive(Clone)]
struct Internal {
    keys: Packed,
    children: Vec<Arc<Node>>,
}

impl Internal {
    /// The child whose range holds `key`.
    #[inline]
    fn child_index(&self, key: &str) -> usize {
        self.keys.upper_bound(key)
    }

    /// If there are too many children, splits off the right half; the separator between the
    /// halves moves up.
    fn split(&mut self) -> Option<(String, Internal)> {
        if self.children.len() <= FANOUT {
            return None;
        }
        let mid = self.children.len() / 2;
        let right = Internal {
            keys: self.keys.split_off(mid),
            children: self.children.split_off(mid),
        };
        let sep = String::from(self.keys.get(mid - 1));
        self.keys.remove(mid - 1, 1);
        Some((sep, right))
    }

    /// After a write into child `c`: adds the right half if it split, and merges it with a
    /// sibling if it became underfull.
    fn settle(&mut self, c: usize, split: Split) {
        if let Some((sep, right)) = split {
            self.keys.insert(c, &[&sep]);
            self.children.insert(c + 1, right);
        }
        if self.children[c].underfull() {
            self.rebalance(c);
        }
    }

    /// Merges child `c`, which is underfull, with a sibling, and splits the two again if they
    /// are too big together, which shares their entries evenly. Only the left one of the pair
    /// is written to (copied if shared); the right one is read.
    fn rebalance(&mut self, c: usize) {
        if self.children.len() < 2 {
            return;
        }
        let i = c.min(self.children.len() - 2);
        let right = self.children.remove(i + 1);
        let sep = String::from(self.keys.get(i));
        self.keys.remove(i, 1);
        let left = Arc::make_mut(&mut self.children[i]);
        left.merge(&sep, &right);
        if let Some((sep, right)) = left.split() {
            self.keys.insert(i, &[&sep]);
            self.children.insert(i + 1, right);
        }
    }
}

/// Where a walk starts.
#[derive(Clone, Copy)]
enum Start<'k> {
    First,
    /// The first key strictly greater.
    After(&'k str),
    /// The first key greater or equal.
    AtLeast(&'k str),
}

/// A handle on a node that a walk can hold: a borrow (for [`Iter`]) or an `Arc` (for
/// [`Cursor`], which must not borrow the map).
trait NodeRef: Deref<Target = Node> + Sized {
    fn child(&self, i: usize) -> Option<Self>;
}

impl<'a> NodeRef for &'a Node {
    fn child(&self, i: usize) -> Option<&'a Node> {
        match *self {
            Node::Internal(int) => int.children.get(i).map(|c| &**c),
            Node::Leaf(_) => None,
        }
    }
}

impl NodeRef for Arc<Node> {
    fn child(&self, i: usize) -> Option<Arc<Node>> {
        match &**self {
            Node::Internal(int) => int.children.get(i).cloned(),
            Node::Leaf(_) => None,
        }
    }
}

/// A position in the tree: the internal nodes on the path with the child taken in each, and the
/// leaf with the index of the next entry. Finished when `leaf` is `None`.
struct Walk<P> {
    stack: Vec<(P, usize)>,
    leaf: Option<P>,
    pos: usize,
}

impl<P: NodeRef> Walk<P> {
    fn new(root: Option<P>, start: Start<'_>) -> Walk<P> {
        let mut walk = Walk {
            stack: Vec::new(),
            leaf: None,
            pos: 0,
        };
        let Some(mut node) = root else {
            return walk;
        };
        loop {
            let c = match &*node {
                Node::Leaf(leaf) => {
                    walk.pos = match start {
                        Start::First => 0,
                        Start::After(key) => leaf.find(key).map_or_else(|i| i, |i| i + 1),
                        Start::AtLeast(key) => leaf.find(key).unwrap_or_else(|i| i),
                    };
                    break;
                }
                Node::Internal(int) => match start {
                    Start::First => 0,
                    Start::After(key) | Start::AtLeast(key) => int.child_index(key),
                },
            };
            let Some(child) = node.child(c) else { break };
            walk.stack.push((node, c));
            node = child;
        }
        walk.leaf = Some(node);
        walk
    }

    /// Moves to the next entry; returns its index in `self.leaf`, or `None` at the end.
    fn step(&mut self) -> Option<usize> {
        loop {
            if self.pos < self.leaf.as_ref()?.entries() {
                self.pos += 1;
                return Some(self.pos - 1);
            }
            // The leaf is done: climb to the first ancestor with a child to the right ...
            self.leaf = None;
            let mut node = loop {
                let (parent, c) = self.stack.last_mut()?;
                *c += 1;
                if let Some(child) = parent.child(*c) {
                    break child;
                }
                self.stack.pop();
            };
            // ... and go down its leftmost path.
            while let Some(child) = node.child(0) {
                self.stack.push((node, 0));
                node = child;
            }
            self.leaf = Some(node);
            self.pos = 0;
        }
    }

    fn finish(&mut self) {
        self.stack.clear();
        self.leaf = None;
    }
}

/// The entries of a [`PMap`] in key order, borrowed: from [`PMap::iter`],
/// [`PMap::range_after`] or [`PMap::prefix`].
pub struct Iter<'a> {
    walk: Walk<&'a Node>,
    /// The iteration ends at the first key without this prefix.
    prefix: String,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let i = self.walk.step()?;
        let Some(Node::Leaf(leaf)) = self.walk.leaf else {
            return None;
        };
        let (key, value) = leaf.entry(i);
        if !key.starts_with(self.prefix.as_str()) {
            self.walk.finish();
            return None;
        }
        Some((key, value))
    }
}

impl FusedIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The entries of a frozen copy of a [`PMap`] in key order, owning what it walks (`'static`
/// and `Send`): from [`PMap::cursor`], to serialize a snapshot on another thread while the map
/// keeps changing. It holds the frozen tree until it is dropped, so while it lives each node
/// the map writes to exists twice: memory peaks at the state plus the part of it written
/// since, at most twice the state.
///
/// ```
/// use clusterconsensus::pmap::PMap;
///
/// let mut map: PMap = [("a", "1"), ("b", "2")].into_iter().collect();
/// let mut cursor = map.cursor();
/// map.remove("a");
/// let worker = std::thread::spawn(move || {
///     let mut out = String::new();
///     while let Some((key, value)) = cursor.next() {
///         out += &format!("{key}={value};");
///     }
///     out
/// });
/// assert_eq!(worker.join().unwrap(), "a=1;b=2;");
/// ```
pub struct Cursor {
    walk: Walk<Arc<Node>>,
}

impl Cursor {
    /// The next entry, borrowed until the next call; `None` at the end (and after it).
    // A lending iterator: `Iterator` cannot hand out borrows of the cursor itself, and owned
    // strings would cost two allocations per entry of a snapshot.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<(&str, &str)> {
        let i = self.walk.step()?;
        match self.walk.leaf.as_deref()? {
            Node::Leaf(leaf) => Some(leaf.entry(i)),
            Node::Internal(_) => None,
        }
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor").finish_non_exhaustive()
    }
}

/// Why [`Builder::push`] refused an entry. The builder is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The key is not strictly greater than the previous one.
    OutOfOrder { key: String, previous: String },
    /// The key and value together are 1 GiB or more.
    TooLarge { key_len: usize, value_len: usize },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::OutOfOrder { key, previous } => {
                write!(f, "key {key:?} is not after the previous key {previous:?}")
            }
            BuildError::TooLarge { key_len, value_len } => write!(
                f,
                "an entry of {key_len} + {value_len} bytes (key + value) is not under 1 GiB"
            ),
        }
    }
}

/// Builds a [`PMap`] from entries in strictly ascending key order (a restore), filling leaves
/// and internal nodes completely as they come instead of searching and splitting for each
/// entry.
///
/// ```
/// use clusterconsensus::pmap::{BuildError, Builder};
///
/// let mut b = Builder::new();
/// b.push("a", "1").unwrap();
/// b.push("b", "2").unwrap();
/// assert!(matches!(b.push("a", "3"), Err(BuildError::OutOfOrder { .. })));
/// let map = b.finish();
/// assert_eq!(map.len(), 2);
/// ```
pub struct Builder {
    /// The leaf being filled, with room for a full one; copied to an exact one when full.
    leaf: Leaf,
    /// The last key of the previous leaf, if any (for the order check and separators).
    prev: Option<String>,
    /// The node being filled at each level above the leaves, with the separator before it.
    levels: Vec<Pending>,
    len: usize,
    bytes: usize,
}

/// An internal node being filled, and the separator that goes before it in its parent (`None`
/// for the leftmost node of its level).
struct Pending {
    sep: Option<String>,
    node: Internal,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        let mut leaf = Leaf::default();
        leaf.kv.data.reserve_exact(LEAF_BYTES);
        leaf.kv.ends.reserve_exact(LEAF_BYTES / 8);
        Builder {
            leaf,
            prev: None,
            levels: Vec::new(),
            len: 0,
            bytes: 0,
        }
    }

    /// Adds an entry after all the previous ones. Refuses a key that is not strictly greater
    /// than the previous one, or an entry of 1 GiB or more; the builder is then unchanged.
    pub fn push(&mut self, key: &str, value: &str) -> Result<(), BuildError> {
        let previous = match self.leaf.len() {
            0 => self.prev.as_deref(),
            n => Some(self.leaf.key(n - 1)),
        };
        if let Some(previous) = previous.filter(|p| key <= *p) {
            return Err(BuildError::OutOfOrder {
                key: key.into(),
                previous: previous.into(),
            });
        }
        if key.len() + value.len() >= MAX_ENTRY {
            return Err(BuildError::TooLarge {
                key_len: key.len(),
                value_len: value.len(),
            });
        }
        // A leaf is sealed when the entry would not fit, unless it is underfull: then it takes
        // the entry even if that is bigger than a leaf, as a split would leave it.
        let weight = self.leaf.kv.weight();
        if weight >= LEAF_MIN && weight + key.len() + value.len() + 8 > LEAF_BYTES {
            self.seal_leaf();
        }
        self.leaf.kv.push(key);
        self.leaf.kv.push(value);
        self.len += 1;
        self.bytes += key.len() + value.len();
        Ok(())
    }

    /// The map of every entry pushed.
    pub fn finish(mut self) -> PMap {
        if self.leaf.len() > 0 {
            self.seal_leaf();
        }
        let mut root = None;
        // A level may be added while the levels below are flushed into it.
        let mut level = 0;
        while level < self.levels.len() {
            let pending = core::mem::replace(
                &mut self.levels[level],
                Pending {
                    sep: None,
                    node: Internal {
                        keys: Packed::default(),
                        children: Vec::new(),
                    },
                },
            );
            let mut node = pending.node;
            if level + 1 < self.levels.len() {
                self.add(level + 1, pending.sep, Arc::new(Node::Internal(node)));
            } else if node.children.len() == 1 {
                root = node.children.pop();
            } else {
                root = Some(Arc::new(Node::Internal(node)));
            }
            level += 1;
        }
        let mut map = PMap {
            root,
            len: self.len,
            bytes: self.bytes,
        };
        // Every node was filled completely but the last one of each level, which may be nearly
        // empty: merge it with its left sibling, as a delete would.
        if let Some(root) = &mut map.root {
            fix_right_edge(root);
        }
        map.shrink_root();
        map
    }

    /// Moves the full leaf into the tree and starts the next one.
    fn seal_leaf(&mut self) {
        let leaf = self.leaf.clone(); // exact buffers
        self.leaf.kv.clear();
        let first = leaf.key(0);
        let sep = self
            .prev
            .as_deref()
            .map(|prev| separator(prev, first).into());
        let last = leaf.key(leaf.len() - 1);
        let prev = self.prev.get_or_insert_with(String::new);
        prev.clear();
        prev.push_str(last);
        self.add(0, sep, Arc::new(Node::Leaf(leaf)));
    }

    /// Adds `node`, preceded by separator `sep`, as the next child at `level` (0: the parents
    /// of leaves); a full node there moves up first.
    fn add(&mut self, level: usize, sep: Option<String>, node: Arc<Node>) {
        if level == self.levels.len() {
            self.levels.push(Pending {
                sep,
                node: Internal {
                    keys: Packed::default(),
                    children: alloc::vec![node],
                },
            });
            return;
        }
        let pending = &mut self.levels[level];
        if pending.node.children.len() < FANOUT {
            pending.node.keys.push(sep.as_deref().unwrap_or_default());
            pending.node.children.push(node);
            return;
        }
        let full = core::mem::replace(
            pending,
            Pending {
                sep,
                node: Internal {
                    keys: Packed::default(),
                    children: alloc::vec![node],
                },
            },
        );
        self.add(level + 1, full.sep, Arc::new(Node::Internal(full.node)));
    }
}

/// Merges the last child of each node on the rightmost path with its left sibling if it is
/// underfull.
fn fix_right_edge(node: &mut Arc<Node>) {
    if let Node::Internal(int) = Arc::make_mut(node) {
        let last = int.children.len().saturating_sub(1);
        if last > 0 && int.children[last].underfull() {
            int.rebalance(last);
        }
        if let Some(child) = int.children.last_mut() {
            fix_right_edge(child);
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("len", &self.len)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for PMap {
    fn eq(&self, other: &PMap) -> bool {
        let same_root = match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.len == other.len
            && self.bytes == other.bytes
            && (same_root || self.iter().eq(other.iter()))
    }
}

impl Eq for PMap {}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for PMap {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key.as_ref(), value.as_ref());
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for PMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> PMap {
        let mut map = PMap::new();
        map.extend(entries);
        map
    }
}

impl<'a> IntoIterator for &'a PMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// A JSON object (a serde map) in key order, like `BTreeMap<String, String>`, so a struct can
/// switch from one to the other and keep its encoding.
impl serde::Serialize for PMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Any map of strings to strings; a later duplicate key wins. Entries in ascending order (what
/// `Serialize` writes) go through a [`Builder`]; from the first one out of order, `insert`.
impl<'de> serde::Deserialize<'de> for PMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PMap, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = PMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<PMap, A::Error> {
                let mut builder = Some(Builder::new());
                let mut map = PMap::new();
                while let Some((key, value)) = access.next_entry::<String, String>()? {
                    if key.len() + value.len() >= MAX_ENTRY {
                        let e = BuildError::TooLarge {
                            key_len: key.len(),
                            value_len: value.len(),
                        };
                        return Err(serde::de::Error::custom(e));
                    }
                    if let Some(b) = &mut builder {
                        if b.push(&key, &value).is_ok() {
                            continue;
                        }
                        map = builder.take().map(Builder::finish).unwrap_or_default();
                    }
                    map.insert(&key, &value);
                }
                Ok(builder.map(Builder::finish).unwrap_or(map))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use core::fmt::Write;
    use core::ops::Bound;

    type Model = BTreeMap<String, String>;

    /// splitmix64: a seeded generator, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }
    }

    /// Pieces that make keys share prefixes, one a prefix of another, multi-byte characters
    /// (2, 3 and 4 bytes), and the empty key.
    const PIECES: [&str; 10] = ["", "a", "ab", "abc", "b", "é", "日本", "😀", "\u{7f}", "z"];

    fn random_key(rng: &mut Rng) -> String {
        let mut key = String::new();
        for _ in 0..rng.below(4) {
            key.push_str(PIECES[rng.below(PIECES.len())]);
        }
        if rng.below(3) > 0 {
            write!(key, "{}", rng.below(3000)).unwrap();
        }
        key
    }

    /// A value of about `max` bytes at most; a few empty ones, and with `huge`, a few bigger
    /// than a whole leaf.
    fn random_value(rng: &mut Rng, max: usize, huge: bool) -> String {
        let len = match rng.below(40) {
            0 => 0,
            1 if huge => LEAF_BYTES + rng.below(2 * LEAF_BYTES),
            _ => rng.below(max + 1),
        };
        let mut value = String::new();
        while value.len() < len {
            value.push(['v', 'é', '日', '😀'][rng.below(4)]);
        }
        value
    }

    /// A key of the model (most of the time, if it has any), else a random one.
    fn probe(model: &Model, rng: &mut Rng) -> String {
        let key = random_key(rng);
        if rng.below(4) == 0 {
            return key;
        }
        match model
            .range::<str, _>((Bound::Included(key.as_str()), Bound::Unbounded))
            .next()
        {
            Some((k, _)) => k.clone(),
            None => key,
        }
    }

    /// One random write to both; they must answer the same.
    fn random_op(map: &mut PMap, model: &mut Model, rng: &mut Rng, max: usize) {
        let huge = max > 200;
        match rng.below(10) {
            0..=4 => {
                let (k, v) = (random_key(rng), random_value(rng, max, huge));
                assert_eq!(map.insert(&k, &v), model.insert(k, v));
            }
            5 | 6 => {
                let (k, v) = (probe(model, rng), random_value(rng, max, huge));
                assert_eq!(map.insert(&k, &v), model.insert(k, v));
            }
            _ => {
                let k = probe(model, rng);
                assert_eq!(map.remove(&k), model.remove(&k));
            }
        }
    }

    fn pairs(model: &Model) -> Vec<(&str, &str)> {
        model
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Compares everything a reader sees, and checks the tree's invariants.
    fn compare(map: &PMap, model: &Model, rng: &mut Rng) {
        check(map);
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
        let bytes: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(map.bytes(), bytes);
        let want = pairs(model);
        assert_eq!(map.iter().collect::<Vec<_>>(), want);
        assert_eq!(map.range_after(None).collect::<Vec<_>>(), want);
        let mut cursor = map.cursor();
        let mut seen = 0;
        while let Some(entry) = cursor.next() {
            assert_eq!(Some(&entry), want.get(seen));
            seen += 1;
        }
        assert_eq!(seen, want.len());
        assert_eq!(cursor.next(), None);
        for _ in 0..6 {
            let key = probe(model, rng);
            assert_eq!(
                map.get(&key),
                model.get(&key).map(String::as_str),
                "{key:?}"
            );
            let after = (Bound::Excluded(key.as_str()), Bound::Unbounded);
            assert!(map.range_after(Some(&key)).eq(model
                .range::<str, _>(after)
                .map(|(k, v)| (k.as_str(), v.as_str()))));
            // A prefix of the key, cut at a character boundary.
            let mut cut = rng.below(key.len() + 1);
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = &key[..cut];
            let want = model
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.as_str(), v.as_str()));
            assert!(map.prefix(prefix).eq(want), "{prefix:?}");
        }
    }

    /// Checks the invariants of the module doc, and that `len` and `bytes` add up.
    fn check(map: &PMap) {
        let Some(root) = &map.root else {
            assert_eq!((map.len, map.bytes), (0, 0));
            return;
        };
        let mut leaf_depth = None;
        let (len, bytes) = check_node(root, 0, None, None, &mut leaf_depth);
        if let Node::Internal(int) = &**root {
            assert!(
                int.children.len() >= 2,
                "a root with one child is replaced by it"
            );
        }
        assert_eq!((len, bytes), (map.len, map.bytes));
        assert!(len > 0, "an empty map has no root");
    }

    fn check_packed(p: &Packed) {
        assert!(p.ends.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(p.ends.last().map_or(0, |&e| e as usize), p.data.len());
    }

    /// (entries, bytes) under `node`, whose keys must be in `[low, high)`.
    fn check_node(
        node: &Node,
        depth: usize,
        low: Option<&str>,
        high: Option<&str>,
        leaf_depth: &mut Option<usize>,
    ) -> (usize, usize) {
        let in_range = |k: &str| low.is_none_or(|low| low <= k) && high.is_none_or(|high| k < high);
        match node {
            Node::Leaf(leaf) => {
                assert_eq!(
                    *leaf_depth.get_or_insert(depth),
                    depth,
                    "leaves at one depth"
                );
                check_packed(&leaf.kv);
                assert_eq!(leaf.kv.len() % 2, 0);
                assert!(leaf.len() > 0, "no empty leaf");
                assert!(depth == 0 || !node.underfull(), "an underfull leaf");
                for i in 0..leaf.len() {
                    assert!(
                        in_range(leaf.key(i)),
                        "{:?} in {low:?}..{high:?}",
                        leaf.key(i)
                    );
                    assert!(i == 0 || leaf.key(i - 1) < leaf.key(i));
                }
                (leaf.len(), leaf.kv.data.len())
            }
            Node::Internal(int) => {
                check_packed(&int.keys);
                assert_eq!(int.keys.len() + 1, int.children.len());
                assert!(int.children.len() <= FANOUT);
                assert!(
                    depth == 0 || !node.underfull(),
                    "an underfull internal node"
                );
                let (mut len, mut bytes) = (0, 0);
                for (i, child) in int.children.iter().enumerate() {
                    let lo = if i == 0 {
                        low
                    } else {
                        Some(int.keys.get(i - 1))
                    };
                    let hi = int.keys.ends.get(i).map_or(high, |_| Some(int.keys.get(i)));
                    let (l, b) = check_node(child, depth + 1, lo, hi, leaf_depth);
                    len += l;
                    bytes += b;
                }
                (len, bytes)
            }
        }
    }

    /// The number of levels, leaves included.
    fn depth(map: &PMap) -> usize {
        let mut node = map.root.as_deref();
        let mut depth = 0;
        while let Some(n) = node {
            depth += 1;
            node = n.child(0);
        }
        depth
    }

    #[test]
    fn matches_a_btreemap_model_and_frozen_copies_stay_as_they_were() {
        for seed in 0..6 {
            // Small values make wide leaves; values up to 1200 bytes (and a few bigger than a
            // leaf) make many leaves and three levels.
            let max = if seed % 2 == 0 { 100 } else { 1200 };
            let mut rng = Rng(seed);
            let (mut map, mut model) = (PMap::new(), Model::new());
            let mut frozen: Vec<(PMap, Model)> = Vec::new();
            for _ in 0..40 {
                for _ in 0..250 {
                    random_op(&mut map, &mut model, &mut rng, max);
                }
                compare(&map, &model, &mut rng);
                if rng.below(3) == 0 {
                    frozen.push((map.clone(), model.clone()));
                }
                if rng.below(4) == 0 {
                    // Writes to a copy do not leak back into the original.
                    let (mut copy, mut copy_model) = (map.clone(), model.clone());
                    for _ in 0..100 {
                        random_op(&mut copy, &mut copy_model, &mut rng, max);
                    }
                    compare(&copy, &copy_model, &mut rng);
                    assert!(map.iter().eq(pairs(&model)));
                }
            }
            assert!(depth(&map) >= 2, "seed {seed}: depth {}", depth(&map));
            for (copy, copy_model) in &frozen {
                compare(copy, copy_model, &mut rng);
            }
            // Down to empty, in random order.
            let mut keys: Vec<String> = model.keys().cloned().collect();
            rng.shuffle(&mut keys);
            for (n, key) in keys.iter().enumerate() {
                assert_eq!(map.remove(key), model.remove(key));
                assert_eq!(map.remove(key), None);
                if n % 400 == 0 {
                    compare(&map, &model, &mut rng);
                }
            }
            compare(&map, &model, &mut rng);
            assert!(map.root.is_none(), "an empty map holds no nodes");
            for (copy, copy_model) in &frozen {
                compare(copy, copy_model, &mut rng);
            }
        }
    }

    #[test]
    fn a_deep_tree_grows_and_shrinks() {
        let mut rng = Rng(99);
        let (mut map, mut model) = (PMap::new(), Model::new());
        let value = "v".repeat(400);
        for i in 0..40_000u64 {
            let key = alloc::format!("{:08x}", Rng(i).next() as u32);
            assert_eq!(map.insert(&key, &value), model.insert(key, value.clone()));
        }
        compare(&map, &model, &mut rng);
        assert!(depth(&map) >= 4, "depth {}", depth(&map));
        let (frozen, frozen_model) = (map.clone(), model.clone());
        let mut keys: Vec<String> = model.keys().cloned().collect();
        rng.shuffle(&mut keys);
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(map.remove(key), model.remove(key));
            if n % 5000 == 0 {
                compare(&map, &model, &mut rng);
            }
        }
        assert!(map.is_empty());
        compare(&frozen, &frozen_model, &mut rng);
    }

    /// The nodes of `a` that are not shared with `b`, at the same place in both trees.
    fn unshared(a: &Arc<Node>, b: &Arc<Node>) -> usize {
        if Arc::ptr_eq(a, b) {
            return 0;
        }
        let inner = match (&**a, &**b) {
            (Node::Internal(x), Node::Internal(y)) => x
                .children
                .iter()
                .zip(&y.children)
                .map(|(a, b)| unshared(a, b))
                .sum(),
            _ => 0,
        };
        1 + inner
    }

    #[test]
    fn a_write_after_a_clone_copies_one_path_and_a_miss_copies_nothing() {
        let value = "v".repeat(100);
        let mut map: PMap = (0..50_000)
            .map(|i| (alloc::format!("{:016x}", Rng(i).next()), value.as_str()))
            .collect();
        let levels = depth(&map);
        assert!(levels >= 3, "depth {levels}");
        let frozen = map.clone();
        let root = |m: &PMap| m.root.clone().unwrap();
        assert_eq!(unshared(&root(&map), &root(&frozen)), 0);

        assert_eq!(map.remove("not there"), None);
        assert_eq!(
            unshared(&root(&map), &root(&frozen)),
            0,
            "a miss copies nothing"
        );

        let key = alloc::format!("{:016x}", Rng(123).next());
        map.insert(&key, "new");
        assert_eq!(
            unshared(&root(&map), &root(&frozen)),
            levels,
            "one node per level"
        );
        // (An address, not an `Arc`: holding one would share the root.)
        let before = map.root.as_ref().map(Arc::as_ptr);
        map.insert(&key, "newer");
        map.insert(&(key.clone() + "0"), "next to it");
        map.remove(&key);
        let after = map.root.as_ref().map(Arc::as_ptr);
        assert_eq!(before, after, "later writes are in place");
        assert_eq!(unshared(&root(&map), &root(&frozen)), levels);
        assert_eq!(frozen.get(&key), Some(value.as_str()));
        assert_eq!(frozen.len(), 50_000);
    }

    #[test]
    fn edge_keys_and_values() {
        let mut rng = Rng(1);
        let mut map = PMap::new();
        assert_eq!(map.insert("", ""), None);
        assert_eq!(map.get(""), Some(""));
        assert_eq!((map.len(), map.bytes()), (1, 0));
        assert_eq!(map.insert("", "x"), Some(String::new()));
        map.insert("a", "");
        map.insert("ab", "日本");
        map.insert("é", "😀");
        let model: Model = [("", "x"), ("a", ""), ("ab", "日本"), ("é", "😀")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        compare(&map, &model, &mut rng);
        assert_eq!(map.bytes(), 1 + 1 + 2 + 6 + 2 + 4);
        assert!(map
            .range_after(Some(""))
            .map(|(k, _)| k)
            .eq(["a", "ab", "é"]));
        assert!(map.range_after(Some("a")).map(|(k, _)| k).eq(["ab", "é"]));
        assert!(map.range_after(Some("é")).next().is_none());
        assert!(map.prefix("a").map(|(k, _)| k).eq(["a", "ab"]));
        assert!(map.prefix("").map(|(k, _)| k).eq(["", "a", "ab", "é"]));
        assert!(map.prefix("\u{c3}").next().is_none()); // the character, not the byte 0xC3
        assert_eq!(map.remove("nope"), None);
        assert_eq!(map.remove(""), Some("x".into()));
        assert_eq!(map.get(""), None);
    }

    #[test]
    fn separators_are_short_and_between() {
        for (left, right, sep) in [
            ("apple", "banana", "b"),
            ("ab", "abc", "abc"),
            ("abc", "abd", "abd"),
            ("a", "b", "b"),
            ("", "a", "a"),
            ("k0001", "k0002xyz", "k0002"),
            ("é", "ê", "ê"),       // differ in the second byte of the character
            ("a", "a日本", "a日"), // a whole character
        ] {
            assert_eq!(separator(left, right), sep);
            assert!(left < sep && sep <= right);
        }
    }

    #[test]
    fn the_builder_matches_the_model() {
        let mut rng = Rng(5);
        for (n, max) in [
            (0, 10),
            (1, 10),
            (2, 10),
            (37, 100),
            (1000, 100),
            (20_000, 30),
        ]
        .into_iter()
        .chain([(5000, 1200), (100_000, 250)])
        {
            let mut model = Model::new();
            while model.len() < n {
                let key = alloc::format!("{}{}", random_key(&mut rng), rng.below(1 << 20));
                model.insert(key, random_value(&mut rng, max, max > 200));
            }
            let mut builder = Builder::new();
            for (k, v) in &model {
                builder.push(k, v).unwrap();
            }
            let mut map = builder.finish();
            compare(&map, &model, &mut rng);
            if n == 100_000 {
                assert!(depth(&map) >= 4, "depth {}", depth(&map));
            }
            // A built map behaves as any other afterwards.
            for _ in 0..2000 {
                random_op(&mut map, &mut model, &mut rng, max);
            }
            compare(&map, &model, &mut rng);
        }
    }

    #[test]
    fn the_builder_refuses_keys_out_of_order() {
        let mut b = Builder::new();
        b.push("b", "1").unwrap();
        let err = b.push("a", "2").unwrap_err();
        assert_eq!(
            err,
            BuildError::OutOfOrder {
                key: "a".into(),
                previous: "b".into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"key "a" is not after the previous key "b""#
        );
        assert!(matches!(
            b.push("b", "2"),
            Err(BuildError::OutOfOrder { .. })
        ));
        b.push("c", "3").unwrap();
        // Past a full leaf too: the order is checked against the previous leaf.
        let value = "v".repeat(LEAF_BYTES / 2);
        for key in ["d", "e", "f"] {
            b.push(key, &value).unwrap();
        }
        assert!(matches!(
            b.push("e", "x"),
            Err(BuildError::OutOfOrder { .. })
        ));
        let map = b.finish();
        assert!(map.iter().map(|(k, _)| k).eq(["b", "c", "d", "e", "f"]));
        assert_eq!(map.get("b"), Some("1"));
    }

    #[test]
    fn a_cursor_sees_the_frozen_copy_while_the_map_changes() {
        let mut rng = Rng(7);
        let (mut map, mut model) = (PMap::new(), Model::new());
        for _ in 0..20_000 {
            let (k, v) = (random_key(&mut rng), random_value(&mut rng, 100, false));
            map.insert(&k, &v);
            model.insert(k, v);
        }
        let want: Vec<(String, String)> = model.clone().into_iter().collect();

        // Interleaved on one thread: half the entries, then every key changed or removed.
        let mut cursor = map.cursor();
        let mut seen = Vec::new();
        for _ in 0..want.len() / 2 {
            let (k, v) = cursor.next().unwrap();
            seen.push((k.to_string(), v.to_string()));
        }
        for (i, key) in model.keys().enumerate() {
            if i % 2 == 0 {
                map.remove(key);
            } else {
                map.insert(key, "changed");
            }
        }
        map.insert("new", "entry");
        drop(map.clone());
        while let Some((k, v)) = cursor.next() {
            seen.push((k.to_string(), v.to_string()));
        }
        assert_eq!(seen, want);

        // On another thread, while this one writes.
        let mut cursor = map.cursor();
        let want: Vec<(String, String)> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some((k, v)) = cursor.next() {
                seen.push((k.to_string(), v.to_string()));
            }
            seen
        });
        for _ in 0..20_000 {
            let (k, v) = (random_key(&mut rng), random_value(&mut rng, 100, false));
            if rng.below(3) == 0 {
                map.remove(&k);
            } else {
                map.insert(&k, &v);
            }
        }
        drop(map); // the cursor keeps what it needs
        assert_eq!(reader.join().unwrap(), want);
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send_static<T: Send + 'static>() {}
        send_sync::<PMap>();
        send_static::<Cursor>();
        send_sync::<Builder>();
    }

    #[test]
    fn equality_debug_collect_and_serde() {
        let mut rng = Rng(3);
        let mut model = Model::new();
        for _ in 0..3000 {
            model.insert(random_key(&mut rng), random_value(&mut rng, 50, false));
        }
        let mut entries = pairs(&model);
        rng.shuffle(&mut entries);
        let inserted: PMap = entries.iter().copied().collect();
        let mut builder = Builder::new();
        for (k, v) in pairs(&model) {
            builder.push(k, v).unwrap();
        }
        let built = builder.finish();
        assert_eq!(inserted, built);
        assert_eq!(inserted, inserted.clone());
        let mut other = built.clone();
        let (k, _) = entries[0];
        other.insert(k, "different");
        assert_ne!(other, built);
        other.extend([(k, model[k].as_str())]);
        assert_eq!(other, built);
        assert_ne!(PMap::new(), built);
        assert_eq!(PMap::new(), PMap::default());

        assert_eq!(alloc::format!("{built:?}"), alloc::format!("{model:?}"));

        let json = serde_json::to_string(&built).unwrap();
        assert_eq!(json, serde_json::to_string(&model).unwrap());
        let back: PMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, built);
        check(&back);
        // Out of order, with a duplicate (the later wins, as for a BTreeMap).
        let back: PMap = serde_json::from_str(r#"{"b":"1","c":"2","a":"3","b":"4"}"#).unwrap();
        assert!(back.iter().eq([("a", "3"), ("b", "4"), ("c", "2")]));
        assert!(serde_json::from_str::<PMap>(r#"{"a":1}"#).is_err());
    }
}
