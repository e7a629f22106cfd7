//! PubSubService: publish through one script per message, subscribe
//! through this instance's one Redis subscription ([`hub`]), and recover
//! recoverable channels from their history without gaps or duplicates.
//!
//! A subscription is a state machine pulled by the gRPC stream: it takes
//! messages from its hub queue, tracks each recoverable channel's position
//! (epoch, last offset) and fills any gap from history. Live messages are
//! queued from the moment the hub confirms the subscription, before any
//! history is read, and are merged by offset: older-or-equal offsets are
//! dropped, a jump past the next offset triggers a history read.

pub mod frame;
pub mod grpc;
pub mod hub;

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::Value;
use tokio::{sync::mpsc, time::Instant};

use self::{
    frame::{Body, Delivery},
    hub::{Hub, Input, Subscriber},
};
use crate::{
    backoff::Backoff,
    config::PubSubConfig,
    error::{Error, Result},
    redis::{KeyBuilder, Name, Namespace, Redis, ResourceKey, scripts},
};

/// Channel names: 1–256 bytes.
pub const MAX_CHANNEL_BYTES: usize = 256;
/// Channels and patterns per subscription.
pub const MAX_SUBSCRIPTIONS: usize = 128;
/// Headers per message.
pub const MAX_HEADERS: usize = 64;
/// Messages per batch.
pub const MAX_BATCH: usize = 1000;
/// Idempotency keys: 0–128 bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ephemeral,
    Recoverable,
}

/// A publish.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub channel: String,
    pub payload: bytes::Bytes,
    pub headers: HashMap<String, String>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub mode: Mode,
    pub offset: u64,
    pub epoch: String,
    pub receivers: i64,
    pub replayed: bool,
}

/// A recoverable channel's place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What a subscription asks for.
#[derive(Debug, Clone, Default)]
pub struct SubscribeTo {
    /// Channel names with an optional position to resume after.
    pub channels: Vec<(String, Option<Position>)>,
    pub patterns: Vec<String>,
}

/// Events of a subscription, in the order the stream sends them.
#[derive(Debug, Clone)]
pub enum Event {
    Subscribed { channels: Vec<(String, Mode, Option<Position>)>, patterns: Vec<String> },
    Message(Arc<Delivery>),
    Heartbeat,
    Recovery { channel: String, recovered: bool, reason: String, position: Position },
}

/// The pub/sub domain.
pub struct PubSub {
    redis: Redis,
    keys: KeyBuilder,
    hub: Arc<Hub>,
    config: PubSubConfig,
}

impl PubSub {
    pub fn new(redis: Redis, keys: KeyBuilder, hub: Arc<Hub>, config: PubSubConfig) -> Self {
        PubSub { redis, keys, hub, config }
    }

    /// A channel's mode, by the configured prefixes.
    pub fn mode(&self, channel: &str) -> Mode {
        if self.config.recoverable_prefixes.iter().any(|p| channel.starts_with(p.as_str())) {
            Mode::Recoverable
        } else {
            Mode::Ephemeral
        }
    }

    fn channel(field: &str, value: &str) -> Result<Name> {
        if value.len() > MAX_CHANNEL_BYTES {
            return Err(Error::invalid(
                field,
                format!("must be at most {MAX_CHANNEL_BYTES} bytes, got {}", value.len()),
            ));
        }
        Name::parse(field, value)
    }

    fn base(&self, ns: &Namespace, channel: &Name) -> ResourceKey {
        self.keys.resource(ns, "ps", channel)
    }

    // === Publish ===

    /// Publishes one message; `field` prefixes error fields (batches).
    pub async fn publish(&self, ns: &Namespace, message: &Publish, field: &str) -> Result<Published> {
        let at = |name: &str| if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
        let channel = Self::channel(&at("channel"), &message.channel)?;
        if message.payload.len() > self.config.max_payload {
            return Err(Error::invalid(
                at("payload"),
                format!(
                    "must be at most {} bytes (pubsub.max_payload), got {}",
                    self.config.max_payload,
                    message.payload.len()
                ),
            ));
        }
        if message.headers.len() > MAX_HEADERS {
            return Err(Error::invalid(
                at("headers"),
                format!("at most {MAX_HEADERS} entries, got {}", message.headers.len()),
            ));
        }
        if message.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(Error::invalid(
                at("idempotency_key"),
                format!("must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}", message.idempotency_key.len()),
            ));
        }
        let mode = self.mode(channel.as_str());
        let base = self.base(ns, &channel);
        let body = Body { headers: message.headers.clone(), payload: message.payload.clone() }.encode();
        let keyed = !message.idempotency_key.is_empty() && mode == Mode::Recoverable;
        let epoch = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let result: Result<(u64, String, i64, i64, i64)> = self
            .redis
            .invoke(&scripts::PS_PUBLISH, |inv| {
                inv.key(base.sub("meta")).key(base.sub("hist")).key(base.child("idem", &message.idempotency_key));
                inv.arg(if mode == Mode::Recoverable { "recoverable" } else { "ephemeral" })
                    .arg(base.as_str())
                    .arg(body)
                    .arg(&epoch)
                    .arg(self.config.history_size)
                    .arg(self.config.history_ttl.as_millis() as u64)
                    .arg(if keyed { 1 } else { 0 })
                    .arg(self.config.idempotency_ttl.as_millis() as u64);
            })
            .await;
        let label = if mode == Mode::Recoverable { "recoverable" } else { "ephemeral" };
        let outcome = match &result {
            Ok((.., 1)) => "replayed",
            Ok(_) => "published",
            Err(_) => "error",
        };
        metrics::counter!("coord_pubsub_publishes_total", "mode" => label, "outcome" => outcome).increment(1);
        let (offset, epoch, receivers, _, replayed) = result?;
        Ok(Published { mode, offset, epoch, receivers, replayed: replayed == 1 })
    }

    /// Publishes in order; each entry has its own outcome.
    pub async fn publish_batch(&self, ns: &Namespace, messages: &[Publish]) -> Result<Vec<Result<Published>>> {
        if messages.is_empty() || messages.len() > MAX_BATCH {
            return Err(Error::invalid("messages", format!("give 1 to {MAX_BATCH} messages, got {}", messages.len())));
        }
        let mut results = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            results.push(self.publish(ns, m, &format!("messages[{i}]")).await);
        }
        Ok(results)
    }

    // === Subscribe ===

    /// Reads a recoverable channel's epoch, top offset and up to `limit`
    /// entries after `after`.
    async fn history(&self, meta: &str, hist: &str, after: u64, limit: u64) -> Result<(String, u64, Vec<Delivery>)> {
        // Nothing follows the largest offset: ask for the position only.
        let (from, limit) = match after.checked_add(1) {
            Some(from) => (from, limit),
            None => (after, 0),
        };
        let reply: Value = self
            .redis
            .invoke(&scripts::PS_HISTORY, |inv| {
                inv.key(meta).key(hist).arg(from).arg(limit);
            })
            .await?;
        let bad = || Error::Internal("unexpected ps_history reply".into());
        let Value::Array(mut items) = reply else { return Err(bad()) };
        if items.len() != 3 {
            return Err(bad());
        }
        let entries = items.pop().ok_or_else(bad)?;
        let top = match items.pop() {
            Some(Value::Int(n)) => n.max(0) as u64,
            _ => return Err(bad()),
        };
        let epoch = match items.pop() {
            Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let Value::Array(entries) = entries else { return Err(bad()) };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Value::Array(mut f) = e else { return Err(bad()) };
            let body = match f.pop() {
                Some(Value::BulkString(b)) => Body::decode(&b)?,
                _ => return Err(bad()),
            };
            let (Some(Value::Int(time)), Some(Value::Int(offset))) = (f.pop(), f.pop()) else { return Err(bad()) };
            out.push(Delivery::new(String::new(), None, offset.max(0) as u64, epoch.clone(), time, body));
        }
        Ok((epoch, top, out))
    }

    /// Starts a subscription: joins the hub (Redis confirms), then reads
    /// positions and recovers the channels that gave one.
    pub async fn subscribe(self: &Arc<Self>, ns: &Namespace, to: SubscribeTo) -> Result<Subscription> {
        let total = to.channels.len() + to.patterns.len();
        if total == 0 || total > MAX_SUBSCRIPTIONS {
            return Err(Error::invalid(
                "channels",
                format!("give 1 to {MAX_SUBSCRIPTIONS} channels and patterns together, got {total}"),
            ));
        }
        let mut channels = HashMap::new();
        let mut order = Vec::new();
        let mut resume = Vec::new();
        let mut redis_channels = Vec::new();
        for (i, (name, since)) in to.channels.iter().enumerate() {
            let channel = Self::channel(&format!("channels[{i}].channel"), name)?;
            if channels.contains_key(name) {
                return Err(Error::invalid(format!("channels[{i}].channel"), format!("{name:?} is listed twice")));
            }
            let mode = self.mode(name);
            if since.is_some() && mode == Mode::Ephemeral {
                return Err(Error::invalid(
                    format!("channels[{i}].since"),
                    format!("{name:?} is an ephemeral channel: it has no positions"),
                ));
            }
            let base = self.base(ns, &channel);
            redis_channels.push(base.as_str().to_owned());
            let state = ChannelState {
                mode,
                meta: base.sub("meta"),
                hist: base.sub("hist"),
                position: since.clone().unwrap_or_default(),
            };
            if since.is_some() {
                resume.push(name.clone());
            }
            channels.insert(name.clone(), state);
            order.push(name.clone());
        }
        let mut redis_patterns = Vec::new();
        for (i, p) in to.patterns.iter().enumerate() {
            Self::channel(&format!("patterns[{i}]"), p)?;
            redis_patterns.push(self.keys.name_pattern(ns, "ps", p));
        }

        let (sub, rx) = Subscriber::new(self.config.subscriber_buffer_messages, self.config.subscriber_buffer_bytes);
        let id = self.hub.join(redis_channels, redis_patterns, sub.clone()).await?;
        let mut subscription = Subscription {
            pubsub: self.clone(),
            id,
            sub,
            rx,
            channels,
            pending: VecDeque::new(),
            last_sent: Instant::now(),
            idle: Box::pin(tokio::time::sleep(self.config.heartbeat_interval)),
            done: false,
        };
        metrics::gauge!("coord_pubsub_subscribers").increment(1.0);

        // Channels that gave a position are recovered below; the other
        // recoverable ones continue from their top.
        let mut listed = Vec::with_capacity(order.len());
        for name in &order {
            let Some(state) = subscription.channels.get_mut(name) else { continue };
            let mut position = None;
            if state.mode == Mode::Recoverable && !resume.contains(name) {
                let (epoch, top, _) = self.history(&state.meta, &state.hist, 0, 0).await?;
                state.position = Position { offset: top, epoch };
                position = Some(state.position.clone());
            }
            listed.push((name.clone(), state.mode, position));
        }
        subscription.pending.push_back(Event::Subscribed { channels: listed, patterns: to.patterns.clone() });
        for name in &resume {
            subscription.recover(name, true).await?;
        }
        Ok(subscription)
    }
}

/// Where one subscribed channel stands.
#[derive(Debug)]
struct ChannelState {
    mode: Mode,
    meta: String,
    hist: String,
    /// The last offset delivered (or the subscription's start) and its epoch.
    position: Position,
}

/// One subscriber's stream.
pub struct Subscription {
    pubsub: Arc<PubSub>,
    id: u64,
    sub: Arc<Subscriber>,
    rx: mpsc::Receiver<Input>,
    channels: HashMap<String, ChannelState>,
    pending: VecDeque<Event>,
    last_sent: Instant,
    /// Fires at most once per heartbeat interval: re-armed when it fires,
    /// not on every message (timer churn per delivery costs at 10k streams).
    idle: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.pubsub.hub.leave(self.id);
        metrics::gauge!("coord_pubsub_subscribers").decrement(1.0);
    }
}

impl Subscription {
    /// The next event; None after the stream ended (an error is the last).
    pub async fn next(&mut self) -> Option<Result<Event>> {
        let heartbeat = self.pubsub.config.heartbeat_interval;
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.last_sent = Instant::now();
                if matches!(event, Event::Message(_)) {
                    metrics::counter!("coord_pubsub_deliveries_total").increment(1);
                }
                return Some(Ok(event));
            }
            let input = tokio::select! {
                biased;
                _ = self.sub.cut.cancelled() => {
                    self.done = true;
                    let c = &self.pubsub.config;
                    return Some(Err(Error::ResourceExhausted(format!(
                        "subscriber too slow: more than {} messages or {} bytes waiting; resubscribe from your last position",
                        c.subscriber_buffer_messages, c.subscriber_buffer_bytes
                    ))));
                }
                input = self.rx.recv() => input,
                _ = self.idle.as_mut() => {
                    let due = self.last_sent + heartbeat;
                    if Instant::now() < due {
                        self.idle.as_mut().reset(due);
                        continue;
                    }
                    self.last_sent = Instant::now();
                    self.idle.as_mut().reset(self.last_sent + heartbeat);
                    return Some(Ok(Event::Heartbeat));
                }
            };
            let result = match input {
                None => {
                    self.done = true;
                    return Some(Err(Error::ShuttingDown));
                }
                Some(Input::Message(d)) => {
                    self.sub.queued_bytes.fetch_sub(d.size, Ordering::Relaxed);
                    self.accept(d).await
                }
                Some(Input::Restored) => self.restored().await,
            };
            if let Err(e) = result {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// A live message: deliver, drop as already delivered, or fill the gap
    /// before it from history.
    async fn accept(&mut self, d: Arc<Delivery>) -> Result<()> {
        if d.pattern.is_some() {
            self.pending.push_back(Event::Message(d));
            return Ok(());
        }
        let Some(state) = self.channels.get_mut(&d.channel) else { return Ok(()) };
        if state.mode == Mode::Ephemeral || d.offset == 0 {
            self.pending.push_back(Event::Message(d));
            return Ok(());
        }
        let p = &mut state.position;
        let same_epoch = p.epoch == d.epoch || (p.epoch.is_empty() && p.offset == 0);
        if same_epoch && d.offset <= p.offset {
            return Ok(()); // delivered already (history, or before the start)
        }
        if same_epoch && d.offset == p.offset + 1 {
            *p = Position { offset: d.offset, epoch: d.epoch.clone() };
            self.pending.push_back(Event::Message(d));
            return Ok(());
        }
        // A gap, or another epoch: history decides.
        let channel = d.channel.clone();
        self.recover(&channel, false).await
    }

    /// After the Redis subscription came back.
    async fn restored(&mut self) -> Result<()> {
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            let Some(state) = self.channels.get(&name) else { continue };
            if state.mode == Mode::Recoverable {
                self.recover(&name, true).await?;
            } else {
                self.pending.push_back(Event::Recovery {
                    channel: name,
                    recovered: false,
                    reason: "ephemeral channel: messages published while coord's Redis subscription was down are lost"
                        .into(),
                    position: Position::default(),
                });
            }
        }
        Ok(())
    }

    /// Brings a recoverable channel up to date from history. `report`: send
    /// a Recovery event even when it succeeds.
    /// A history read that fails because Redis is unreachable is retried a
    /// few times: right after the subscription comes back (a Redis restart)
    /// a pooled connection may still be the broken one, and is replaced on
    /// that failure. Every read comes before any change, so a retry is safe.
    async fn recover(&mut self, name: &str, report: bool) -> Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        for _ in 0..4 {
            match self.recover_once(name, report).await {
                Err(e) if e.is_unavailable() => tokio::time::sleep(backoff.next_delay()).await,
                done => return done,
            }
        }
        self.recover_once(name, report).await
    }

    async fn recover_once(&mut self, name: &str, report: bool) -> Result<()> {
        let limit = self.pubsub.config.max_recovery;
        let Some(state) = self.channels.get(name) else { return Ok(()) };
        let (meta, hist, from) = (state.meta.clone(), state.hist.clone(), state.position.clone());
        let (epoch, top, mut entries) = self.pubsub.history(&meta, &hist, from.offset, limit).await?;
        // After an epoch change the new epoch is replayed from its start
        // when its history is all there, rather than skipped.
        let mut resume = Position { offset: top, epoch: epoch.clone() };
        let failure = if epoch.is_empty() && !from.epoch.is_empty() {
            Some(
                "epoch changed: the history was lost (it expired, or Redis lost its data) and nothing was published since",
            )
        } else if epoch.is_empty() {
            (from.offset > 0).then_some("the channel has no history (expired or never published)")
        } else if !from.epoch.is_empty() && from.epoch != epoch {
            let (_, _, from_start) = self.pubsub.history(&meta, &hist, 0, limit).await?;
            if top <= limit && from_start.first().map(|e| e.offset) == Some(1) {
                entries = from_start;
                resume = Position { offset: 0, epoch: epoch.clone() };
                Some("epoch changed: the history was lost and restarted; the new epoch follows from its start")
            } else {
                Some("epoch changed: the history was lost and restarted")
            }
        } else if from.epoch.is_empty() && from.offset > 0 {
            Some("a position needs its epoch")
        } else if from.offset > top {
            Some("position is in the future")
        } else if top - from.offset > limit {
            Some("too many missed messages (more than pubsub.max_recovery)")
        } else if top > from.offset && entries.first().map(|e| e.offset) != Some(from.offset + 1) {
            Some("history trimmed past the position")
        } else {
            None
        };
        let now = Position { offset: top, epoch: epoch.clone() };
        let outcome = if failure.is_some() { "failed" } else { "recovered" };
        metrics::counter!("coord_pubsub_recoveries_total", "outcome" => outcome).increment(1);
        if let Some(state) = self.channels.get_mut(name) {
            state.position = now.clone();
        }
        if failure.is_some() || report {
            self.pending.push_back(Event::Recovery {
                channel: name.to_owned(),
                recovered: failure.is_none(),
                reason: failure.unwrap_or_default().to_owned(),
                position: if failure.is_some() { resume.clone() } else { from.clone() },
            });
        }
        // Replayed: what followed the position, or the new epoch from its start.
        let after = if failure.is_none() { Some(from.offset) } else { (resume.offset == 0).then_some(0) };
        if let Some(after) = after {
            for mut e in entries.into_iter().filter(|e| e.offset > after && e.offset <= top) {
                e.channel = name.to_owned();
                self.pending.push_back(Event::Message(Arc::new(e)));
            }
        }
        Ok(())
    }
}
