//! Raw gRPC calls: any bytes as the request message of any RPC path, for
//! tests of what coord answers to bytes a generated client would not send.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use tokio_stream::StreamExt as _;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Sends raw bytes as the request message; only the status matters.
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

/// The status of one call with `body` as its only request message: its
/// final status, or OK once a first response message arrived (streams that
/// would run on are dropped then). Blocking calls end at a 2 s deadline.
pub async fn call(channel: tonic::transport::Channel, path: &str, body: Vec<u8>) -> Status {
    call_with(channel, path, body, &[]).await
}

/// [`call`] with request metadata (credentials, namespace).
pub async fn call_with(
    channel: tonic::transport::Channel,
    path: &str,
    body: Vec<u8>,
    metadata: &[(&'static str, &str)],
) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    let mut request = tonic::Request::new(tokio_stream::iter([body]));
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request.set_timeout(Duration::from_secs(2));
    match grpc.streaming(request, path, RawCodec).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no answer in 5 s") {
                Some(Ok(())) | None => Status::ok(""),
                Some(Err(status)) => status,
            }
        }
    }
}
