//! The Prometheus endpoint: every RPC is counted with its status code and
//! timed by one tower layer, streams are recorded when they end, and Redis
//! errors and pool gauges are exported, with per-service metrics (elections
//! among them).

mod support;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use coord::pb::{
    Board, CountRequest, CreateBoardRequest, ElectionServiceCampaignRequest, GetBackendStatusRequest, PublishRequest,
    SubmitRequest,
};
use support::{Coord, redis::RedisServer};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

fn has_line(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.starts_with(prefix))
}

#[tokio::test]
async fn rpcs_are_counted_by_method_and_code() {
    let redis = RedisServer::start();
    let metrics_port = support::redis::free_port();
    let mut config = support::config(&redis.url());
    config.metrics.enabled = true;
    config.metrics.listen = ([127, 0, 0, 1], metrics_port).into();
    let coord = Coord::start_with(config).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut admin = coord.admin();

    admin.get_backend_status(GetBackendStatusRequest {}).await.expect("ok call");
    let mut boards = coord.boards();
    let board = Board { name: "m".into(), ..Default::default() };
    boards.create_board(CreateBoardRequest { board: Some(board) }).await.expect("create board");
    let submit = SubmitRequest { board: "m".into(), member: "p".into(), score: 1, ..Default::default() };
    boards.submit(submit).await.expect("submit");
    boards.count(CountRequest { board: "m".into(), period: None }).await.expect("count");
    let mut ps = coord.pubsub();
    let publish = PublishRequest { channel: "m".into(), ..Default::default() };
    ps.publish(publish).await.expect("publish");
    // An election: one leader, one candidate that waits, then gives up.
    let mut elections = coord.elections();
    let campaign = |value: &str, wait_ms| ElectionServiceCampaignRequest {
        election: "m".into(),
        ttl_ms: 5_000,
        value: value.into(),
        wait_ms,
        ..Default::default()
    };
    elections.campaign(campaign("a", 0)).await.expect("campaign");
    elections.campaign(campaign("b", 300)).await.expect("not elected in time");
    redis.stop();
    let err = admin.get_backend_status(GetBackendStatusRequest {}).await.expect_err("redis stopped");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    redis.cont();

    // A stream the client abandons is recorded as CANCELLED when it ends.
    let watch = coord.health().watch(HealthCheckRequest { service: String::new() }).await.unwrap();
    drop(watch);

    let text = tokio::task::spawn_blocking(move || {
        // Recording happens as bodies finish; give the server a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = scrape(metrics_port);
            if has_line(
                &text,
                r#"coord_rpc_requests_total{service="grpc.health.v1.Health",method="Watch",code="CANCELLED"}"#,
            ) || std::time::Instant::now() > deadline
            {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();

    for prefix in [
        r#"coord_rpc_requests_total{service="coord.v1.AdminService",method="GetBackendStatus",code="OK"} 1"#,
        r#"coord_rpc_requests_total{service="coord.v1.AdminService",method="GetBackendStatus",code="UNAVAILABLE"} 1"#,
        r#"coord_rpc_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"}"#,
        r#"coord_rpc_requests_total{service="grpc.health.v1.Health",method="Watch",code="CANCELLED"} 1"#,
        r#"coord_rpc_duration_seconds_bucket{service="coord.v1.AdminService",method="GetBackendStatus",le="0.5"}"#,
        r#"coord_redis_errors_total{op="probe.lua",kind="unavailable"}"#,
        r#"coord_leaderboard_submits_total{operator="best",outcome="changed"} 1"#,
        r#"coord_leaderboard_reads_total{op="count"} 1"#,
        r#"coord_leaderboard_board_entries_bucket{le="10"} 1"#,
        r#"coord_pubsub_publishes_total{mode="ephemeral",outcome="published"} 1"#,
        "coord_election_elected_total 1",
        r#"coord_semaphore_acquires_total{kind="election",outcome="not_acquired"} 1"#,
        r#"coord_semaphore_waiters{kind="election"} 0"#,
        r#"coord_semaphore_wait_seconds_count{kind="election"} 1"#,
        "coord_redis_pool_connections ",
        "coord_redis_up ",
    ] {
        assert!(has_line(&text, prefix), "missing {prefix}\n{text}");
    }
}

#[tokio::test]
async fn unknown_methods_do_not_mint_label_values() {
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    let mut client = tonic::client::Grpc::new(coord.channel());
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/evil.Service/Random123");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let err = client.unary(tonic::Request::new(()), path, codec).await.expect_err("no such method");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let text = coord::metrics::handle().render();
    assert!(!text.contains("Random123"), "{text}");
    assert!(text.contains(r#"service="unknown",method="unknown",code="UNIMPLEMENTED""#), "{text}");
}
