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
