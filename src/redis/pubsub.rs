//! The event reader of one Redis node: a dedicated connection subscribed to
//! coord's event channel, fanning messages out in-process. Used for each
//! Redlock node; the main Redis's one connection is the pub/sub hub
//! (`crate::pubsub::hub`), which carries the same events through the same
//! [`Handler`].
//!
//! Pooled connections cannot carry subscriptions, and one subscription per
//! waiter does not scale (Redisson's most-reported error), so every
//! in-process consumer shares this one. When the connection drops, it is
//! re-established with backoff and `on_connect` runs again: consumers
//! re-check whatever they were waiting for, since messages published while
//! disconnected are lost (pub/sub is at most once).

use crate::backoff::Backoff;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Receives messages of the subscribed channel.
pub trait Handler: Send + Sync + 'static {
    fn on_message(&self, payload: &[u8]);
    /// After every (re)subscription; messages may have been missed.
    fn on_connect(&self);
}

/// Runs the reader until `shutdown`. `connected` is true while the
/// subscription is up (health reports it).
pub async fn run(
    client: redis::Client,
    channel: String,
    handler: Arc<dyn Handler>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(Duration::from_secs(2), attempt) => result,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                tracing::debug!(%channel, "subscribed");
                connected.store(true, Ordering::Relaxed);
                handler.on_connect();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => handler.on_message(message.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                connected.store(false, Ordering::Relaxed);
                tracing::warn!(%channel, "pub/sub connection lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "pub/sub connect failed"),
            Err(_) => tracing::debug!("pub/sub connect timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
