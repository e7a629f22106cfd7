//! The pool spreads concurrent calls over a few multiplexed sockets: a
//! checkout is never held for the length of a command, so concurrent calls
//! neither open more connections nor queue behind each other for a checkout.

mod support;

use std::time::Duration;

use coord::redis::{ConnectOptions, Redis, scripts};
use support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_pipeline_on_one_socket_instead_of_queueing() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        pool_size: 1,
        connect_timeout: Duration::from_millis(100),
        command_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let redis = Redis::single(&server.url(), &opts).unwrap();
    redis.load_scripts(scripts::ALL).await.unwrap();

    // While Redis is stopped, every call is in flight at once. Had a call
    // held the only checkout until its reply, the others would wait for it
    // far longer than the 100 ms checkout bound and fail.
    server.stop();
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let redis = redis.clone();
            tokio::spawn(async move {
                let key = format!("pool:{{k{i}}}");
                redis
                    .invoke::<(i64, i64)>(&scripts::PROBE, |inv| {
                        inv.key(&key).arg(10_000);
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.cont();

    let results = futures_util::future::join_all(calls).await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.unwrap().err()).map(|e| e.to_string()).collect();
    assert!(failed.is_empty(), "{} of 200 failed, e.g. {:?}", failed.len(), failed.first());
    assert_eq!(redis.pool_state().0, 1, "still one connection");
    let clients = server.cli(&["CLIENT", "LIST"]);
    // Our one socket plus redis-cli's own.
    assert_eq!(clients.lines().count(), 2, "{clients}");
}
