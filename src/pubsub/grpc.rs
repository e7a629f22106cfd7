//! The gRPC adapter of PubSubService.

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::{Event, Mode, Position, PubSub, Publish, Published, SubscribeTo};
use crate::{
    context::RequestContext,
    pb::{self, pub_sub_service_server::PubSubService},
};

pub struct Service {
    pubsub: Arc<PubSub>,
}

impl Service {
    pub fn new(pubsub: Arc<PubSub>) -> Self {
        Service { pubsub }
    }
}

type Reply<T> = Result<Response<T>, Status>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PubSubService for Service {
    async fn publish(&self, request: Request<pb::PublishRequest>) -> Reply<pb::PublishResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let published = self.pubsub.publish(&ctx.namespace, &publish_from_pb(request.into_inner()), "").await?;
        Ok(Response::new(published_to_pb(published)))
    }

    async fn publish_batch(&self, request: Request<pb::PublishBatchRequest>) -> Reply<pb::PublishBatchResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let messages: Vec<Publish> = request.into_inner().messages.into_iter().map(publish_from_pb).collect();
        let results = self.pubsub.publish_batch(&ctx.namespace, &messages).await?;
        Ok(Response::new(pb::PublishBatchResponse {
            results: results
                .into_iter()
                .map(|r| match r {
                    Ok(p) => pb::PublishResult { response: Some(published_to_pb(p)), ..Default::default() },
                    Err(e) => {
                        let status = Status::from(e);
                        pb::PublishResult {
                            response: None,
                            error_code: status.code() as i32,
                            error_message: status.message().to_owned(),
                        }
                    }
                })
                .collect(),
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Reply<EventStream> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let to = SubscribeTo {
            channels: req
                .channels
                .into_iter()
                .map(|c| (c.channel, c.since.map(|p| Position { offset: p.offset, epoch: p.epoch })))
                .collect(),
            patterns: req.patterns,
        };
        let subscription = self.pubsub.subscribe(&ctx.namespace, to).await?;
        let stream = futures_util::stream::unfold(subscription, |mut s| async move {
            let item = s.next().await?;
            Some((item.map(event_to_pb).map_err(Status::from), s))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn publish_from_pb(m: pb::PublishRequest) -> Publish {
    Publish {
        channel: m.channel,
        payload: m.payload,
        headers: m.headers.into_iter().collect(),
        idempotency_key: m.idempotency_key,
    }
}

fn mode_to_pb(mode: Mode) -> pb::ChannelMode {
    match mode {
        Mode::Ephemeral => pb::ChannelMode::Ephemeral,
        Mode::Recoverable => pb::ChannelMode::Recoverable,
    }
}

fn published_to_pb(p: Published) -> pb::PublishResponse {
    pb::PublishResponse {
        mode: mode_to_pb(p.mode).into(),
        offset: p.offset,
        epoch: p.epoch,
        receivers: p.receivers,
        replayed: p.replayed,
    }
}

fn position_to_pb(p: Position) -> pb::StreamPosition {
    pb::StreamPosition { offset: p.offset, epoch: p.epoch }
}

fn event_to_pb(event: Event) -> pb::SubscribeResponse {
    use pb::subscribe_response::Event as E;
    let event = match event {
        Event::Subscribed { channels, patterns } => E::Subscribed(pb::Subscribed {
            channels: channels
                .into_iter()
                .map(|(channel, mode, position)| pb::subscribed::ChannelState {
                    channel,
                    mode: mode_to_pb(mode).into(),
                    position: position.map(position_to_pb),
                })
                .collect(),
            patterns,
        }),
        Event::Message(d) => E::Message(pb::Message {
            channel: d.channel.clone(),
            pattern: d.pattern.clone().unwrap_or_default(),
            payload: d.payload.clone(),
            headers: d.headers.clone().into_iter().collect(),
            offset: d.offset,
            epoch: d.epoch.clone(),
            published_at_ms: d.published_at_ms,
        }),
        Event::Heartbeat => E::Heartbeat(pb::Heartbeat {}),
        Event::Recovery { channel, recovered, reason, position } => {
            E::Recovery(pb::Recovery { channel, recovered, reason, position: Some(position_to_pb(position)) })
        }
    };
    pb::SubscribeResponse { event: Some(event) }
}
