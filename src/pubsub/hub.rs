//! The hub: this instance's one Redis pub/sub connection, shared by every
//! subscriber (and by coord's internal event channels).
//!
//! One task owns the connection. It applies joins and leaves in order,
//! reference-counting SUBSCRIBE / PSUBSCRIBE per Redis channel and pattern,
//! and routes each message to the bounded queue of every subscriber of its
//! channel or pattern. Routing never waits: a subscriber whose queue is full
//! (messages or bytes) is cut off and removed, so a slow subscriber can
//! never slow the others or the reader. When the connection drops, the task
//! reconnects with backoff, subscribes everything again and tells every
//! subscriber (`Input::Restored`): messages may have been missed meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::frame::{self, Delivery};
use crate::{
    backoff::Backoff,
    error::{Error, Result},
    redis::pubsub::Handler,
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

/// The handle services use.
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    connected: Arc<AtomicBool>,
}

impl Hub {
    /// Starts the hub's task until `shutdown`, connected to one of
    /// `clients` (a cluster's seeds: classic PUBLISH reaches every node, so
    /// any live one will do; after a failure the next is tried). `internal`
    /// are coord's own channels (e.g. lock events), subscribed for good.
    /// `connected` is true while the subscription is up.
    pub fn start(
        clients: Vec<redis::Client>,
        internal: Vec<(String, Arc<dyn Handler>)>,
        connected: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        let (commands, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub { commands, next_id: AtomicU64::new(1), connected: connected.clone() });
        let task = Task { clients, next: 0, internal, routing: RwLock::default(), connected, commands: rx };
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

struct Task {
    clients: Vec<redis::Client>,
    /// Index of the client to connect with next.
    next: usize,
    internal: Vec<(String, Arc<dyn Handler>)>,
    routing: RwLock<Routing>,
    connected: Arc<AtomicBool>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut first = true;
        loop {
            let client = self.clients.get(self.next % self.clients.len().max(1)).cloned();
            let connect = async {
                let client =
                    client.ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no Redis node")))?;
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                let (channels, patterns) = {
                    let routing = self.routing.read().unwrap_or_else(|e| e.into_inner());
                    (
                        routing.channels.keys().cloned().collect::<Vec<_>>(),
                        routing.patterns.keys().cloned().collect::<Vec<_>>(),
                    )
                };
                let internal: Vec<&String> = self.internal.iter().map(|(c, _)| c).collect();
                if !internal.is_empty() {
                    sink.subscribe(internal).await?;
                }
                if !channels.is_empty() {
                    sink.subscribe(channels).await?;
                }
                if !patterns.is_empty() {
                    sink.psubscribe(patterns).await?;
                }
                Ok::<_, redis::RedisError>((sink, stream))
            };
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = tokio::time::timeout(Duration::from_secs(2), connect) => result,
            };
            match connected {
                Ok(Ok((sink, stream))) => {
                    backoff.reset();
                    self.connected.store(true, Ordering::Relaxed);
                    for (_, handler) in &self.internal {
                        handler.on_connect();
                    }
                    if !first {
                        self.broadcast(Input::Restored);
                    }
                    first = false;
                    if self.serve(sink, stream, &shutdown).await {
                        return;
                    }
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!("pub/sub connection lost; reconnecting");
                    self.next += 1;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "pub/sub connect failed");
                    self.next += 1;
                }
                Err(_) => {
                    tracing::debug!("pub/sub connect timed out");
                    self.next += 1;
                }
            }
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

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routing> {
        self.routing.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one connection; true on shutdown, false when it dropped.
    async fn serve(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                message = stream.next() => match message {
                    Some(message) => self.route(&message, &mut sink).await,
                    None => return false,
                },
                command = self.commands.recv() => match command {
                    None => return true,
                    Some(command) => {
                        if let Err(e) = self.apply(command, &mut sink).await {
                            tracing::warn!(error = %e, "pub/sub subscribe failed");
                            return false;
                        }
                    }
                },
            }
        }
    }

    async fn apply(&mut self, command: Command, sink: &mut redis::aio::PubSubSink) -> redis::RedisResult<()> {
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
                    result = sink.subscribe(new_channels).await;
                }
                if result.is_ok() && !new_patterns.is_empty() {
                    result = sink.psubscribe(new_patterns).await;
                }
                match result {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                    Err(e) => {
                        self.write().remove(id);
                        let _ = reply.send(Err(Error::Unavailable(format!("subscribe failed: {e}"))));
                        Err(e)
                    }
                }
            }
            Command::Leave { id } => self.unsubscribe(id, sink).await,
        }
    }

    async fn unsubscribe(&mut self, id: u64, sink: &mut redis::aio::PubSubSink) -> redis::RedisResult<()> {
        let (channels, patterns) = self.write().remove(id);
        if !channels.is_empty() {
            sink.unsubscribe(channels).await?;
        }
        if !patterns.is_empty() {
            sink.punsubscribe(patterns).await?;
        }
        Ok(())
    }

    async fn route(&mut self, message: &redis::Msg, sink: &mut redis::aio::PubSubSink) {
        let channel = message.get_channel_name();
        let pattern: Option<String> = message.from_pattern().then(|| message.get_pattern().ok()).flatten();
        if pattern.is_none()
            && let Some((_, handler)) = self.internal.iter().find(|(c, _)| c == channel)
        {
            handler.on_message(message.get_payload_bytes());
            return;
        }
        let delivery = match frame::decode(channel, pattern.as_deref(), message.get_payload_bytes()) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::debug!(%channel, error = %e, "ignoring a message that is not a coord frame");
                return;
            }
        };
        let mut cut = Vec::new();
        {
            let routing = self.routing.read().unwrap_or_else(|e| e.into_inner());
            let subs = match &pattern {
                Some(p) => routing.patterns.get(p),
                None => routing.channels.get(channel),
            };
            for (id, sub) in subs.into_iter().flatten() {
                if !sub.offer(Input::Message(delivery.clone())) {
                    sub.cut.cancel();
                    cut.push(*id);
                }
            }
        }
        for id in cut {
            metrics::counter!("coord_pubsub_drops_total", "reason" => "slow_subscriber").increment(1);
            if let Err(e) = self.unsubscribe(id, sink).await {
                tracing::debug!(error = %e, "unsubscribe after a cut-off failed");
            }
        }
    }

    fn broadcast(&self, input: Input) {
        let everyone = self.routing.read().unwrap_or_else(|e| e.into_inner()).everyone();
        for sub in everyone.values() {
            if !sub.offer(input.clone()) {
                sub.cut.cancel();
            }
        }
    }
}
