//! The pool spreads concurrent calls over a few multiplexed sockets: a
//! checkout is never held for the length of a command, so many concurrent
//! calls neither open more connections nor queue for a checkout.

mod support;

use std::time::Duration;

use coord::redis::{ConnectOptions, Redis, scripts};
use support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_socket() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        pool_size: 1,
        // Far shorter than 1000 one-at-a-time round trips would take: the
        // calls must be pipelined on the socket, not queued for the pool.
        connect_timeout: Duration::from_millis(20),
        command_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let redis = Redis::single(&server.url(), &opts).unwrap();
    redis.load_scripts(scripts::ALL).await.unwrap();

    let calls = (0..1000).map(|i| {
        let redis = redis.clone();
        tokio::spawn(async move {
            let key = format!("pool:{{k{i}}}");
            redis
                .invoke::<(i64, i64)>(&scripts::PROBE, |inv| {
                    inv.key(&key).arg(10_000);
                })
                .await
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.unwrap().err()).map(|e| e.to_string()).collect();
    assert!(failed.is_empty(), "{} of 1000 failed, e.g. {:?}", failed.len(), failed.first());
    assert_eq!(redis.pool_state().0, 1, "still one connection");
    let clients = server.cli(&["CLIENT", "LIST"]);
    // Our one socket plus redis-cli's own.
    assert_eq!(clients.lines().count(), 2, "{clients}");
}
