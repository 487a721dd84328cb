//! Learners (docs/PROTOCOL.md section 8): added without changing any majority, never counted,
//! promoted once caught up; and the bootstrap and join commands that grow a cluster with them.

use super::*;
use crate::wire::CommittedEntry;

fn learner(addr: &str, promote: bool) -> Payload {
    Payload::Learner(Learner {
        addr: s(addr),
        promote,
    })
}

fn add_learner_request(instance: u64, seq: u64, mem: &str, promote: bool) -> Request {
    learner(mem, promote).to_request(instance, seq, A)
}

/// `master3` with `d` added as a learner (committed at 3, its start sent and answered): the
/// master's Net-less state, and the id of the next message.
fn master3_with_learner(promote: bool) -> P {
    let mut a = master3();
    let m = next_msg(&a);
    let r = AdminMember {
        promote,
        ..AdminMember::new(s(D))
    };
    let outs = request(&mut a, 10, 100, Request::MembersAdd(r));
    let add = add_learner_request(1, 3, D, promote);
    assert!(outs.contains(&send(m, B, add.clone())), "{outs:?}");
    assert!(outs.contains(&send(m + 1, C, add)));
    let outs = respond(&mut a, 11, m, ok());
    assert!(outs.contains(&reply(100, ok())), "{outs:?}");
    assert!(outs.contains(&committed(3, learner(D, promote))));
    assert_eq!(a.members(), strings(&[A, B, C]).as_slice(), "not a voter");
    assert_eq!(
        a.learners(),
        &[Learner {
            addr: s(D),
            promote
        }]
    );
    // The master starts the learner with its state.
    let start = outs
        .iter()
        .find_map(|o| match o {
            Output::Send(x) if x.to == D => Some(x.clone()),
            _ => None,
        })
        .expect("a start to the learner");
    let Request::Start(st) = &start.request else {
        panic!("{start:?}")
    };
    assert_eq!(
        st.participants,
        [A, B, C, D].map(Member::new).to_vec(),
        "every member, as a seed peer expects"
    );
    assert_eq!(
        st.learners,
        vec![Learner {
            addr: s(D),
            promote
        }]
    );
    respond(&mut a, 12, start.id.get(), ok());
    a
}

#[test]
fn a_learner_is_added_without_changing_the_majority() {
    let mut a = master3_with_learner(true);
    assert_eq!(a.role(), Role::Master);
    // The learner receives every accept; its acceptance alone chooses nothing.
    let m = next_msg(&a);
    let outs = request(&mut a, 20, 101, submit(vec![set("k", "1")], false));
    let acc = accept(1, 4, vec![set("k", "1")], Some(A));
    let sends: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(_)))
        .collect();
    assert_eq!(
        sends,
        vec![
            &send(m, B, acc.clone()),
            &send(m + 1, C, acc.clone()),
            &send(m + 2, D, acc)
        ]
    );
    let outs = respond(&mut a, 21, m + 2, accepted());
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Reply(_))),
        "a learner's vote does not count: {outs:?}"
    );
    assert_eq!(a.commit(), 3);
    let outs = respond(&mut a, 22, m, accepted());
    assert!(outs.contains(&reply(101, committed_ok(4, 1))), "{outs:?}");
}

#[test]
fn a_caught_up_learner_is_promoted_by_the_master() {
    let mut a = master3_with_learner(true);
    let m = next_msg(&a);
    // A heartbeat at commit + 1 accepted by the learner shows it holds every commit.
    let outs = tick(&mut a, 200);
    let hb = accept(1, 4, vec![], Some(A));
    assert!(outs.contains(&send(m + 2, D, hb)), "{outs:?}");
    let outs = respond(&mut a, 201, m + 2, accepted());
    let promote = addmember(1, 4, D, A);
    assert!(outs.contains(&send(m + 3, B, promote.clone())), "{outs:?}");
    assert!(outs.contains(&send(m + 5, D, promote)));
    respond(&mut a, 202, m + 3, ok());
    assert_eq!(a.members(), strings(&[A, B, C, D]).as_slice());
    assert!(a.learners().is_empty());
}

#[test]
fn a_learner_that_is_behind_is_not_promoted() {
    let mut a = master3_with_learner(false);
    // Not caught up (it never accepted anything of the master's): the promotion is refused.
    let outs = request(
        &mut a,
        30,
        102,
        Request::MembersPromote(AdminMember::new(s(D))),
    );
    assert_eq!(outs, vec![reply(102, failed(ErrorCode::State, None))]);
    // A learner added with `promote: false` stays one after catching up...
    let m = next_msg(&a);
    tick(&mut a, 200);
    let outs = respond(&mut a, 201, m + 2, accepted());
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Send(_))),
        "{outs:?}"
    );
    // ...until it is promoted explicitly.
    let m = next_msg(&a);
    let outs = request(
        &mut a,
        202,
        103,
        Request::MembersPromote(AdminMember::new(s(D))),
    );
    assert!(
        outs.contains(&send(m, B, addmember(1, 4, D, A))),
        "{outs:?}"
    );
    // A voter is not a learner.
    let outs = request(
        &mut a,
        203,
        104,
        Request::MembersPromote(AdminMember::new(s(B))),
    );
    assert!(outs.is_empty(), "queued behind the promotion in flight");
}

#[test]
fn a_learner_follows_and_forwards_but_does_not_campaign() {
    let mut net = cluster3();
    let r = AdminMember {
        promote: false,
        ..AdminMember::new(s(D))
    };
    net.nodes.insert(s(D), node(D));
    net.node(A)
        .handle_request(0, RequestId(7), Request::MembersAdd(r));
    net.run();
    let mut d = net.take(D);
    assert_eq!((d.role(), d.commit()), (Role::Learner, 3));
    assert_eq!(d.poll_timeout(), None, "no election timer");
    assert_eq!(
        d.start_election(10).map_err(|e| e.code),
        Err(ErrorCode::State)
    );
    // It forwards a client's submit to its master, like a follower.
    let m = next_msg(&d);
    let outs = request(&mut d, 10, 1, submit(vec![set("k", "1")], false));
    assert_eq!(outs, vec![send(m, A, submit(vec![set("k", "1")], true))]);
    // Its promotion, committed, makes it a participant with an election timer.
    request(&mut d, 20, 2, addmember(1, 4, D, A));
    request(&mut d, 21, 3, accept(1, 5, vec![], Some(A)));
    assert_eq!((d.role(), d.commit()), (Role::Participant, 4));
    assert!(d.poll_timeout().is_some());
}

#[test]
fn a_candidate_asks_only_voters() {
    let mut net = cluster3();
    net.nodes.insert(s(D), node(D));
    net.node(A).handle_request(
        0,
        RequestId(7),
        Request::MembersAdd(AdminMember {
            promote: false,
            ..AdminMember::new(s(D))
        }),
    );
    net.run();
    let mut b = net.take(B);
    let m = next_msg(&b);
    let outs = tick(&mut b, 5000);
    let prepares: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(_)))
        .collect();
    assert_eq!(
        prepares,
        vec![
            &send(m, A, prepare(2, B, Some(3))),
            &send(m + 1, C, prepare(2, B, Some(3)))
        ]
    );
}

#[test]
fn bootstrap_with_peers_adds_each_as_a_learner_once_serving() {
    let mut net = Net::new(&[A, B, C], |_| {});
    net.node(A).bootstrap_with(0, strings(&[B, C])).unwrap();
    net.run();
    // Both joined as learners, caught up at once (their start) and were promoted.
    for _ in 0..3 {
        net.now += 200;
        let now = net.now;
        net.node(A).handle_timeout(now);
        net.run();
    }
    let a = net.node(A);
    assert_eq!(a.members(), strings(&[A, B, C]).as_slice());
    assert!(a.learners().is_empty());
    assert_eq!(net.node(C).role(), Role::Participant);
}

#[test]
fn an_unjoined_node_asks_to_join_until_started() {
    let mut net = cluster3();
    net.nodes.insert(s(D), node(D));
    net.node(D).join(0, strings(&[B])).unwrap();
    net.run();
    // B forwarded the request to A, which added D as a learner, started it and, once it had
    // caught up (at once here), promoted it.
    assert_eq!(net.node(A).members(), strings(&[A, B, C, D]).as_slice());
    let d = net.node(D);
    assert_eq!((d.role(), d.commit()), (Role::Participant, 4));
    assert!(d.joining.is_none(), "no more requests to join");
    let mut fresh = node(E);
    assert_eq!(
        fresh.join(0, vec![]).map_err(|e| e.code),
        Err(ErrorCode::State)
    );
}

#[test]
fn a_learner_caught_up_by_a_batch_under_writes_is_promoted() {
    let mut a = master3_with_learner(true);
    // Two writes commit with b while d's accepts go unanswered.
    let first = next_msg(&a);
    let (k1, k2) = (set("k1", "1"), set("k2", "1"));
    for (i, k) in [&k1, &k2].into_iter().enumerate() {
        let m = next_msg(&a);
        request(
            &mut a,
            20 + i as u64,
            101 + i as u64,
            submit(vec![k.clone()], false),
        );
        respond(&mut a, 20 + i as u64, m, accepted()); // b
    }
    assert_eq!(a.commit(), 5);
    // d answers the first of them: a gap at 3 (it holds the start's state), and it takes
    // batches. One batch brings it to the commit.
    let m = next_msg(&a);
    let outs = respond(&mut a, 30, first + 2, gap_refusal(3));
    let entries = vec![
        CommittedEntry {
            seq: 4,
            payload: changes(&[&k1]),
        },
        CommittedEntry {
            seq: 5,
            payload: changes(&[&k2]),
        },
    ];
    let batch = Request::Accept(Accept {
        instance: 1,
        seq: 6,
        chg: vec![],
        master: Some(Member::new(A)),
        entries,
    });
    assert_eq!(outs, vec![send(m, D, batch)]);
    // Accepted: it holds 5, the commit. It is sent the current slot (a heartbeat at 6), and
    // the master proposes its promotion at 6.
    let outs = respond(&mut a, 31, m, accepted());
    let promote = addmember(1, 6, D, A);
    let sends: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Send(_)))
        .collect();
    assert_eq!(
        sends,
        vec![
            &send(m + 1, D, accept(1, 6, vec![], Some(A))),
            &send(m + 2, B, promote.clone()),
            &send(m + 3, C, promote.clone()),
            &send(m + 4, D, promote),
        ]
    );
    respond(&mut a, 32, m + 2, ok());
    assert_eq!(a.members(), strings(&[A, B, C, D]).as_slice());
}
