//! What `PMap` costs against the `BTreeMap<String, String>` it replaces, on the key-value app's
//! shape: 2M entries of 16-byte keys and 100-byte values. Prints numbers, asserts nothing.
//!
//! Run: `cargo bench -p clusterconsensus --bench pmap` (about a minute once built).
//!
//! - insert: every key once, in random order, into an empty map (the `BTreeMap` gets owned
//!   `String`s, as the key-value app gives it);
//! - get: every key once, in another random order;
//! - overwrite: 1M random keys set to new values of the same size, alone, and right after a
//!   clone that stays alive (a snapshot being serialized): the first writes to each leaf copy it;
//! - clone: `PMap` bumps a count, `BTreeMap` copies everything;
//! - scan: every entry of the clone copied into a 1 MiB buffer (what serializing a snapshot
//!   does), through a `Cursor` or the `BTreeMap`'s iterator;
//! - build: every entry from sorted input, through `Builder` or `BTreeMap::from_iter` (which
//!   builds in bulk from sorted input);
//! - heap: bytes allocated and not freed (a counting global allocator) per entry after insert.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clusterconsensus::pmap::{Builder, PMap};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const N: usize = 2_000_000;
const OVERWRITES: usize = 1_000_000;
const KEY: usize = 16;
const VALUE: usize = 100;
/// Distinct values, cycled through: the input stays small beside the maps.
const VALUES: usize = 4096;

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The input, made before anything is timed or counted: keys packed into one string (in a
/// random order), values likewise, and orders to visit them in.
struct Input {
    keys: String,
    values: String,
    /// A second random order of all keys (for get).
    shuffled: Vec<u32>,
    /// Random keys to overwrite.
    overwrite: Vec<u32>,
    /// All keys in ascending order (for the builders).
    sorted: Vec<u32>,
}

impl Input {
    fn new() -> Input {
        let mut keys = String::with_capacity(N * KEY);
        for i in 0..N as u64 {
            keys += &format!("{:016x}", mix(i));
        }
        let mut values = String::with_capacity(VALUES * VALUE);
        for i in 0..VALUES as u64 {
            let mut v = String::new();
            while v.len() < VALUE {
                v += &format!("{:016x}", mix(i << 32 | v.len() as u64));
            }
            values += &v[..VALUE];
        }
        let order = |seed: u64, n: usize| -> Vec<u32> {
            (0..n as u64)
                .map(|j| (mix(j ^ seed) % N as u64) as u32)
                .collect()
        };
        let shuffled = {
            let mut s: Vec<u32> = (0..N as u32).collect();
            s.sort_by_key(|&i| mix(u64::from(i) ^ 0xabc));
            s
        };
        let mut sorted: Vec<u32> = (0..N as u32).collect();
        let k = |i: u32| &keys[i as usize * KEY..(i as usize + 1) * KEY];
        sorted.sort_by(|&a, &b| k(a).cmp(k(b)));
        Input {
            shuffled,
            overwrite: order(0xdef, OVERWRITES),
            sorted,
            keys,
            values,
        }
    }

    fn key(&self, i: u32) -> &str {
        let i = i as usize;
        &self.keys[i * KEY..(i + 1) * KEY]
    }

    fn value(&self, j: usize) -> &str {
        let j = j % VALUES;
        &self.values[j * VALUE..(j + 1) * VALUE]
    }
}

/// One row per measurement, for each map.
#[derive(Default)]
struct Numbers {
    insert_ns: f64,
    get_ns: f64,
    overwrite_ns: f64,
    /// The first 100K overwrites after a clone, and all of them.
    overwrite_frozen_first_ns: f64,
    overwrite_frozen_ns: f64,
    clone: Duration,
    /// Heap bytes the overwrites after the clone added.
    frozen_extra: usize,
    scan_mbs: f64,
    build_mbs: f64,
    heap_per_entry: f64,
}

/// This thread's time on a CPU, from Linux (`/proc/thread-self/schedstat`), in ns.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Measures this thread's time on a CPU where Linux tells it, else wall-clock time: the machines
/// this runs on are often shared, and time spent waiting for a CPU is not the map's cost.
struct Timer {
    wall: Instant,
    cpu: Option<u64>,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            cpu: cpu_ns(),
            wall: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu, cpu_ns()) {
            (Some(start), Some(now)) => Duration::from_nanos(now - start),
            _ => self.wall.elapsed(),
        }
    }
}

fn per_op(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

const DATA: usize = N * (KEY + VALUE);
const FIRST: usize = 100_000;

/// The resident set size, from /proc (Linux), in MB.
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1e3)
}

fn bench_pmap(input: &Input) -> Numbers {
    let mut n = Numbers::default();
    let base = live();
    let t = Timer::start();
    let mut map = PMap::new();
    for i in 0..N as u32 {
        map.insert(input.key(i), input.value(i as usize));
    }
    n.insert_ns = per_op(t.elapsed(), N);
    n.heap_per_entry = (live() - base) as f64 / N as f64;
    if let Some(rss) = rss_mb() {
        println!("(RSS with the pmap built and the input alive: {rss:.0} MB)");
    }

    let t = Timer::start();
    for &i in &input.shuffled {
        black_box(map.get(input.key(i)));
    }
    n.get_ns = per_op(t.elapsed(), N);

    let t = Timer::start();
    for (j, &i) in input.overwrite.iter().enumerate() {
        black_box(map.insert(input.key(i), input.value(j + 1)));
    }
    n.overwrite_ns = per_op(t.elapsed(), OVERWRITES);

    let t = Instant::now(); // shorter than a scheduler tick
    let frozen = black_box(map.clone());
    n.clone = t.elapsed();
    let before = live();
    let t = Timer::start();
    for (j, &i) in input.overwrite.iter().enumerate() {
        if j == FIRST {
            n.overwrite_frozen_first_ns = per_op(t.elapsed(), FIRST);
        }
        black_box(map.insert(input.key(i), input.value(j + 2)));
    }
    n.overwrite_frozen_ns = per_op(t.elapsed(), OVERWRITES);
    n.frozen_extra = live() - before;

    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let t = Timer::start();
    let mut cursor = frozen.cursor();
    let mut scanned = 0;
    while let Some((k, v)) = cursor.next() {
        if out.len() + k.len() + v.len() > out.capacity() {
            black_box(&out);
            out.clear();
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v.as_bytes());
        scanned += k.len() + v.len();
    }
    n.scan_mbs = mb_per_s(scanned, t.elapsed());
    assert_eq!(scanned, DATA); // the bench measures what it says
    drop((cursor, frozen, map)); // not timed, as for the BTreeMap

    let t = Timer::start();
    let mut builder = Builder::new();
    for &i in &input.sorted {
        builder.push(input.key(i), input.value(i as usize)).unwrap();
    }
    let built = builder.finish();
    n.build_mbs = mb_per_s(DATA, t.elapsed());
    assert_eq!(built.len(), N);
    n
}

fn bench_btreemap(input: &Input) -> Numbers {
    let mut n = Numbers::default();
    let base = live();
    let t = Timer::start();
    let mut map = BTreeMap::new();
    for i in 0..N as u32 {
        map.insert(
            input.key(i).to_string(),
            input.value(i as usize).to_string(),
        );
    }
    n.insert_ns = per_op(t.elapsed(), N);
    n.heap_per_entry = (live() - base) as f64 / N as f64;

    let t = Timer::start();
    for &i in &input.shuffled {
        black_box(map.get(input.key(i)));
    }
    n.get_ns = per_op(t.elapsed(), N);

    let t = Timer::start();
    for (j, &i) in input.overwrite.iter().enumerate() {
        black_box(map.insert(input.key(i).to_string(), input.value(j + 1).to_string()));
    }
    n.overwrite_ns = per_op(t.elapsed(), OVERWRITES);

    let before = live();
    let t = Timer::start();
    let frozen = black_box(map.clone());
    n.clone = t.elapsed();
    let t = Timer::start();
    for (j, &i) in input.overwrite.iter().enumerate() {
        if j == FIRST {
            n.overwrite_frozen_first_ns = per_op(t.elapsed(), FIRST);
        }
        black_box(map.insert(input.key(i).to_string(), input.value(j + 2).to_string()));
    }
    n.overwrite_frozen_ns = per_op(t.elapsed(), OVERWRITES);
    n.frozen_extra = live() - before;

    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let t = Timer::start();
    let mut scanned = 0;
    for (k, v) in &frozen {
        if out.len() + k.len() + v.len() > out.capacity() {
            black_box(&out);
            out.clear();
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v.as_bytes());
        scanned += k.len() + v.len();
    }
    n.scan_mbs = mb_per_s(scanned, t.elapsed());
    assert_eq!(scanned, DATA);
    drop(frozen);
    drop(map);

    let t = Timer::start();
    let built: BTreeMap<String, String> = input
        .sorted
        .iter()
        .map(|&i| {
            (
                input.key(i).to_string(),
                input.value(i as usize).to_string(),
            )
        })
        .collect();
    n.build_mbs = mb_per_s(DATA, t.elapsed());
    assert_eq!(built.len(), N);
    n
}

fn main() {
    let input = Input::new();
    let clock = match cpu_ns() {
        Some(_) => "time on a CPU (/proc/thread-self/schedstat)",
        None => "wall-clock time",
    };
    println!(
        "pmap bench: {N} entries, {KEY}-byte keys, {VALUE}-byte values ({} MB of keys and values)",
        DATA / 1_000_000
    );
    println!("timed by {clock}");
    let p = bench_pmap(&input);
    let b = bench_btreemap(&input);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "", "PMap", "BTreeMap", "PMap/BTreeMap"
    );
    let row = |name: &str, p: f64, b: f64| {
        println!("{name:<44} {p:>12.1} {b:>12.1} {:>14.3}", p / b);
    };
    row("insert, random order (ns/op)", p.insert_ns, b.insert_ns);
    row("get (ns/op)", p.get_ns, b.get_ns);
    row("overwrite (ns/op)", p.overwrite_ns, b.overwrite_ns);
    row(
        "overwrite, clone alive, first 100K (ns/op)",
        p.overwrite_frozen_first_ns,
        b.overwrite_frozen_first_ns,
    );
    row(
        "overwrite, clone alive, all 1M (ns/op)",
        p.overwrite_frozen_ns,
        b.overwrite_frozen_ns,
    );
    row("clone (ms)", ms(p.clone), ms(b.clone));
    row(
        "clone + 1M overwrites: heap added (MB)",
        p.frozen_extra as f64 / 1e6,
        b.frozen_extra as f64 / 1e6,
    );
    row("cursor scan of the clone (MB/s)", p.scan_mbs, b.scan_mbs);
    row("build from sorted entries (MB/s)", p.build_mbs, b.build_mbs);
    row("heap bytes per entry", p.heap_per_entry, b.heap_per_entry);
    println!(
        "(heap per entry of keys and values alone: {}; clone of a PMap: {} ns)",
        KEY + VALUE,
        p.clone.as_nanos()
    );
}
