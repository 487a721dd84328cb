//! What a `PMap` holds on the heap, counted by a global allocator: 1M entries of 16-byte keys
//! and 100-byte values take at most 1.25x their bytes (inserted in random order, or built from
//! sorted entries), and after a clone, 10,000 random overwrites copy at most one leaf each.
//!
//! One test only, so that nothing else allocates while it counts.
//! `cargo test -p clusterconsensus --test pmap_memory -- --nocapture` prints the numbers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use clusterconsensus::pmap::{Builder, PMap, LEAF_BYTES};

/// The system allocator, counting the bytes asked for that are not yet freed.
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

const N: u64 = 1_000_000;
const KEY: usize = 16;
const VALUE: usize = 100;

/// splitmix64: a bijection of u64, so distinct inputs give distinct keys in random order.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the 16-byte key for `x` into `buf`.
fn key(buf: &mut String, x: u64) -> &str {
    buf.clear();
    write!(buf, "{x:016x}").unwrap();
    buf
}

/// A 100-byte value that depends on `x` and `round`.
fn value(buf: &mut String, x: u64, round: u64) -> &str {
    buf.clear();
    while buf.len() < VALUE {
        write!(
            buf,
            "{:016x}",
            mix(x ^ round.rotate_left(32) ^ buf.len() as u64)
        )
        .unwrap();
    }
    buf.truncate(VALUE);
    buf
}

#[test]
fn heap_per_entry_and_bytes_copied_after_a_clone() {
    let data = N as usize * (KEY + VALUE);
    let (mut k, mut v) = (String::with_capacity(64), String::with_capacity(128));
    let base = live();

    // Random insertion order.
    let mut map = PMap::new();
    for i in 0..N {
        let x = mix(i);
        map.insert(key(&mut k, x), value(&mut v, x, 0));
    }
    let inserted = live() - base;
    assert_eq!((map.len(), map.bytes()), (N as usize, data));

    // Built from sorted entries.
    let mut builder = Builder::new();
    for i in 0..N {
        let x = i << 20;
        builder.push(key(&mut k, x), value(&mut v, x, 0)).unwrap();
    }
    let built_map = builder.finish();
    let built = live() - base - inserted;
    assert_eq!(built_map.bytes(), data);
    drop(built_map);

    // A frozen copy, then 10,000 overwrites of random keys with new values of the same size.
    const WRITES: u64 = 10_000;
    let before_clone = live();
    let frozen = map.clone();
    let cloned = live() - before_clone;
    for j in 0..WRITES {
        let x = mix(mix(j) % N);
        map.insert(key(&mut k, x), value(&mut v, x, 1));
    }
    let copied = live() - before_clone;
    // The copy saw none of it, and the map all of it.
    for j in (0..WRITES).step_by(97) {
        let x = mix(mix(j) % N);
        let kk = key(&mut k, x).to_string();
        assert_eq!(frozen.get(&kk), Some(value(&mut v, x, 0)));
        assert_eq!(map.get(&kk), Some(value(&mut v, x, 1)));
    }
    drop(frozen);
    let after_drop = live() - base;
    drop(map);
    let after_all = live() - base;

    let ratio = |bytes: usize| bytes as f64 / data as f64;
    println!(
        "pmap memory: {N} entries of {KEY}+{VALUE} bytes = {data} bytes of keys and values\n  \
         inserted in random order: {inserted} heap bytes, {:.3}x, {:.1} bytes/entry\n  \
         built from sorted entries: {built} heap bytes, {:.3}x, {:.1} bytes/entry\n  \
         clone: {cloned} bytes; {WRITES} overwrites after it copied {copied} bytes \
         ({:.0} per write, a leaf is at most about {LEAF_BYTES})\n  \
         after dropping the copy: {after_drop} bytes ({:.3}x); after dropping both: {after_all}",
        ratio(inserted),
        inserted as f64 / N as f64,
        ratio(built),
        built as f64 / N as f64,
        copied as f64 / WRITES as f64,
        ratio(after_drop),
    );
    assert!(ratio(inserted) <= 1.25, "inserted: {:.3}x", ratio(inserted));
    assert!(ratio(built) <= 1.25, "built: {:.3}x", ratio(built));
    assert_eq!(cloned, 0, "a clone allocates nothing");
    assert!(
        copied <= WRITES as usize * LEAF_BYTES,
        "{copied} bytes copied by {WRITES} writes"
    );
    assert!(ratio(after_drop) <= 1.25, "{:.3}x", ratio(after_drop));
    assert_eq!(after_all, 0, "everything freed");
}
