//! The hub: this instance's Redis pub/sub connection, shared by every
//! subscriber (and by coord's internal event channels).
//!
//! One task owns the connection. It applies joins and leaves in order,
//! reference-counting subscriptions per Redis channel and pattern, and
//! routes each message to the bounded queue of every subscriber of its
//! channel or pattern. Routing never waits: a subscriber whose queue is full
//! (messages or bytes) is cut off and removed, so a slow subscriber can
//! never slow the others or the reader.
//!
//! Two upstreams:
//! - **Classic** (a single node, or a cluster with `redis.sharded_pubsub`
//!   off): one SUBSCRIBE / PSUBSCRIBE connection. When it drops, the task
//!   reconnects with backoff (to the next seed), subscribes everything
//!   again and tells every subscriber (`Input::Restored`): messages may
//!   have been missed meanwhile.
//! - **Sharded** (a cluster): SSUBSCRIBE over a RESP3 cluster connection,
//!   which keeps one connection per shard, so each channel is served by the
//!   shard that owns its slot. When a node's connection drops or the server
//!   drops a channel (its slot moved), the affected slots are subscribed
//!   again on their current owner, retried while their shard has no live
//!   master, and their subscribers are told `Restored` once the new
//!   subscription is confirmed. A failover on one shard leaves the others'
//!   messages flowing. Patterns are refused: sharded pub/sub has none.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt as _, stream};
use redis::{PushInfo, PushKind, Value, cluster_async::ClusterConnection};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::frame::{self, Delivery};
use crate::{
    backoff::Backoff,
    error::{Error, Result},
    redis::{
        EventChannel,
        connect::ShardedPubSub,
        pubsub::Handler,
        slots::{self, SLOTS},
    },
};

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
pub enum Input {
    Message(Arc<Delivery>),
    /// The Redis subscription dropped and is back: messages published in
    /// between may have been missed.
    Restored,
}

/// A subscriber's end of the hub: its bounded queue and cut-off signal.
pub struct Subscriber {
    tx: mpsc::Sender<Input>,
    /// Bytes of payload queued and not yet taken.
    pub queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Cancelled when the subscriber was cut off for falling behind.
    pub cut: CancellationToken,
}

impl Subscriber {
    /// A subscriber and the receiving end of its queue.
    pub fn new(max_messages: usize, max_bytes: usize) -> (Arc<Subscriber>, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(max_messages.max(1));
        let sub = Subscriber { tx, queued_bytes: AtomicUsize::new(0), max_bytes, cut: CancellationToken::new() };
        (Arc::new(sub), rx)
    }

    /// Queues without waiting; false when the subscriber must be cut off.
    fn offer(&self, input: Input) -> bool {
        let size = match &input {
            Input::Message(d) => d.size,
            _ => 0,
        };
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                false
            }
            // The stream is gone; its leave is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }
}

/// Who receives what, keyed by Redis channel and pattern.
#[derive(Default)]
struct Routing {
    channels: HashMap<String, HashMap<u64, Arc<Subscriber>>>,
    patterns: HashMap<String, HashMap<u64, Arc<Subscriber>>>,
    /// Each subscriber's channels and patterns, for leaving.
    members: HashMap<u64, (Vec<String>, Vec<String>)>,
}

impl Routing {
    /// Removes a subscriber; returns the channels and patterns nobody
    /// subscribes to any more.
    fn remove(&mut self, id: u64) -> (Vec<String>, Vec<String>) {
        let Some((channels, patterns)) = self.members.remove(&id) else { return Default::default() };
        let drop_from = |map: &mut HashMap<String, HashMap<u64, Arc<Subscriber>>>, names: Vec<String>| {
            let mut emptied = Vec::new();
            for name in names {
                if let Some(subs) = map.get_mut(&name) {
                    subs.remove(&id);
                    if subs.is_empty() {
                        map.remove(&name);
                        emptied.push(name);
                    }
                }
            }
            emptied
        };
        (drop_from(&mut self.channels, channels), drop_from(&mut self.patterns, patterns))
    }

    fn everyone(&self) -> HashMap<u64, Arc<Subscriber>> {
        let mut all = HashMap::new();
        for subs in self.channels.values().chain(self.patterns.values()) {
            for (id, sub) in subs {
                all.insert(*id, sub.clone());
            }
        }
        all
    }
}

enum Command {
    Join {
        id: u64,
        channels: Vec<String>,
        patterns: Vec<String>,
        sub: Arc<Subscriber>,
        reply: oneshot::Sender<Result<()>>,
    },
    Leave {
        id: u64,
    },
}

/// How the hub reaches Redis.
pub enum Upstream {
    /// One classic SUBSCRIBE connection to any of these nodes, tried in
    /// turn (a cluster's seeds: PUBLISH reaches every node).
    Classic(Vec<redis::Client>),
    /// SSUBSCRIBE on each channel's shard.
    Sharded(Arc<ShardedPubSub>),
}

/// The handle services use.
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    connected: Arc<AtomicBool>,
    sharded: bool,
}

impl Hub {
    /// Starts the hub's task until `shutdown`. `internal` are coord's own
    /// channels (e.g. lock events), subscribed for good. `connected` is
    /// true while every subscription is up.
    pub fn start(
        upstream: Upstream,
        internal: Vec<(EventChannel, Arc<dyn Handler>)>,
        connected: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        let (commands, rx) = mpsc::unbounded_channel();
        let sharded = matches!(upstream, Upstream::Sharded(_));
        let hub = Arc::new(Hub { commands, next_id: AtomicU64::new(1), connected: connected.clone(), sharded });
        let shared = Arc::new(Shared { internal, routing: RwLock::default() });
        let task = Task { upstream, next: 0, shared, connected, commands: rx, leave: hub.commands.clone() };
        tokio::spawn(task.run(shutdown));
        hub
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Subscribes `sub` to Redis `channels` and `patterns`; returns its id
    /// once Redis has confirmed every new subscription, so anything
    /// published from then on reaches it.
    pub async fn join(&self, channels: Vec<String>, patterns: Vec<String>, sub: Arc<Subscriber>) -> Result<u64> {
        if self.sharded && !patterns.is_empty() {
            return Err(Error::FailedPrecondition(
                "pattern subscriptions need classic pub/sub: this Redis Cluster uses sharded pub/sub, which has no \
                 patterns (set redis.sharded_pubsub: false to publish classically, at the cost of every message \
                 crossing every node)"
                    .into(),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Join { id, channels, patterns, sub, reply }).map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)??;
        Ok(id)
    }

    /// Unsubscribes; channels nobody else wants are unsubscribed in Redis.
    pub fn leave(&self, id: u64) {
        let _ = self.commands.send(Command::Leave { id });
    }
}

/// A live upstream connection, for subscribing and unsubscribing.
enum Link {
    Classic(redis::aio::PubSubSink),
    Sharded(ClusterConnection),
}

/// Slot subscriptions in flight at once on a cluster.
const SLOT_CONCURRENCY: usize = 64;

/// Restore rounds in a row that the cluster connection fails on reachable
/// shards before it is replaced by a fresh one.
const STALLED_ROUNDS: u32 = 3;

impl Link {
    async fn subscribe(&mut self, channels: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Link::Classic(sink) => sink.subscribe(channels).await,
            Link::Sharded(conn) => {
                let groups = by_slot(channels).into_values().map(|group| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(group).await }
                });
                futures_util::future::try_join_all(groups).await.map(drop)
            }
        }
    }

    /// Best effort on a cluster: a channel left subscribed on a dead node
    /// goes with the node, and strays are dropped by routing.
    async fn unsubscribe(&mut self, channels: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Link::Classic(sink) => sink.unsubscribe(channels).await,
            Link::Sharded(conn) => {
                for group in by_slot(channels).into_values() {
                    if let Err(e) = conn.sunsubscribe(group).await {
                        tracing::debug!(error = %e, "sunsubscribe failed");
                    }
                }
                Ok(())
            }
        }
    }

    async fn psubscribe(&mut self, patterns: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Link::Classic(sink) => sink.psubscribe(patterns).await,
            Link::Sharded(_) => Err((redis::ErrorKind::Client, "no patterns with sharded pub/sub").into()),
        }
    }

    async fn punsubscribe(&mut self, patterns: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Link::Classic(sink) => sink.punsubscribe(patterns).await,
            Link::Sharded(_) => Ok(()),
        }
    }
}

/// Channels grouped by slot: one SSUBSCRIBE may name one slot's only.
fn by_slot(channels: impl IntoIterator<Item = String>) -> BTreeMap<u16, Vec<String>> {
    let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for channel in channels {
        groups.entry(slots::slot(&channel)).or_default().push(channel);
    }
    groups
}

/// What the task and (sharded) the connection's push handler share.
struct Shared {
    internal: Vec<(EventChannel, Arc<dyn Handler>)>,
    routing: RwLock<Routing>,
}

impl Shared {
    /// Hands a message to its internal handler or its subscribers' queues
    /// without waiting; returns the subscribers to cut off (queue full).
    fn deliver(&self, channel: &str, pattern: Option<&str>, payload: &[u8]) -> Vec<u64> {
        if pattern.is_none()
            && let Some((_, handler)) = self.internal.iter().find(|(c, _)| c.matches(channel))
        {
            handler.on_message(payload);
            return Vec::new();
        }
        let delivery = match frame::decode(channel, pattern, payload) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::debug!(%channel, error = %e, "ignoring a message that is not a coord frame");
                return Vec::new();
            }
        };
        let mut cut = Vec::new();
        let routing = self.routing.read().unwrap_or_else(|e| e.into_inner());
        let subs = match pattern {
            Some(p) => routing.patterns.get(p),
            None => routing.channels.get(channel),
        };
        for (id, sub) in subs.into_iter().flatten() {
            if !sub.offer(Input::Message(delivery.clone())) {
                sub.cut.cancel();
                metrics::counter!("coord_pubsub_drops_total", "reason" => "slow_subscriber").increment(1);
                cut.push(*id);
            }
        }
        cut
    }
}

struct Task {
    upstream: Upstream,
    /// Classic: index of the client to connect with next.
    next: usize,
    shared: Arc<Shared>,
    connected: Arc<AtomicBool>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For the sharded push handler to have cut-off subscribers removed.
    leave: mpsc::UnboundedSender<Command>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut first = true;
        loop {
            let done = match &self.upstream {
                Upstream::Classic(clients) => {
                    let client = clients.get(self.next % clients.len().max(1)).cloned();
                    let connected = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        result = tokio::time::timeout(Duration::from_secs(2), self.connect_classic(client)) => result,
                    };
                    self.next += 1;
                    match connected {
                        Ok(Ok((sink, stream))) => {
                            backoff.reset();
                            self.connected.store(true, Ordering::Relaxed);
                            for (_, handler) in &self.shared.internal {
                                handler.on_connect();
                            }
                            if !first {
                                self.broadcast(Input::Restored);
                            }
                            first = false;
                            let done = self.serve_classic(Link::Classic(sink), stream, &shutdown).await;
                            if !done {
                                tracing::warn!("pub/sub connection lost; reconnecting");
                            }
                            Some(done)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "pub/sub connect failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!("pub/sub connect timed out");
                            None
                        }
                    }
                }
                Upstream::Sharded(how) => {
                    // Messages are delivered right in the connection's push
                    // handler (one task hop fewer per message); the rest
                    // (server unsubscribes, disconnections) comes here.
                    let (control, pushes) = mpsc::unbounded_channel();
                    let (shared, leave) = (self.shared.clone(), self.leave.clone());
                    let handler = move |push: PushInfo| {
                        if push.kind == PushKind::SMessage {
                            if let [channel, payload, ..] = push.data.as_slice()
                                && let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload))
                            {
                                let channel = String::from_utf8_lossy(channel);
                                for id in shared.deliver(&channel, None, payload) {
                                    let _ = leave.send(Command::Leave { id });
                                }
                            }
                            return Ok(());
                        }
                        control.send(push)
                    };
                    let connect = async {
                        let client = how.client(handler)?;
                        client.get_async_connection().await
                    };
                    let connected = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        result = tokio::time::timeout(Duration::from_secs(2), connect) => result,
                    };
                    match connected {
                        Ok(Ok(conn)) => {
                            backoff.reset();
                            let done = self.serve_sharded(conn, pushes, !first, &shutdown).await;
                            first = false;
                            if !done {
                                tracing::warn!("sharded pub/sub connection lost; reconnecting");
                            }
                            Some(done)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "sharded pub/sub connect failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!("sharded pub/sub connect timed out");
                            None
                        }
                    }
                }
            };
            if done == Some(true) {
                return;
            }
            self.connected.store(false, Ordering::Relaxed);
            // Disconnected: answer commands while waiting to retry.
            let retry = tokio::time::sleep(backoff.next_delay());
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut retry => break,
                    command = self.commands.recv() => match command {
                        None => return,
                        Some(Command::Join { reply, .. }) => {
                            let _ = reply.send(Err(Error::Unavailable("the pub/sub connection to Redis is down".into())));
                        }
                        Some(Command::Leave { id }) => {
                            self.write().remove(id);
                        }
                    },
                }
            }
        }
    }

    async fn connect_classic(
        &self,
        client: Option<redis::Client>,
    ) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let client = client.ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no Redis node")))?;
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        let (channels, patterns) = {
            let routing = self.shared.routing.read().unwrap_or_else(|e| e.into_inner());
            (routing.channels.keys().cloned().collect::<Vec<_>>(), routing.patterns.keys().cloned().collect::<Vec<_>>())
        };
        let internal: Vec<String> = self.shared.internal.iter().flat_map(|(c, _)| c.all()).collect();
        if !internal.is_empty() {
            sink.subscribe(internal).await?;
        }
        if !channels.is_empty() {
            sink.subscribe(channels).await?;
        }
        if !patterns.is_empty() {
            sink.psubscribe(patterns).await?;
        }
        Ok((sink, stream))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routing> {
        self.shared.routing.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one classic connection; true on shutdown, false when it
    /// dropped.
    async fn serve_classic(
        &mut self,
        mut link: Link,
        mut stream: redis::aio::PubSubStream,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                message = stream.next() => match message {
                    Some(message) => {
                        let pattern: Option<String> =
                            message.from_pattern().then(|| message.get_pattern().ok()).flatten();
                        self.route(message.get_channel_name(), pattern.as_deref(), message.get_payload_bytes(), &mut link)
                            .await;
                    }
                    None => return false,
                },
                command = self.commands.recv() => match command {
                    None => return true,
                    Some(command) => {
                        if let Err(e) = self.apply(command, &mut link).await {
                            tracing::warn!(error = %e, "pub/sub subscribe failed");
                            return false;
                        }
                    }
                },
            }
        }
    }

    /// Serves a sharded cluster connection; true on shutdown, false when
    /// it ended. `tell`: the subscriptions are being restored after a
    /// drop, so their subscribers are told.
    async fn serve_sharded(
        &mut self,
        conn: ClusterConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        tell: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        // Slots whose channels must be subscribed (again) on their current
        // owner; true: tell their subscribers once that is confirmed.
        let mut pending: BTreeMap<u16, bool> = self.wanted_slots().into_iter().map(|s| (s, tell)).collect();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut retry_at = Instant::now();
        let mut link = Link::Sharded(conn.clone());
        // Rounds in a row in which this connection failed a shard whose
        // master answers directly.
        let mut stalled = 0;
        loop {
            self.connected.store(pending.is_empty(), Ordering::Relaxed);
            let due = !pending.is_empty();
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                push = pushes.recv() => match push {
                    None => return false,
                    Some(push) => match push.kind {
                        PushKind::SUnsubscribe => {
                            // Unasked (a leave removes its channels first):
                            // the server dropped it, as it does when the
                            // channel's slot moves to another shard.
                            if let Some(channel) = push.data.first().and_then(text)
                                && self.wants(&channel)
                            {
                                tracing::info!(%channel, "shard channel dropped by the server; subscribing on its new owner");
                                pending.insert(slots::slot(&channel), true);
                                retry_at = Instant::now();
                            }
                        }
                        // Some node's connection dropped, and with it the
                        // subscriptions it carried. Which node is not said,
                        // and the cluster connection's own recovery can
                        // stall on the dead node, so start afresh: a new
                        // connection subscribes every slot again, live
                        // shards' at once.
                        PushKind::Disconnection => return false,
                        _ => {}
                    },
                },
                command = self.commands.recv() => match command {
                    None => return true,
                    Some(command) => {
                        // A failed join is answered as such and leaves the
                        // other shards' subscriptions alone.
                        if let Err(e) = self.apply(command, &mut link).await {
                            tracing::debug!(error = %e, "sharded subscribe failed");
                        }
                    }
                },
                _ = tokio::time::sleep_until(retry_at), if due => {
                    let (began, before) = (Instant::now(), pending.len());
                    stalled = if self.restore(&conn, &mut pending).await { stalled + 1 } else { 0 };
                    tracing::info!(
                        subscribed = before - pending.len(),
                        waiting = pending.len(),
                        took_ms = began.elapsed().as_millis() as u64,
                        "sharded pub/sub: slots subscribed on their shards"
                    );
                    // The cluster connection's recovery can wedge on a
                    // killed node for good (seen after a master's SIGKILL:
                    // every command timed out while the cluster had long
                    // failed over). A fresh connection reads the topology
                    // from the seeds again.
                    if stalled >= STALLED_ROUNDS {
                        tracing::warn!(
                            rounds = stalled,
                            "sharded pub/sub: the cluster connection keeps failing shards that answer directly; \
                             starting afresh"
                        );
                        return false;
                    }
                    retry_at = Instant::now() + if pending.is_empty() {
                        backoff.reset();
                        Duration::ZERO
                    } else {
                        backoff.next_delay()
                    };
                }
            }
        }
    }

    /// Subscribes `pending` slots again on their shards, skipping shards
    /// without a master that is online and answers a direct PING (a dead
    /// shard costs one CLUSTER SHARDS per round, not a timeout per slot),
    /// and tells whoever must be told. Returns true when the cluster
    /// connection failed a shard whose master answered directly: the
    /// connection, not the cluster, is what is wrong.
    async fn restore(&mut self, conn: &ClusterConnection, pending: &mut BTreeMap<u16, bool>) -> bool {
        // The cluster's view over direct connections: a cluster connection
        // stuck on a dead node must not also hide the cluster from us.
        let Upstream::Sharded(how) = &self.upstream else { return false };
        let shards = match how.dialer.shards().await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::debug!(error = %e, "CLUSTER SHARDS failed");
                return false;
            }
        };
        let mut groups: BTreeMap<u16, Vec<String>> = self
            .shared
            .internal
            .iter()
            .flat_map(|(c, _)| c.all())
            .filter(|c| pending.contains_key(&slots::slot(c)))
            .fold(BTreeMap::new(), |mut groups, c| {
                groups.entry(slots::slot(&c)).or_default().push(c);
                groups
            });
        {
            let routing = self.shared.routing.read().unwrap_or_else(|e| e.into_inner());
            for channel in routing.channels.keys() {
                let slot = slots::slot(channel);
                if pending.contains_key(&slot) {
                    groups.entry(slot).or_default().push(channel.clone());
                }
            }
        }
        // Slots nobody wants any more need nothing.
        pending.retain(|slot, _| groups.contains_key(slot));
        let rounds = shards.iter().filter(|shard| shard.has_reachable_master()).map(|shard| {
            let work: Vec<(u16, Vec<String>)> = groups
                .iter()
                .filter(|(slot, _)| shard.owns(**slot))
                .map(|(slot, channels)| (*slot, channels.clone()))
                .collect();
            let conn = conn.clone();
            async move {
                let (mut done, mut failed) = (Vec::new(), false);
                let mut results = stream::iter(work)
                    .map(|(slot, channels)| {
                        let mut conn = conn.clone();
                        async move { (slot, conn.ssubscribe(channels).await) }
                    })
                    .buffer_unordered(SLOT_CONCURRENCY);
                while let Some((slot, result)) = results.next().await {
                    match result {
                        Ok(()) => done.push(slot),
                        // Stop at the first failure: the shard is not
                        // ready; the next round tries again.
                        Err(e) => {
                            tracing::debug!(slot, error = %e, "resubscribing a shard's slots failed");
                            failed = true;
                            break;
                        }
                    }
                }
                (done, failed)
            }
        });
        let results = futures_util::future::join_all(rounds).await;
        let failed = results.iter().any(|(_, failed)| *failed);
        let done: Vec<u16> = results.into_iter().flat_map(|(done, _)| done).collect();
        let mut told = BTreeSet::new();
        for slot in &done {
            if pending.remove(slot) == Some(true) {
                told.insert(*slot);
            }
        }
        if !done.is_empty() {
            // Lock waiters re-check whatever they wait for: an event may
            // have been lost while a node was away.
            for (_, handler) in &self.shared.internal {
                handler.on_connect();
            }
        }
        if !told.is_empty() {
            let routing = self.shared.routing.read().unwrap_or_else(|e| e.into_inner());
            for (channel, subs) in &routing.channels {
                if told.contains(&slots::slot(channel)) {
                    for sub in subs.values() {
                        if !sub.offer(Input::Restored) {
                            sub.cut.cancel();
                        }
                    }
                }
            }
        }
        failed
    }

    /// Slots of every channel coord subscribes to.
    fn wanted_slots(&self) -> BTreeSet<u16> {
        let mut slots: BTreeSet<u16> = BTreeSet::new();
        for (channel, _) in &self.shared.internal {
            match channel {
                EventChannel::PerSlot(_) => slots.extend(0..SLOTS),
                EventChannel::One(name) => {
                    slots.insert(slots::slot(name));
                }
            }
        }
        let routing = self.shared.routing.read().unwrap_or_else(|e| e.into_inner());
        slots.extend(routing.channels.keys().map(|c| slots::slot(c)));
        slots
    }

    fn wants(&self, channel: &str) -> bool {
        self.shared.internal.iter().any(|(c, _)| c.matches(channel))
            || self.shared.routing.read().unwrap_or_else(|e| e.into_inner()).channels.contains_key(channel)
    }

    async fn apply(&mut self, command: Command, link: &mut Link) -> redis::RedisResult<()> {
        match command {
            Command::Join { id, channels, patterns, sub, reply } => {
                let (mut new_channels, mut new_patterns) = (Vec::new(), Vec::new());
                {
                    let mut routing = self.write();
                    for c in &channels {
                        let subs = routing.channels.entry(c.clone()).or_default();
                        if subs.is_empty() {
                            new_channels.push(c.clone());
                        }
                        subs.insert(id, sub.clone());
                    }
                    for p in &patterns {
                        let subs = routing.patterns.entry(p.clone()).or_default();
                        if subs.is_empty() {
                            new_patterns.push(p.clone());
                        }
                        subs.insert(id, sub.clone());
                    }
                    routing.members.insert(id, (channels, patterns));
                }
                let mut result = Ok(());
                if !new_channels.is_empty() {
                    result = link.subscribe(new_channels).await;
                }
                if result.is_ok() && !new_patterns.is_empty() {
                    result = link.psubscribe(new_patterns).await;
                }
                match result {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                    Err(e) => {
                        let (channels, _) = self.write().remove(id);
                        if matches!(link, Link::Sharded(_)) && !channels.is_empty() {
                            // Undo the slots that did subscribe.
                            let _ = link.unsubscribe(channels).await;
                        }
                        let _ = reply.send(Err(Error::Unavailable(format!("subscribe failed: {e}"))));
                        Err(e)
                    }
                }
            }
            Command::Leave { id } => self.unsubscribe(id, link).await,
        }
    }

    async fn unsubscribe(&mut self, id: u64, link: &mut Link) -> redis::RedisResult<()> {
        let (channels, patterns) = self.write().remove(id);
        if !channels.is_empty() {
            link.unsubscribe(channels).await?;
        }
        if !patterns.is_empty() {
            link.punsubscribe(patterns).await?;
        }
        Ok(())
    }

    async fn route(&mut self, channel: &str, pattern: Option<&str>, payload: &[u8], link: &mut Link) {
        for id in self.shared.deliver(channel, pattern, payload) {
            if let Err(e) = self.unsubscribe(id, link).await {
                tracing::debug!(error = %e, "unsubscribe after a cut-off failed");
            }
        }
    }

    fn broadcast(&self, input: Input) {
        let everyone = self.shared.routing.read().unwrap_or_else(|e| e.into_inner()).everyone();
        for sub in everyone.values() {
            if !sub.offer(input.clone()) {
                sub.cut.cancel();
            }
        }
    }
}

fn text(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
