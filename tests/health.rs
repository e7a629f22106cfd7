//! Health follows Redis: NOT_SERVING while Redis is stopped or dead,
//! SERVING again once it is back, for the overall status and every service.

mod support;

use std::time::{Duration, Instant};

use coord::{
    pb::GetBackendStatusRequest,
    server::{LIVENESS, SERVICES},
};
use support::{Coord, redis::RedisServer};
use tonic_health::pb::health_check_response::ServingStatus;

const GENEROUS: Duration = Duration::from_secs(10);

#[tokio::test]
async fn health_flips_with_redis_stop_kill_and_return() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    for service in SERVICES {
        coord.wait_health(service, ServingStatus::Serving, GENEROUS).await;
    }

    // A stopped process answers nothing: only timeouts can detect it.
    redis.stop();
    let took = coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    eprintln!("SIGSTOP detected in {took:?}");
    for service in SERVICES {
        coord.wait_health(service, ServingStatus::NotServing, GENEROUS).await;
    }
    redis.cont();
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;

    redis.kill();
    let took = coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    eprintln!("SIGKILL detected in {took:?}");
    redis.restart();
    let took = coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    eprintln!("restart detected in {took:?}");
    // The pool replaced its dead connections: real calls work again.
    coord.admin().get_backend_status(GetBackendStatusRequest {}).await.expect("status after restart");
    coord.shutdown().await;
}

/// The Kubernetes liveness probe asks for `liveness`: a Redis outage must
/// take pods out of service (readiness), not restart them all.
#[tokio::test]
async fn liveness_stays_serving_while_redis_is_down() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health(LIVENESS, ServingStatus::Serving, GENEROUS).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    redis.kill();
    coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    assert_eq!(coord.health_status(LIVENESS).await, Some(ServingStatus::Serving));
    redis.restart();
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    assert_eq!(coord.health_status(LIVENESS).await, Some(ServingStatus::Serving));
    coord.shutdown().await;
}

#[tokio::test]
async fn stopped_redis_is_detected_within_about_a_second() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    redis.stop();
    // Interval 50 ms + probe timeout 500 ms; the bound leaves room for a
    // loaded machine without hiding a hang of several seconds.
    let took = coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    redis.cont();
}

#[tokio::test]
async fn unreachable_redis_gives_unavailable_quickly() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    let mut admin = coord.admin();

    redis.stop();
    let start = Instant::now();
    let err = admin.get_backend_status(GetBackendStatusRequest {}).await.expect_err("redis is stopped");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // command timeout is 500 ms in the test config.
    assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    redis.cont();

    redis.kill();
    let start = Instant::now();
    let err = admin.get_backend_status(GetBackendStatusRequest {}).await.expect_err("redis is dead");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn health_requires_writes_not_just_ping() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;

    // PING still answers while writes are paused; coord could not serve.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]), "OK");
    coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;

    // A master demoted to a replica (a failover) rejects writes: READONLY.
    let primary = RedisServer::start();
    assert_eq!(redis.cli(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()]), "OK");
    coord.wait_health("", ServingStatus::NotServing, GENEROUS).await;
    assert_eq!(redis.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
}
