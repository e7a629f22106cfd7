//! The message format on Redis. `ps_publish.lua` publishes
//! `<offset>:<epoch>:<time_ms>:<body>` and stores the body in history; the
//! body (headers and payload) is encoded here, once per publish, and
//! decoded once per Redis message however many subscribers receive it.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;

use crate::{
    error::{Error, Result},
    redis::keys::name_of,
};

/// Headers and payload as stored and published.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Body {
    #[prost(map = "string, string", tag = "1")]
    pub headers: HashMap<String, String>,
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

impl Body {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Body> {
        <Body as prost::Message>::decode(bytes).map_err(|e| Error::Internal(format!("undecodable message body: {e}")))
    }
}

/// One message as subscribers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The user's channel name.
    pub channel: String,
    /// The user's pattern, for pattern subscriptions.
    pub pattern: Option<String>,
    /// 0 and "" on ephemeral channels.
    pub offset: u64,
    pub epoch: String,
    pub published_at_ms: i64,
    pub headers: HashMap<String, String>,
    pub payload: Bytes,
    /// Bytes it holds in a subscriber's queue.
    pub size: usize,
}

impl Delivery {
    pub fn new(channel: String, pattern: Option<String>, offset: u64, epoch: String, time: i64, body: Body) -> Self {
        let size = body.payload.len() + body.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + 64;
        Delivery {
            channel,
            pattern,
            offset,
            epoch,
            published_at_ms: time,
            headers: body.headers,
            payload: body.payload,
            size,
        }
    }
}

/// Decodes a frame received on Redis channel `redis_channel` (through
/// `redis_pattern`, if any).
pub fn decode(redis_channel: &str, redis_pattern: Option<&str>, frame: &[u8]) -> Result<Delivery> {
    let bad = || Error::Internal("malformed pub/sub frame".into());
    let channel = name_of(redis_channel).ok_or_else(bad)?;
    let pattern = match redis_pattern {
        Some(p) => Some(name_of(p).ok_or_else(bad)?),
        None => None,
    };
    let mut fields = frame.splitn(4, |b| *b == b':');
    let mut text = || fields.next().and_then(|f| std::str::from_utf8(f).ok()).ok_or_else(bad);
    let offset: u64 = text()?.parse().map_err(|_| bad())?;
    let epoch = text()?.to_owned();
    let time: i64 = text()?.parse().map_err(|_| bad())?;
    let body = fields.next().ok_or_else(bad)?;
    Ok(Delivery::new(channel, pattern, offset, epoch, time, Body::decode(body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_with_colons_in_the_body() {
        let body = Body { headers: HashMap::from([("k".into(), "v:1".into())]), payload: Bytes::from_static(b"a:b") };
        let mut frame = b"7:e1:1795000000000:".to_vec();
        frame.extend(body.encode());
        let d = decode("coord:ns:ps:{orders%3Aeu}", None, &frame).unwrap();
        assert_eq!((d.channel.as_str(), d.offset, d.epoch.as_str()), ("orders:eu", 7, "e1"));
        assert_eq!((d.published_at_ms, &d.payload[..]), (1_795_000_000_000, &b"a:b"[..]));
        assert_eq!(d.headers["k"], "v:1");
        let p = decode("coord:ns:ps:{a}", Some("coord:ns:ps:{a*}"), &frame).unwrap();
        assert_eq!(p.pattern.as_deref(), Some("a*"));
        assert!(decode("coord:ns:ps:{a}", None, b"x:y").is_err());
    }
}
