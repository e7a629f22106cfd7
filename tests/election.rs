//! ElectionService on real Redis, as clients use it: candidates are elected
//! in arrival order; Observe sees every change in order, "no leader"
//! included; exactly one leader per term and terms strictly increase, also
//! across Redis data loss; a leader that is deposed or whose lease is
//! revoked hears LeadershipLost (LockLost, kind LEADERSHIP) on its
//! KeepAlive stream; the next candidate is elected by notification;
//! cancelled campaigns leave nothing behind; bad input is INVALID_ARGUMENT.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use coord::pb::{
    CampaignStatus, ElectionServiceCampaignRequest, ElectionServiceCampaignResponse, ElectionServiceForceResignRequest,
    ElectionServiceLeaderRequest, ElectionServiceLeaderResponse, ElectionServiceObserveRequest,
    ElectionServiceProclaimRequest, ElectionServiceResignRequest, ElectionState, GrantRequest, HoldKind, Leadership,
    LockLostReason, RevokeRequest, election_service_client::ElectionServiceClient,
};
use support::{
    keepalive::{keep_renewing, next_lost, open_stream},
    redis::RedisServer,
    serving,
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming, transport::Channel};

type Elections = ElectionServiceClient<Channel>;

fn campaign_req(election: &str, value: &str) -> ElectionServiceCampaignRequest {
    ElectionServiceCampaignRequest {
        election: election.into(),
        ttl_ms: 30_000,
        value: value.as_bytes().to_vec(),
        wait_ms: 20_000,
        owner: format!("owner-{value}"),
        ..Default::default()
    }
}

async fn elected(c: &mut Elections, req: ElectionServiceCampaignRequest) -> Leadership {
    let got = c.campaign(req).await.expect("campaign").into_inner();
    assert_eq!(got.status, CampaignStatus::Elected as i32, "{got:?}");
    got.leadership.expect("leadership")
}

async fn leader(c: &mut Elections, election: &str) -> ElectionServiceLeaderResponse {
    c.leader(ElectionServiceLeaderRequest { election: election.into() }).await.expect("leader").into_inner()
}

async fn resign(c: &mut Elections, l: &Leadership) -> bool {
    c.resign(ElectionServiceResignRequest { leadership: Some(l.clone()) }).await.expect("resign").into_inner().resigned
}

async fn observe(c: &mut Elections, election: &str) -> Streaming<coord::pb::ElectionServiceObserveResponse> {
    c.observe(ElectionServiceObserveRequest { election: election.into() }).await.expect("observe").into_inner()
}

async fn next_state(stream: &mut Streaming<coord::pb::ElectionServiceObserveResponse>) -> ElectionState {
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("a change within 5 s");
    msg.expect("stream open").expect("no error").state.expect("state")
}

/// Waits until `n` candidates wait in the election.
async fn wait_candidates(c: &mut Elections, election: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while leader(c, election).await.candidates != n {
        assert!(Instant::now() < deadline, "never {n} candidates");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three candidates are elected in the order they arrived; Proclaim changes
/// the value without an election; Observe sees every state in order: no
/// leader, A, A's new value, no leader, B, no leader, C, no leader.
#[tokio::test]
async fn candidates_lead_in_arrival_order_and_observers_see_every_change() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let mut states = observe(&mut c, "e").await;
    let first = next_state(&mut states).await;
    assert!(!first.has_leader, "{first:?}");

    let a = elected(&mut c, campaign_req("e", "a")).await;
    let mut waiting = Vec::new();
    for (i, value) in ["b", "c"].into_iter().enumerate() {
        let mut cc = coord.elections();
        waiting.push(tokio::spawn(async move { elected(&mut cc, campaign_req("e", value)).await }));
        wait_candidates(&mut c, "e", i as u32 + 1).await;
    }
    let now = leader(&mut c, "e").await;
    let state = now.state.unwrap();
    assert_eq!((state.term, state.value.as_slice(), state.owner.as_str()), (a.term, &b"a"[..], "owner-a"));
    assert_eq!((state.lease_id.as_str(), now.candidates), (a.lease_id.as_str(), 2));

    c.proclaim(ElectionServiceProclaimRequest { leadership: Some(a.clone()), value: b"a2".to_vec() }).await.unwrap();
    assert!(resign(&mut c, &a).await);
    assert!(!resign(&mut c, &a).await, "resigning twice is a no-op");
    let b = waiting.remove(0).await.unwrap();
    assert!(b.term > a.term);
    assert!(resign(&mut c, &b).await);
    let cl = waiting.remove(0).await.unwrap();
    assert!(cl.term > b.term);
    let forced =
        c.force_resign(ElectionServiceForceResignRequest { election: "e".into(), term: 0 }).await.unwrap().into_inner();
    assert_eq!((forced.resigned, forced.term, forced.owner.as_str()), (true, cl.term, "owner-c"));

    let mut seen = Vec::new();
    for _ in 0..7 {
        let s = next_state(&mut states).await;
        seen.push(if s.has_leader {
            format!("{}:{}", s.term, String::from_utf8_lossy(&s.value))
        } else {
            "none".into()
        });
    }
    let want = [
        format!("{}:a", a.term),
        format!("{}:a2", a.term),
        "none".into(),
        format!("{}:b", b.term),
        "none".into(),
        format!("{}:c", cl.term),
        "none".into(),
    ];
    assert_eq!(seen, want);
    let none = leader(&mut c, "e").await;
    assert_eq!((none.state.as_ref().unwrap().has_leader, none.state.unwrap().term), (false, cl.term), "last term");

    // A stale leadership proclaims nothing.
    let err = c
        .proclaim(ElectionServiceProclaimRequest { leadership: Some(a.clone()), value: b"late".to_vec() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

/// A leader whose lease is revoked, or who is deposed, is told on its
/// KeepAlive stream (LockLost, kind LEADERSHIP, with the reason and term);
/// the next candidate leads at once; a leader whose lease is not renewed
/// leads no more after its TTL and observers see "no leader".
#[tokio::test]
async fn a_leader_hears_when_it_loses_the_leadership() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let mut locks = coord.locks();
    let (tx, mut stream) = open_stream(&mut locks).await;

    // Under a shared lease, renewed by the stream: revoked.
    let lease = locks.grant(GrantRequest { ttl_ms: 5_000, owner: "svc".into() }).await.unwrap().into_inner().lease_id;
    let mut req = campaign_req("lost", "x");
    (req.ttl_ms, req.lease_id, req.owner) = (0, lease.clone(), String::new());
    let l = elected(&mut c, req).await;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(50),
        Instant::now() + Duration::from_millis(200),
    )
    .await;
    let info = leader(&mut c, "lost").await.state.unwrap();
    assert_eq!(info.owner, "svc", "the lease's owner by default");
    let mut cc = coord.elections();
    let next = tokio::spawn(async move { elected(&mut cc, campaign_req("lost", "next")).await });
    wait_candidates(&mut c, "lost", 1).await;
    locks.revoke(RevokeRequest { lease_id: lease }).await.unwrap();
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token, lost.name.as_str()),
        (HoldKind::Leadership as i32, LockLostReason::LeaseRevoked as i32, l.term, "lost")
    );
    let next = tokio::time::timeout(Duration::from_secs(1), next).await.expect("elected at once").unwrap();
    assert!(next.term > l.term);

    // A private lease renewed on the stream: deposed by an admin.
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&next.lease_id),
        Duration::from_millis(50),
        Instant::now() + Duration::from_millis(200),
    )
    .await;
    let forced = c
        .force_resign(ElectionServiceForceResignRequest { election: "lost".into(), term: next.term })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.resigned);
    let lost = next_lost(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        (lost.kind, lost.reason, lost.fencing_token),
        (HoldKind::Leadership as i32, LockLostReason::ForceReleased as i32, next.term)
    );

    // Not renewed: leads for its TTL, then nobody does.
    let mut states = observe(&mut c, "lost").await;
    assert!(!next_state(&mut states).await.has_leader);
    let start = Instant::now();
    let short =
        elected(&mut c, ElectionServiceCampaignRequest { ttl_ms: 1_000, ..campaign_req("lost", "short") }).await;
    let s = next_state(&mut states).await;
    assert_eq!((s.has_leader, s.term), (true, short.term));
    let s = next_state(&mut states).await;
    assert_eq!((s.has_leader, s.term), (false, short.term), "no leader after the TTL");
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(3), "{after:?}");
}

/// When the leader resigns, the next candidate's Campaign returns by
/// notification: far sooner than its 2 s retry.
#[tokio::test]
async fn the_next_candidate_is_elected_by_notification() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let mut current = elected(&mut c, campaign_req("handoff", "0")).await;
    let mut handoffs = Vec::new();
    for i in 1..=10 {
        let mut cc = coord.elections();
        let next = tokio::spawn(async move { elected(&mut cc, campaign_req("handoff", &i.to_string())).await });
        wait_candidates(&mut c, "handoff", 1).await;
        let start = Instant::now();
        assert!(resign(&mut c, &current).await);
        let got = next.await.unwrap();
        handoffs.push(start.elapsed());
        assert!(got.term > current.term);
        current = got;
    }
    handoffs.sort();
    assert!(handoffs[5] < Duration::from_millis(500), "median handoff {:?} ({handoffs:?})", handoffs[5]);
}

/// Campaigns whose callers give up (deadlines of 20–200 ms) while leaders
/// come and go: afterwards no candidate is queued, and once every
/// leadership a caller did receive is resigned, nobody leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_campaigns_leave_nothing_behind() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let mut cc = coord.elections();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(campaign_req("cancel", &i.to_string()));
            req.set_timeout(Duration::from_millis(20 + (i * 37) % 180));
            if let Ok(reply) = cc.campaign(req).await
                && let Some(l) = reply.into_inner().leadership
            {
                // A leader that heard of its leadership holds it briefly.
                tokio::time::sleep(Duration::from_millis(15)).await;
                assert!(resign(&mut cc, &l).await, "held until resigned");
                received.lock().unwrap().push(l.term);
            }
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = leader(&mut c, "cancel").await;
        if !now.state.as_ref().unwrap().has_leader && now.candidates == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.cli(&["ZCARD", "coord:default:election:{cancel}:queue"]), "0", "nothing left in the queue");
    assert_eq!(redis.cli(&["HLEN", "coord:default:election:{cancel}:wants"]), "0");
    assert!(!received.lock().unwrap().is_empty(), "some campaign won");
}

/// 8 candidates campaign in a loop, each leading briefly: never two
/// leaders at once, terms strictly increase, and an observer sees every
/// term that was granted, in order, each followed by "no leader".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_per_term_and_observers_see_every_term() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let mut states = observe(&mut c, "prop").await;
    assert!(!next_state(&mut states).await.has_leader);
    let leading = Arc::new(AtomicI64::new(0));
    let terms = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (mut cc, leading, terms) = (coord.elections(), leading.clone(), terms.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                let l = elected(&mut cc, campaign_req("prop", &format!("{i}.{round}"))).await;
                assert_eq!(leading.fetch_add(1, Ordering::SeqCst), 0, "two leaders at once");
                terms.lock().unwrap().push(l.term);
                tokio::time::sleep(Duration::from_millis(2)).await;
                leading.fetch_sub(1, Ordering::SeqCst);
                assert!(resign(&mut cc, &l).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let granted = terms.lock().unwrap().clone();
    assert_eq!(granted.len(), 48);
    assert!(granted.windows(2).all(|w| w[0] < w[1]), "terms strictly increase in grant order: {granted:?}");
    let mut observed = Vec::new();
    while observed.len() < 2 * granted.len() {
        let s = next_state(&mut states).await;
        observed.push((s.has_leader, s.term));
    }
    let want: Vec<_> = granted.iter().flat_map(|&t| [(true, t), (false, t)]).collect();
    assert_eq!(observed, want);
}

/// Terms keep increasing when Redis loses everything (restarted empty).
#[tokio::test]
async fn terms_increase_across_redis_data_loss() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let first = elected(&mut c, campaign_req("loss", "a")).await;
    redis.cli(&["FLUSHALL"]);
    let state = leader(&mut c, "loss").await.state.unwrap();
    assert_eq!((state.has_leader, state.term), (false, 0), "nothing known after the loss");
    let second = elected(&mut c, campaign_req("loss", "b")).await;
    assert!(second.term > first.term, "{} > {}", second.term, first.term);
}

/// Bad input is INVALID_ARGUMENT naming the field; a lease cannot lead
/// twice (FAILED_PRECONDITION); nothing is written by refused calls.
#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.elections();
    let cases: Vec<(ElectionServiceCampaignRequest, &str)> = vec![
        (campaign_req("", "a"), "election"),
        (campaign_req(&"x".repeat(513), "a"), "election"),
        (ElectionServiceCampaignRequest { value: vec![0; 64 * 1024 + 1], ..campaign_req("bad", "") }, "value"),
        (ElectionServiceCampaignRequest { wait_ms: -1, ..campaign_req("bad", "a") }, "wait_ms"),
        (ElectionServiceCampaignRequest { ttl_ms: 0, ..campaign_req("bad", "a") }, "lease_id"),
        (ElectionServiceCampaignRequest { lease_id: "nope".into(), ..campaign_req("bad", "a") }, "ttl_ms"),
        (ElectionServiceCampaignRequest { owner: "o".repeat(257), ..campaign_req("bad", "a") }, "owner"),
    ];
    for (req, field) in cases {
        let err = c.campaign(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
    let err = c.resign(ElectionServiceResignRequest { leadership: None }).await.unwrap_err();
    assert!(err.message().starts_with("leadership"), "{}", err.message());
    let bad = Leadership { election: "bad".into(), lease_id: "zzz".into(), term: 1 };
    let err = c.resign(ElectionServiceResignRequest { leadership: Some(bad) }).await.unwrap_err();
    assert!(err.message().starts_with("leadership.lease_id"), "{}", err.message());
    let keys: Vec<String> = ["", ":permits", ":expiry", ":queue", ":wants", ":fence"]
        .iter()
        .map(|k| format!("coord:default:election:{{bad}}{k}"))
        .collect();
    let mut args = vec!["EXISTS"];
    args.extend(keys.iter().map(String::as_str));
    assert_eq!(redis.cli(&args), "0", "refused calls wrote nothing");

    let mut locks = coord.locks();
    let lease = locks.grant(GrantRequest { ttl_ms: 5_000, owner: "svc".into() }).await.unwrap().into_inner().lease_id;
    let mut req = campaign_req("twice", "a");
    (req.ttl_ms, req.lease_id) = (0, lease);
    let l = elected(&mut c, req.clone()).await;
    let err = c.campaign(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&l.term.to_string()), "{}", err.message());
    let got: ElectionServiceCampaignResponse = c
        .campaign(ElectionServiceCampaignRequest { wait_ms: 1, ..campaign_req("twice", "b") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.status, got.candidates_ahead), (CampaignStatus::NotElected as i32, 0));
}
