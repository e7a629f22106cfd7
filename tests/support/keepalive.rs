//! A client-side KeepAlive stream for tests: open it, renew leases on it,
//! wait for LockLost.

use std::time::{Duration, Instant};

use coord::pb::{
    KeepAliveRequest, KeepAliveResponse, LockLost, keep_alive_response::Event, lock_service_client::LockServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Streaming, transport::Channel};

/// A client-side keepalive: the sender takes lease ids, the stream gives
/// the server's events.
pub async fn open_stream(
    client: &mut LockServiceClient<Channel>,
) -> (mpsc::Sender<KeepAliveRequest>, Streaming<KeepAliveResponse>) {
    let (tx, rx) = mpsc::channel(16);
    let stream = client.keep_alive(ReceiverStream::new(rx)).await.expect("keepalive").into_inner();
    (tx, stream)
}

/// Renews `leases` every `every` until `until`, collecting events.
pub async fn keep_renewing(
    tx: &mpsc::Sender<KeepAliveRequest>,
    stream: &mut Streaming<KeepAliveResponse>,
    leases: &[String],
    every: Duration,
    until: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    while Instant::now() < until {
        for lease in leases {
            tx.send(KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
        }
        let tick = tokio::time::sleep(every);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = &mut tick => break,
                msg = stream.next() => events.push(msg.expect("stream open").expect("no error").event.expect("event")),
            }
        }
    }
    events
}

/// Waits for the next LockLost on the stream, renewing nothing.
pub async fn next_lost(stream: &mut Streaming<KeepAliveResponse>, within: Duration) -> LockLost {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.next()).await.expect("no LockLost in time");
        if let Some(Ok(KeepAliveResponse { event: Some(Event::LockLost(lost)) })) = msg {
            return lost;
        }
    }
}
