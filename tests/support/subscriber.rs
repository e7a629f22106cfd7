//! PubSubService test helpers: a configuration with recoverable `r.`
//! channels, publishing, and a subscriber stream with timeouts and helpers
//! that skip heartbeats.

use std::time::Duration;

use coord::pb::{
    ChannelSubscription, Message, PublishRequest, PublishResponse, Recovery, StreamPosition, SubscribeRequest,
    Subscribed, pub_sub_service_client::PubSubServiceClient, subscribe_response::Event,
};
use tonic::{Status, Streaming, transport::Channel};

pub type Client = PubSubServiceClient<Channel>;

/// A test configuration in which channels starting with `r.` are recoverable.
pub fn config(url: &str) -> coord::config::Config {
    let mut config = super::config(url);
    config.pubsub.recoverable_prefixes = vec!["r.".into()];
    config
}

pub async fn publish(c: &mut Client, channel: &str, payload: &str) -> PublishResponse {
    let req =
        PublishRequest { channel: channel.into(), payload: payload.as_bytes().to_vec().into(), ..Default::default() };
    c.publish(req).await.unwrap_or_else(|e| panic!("publish to {channel}: {e}")).into_inner()
}

pub fn channel(name: &str, since: Option<(u64, &str)>) -> ChannelSubscription {
    ChannelSubscription {
        channel: name.into(),
        since: since.map(|(offset, epoch)| StreamPosition { offset, epoch: epoch.into() }),
    }
}

pub struct Sub {
    pub stream: Streaming<coord::pb::SubscribeResponse>,
    pub subscribed: Subscribed,
}

impl Sub {
    /// Subscribes and waits for the Subscribed event.
    pub async fn open(c: &mut Client, channels: Vec<ChannelSubscription>, patterns: Vec<&str>) -> Sub {
        let req = SubscribeRequest { channels, patterns: patterns.into_iter().map(str::to_owned).collect() };
        let mut stream = c.subscribe(req).await.expect("subscribe").into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("Subscribed within 10 s")
            .expect("stream ok")
            .expect("an event");
        let Some(Event::Subscribed(subscribed)) = first.event else { panic!("first event {first:?}") };
        Sub { stream, subscribed }
    }

    /// The next event other than a heartbeat; Err when the stream failed;
    /// panics after `within`.
    pub async fn event(&mut self, within: Duration) -> Result<Event, Status> {
        loop {
            let next = tokio::time::timeout(within, self.stream.message()).await.expect("an event in time")?;
            match next.and_then(|r| r.event) {
                Some(Event::Heartbeat(_)) => continue,
                Some(event) => return Ok(event),
                None => return Err(Status::unknown("stream ended")),
            }
        }
    }

    pub async fn message(&mut self) -> Message {
        match self.event(Duration::from_secs(10)).await {
            Ok(Event::Message(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub async fn recovery(&mut self) -> Recovery {
        match self.event(Duration::from_secs(10)).await {
            Ok(Event::Recovery(r)) => r,
            other => panic!("expected a recovery, got {other:?}"),
        }
    }
}
