//! The KeepAlive stream: one stream renews several leases with several
//! locks each; locks outlive many TTLs while renewed and expire within the
//! TTL when renewals stop; a stream resumed on another instance keeps the
//! locks; holders get LockLost on ForceRelease, on Revoke from elsewhere and
//! when Redis stops answering — within one TTL.

mod support;

use std::time::{Duration, Instant};

use coord::pb::{
    AcquireRequest, AcquireStatus, DescribeRequest, ForceReleaseRequest, GrantRequest, KeepAliveRequest,
    KeepAliveResponse, LockLostReason, RevokeRequest, keep_alive_response::Event,
    lock_service_client::LockServiceClient,
};
use support::{
    Coord,
    keepalive::{keep_renewing, next_lost, open_stream},
    redis::RedisServer,
    serving,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::transport::Channel;

type Client = LockServiceClient<Channel>;

async fn grant(c: &mut Client, ttl_ms: i64) -> String {
    c.grant(GrantRequest { ttl_ms, owner: "test".into() }).await.unwrap().into_inner().lease_id
}

async fn acquire(c: &mut Client, name: &str, lease: &str) -> u64 {
    let got = c
        .acquire(AcquireRequest { name: name.into(), lease_id: lease.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, AcquireStatus::Acquired as i32, "{name}");
    got.fencing_token
}

async fn holder(c: &mut Client, name: &str) -> Option<String> {
    let info = c
        .describe(DescribeRequest { name: name.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .unwrap();
    info.held.then_some(info.lease_id)
}

#[tokio::test]
async fn one_stream_keeps_several_leases_with_several_locks() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let leases = vec![grant(&mut c, 600).await, grant(&mut c, 600).await];
    for (i, lease) in leases.iter().enumerate() {
        for j in 0..3 {
            acquire(&mut c, &format!("l{i}-{j}"), lease).await;
        }
    }
    let (tx, mut stream) = open_stream(&mut c).await;
    // Five TTLs of renewals at TTL/3.
    let events =
        keep_renewing(&tx, &mut stream, &leases, Duration::from_millis(200), Instant::now() + Duration::from_secs(3))
            .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms == 600)), "{events:?}");
    assert!(events.len() >= 20, "{} replies", events.len());
    for (i, lease) in leases.iter().enumerate() {
        for j in 0..3 {
            assert_eq!(holder(&mut c, &format!("l{i}-{j}")).await.as_ref(), Some(lease), "l{i}-{j} still held");
        }
    }

    // Renewals stop (the stream closes, revoking nothing): within the TTL
    // the locks are free for others.
    drop(tx);
    drop(stream);
    let start = Instant::now();
    let got = c
        .acquire(AcquireRequest { name: "l0-0".into(), ttl_ms: 1_000, wait_ms: 5_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, AcquireStatus::Acquired as i32);
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn stream_resumed_on_another_instance_keeps_the_locks() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    let mut ca = a.locks();
    let lease = grant(&mut ca, 600).await;
    acquire(&mut ca, "job-1", &lease).await;
    acquire(&mut ca, "job-2", &lease).await;
    let private = ca
        .acquire(AcquireRequest { name: "solo".into(), ttl_ms: 600, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let leases = vec![lease.clone(), private.clone()];

    let (tx, mut stream) = open_stream(&mut ca).await;
    keep_renewing(&tx, &mut stream, &leases, Duration::from_millis(200), Instant::now() + Duration::from_secs(1)).await;
    drop((tx, stream));
    drop(a); // instance A goes away entirely

    let mut cb = b.locks();
    let (tx, mut stream) = open_stream(&mut cb).await;
    let events =
        keep_renewing(&tx, &mut stream, &leases, Duration::from_millis(200), Instant::now() + Duration::from_secs(2))
            .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(r) if r.ttl_ms > 0)), "{events:?}");
    assert_eq!(holder(&mut cb, "job-1").await, Some(lease.clone()));
    assert_eq!(holder(&mut cb, "job-2").await, Some(lease));
    assert_eq!(holder(&mut cb, "solo").await, Some(private));
}

#[tokio::test]
async fn force_release_from_another_instance_is_pushed_to_the_holder() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    let mut ca = a.locks();
    let lease = grant(&mut ca, 3_000).await;
    let token = acquire(&mut ca, "victim", &lease).await;
    acquire(&mut ca, "bystander", &lease).await;
    let (tx, mut stream) = open_stream(&mut ca).await;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(300),
        Instant::now() + Duration::from_millis(400),
    )
    .await;

    let start = Instant::now();
    let forced = b
        .locks()
        .force_release(ForceReleaseRequest { name: "victim".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.released && forced.lease_id == lease, "{forced:?}");
    let lost = next_lost(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(lost.reason, LockLostReason::ForceReleased as i32);
    assert_eq!((lost.name.as_str(), lost.lease_id.as_str(), lost.fencing_token), ("victim", lease.as_str(), token));
    // Pushed, not discovered at the next renewal.
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());

    // Renewal goes on for the rest, and the loss is not reported twice.
    let events = keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(300),
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    assert!(events.iter().all(|e| matches!(e, Event::Renewed(_))), "{events:?}");
    assert_eq!(holder(&mut ca, "bystander").await, Some(lease));
}

#[tokio::test]
async fn revoke_from_elsewhere_is_pushed_for_every_lock() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    let mut ca = a.locks();
    let lease = grant(&mut ca, 3_000).await;
    for name in ["r1", "r2", "r3"] {
        acquire(&mut ca, name, &lease).await;
    }
    let (tx, mut stream) = open_stream(&mut ca).await;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(300),
        Instant::now() + Duration::from_millis(400),
    )
    .await;

    let revoked = b.locks().revoke(RevokeRequest { lease_id: lease.clone() }).await.unwrap().into_inner();
    let mut released = revoked.released.clone();
    released.sort();
    assert_eq!(released, ["r1", "r2", "r3"]);
    let mut lost = Vec::new();
    for _ in 0..3 {
        let event = next_lost(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(event.reason, LockLostReason::LeaseRevoked as i32, "{event:?}");
        lost.push(event.name);
    }
    lost.sort();
    assert_eq!(lost, ["r1", "r2", "r3"]);
    // The lease is gone: renewing it answers 0; Revoke is idempotent.
    tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(3), stream.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(reply.event, Some(Event::Renewed(r)) if r.ttl_ms == 0));
    assert!(b.locks().revoke(RevokeRequest { lease_id: lease }).await.unwrap().into_inner().released.is_empty());
    for name in ["r1", "r2", "r3"] {
        assert_eq!(holder(&mut ca, name).await, None);
    }
}

#[tokio::test]
async fn stopped_redis_makes_the_holder_presume_the_lock_lost_within_a_ttl() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let lease = grant(&mut c, 1_500).await;
    acquire(&mut c, "fragile", &lease).await;
    let (tx, mut stream) = open_stream(&mut c).await;
    keep_renewing(
        &tx,
        &mut stream,
        std::slice::from_ref(&lease),
        Duration::from_millis(500),
        Instant::now() + Duration::from_millis(600),
    )
    .await;
    let last_success = Instant::now();

    redis.stop();
    // The client keeps trying to renew; every attempt times out.
    let renewer = {
        let tx = tx.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            loop {
                if tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let lost = next_lost(&mut stream, Duration::from_secs(5)).await;
    let after = last_success.elapsed();
    redis.cont();
    renewer.abort();
    assert_eq!(lost.reason, LockLostReason::BackendUnavailable as i32, "{lost:?}");
    assert_eq!(lost.name, "fragile");
    // No later than one TTL after the last successful renewal (+ slack for
    // a loaded machine: the bound that matters is "not after expiry").
    assert!(after <= Duration::from_millis(1_500 + 500), "LockLost {after:?} after the last renewal");
}

#[tokio::test]
async fn keepalive_answers_zero_for_unknown_and_malformed_leases() {
    let redis = RedisServer::start();
    let coord: Coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let (tx, mut stream) = open_stream(&mut c).await;
    for lease in [format!("l{}", "0".repeat(32)), "garbage".to_owned()] {
        tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(3), stream.next()).await.unwrap().unwrap().unwrap();
        match reply.event {
            Some(Event::Renewed(r)) => assert_eq!((r.lease_id, r.ttl_ms), (lease, 0)),
            other => panic!("{other:?}"),
        }
    }
}

/// The wire form of KeepAliveRequest with bytes instead of a string, to
/// send what does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct RawKeepAlive {
    #[prost(bytes = "vec", tag = "1")]
    lease_id: Vec<u8>,
}

#[tokio::test]
async fn an_undecodable_message_ends_the_stream_with_invalid_argument() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.locks();
    let got = c
        .acquire(AcquireRequest { name: "bad".into(), ttl_ms: 5_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let lease = got.lease_id.into_bytes();

    let mut grpc = tonic::client::Grpc::new(coord.channel());
    grpc.ready().await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/coord.v1.LockService/KeepAlive");
    let codec = tonic_prost::ProstCodec::<RawKeepAlive, KeepAliveResponse>::default();
    let mut stream =
        grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec).await.unwrap().into_inner();
    tx.send(RawKeepAlive { lease_id: lease.clone() }).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Renewed(ref r)) if r.ttl_ms > 0), "{first:?}");
    // Not UTF-8: the string field cannot decode.
    tx.send(RawKeepAlive { lease_id: vec![0xff, 0xfe] }).await.unwrap();
    tx.send(RawKeepAlive { lease_id: lease }).await.unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("stream hung") {
            Ok(Some(msg)) => assert!(matches!(msg.event, Some(Event::Renewed(_))), "{msg:?}"),
            Ok(None) => panic!("the stream ended OK after a message that does not decode"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::InvalidArgument, "{end:?}");
    assert!(end.message().contains("KeepAliveRequest"), "{end:?}");
}

/// A holder that releases its lock has lost nothing: its stream, on the
/// instance of the release or another, pushes no LockLost afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_private_lock_is_not_reported_lost() {
    let redis = RedisServer::start();
    let a = serving(&redis.url()).await;
    let b = serving(&redis.url()).await;
    for (round, releaser) in [&a, &b].into_iter().enumerate() {
        let mut c = a.locks();
        let name = format!("done{round}");
        let got = c
            .acquire(AcquireRequest { name: name.clone(), ttl_ms: 1_000, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let (tx, mut stream) = open_stream(&mut c).await;
        tx.send(KeepAliveRequest { lease_id: got.lease_id.clone() }).await.unwrap();
        let msg = stream.next().await.unwrap().unwrap();
        assert!(matches!(msg.event, Some(Event::Renewed(_))), "{msg:?}");
        let released = releaser
            .locks()
            .release(coord::pb::ReleaseRequest { name: name.clone(), lease_id: got.lease_id, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(released.status, coord::pb::ReleaseStatus::Released as i32);
        // No more renewals: well past the TTL, nothing arrives.
        match tokio::time::timeout(Duration::from_millis(2_500), stream.next()).await {
            Err(_) => {}
            Ok(event) => panic!("round {round}: {event:?} after the holder's own release"),
        }
        drop(tx);
    }
}
