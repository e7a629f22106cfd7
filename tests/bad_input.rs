//! Bad input gets INVALID_ARGUMENT naming what is wrong, never INTERNAL: bytes
//! that do not decode, on every RPC of every coord service (and Envoy's
//! rate limit service).

mod support;

use support::{raw::call, redis::RedisServer, serving};
use tonic::Code;

/// `/coord.v1.Service/Method` of every RPC in `proto/coord/v1`, and Envoy's
/// rate limit service.
fn every_rpc() -> Vec<String> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/coord/v1")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut service = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_owned);
            } else if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), &service) {
                let method = rest.split('(').next().unwrap().trim();
                paths.push(format!("/coord.v1.{service}/{method}"));
            }
        }
    }
    paths.push("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".into());
    paths.sort();
    paths
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument_on_every_rpc() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let rpcs = every_rpc();
    assert_eq!(rpcs.len(), 38, "{rpcs:?}");
    for path in &rpcs {
        // A tag that is not a varint: no message decodes it.
        let status = call(coord.channel(), path, vec![0xff; 11]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(status.message().starts_with("request: failed to decode"), "{path}: {status:?}");
    }
    // Field 2 of GrantRequest (owner) holding bytes that are not UTF-8: the
    // message names the field.
    let status = call(coord.channel(), "/coord.v1.LockService/Grant", vec![0x12, 0x02, 0xff, 0xfe]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("GrantRequest.owner"), "{status:?}");
}
