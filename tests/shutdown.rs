//! Graceful shutdown: open streams end with UNAVAILABLE, the drain finishes
//! well within the grace period, and new RPCs are refused.

mod support;

use std::time::Duration;

use support::{Coord, redis::RedisServer};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test]
async fn open_streams_end_unavailable_and_drain_finishes_within_grace() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await; // grace: 10 s
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;

    // Watch is a server stream that never ends by itself.
    let mut watch = coord.health().watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut late_client = coord.health();

    let drain = tokio::spawn(coord.shutdown());
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("stream hung") {
            // NOT_SERVING may be delivered before the stream is cut.
            Ok(Some(update)) => assert_eq!(update.status, ServingStatus::NotServing as i32),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "server shutting down");

    let took = drain.await.unwrap();
    assert!(took < Duration::from_secs(5), "drain took {took:?} of a 10 s grace");

    let err = late_client.check(HealthCheckRequest { service: String::new() }).await.expect_err("server is gone");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn health_reports_not_serving_once_shutdown_starts() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut watch = coord.health().watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    drop(coord); // signals shutdown
    // The watcher sees NOT_SERVING or the cut; it never sees SERVING again.
    while let Ok(Some(update)) =
        tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("stream hung")
    {
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
}

/// A holder that took an OK end for a normal one would stop reconnecting
/// and lose its lock in a rolling upgrade: every KeepAlive stream open at
/// shutdown ends UNAVAILABLE, never OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keepalive_stream_ends_unavailable_at_shutdown() {
    use coord::pb::{AcquireRequest, KeepAliveRequest};
    use tokio_stream::wrappers::ReceiverStream;

    let redis = RedisServer::start();
    for round in 0..3 {
        let coord = Coord::start(&redis.url()).await;
        coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
        let mut ends = Vec::new();
        for i in 0..40 {
            let mut c = coord.locks();
            let name = format!("r{round}-{i}");
            let got =
                c.acquire(AcquireRequest { name, ttl_ms: 10_000, ..Default::default() }).await.unwrap().into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut stream = c.keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
            ends.push(tokio::spawn(async move {
                // Renews until coord stops reading (it resets the request
                // side once the stream is over); the answer is the status.
                let renew = async {
                    while tx.send(KeepAliveRequest { lease_id: got.lease_id.clone() }).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    std::future::pending::<()>().await;
                };
                let end = async {
                    loop {
                        match stream.message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => return None,
                            Err(status) => return Some(status),
                        }
                    }
                };
                tokio::select! {
                    _ = renew => None,
                    end = end => end,
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        coord.shutdown().await;
        for (i, end) in ends.into_iter().enumerate() {
            let status = tokio::time::timeout(Duration::from_secs(5), end).await.expect("stream hung").unwrap();
            let status = status.unwrap_or_else(|| panic!("round {round}: stream {i} ended OK"));
            assert_eq!(status.code(), tonic::Code::Unavailable, "round {round}: stream {i}: {status:?}");
        }
    }
}
