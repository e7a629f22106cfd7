//! Redlock mode on 5 independent redis-server processes: the lock service
//! keeps working with a minority down (killed or stopped), fails fast with
//! per-node reasons without a majority, never double-grants while a
//! minority fails, keeps fencing tokens monotonic across majorities (the
//! token is written back to a majority), cleans up after paused nodes,
//! reports validity and QUORUM_LOST, and honours the delayed restart.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use coord::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, GrantRequest, KeepAliveRequest, KeepAliveResponse, LockLostReason,
    ReleaseRequest, ReleaseStatus, keep_alive_response::Event,
};
use support::{
    Coord,
    redis::{RedisNodes, RedisServer},
    serving_with,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

struct Setup {
    _main: RedisServer,
    nodes: RedisNodes,
    coord: Coord,
}

async fn setup(max_ttl: Duration) -> Setup {
    let main = RedisServer::start();
    let nodes = RedisNodes::start(5);
    let mut config = support::config(&main.url());
    config.lock.redlock.nodes = nodes.urls();
    // Generous for debug builds on a loaded machine.
    config.lock.redlock.node_timeout = Some(Duration::from_millis(250));
    config.lock.max_ttl = max_ttl;
    let coord = serving_with(config).await;
    Setup { _main: main, nodes, coord }
}

fn req(name: &str, ttl_ms: i64) -> AcquireRequest {
    AcquireRequest { name: name.into(), ttl_ms, ..Default::default() }
}

/// Nodes whose copy of the lock is held by `lease` (stopped nodes, which
/// cannot answer, are listed in `skip`).
fn holders(nodes: &RedisNodes, name: &str, lease: &str, skip: &[usize]) -> usize {
    (0..5)
        .filter(|i| !skip.contains(i))
        .filter(|i| {
            let node = nodes.node(*i);
            node.is_running()
                && node.cli(&["HGET", &format!("coord:default:lock:{{{name}}}"), "lease"]) == lease
                && node.cli(&["HGET", &format!("coord:default:lock:{{{name}}}"), "state"]) == "held"
        })
        .count()
}

async fn renew_for(
    tx: &tokio::sync::mpsc::Sender<KeepAliveRequest>,
    stream: &mut tonic::Streaming<KeepAliveResponse>,
    lease: &str,
    rounds: usize,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..rounds {
        tx.send(KeepAliveRequest { lease_id: lease.into() }).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        events.push(msg.event.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_work_with_a_minority_killed_or_stopped() {
    for fault in ["kill", "stop"] {
        let s = setup(Duration::from_secs(60)).await;
        let mut c = s.coord.locks();
        for i in [0, 1] {
            match fault {
                "kill" => s.nodes.node(i).kill(),
                _ => s.nodes.node(i).stop(),
            }
        }
        let lease = c.grant(GrantRequest { ttl_ms: 1_500, owner: fault.into() }).await.unwrap().into_inner().lease_id;
        let mut request =
            tonic::Request::new(AcquireRequest { name: "m".into(), lease_id: lease.clone(), ..Default::default() });
        request.set_timeout(Duration::from_secs(10));
        let got = c.acquire(request).await.unwrap().into_inner();
        assert_eq!(got.status, AcquireStatus::Acquired as i32, "{fault}: {got:?}");
        assert!(got.validity_ms > 0 && got.validity_ms < 1_500, "{got:?}");
        assert_eq!(holders(&s.nodes, "m", &lease, &[0, 1]), 3, "{fault}");
        // Renewal keeps it past several TTLs.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let events = renew_for(&tx, &mut stream, &lease, 8).await;
        assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms > 0)), "{fault}: {events:?}");
        let info = c
            .describe(DescribeRequest { name: "m".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .lock
            .unwrap();
        assert!(info.held && info.lease_id == lease, "{fault}: {info:?}");
        assert_eq!(info.owner, fault, "the lease's owner is shown");
        let rel = c
            .release(ReleaseRequest { name: "m".into(), lease_id: lease.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rel.status, ReleaseStatus::Released as i32, "{fault}");
        assert_eq!(holders(&s.nodes, "m", &lease, &[0, 1]), 0);
        if fault == "stop" {
            for i in [0, 1] {
                s.nodes.node(i).cont();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_acquire_fails_fast_and_leaves_nothing() {
    let s = setup(Duration::from_secs(60)).await;
    let mut c = s.coord.locks();
    s.nodes.node(0).kill();
    s.nodes.node(1).kill();
    s.nodes.node(2).stop();
    let start = Instant::now();
    let err = c.acquire(AcquireRequest { wait_ms: 5_000, ..req("x", 2_000) }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    // Per-node reasons, naming each node.
    for i in 0..5 {
        assert!(err.message().contains(&format!(":{}", s.nodes.node(i).port())), "{}", err.message());
    }
    // Killed nodes fail at once (broken pipe, then refused); the stopped
    // one times out (on the node bound or its connection's own timeout).
    let msg = err.message();
    assert_eq!(msg.matches("Acquired").count(), 2, "{msg}");
    assert!(msg.matches("Error").count() >= 2, "{msg}");

    s.nodes.node(2).cont();
    s.nodes.node(0).restart();
    s.nodes.node(1).restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let state = s.nodes.node(i).cli(&["HGET", "coord:default:lock:{x}", "state"]);
        assert_ne!(state, "held", "node {i} kept a partial grant");
    }
}

/// Two clients contend while single nodes keep failing; a checker asserts
/// that no two critical sections overlap and tokens only go up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_with_a_failing_minority_never_double_grants() {
    let s = Arc::new(setup(Duration::from_secs(60)).await);
    let state = Arc::new(Mutex::new((false, 0u64, 0usize, 0usize))); // (inside, last token, entries, violations)
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let s = s.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let node = s.nodes.node(i % 5);
                node.stop();
                std::thread::sleep(Duration::from_millis(150));
                node.cont();
                std::thread::sleep(Duration::from_millis(50));
                i += 1;
            }
        })
    };
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let mut c = s.coord.locks();
            let state = state.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let got = match c.acquire(AcquireRequest { wait_ms: 10_000, ..req("guarded", 3_000) }).await {
                        Ok(r) => r.into_inner(),
                        Err(e) if e.code() == Code::Unavailable => continue,
                        Err(e) => panic!("{e:?}"),
                    };
                    if got.status != AcquireStatus::Acquired as i32 {
                        continue;
                    }
                    {
                        let mut st = state.lock().unwrap();
                        if st.0 || got.fencing_token <= st.1 {
                            st.3 += 1;
                        }
                        st.0 = true;
                        st.1 = st.1.max(got.fencing_token);
                        st.2 += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    state.lock().unwrap().0 = false;
                    let _ = c
                        .release(ReleaseRequest {
                            name: "guarded".into(),
                            lease_id: got.lease_id,
                            ..Default::default()
                        })
                        .await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    chaos.await.unwrap();
    let st = state.lock().unwrap();
    assert_eq!(st.3, 0, "violations");
    assert!(st.2 >= 20, "only {} critical sections ran", st.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_reach_a_majority_and_increase_across_majorities() {
    let s = setup(Duration::from_secs(2)).await;
    let mut c = s.coord.locks();
    let mut last = 0;
    for round in 0..6 {
        // A different pair of nodes is away each round.
        let away = [round % 5, (round + 2) % 5];
        for i in away {
            s.nodes.node(i).stop();
        }
        let got = c.acquire(req("fenced", 2_000)).await.unwrap().into_inner();
        assert_eq!(got.status, AcquireStatus::Acquired as i32, "round {round}");
        assert!(got.fencing_token > last, "round {round}: {} after {last}", got.fencing_token);
        last = got.fencing_token;
        // The token was written back to every reachable node (a majority).
        let at_least: usize = (0..5)
            .filter(|i| !away.contains(i))
            .filter(|i| {
                s.nodes.node(*i).cli(&["GET", "coord:default:lock:{fenced}:fence"]).parse::<u64>().unwrap_or(0) >= last
            })
            .count();
        assert!(at_least >= 3, "round {round}: token on {at_least} nodes");
        c.release(ReleaseRequest { name: "fenced".into(), lease_id: got.lease_id, ..Default::default() })
            .await
            .unwrap();
        for i in away {
            s.nodes.node(i).cont();
        }
    }
    // A minority restarts empty; tokens still go up.
    s.nodes.node(0).kill();
    s.nodes.node(0).restart();
    s.nodes.node(1).kill();
    s.nodes.node(1).restart();
    let got = c.acquire(req("fenced", 2_000)).await.unwrap().into_inner();
    assert_eq!(got.status, AcquireStatus::Acquired as i32);
    assert!(got.fencing_token > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_holds_no_stale_lock_after_release() {
    let s = setup(Duration::from_secs(10)).await;
    let mut c = s.coord.locks();
    s.nodes.node(4).stop(); // paused mid-flight: the acquire reaches it late
    let got = c.acquire(req("late", 5_000)).await.unwrap().into_inner();
    assert_eq!(got.status, AcquireStatus::Acquired as i32);
    c.release(ReleaseRequest { name: "late".into(), lease_id: got.lease_id.clone(), ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.nodes.node(4).cont();
    let start = Instant::now();
    while holders(&s.nodes, "late", &got.lease_id, &[]) > 0 {
        assert!(start.elapsed() < Duration::from_secs(3), "stale grant on the resumed node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_subtracts_elapsed_time_and_drift() {
    let s = setup(Duration::from_secs(60)).await;
    let mut c = s.coord.locks();
    let got = c.acquire(req("v", 10_000)).await.unwrap().into_inner();
    // drift = 1 % of 10 s + 2 ms = 102 ms.
    assert!(got.validity_ms <= 10_000 - 102, "{got:?}");
    assert!(got.validity_ms > 9_000, "{got:?}");

    // List walks the nodes one by one and reports each lock once, by majority.
    let mut names = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = c
            .list(coord::pb::ListRequest {
                prefix: String::new(),
                page: Some(coord::pb::PageRequest { limit: 10, cursor: cursor.clone() }),
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.locks.into_iter().map(|l| l.name));
        cursor = page.page.unwrap_or_default().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names, ["v"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_majority_pushes_quorum_lost() {
    let s = setup(Duration::from_secs(60)).await;
    let mut c = s.coord.locks();
    let lease = c.grant(GrantRequest { ttl_ms: 1_500, owner: String::new() }).await.unwrap().into_inner().lease_id;
    c.acquire(AcquireRequest { name: "q".into(), lease_id: lease.clone(), ..Default::default() }).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    renew_for(&tx, &mut stream, &lease, 2).await;
    let last_ok = Instant::now();
    for i in 0..3 {
        s.nodes.node(i).stop();
    }
    let renewer = {
        let tx = tx.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            while tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let lost = loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no LockLost").unwrap().unwrap();
        if let Some(Event::LockLost(lost)) = msg.event {
            break lost;
        }
    };
    renewer.abort();
    assert_eq!(lost.reason, LockLostReason::QuorumLost as i32, "{lost:?}");
    assert!(last_ok.elapsed() < Duration::from_millis(1_500 + 700), "{:?}", last_ok.elapsed());
    // Health: LockService needs a majority.
    s.coord.wait_health("coord.v1.LockService", ServingStatus::NotServing, Duration::from_secs(5)).await;
    for i in 0..3 {
        s.nodes.node(i).cont();
    }
    s.coord.wait_health("coord.v1.LockService", ServingStatus::Serving, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_empty_does_not_vote_until_max_ttl() {
    let max_ttl = Duration::from_secs(3);
    let s = setup(max_ttl).await;
    let mut c = s.coord.locks();
    s.nodes.node(0).kill();
    s.nodes.node(0).restart(); // new run_id, no data
    // Let the monitor see the new run_id.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Instant::now();
    s.nodes.node(1).stop();
    s.nodes.node(2).stop();
    // Three nodes answer, but node 0 may not vote: no majority.
    let err = c.acquire(req("d", 1_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("Quarantined"), "{}", err.message());
    // Once max_ttl has passed it votes again.
    let got = loop {
        match c.acquire(req("d", 1_000)).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable);
                assert!(restarted.elapsed() < max_ttl + Duration::from_secs(5), "never voted again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(got.status, AcquireStatus::Acquired as i32);
    assert!(restarted.elapsed() >= max_ttl - Duration::from_millis(600), "voted after {:?}", restarted.elapsed());
    s.nodes.node(1).cont();
    s.nodes.node(2).cont();
}

/// Holder A keeps its lock on nodes 0, 3, 4 (it expired on 1 and 2 while
/// they were stopped); node 3 then restarts empty. Its very first votes
/// must not count: B is never granted the lock A still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_never_votes_for_a_second_holder() {
    let s = setup(Duration::from_secs(20)).await;
    let mut c = s.coord.locks();
    let a = c.acquire(req("r", 2_000)).await.unwrap().into_inner();
    assert_eq!(a.status, AcquireStatus::Acquired as i32);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let renewer = {
        let lease = a.lease_id.clone();
        tokio::spawn(async move {
            while tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    s.nodes.node(1).stop();
    s.nodes.node(2).stop();
    tokio::time::sleep(Duration::from_millis(2_800)).await;
    s.nodes.node(1).cont();
    s.nodes.node(2).cont();
    // A renewal queued while a node was stopped can, right after SIGCONT,
    // still find the lock alive there and extend it (seen once under load;
    // Redis's cached clock may lag the stop). Take such a leftover away: the
    // case under test is A holding on exactly 0, 3, 4.
    for i in [1, 2] {
        if holders(&s.nodes, "r", &a.lease_id, &[0, 3, 4, 3 - i]) == 1 {
            s.nodes.node(i).cli(&["DEL", "coord:default:lock:{r}"]);
        }
    }
    assert_eq!(holders(&s.nodes, "r", &a.lease_id, &[]), 3, "A holds on 0, 3, 4");
    s.nodes.node(3).kill();
    s.nodes.node(3).restart();
    let restarted = Instant::now();
    let mut tries = 0;
    while restarted.elapsed() < Duration::from_millis(1_500) {
        let b = c.acquire(AcquireRequest { name: "r".into(), ttl_ms: 2_000, ..Default::default() }).await;
        if let Ok(b) = b {
            assert_ne!(
                b.get_ref().status,
                AcquireStatus::Acquired as i32,
                "B was granted the lock {:?} after node 3 restarted, while A holds it on 0 and 4",
                restarted.elapsed()
            );
        }
        tries += 1;
    }
    assert!(tries > 10, "only {tries} tries");
    renewer.abort();
    drop(stream.next());
}

/// A node restarted empty while no coord ran is met for the first time by
/// the next coord: without coord's marker for its run_id (lost with its
/// keys) and younger than lock.max_ttl, it does not vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_coord_was_down_does_not_vote() {
    let s = setup(Duration::from_secs(20)).await;
    let mut c = s.coord.locks();
    let a = c.acquire(req("w", 10_000)).await.unwrap().into_inner();
    assert_eq!(a.status, AcquireStatus::Acquired as i32);
    // A's lock lives on nodes 0, 3, 4 only (as if it had expired on 1, 2).
    for i in [1, 2] {
        s.nodes.node(i).cli(&["DEL", "coord:default:lock:{w}"]);
    }
    // The second coord is down while node 3 restarts empty.
    let mut config = support::config(&s._main.url());
    config.lock.redlock.nodes = s.nodes.urls();
    config.lock.redlock.node_timeout = Some(Duration::from_millis(250));
    config.lock.max_ttl = Duration::from_secs(20);
    s.nodes.node(3).kill();
    s.nodes.node(3).restart();
    let later = serving_with(config).await;
    let b = later.locks().acquire(AcquireRequest { name: "w".into(), ttl_ms: 2_000, ..Default::default() }).await;
    match b {
        Ok(b) => assert_ne!(b.into_inner().status, AcquireStatus::Acquired as i32, "node 3 voted"),
        Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
    }
    // The other nodes, marked by the first coord, vote at once.
    let other = later.locks().acquire(req("fresh", 2_000)).await.unwrap().into_inner();
    assert_eq!(other.status, AcquireStatus::Acquired as i32);
}

/// Tries that failed while node 0 was paused reach it late, with their
/// undos; whatever order it runs them in, it ends with no stale hold and
/// never two holds of one Acquire, and the grant stays on a majority. (The
/// exact undo contract itself is tested deterministically in lock_undo.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_resumes_without_stale_or_doubled_holds() {
    let s = setup(Duration::from_secs(30)).await;
    let mut c = s.coord.locks();
    let h = c.acquire(req("rep", 1_000)).await.unwrap().into_inner();
    assert_eq!(h.status, AcquireStatus::Acquired as i32);
    s.nodes.node(0).stop();
    // Held at first (node 0 times out), granted when H's TTL ends.
    let x = c.acquire(AcquireRequest { wait_ms: 5_000, ..req("rep", 10_000) }).await.unwrap().into_inner();
    assert_eq!(x.status, AcquireStatus::Acquired as i32, "{x:?}");
    assert_eq!(x.hold_count, 1, "{x:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.nodes.node(0).cont();
    // Repairs answer twice, 100 ms apart.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let key = "coord:default:lock:{rep}";
    let node0 = s.nodes.node(0);
    let all = node0.cli(&["HGETALL", key]);
    if node0.cli(&["HGET", key, "state"]) == "held" {
        assert_eq!(node0.cli(&["HGET", key, "lease"]), x.lease_id, "stale grant on node 0: {all}");
        assert_eq!(node0.cli(&["HGET", key, "count"]), "1", "{all}");
    }
    assert!(holders(&s.nodes, "rep", &x.lease_id, &[]) >= 4);
    let rel = c
        .release(ReleaseRequest { name: "rep".into(), lease_id: x.lease_id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(rel.get_ref().remaining_holds, 0);
    assert_eq!(holders(&s.nodes, "rep", &x.lease_id, &[]), 0);
}

/// A loaded but healthy cluster must not fail calls: with the default
/// per-node timeout, 16 contending workers get answers, not UNAVAILABLE,
/// while a majority of nodes keeps stalling for 60 ms at a time (as a busy
/// Redis does: a slow command, a fork, a scheduling hiccup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_healthy_cluster_does_not_fail_calls() {
    let main = RedisServer::start();
    let nodes = Arc::new(RedisNodes::start(5));
    let mut config = support::config(&main.url());
    config.lock.redlock.nodes = nodes.urls();
    let coord = serving_with(config).await;
    let until = Instant::now() + Duration::from_secs(8);
    let stalls: Vec<_> = (0..3)
        .map(|i| {
            let nodes = nodes.clone();
            std::thread::spawn(move || {
                while Instant::now() < until {
                    nodes.node(i).cli(&["DEBUG", "SLEEP", "0.06"]);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let mut c = coord.locks();
            tokio::spawn(async move {
                let (mut granted, mut unavailable) = (0, Vec::new());
                while Instant::now() < until {
                    let name = format!("load{}", w % 4);
                    match c.acquire(AcquireRequest { wait_ms: 2_000, ..req(&name, 2_000) }).await {
                        Ok(got) if got.get_ref().status == AcquireStatus::Acquired as i32 => {
                            granted += 1;
                            let lease_id = got.into_inner().lease_id;
                            let _ = c.release(ReleaseRequest { name, lease_id, ..Default::default() }).await;
                        }
                        Ok(_) => {}
                        Err(e) if e.code() == Code::Unavailable => unavailable.push(e.message().to_owned()),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                (granted, unavailable)
            })
        })
        .collect();
    let (mut granted, mut unavailable) = (0, Vec::new());
    for w in workers {
        let (g, u) = w.await.unwrap();
        granted += g;
        unavailable.extend(u);
    }
    for stall in stalls {
        stall.join().unwrap();
    }
    eprintln!("{granted} grants, {} unavailable", unavailable.len());
    assert!(unavailable.is_empty(), "{} UNAVAILABLE, e.g. {:?}", unavailable.len(), unavailable.first());
    assert!(granted > 100, "only {granted} grants");
}

/// Semaphores and read/write locks count permits, which independent nodes
/// cannot reconcile by majority without over-admitting (and elections are
/// built on them): Redlock mode refuses them clearly instead of pretending.
#[tokio::test]
async fn semaphores_read_write_locks_and_elections_are_refused_in_redlock_mode() {
    let s = setup(Duration::from_secs(60)).await;
    let err = s
        .coord
        .semaphores()
        .acquire(coord::pb::SemaphoreServiceAcquireRequest {
            name: "pool".into(),
            permits: 1,
            size: 2,
            ttl_ms: 1_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("Redlock"), "{}", err.message());
    let err = s
        .coord
        .locks()
        .acquire(AcquireRequest { mode: coord::pb::LockMode::Shared as i32, ..req("rw", 1_000) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("read/write"), "{}", err.message());
    let mut elections = coord::pb::election_service_client::ElectionServiceClient::new(s.coord.channel());
    let err = elections
        .campaign(coord::pb::ElectionServiceCampaignRequest {
            election: "e".into(),
            ttl_ms: 1_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("elections"), "{}", err.message());
    let err = elections.observe(coord::pb::ElectionServiceObserveRequest { election: "e".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    for i in 0..5 {
        let keys = s.nodes.node(i).cli(&["KEYS", "*"]);
        assert!(
            !keys.contains(":sem:") && !keys.contains(":rwlock:") && !keys.contains(":election:"),
            "nothing written on node {i}: {keys}"
        );
    }
}
