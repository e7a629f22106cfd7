//! Bad input gets INVALID_ARGUMENT naming what is wrong, never INTERNAL: bytes
//! that do not decode, on every RPC of every coord service.

mod support;

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use support::{redis::RedisServer, serving};
use tokio_stream::StreamExt as _;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Sends raw bytes as the request and ignores response bodies: only the
/// status matters here.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        buf.advance(buf.remaining());
        Ok(Some(()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// `/coord.v1.Service/Method` of every RPC in `proto/coord/v1`.
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
    paths.sort();
    paths
}

/// The status of one call carrying `body` as its only request message.
async fn call(channel: tonic::transport::Channel, path: &str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    let request = tonic::Request::new(tokio_stream::iter([body]));
    match grpc.streaming(request, path, RawCodec).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no answer") {
                    Some(Ok(())) => continue,
                    Some(Err(status)) => return status,
                    None => return Status::ok(""),
                }
            }
        }
    }
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument_on_every_rpc() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let rpcs = every_rpc();
    assert_eq!(rpcs.len(), 26, "{rpcs:?}");
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
