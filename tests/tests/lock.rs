//! The lock example (`native/examples/lock.rs`) on three real processes: fencing tokens grow, a
//! stale token is refused, a released lock can be taken again and no two owners ever hold one
//! lock, across a `kill -9` of the master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterconsensus_tests::*;

const ID: &str = "locks";

fn acquire(lock: &str, owner: &str) -> String {
    json!({"op": "acquire", "lock": lock, "owner": owner}).to_string()
}

fn release(lock: &str, owner: &str, token: u64) -> String {
    json!({"op": "release", "lock": lock, "owner": owner, "token": token}).to_string()
}

/// Submits `change` through the nodes in turn (from `urls[*via]`) until it commits, and returns
/// its result and how many attempts it took. A node may be down or know no master during an
/// election: the next one is tried. An attempt whose answer was lost may have committed, so the
/// caller must read the result of a retried change knowing that.
fn commit(urls: &[String], via: &mut usize, change: &str) -> (Value, u32) {
    let mut attempts = 0;
    let result = wait_for(Duration::from_secs(20), "a lock change to commit", || {
        attempts += 1;
        match submit(&urls[*via % urls.len()], ID, &[change.to_string()]) {
            Ok(v) if v["fail"] == json!(false) => Some(v["results"][0].clone()),
            _ => {
                *via += 1;
                std::thread::sleep(Duration::from_millis(20));
                None
            }
        }
    });
    (result, attempts)
}

/// The lock as node `url` sees it, linearizably: (holder, token).
fn holder(url: &str, lock: &str) -> (Value, Value) {
    let v = wait_for(Duration::from_secs(10), "a consistent read", || {
        let a = http(
            "GET",
            &cluster_url(url, ID, &format!("lock/{lock}?consistent=true")),
            b"",
        )
        .ok()?;
        (a.status == 200).then(|| a.json())
    });
    assert_eq!(v["lock"], lock);
    (v["holder"].clone(), v["token"].clone())
}

#[test]
fn fencing_tokens_grow_and_hold_across_a_master_kill() {
    let mut c = Cluster::start_with(&example("lock"), "lock", 3, &[ID], &[]);
    let urls = c.urls();
    let m = c.master(ID).unwrap();
    let mut via = (m + 1) % 3; // through a follower

    let (r, _) = commit(&urls, &mut via, &acquire("L", "a"));
    assert_eq!(r["ok"], true, "{r}");
    let t1 = r["token"].as_u64().unwrap();
    let (r, _) = commit(&urls, &mut via, &acquire("L", "b"));
    assert_eq!(
        (&r["ok"], &r["holder"], &r["token"]),
        (&json!(false), &json!("a"), &json!(t1)),
        "{r}"
    );
    let (r, _) = commit(&urls, &mut via, &release("L", "a", t1 - 1));
    assert_eq!(r["ok"], false, "a wrong token: {r}");
    let (r, _) = commit(&urls, &mut via, &release("L", "a", t1));
    assert_eq!(r, json!({"ok": true}));
    let (r, _) = commit(&urls, &mut via, &acquire("L", "b"));
    assert_eq!(r["ok"], true, "a released lock is taken again: {r}");
    let t2 = r["token"].as_u64().unwrap();
    assert!(t2 > t1, "{t2} after {t1}");
    // The old holder's token is stale now, for it and for the new holder alike.
    let (r, _) = commit(&urls, &mut via, &release("L", "a", t1));
    assert_eq!(r["ok"], false, "{r}");
    let (r, _) = commit(&urls, &mut via, &release("L", "b", t1));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("stale token"), "{r}");

    // kill -9 of the master: the lock, its holder and its token survive on the others.
    c.nodes[m].kill();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != m)
        .map(|i| urls[i].clone())
        .collect();
    let mut via = 0;
    let (r, _) = commit(&survivors, &mut via, &acquire("L", "c"));
    assert_eq!(
        (&r["ok"], &r["holder"], &r["token"]),
        (&json!(false), &json!("b"), &json!(t2)),
        "{r}"
    );
    let (r, tries) = commit(&survivors, &mut via, &release("L", "b", t2));
    assert!(
        r["ok"] == true || tries > 1 && r["error"] == "not held",
        "{r}"
    );
    let (r, _) = commit(&survivors, &mut via, &acquire("L", "c"));
    assert_eq!(r["ok"], true, "{r}");
    let t3 = r["token"].as_u64().unwrap();
    assert!(t3 > t2, "{t3} after {t2}: tokens grow across the failover");

    // The old master, restarted from its data, catches up and reads the same holder.
    c.nodes[m].restart();
    assert_eq!(holder(&urls[m], "L"), (json!("c"), json!(t3)));
}

#[test]
fn contending_clients_never_hold_a_lock_together_across_a_master_kill() {
    let mut c = Cluster::start_with(&example("lock"), "lock-race", 3, &[ID], &[]);
    let urls = c.urls();
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 6;
    // Who is in the critical section, and every token with which someone entered it, in order.
    let inside: Arc<Mutex<Option<String>>> = Arc::default();
    let entered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let double = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (urls, inside, entered, double) = (
                urls.clone(),
                inside.clone(),
                entered.clone(),
                double.clone(),
            );
            std::thread::spawn(move || {
                let owner = format!("client{i}");
                let mut via = i;
                for _ in 0..ROUNDS {
                    let token = loop {
                        let (r, _) = commit(&urls, &mut via, &acquire("M", &owner));
                        if r["ok"] == true {
                            break r["token"].as_u64().unwrap();
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    };
                    {
                        let mut who = inside.lock().unwrap();
                        if let Some(other) = &*who {
                            eprintln!("{owner} got the lock (token {token}) while {other} held it");
                            double.store(true, Ordering::Relaxed);
                        }
                        *who = Some(owner.clone());
                        entered.lock().unwrap().push(token);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    // Out of the critical section before the release can commit.
                    *inside.lock().unwrap() = None;
                    let (r, tries) = commit(&urls, &mut via, &release("M", &owner, token));
                    // A retried release may find its first attempt already applied (and the lock
                    // already taken by another client since).
                    assert!(r["ok"] == true || tries > 1, "{owner}: {r}");
                }
            })
        })
        .collect();
    wait_for(
        Duration::from_secs(20),
        "some rounds before the kill",
        || (entered.lock().unwrap().len() >= CLIENTS).then_some(()),
    );
    let m = c.wait_master(ID, Duration::from_secs(5));
    c.nodes[m].kill();
    let before = entered.lock().unwrap().len();
    for t in clients {
        t.join().expect("a client failed");
    }
    let tokens = entered.lock().unwrap().clone();
    assert!(
        !double.load(Ordering::Relaxed),
        "two owners held the lock at once"
    );
    assert_eq!(tokens.len(), CLIENTS * ROUNDS);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens do not strictly increase: {tokens:?}"
    );
    eprintln!(
        "{} acquisitions ({before} before the master was killed), tokens {tokens:?}",
        tokens.len()
    );
    assert!(
        before < tokens.len(),
        "the kill came after every acquisition"
    );
    c.nodes[m].restart();
    assert_eq!(holder(&urls[m], "M").0, Value::Null, "released in the end");
}
