//! The script registry: every script loads, EVALSHA recovers from NOSCRIPT
//! after `SCRIPT FLUSH` (seed property T3), and scripts round-trip on a
//! local Redis Cluster with hash-tagged keys in many slots.

mod support;

use std::time::Duration;

use coord::{
    pb::{GetBackendStatusRequest, RedisMode},
    redis::{ConnectOptions, KeyBuilder, Name, Namespace, Redis, scripts},
};
use support::{
    Coord,
    redis::{RedisCluster, RedisServer},
};
use tonic_health::pb::health_check_response::ServingStatus;

fn opts() -> ConnectOptions {
    ConnectOptions {
        pool_size: 2,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_registered_script_loads_with_its_sha() {
    let server = RedisServer::start();
    let redis = Redis::single(&server.url(), &opts()).unwrap();
    redis.load_scripts(scripts::ALL).await.expect("all scripts compile on Redis");
    for script in scripts::ALL {
        let body = script.source.strip_prefix(scripts::PRELUDE).expect("the prelude comes first");
        let stem = script.name.trim_end_matches(".lua");
        assert!(body.starts_with(&format!("-- {stem}:")), "{} starts with its contract comment", script.name);
        let exists = server.cli(&["SCRIPT", "EXISTS", &script.sha()]);
        assert_eq!(exists, "1", "{} is loaded", script.name);
    }
}

#[tokio::test]
async fn evalsha_recovers_after_script_flush() {
    let server = RedisServer::start();
    let coord = Coord::start(&server.url()).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut admin = coord.admin();
    admin.get_backend_status(GetBackendStatusRequest {}).await.expect("first call");

    for _ in 0..3 {
        assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
        assert_eq!(server.cli(&["SCRIPT", "EXISTS", &scripts::PROBE.sha()]), "0");
        let status = admin.get_backend_status(GetBackendStatusRequest {}).await.expect("call after SCRIPT FLUSH");
        assert_eq!(status.into_inner().mode, RedisMode::Single as i32);
        assert_eq!(server.cli(&["SCRIPT", "EXISTS", &scripts::PROBE.sha()]), "1", "reloaded on NOSCRIPT");
    }
}

#[tokio::test]
async fn scripts_round_trip_on_a_local_cluster() {
    let cluster = RedisCluster::start(0);
    let redis = Redis::cluster(&cluster.urls(), &opts()).unwrap();
    let keys = KeyBuilder::new("coord").unwrap();
    let ns = Namespace::parse("t").unwrap();
    // Names chosen to spread over all three masters.
    let names: Vec<String> = (0..30).map(|i| format!("res-{i}:{{x}}")).collect();
    for round in 0..2 {
        for name in &names {
            let key = keys.resource(&ns, "probe", &Name::parse("name", name).unwrap());
            let sibling = key.sub("fence");
            let (secs, _micros): (i64, i64) = redis
                .invoke(&scripts::PROBE, |inv| {
                    inv.key(key.as_str()).arg(10_000);
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}, {name}: {e}"));
            assert!(secs > 1_700_000_000, "Redis TIME in seconds");
            // Siblings hash to the same slot as the base key.
            let slot = cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", key.as_str()]);
            assert_eq!(cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", &sibling]), slot);
        }
        // Empty every shard's script cache: the next round must reload.
        for node in cluster.nodes() {
            assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
        }
    }

    // And coord itself runs on the cluster.
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = Coord::start_with(config).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let status = coord.admin().get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.mode, RedisMode::Cluster as i32);
    assert!(!status.redis_version.is_empty(), "{status:?}");
}

#[tokio::test]
async fn backend_status_reports_eviction_risk() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "64mb"]);
    let coord = Coord::start(&server.url()).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let status = coord.admin().get_backend_status(GetBackendStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.maxmemory_policy, "allkeys-lru");
    assert_eq!(status.maxmemory_bytes, 64 * 1024 * 1024);
    assert!(status.warnings.iter().any(|w| w.contains("allkeys-lru")), "{:?}", status.warnings);
    assert!(status.round_trip_us > 0);
    // Same host, same clock: the offset is far below a second.
    assert!(status.clock_offset_us.abs() < 1_000_000, "{status:?}");
    assert!(status.pool_connections >= 1);
}
