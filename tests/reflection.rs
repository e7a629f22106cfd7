//! Server reflection answers in both protocol versions (grpcurl and Python
//! speak v1alpha) and lists coord's services and health.

mod support;

use support::{Coord, redis::RedisServer};
use tokio_stream::StreamExt as _;

const EXPECTED: &[&str] = &[
    "coord.v1.AdminService",
    "coord.v1.LeaderboardService",
    "coord.v1.LockService",
    "coord.v1.RateLimitService",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn reflection_v1_lists_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    let mut client = ServerReflectionClient::new(coord.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
    let reply = replies.next().await.expect("a reply").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in EXPECTED {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn reflection_v1alpha_lists_services_and_describes_them() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let redis = RedisServer::start();
    let coord = Coord::start(&redis.url()).await;
    let mut client = ServerReflectionClient::new(coord.channel());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("coord.v1.AdminService".into())),
        },
    ];
    let mut replies = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let reply = replies.next().await.expect("a reply").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in EXPECTED {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let reply = replies.next().await.expect("a reply").unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty(), "descriptor for AdminService");
}
