//! A Rust client for coord's locks: [`LockClient::lock`] returns a
//! [`LockGuard`] that keeps the lock's lease alive in the background,
//! carries the fencing token, tells when the lock is lost, and releases it
//! when dropped.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use coord::client::{LockClient, LockOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = LockClient::connect("http://127.0.0.1:50051").await?.with_namespace("billing")?;
//! let options = LockOptions { ttl: Duration::from_secs(10), wait: Duration::from_secs(5), ..Default::default() };
//! let guard = client.lock("nightly-report", options).await?;
//! // Pass the token to the resource you protect, so that it can refuse a
//! // stale holder's writes.
//! let token = guard.fencing_token();
//! tokio::select! {
//!     lost = guard.lost() => eprintln!("lock lost ({lost}): stop working"),
//!     _ = do_the_work(token) => {}
//! }
//! guard.release().await?;
//! # Ok(())
//! # }
//! # async fn do_the_work(_token: u64) {}
//! ```
//!
//! A lock is a lease, not mutual exclusion: a holder that stalls past its
//! TTL loses the lock and may learn of it late. Check [`LockGuard::is_lost`]
//! or race [`LockGuard::lost`] against your work, and fence writes with the
//! token.

mod keepalive;

use std::{fmt, time::Duration};

use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{
    backoff::Backoff,
    context::NAMESPACE_HEADER,
    pb::{
        AcquireRequest, AcquireStatus, CampaignStatus, ElectionServiceCampaignRequest, ElectionServiceProclaimRequest,
        ElectionServiceResignRequest, Leadership, LockLostReason, LockMode, ReleaseRequest, ReleaseStatus,
        SemaphoreAcquireStatus, SemaphoreReleaseStatus, SemaphoreServiceAcquireRequest, SemaphoreServiceReleaseRequest,
        election_service_client, lock_service_client, semaphore_service_client,
    },
};

/// What a guard holds, which decides how it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A plain lock.
    Lock,
    /// A read/write lock hold in this mode.
    ReadWrite(LockMode),
    /// A semaphore grant: its permit id.
    Permits(u64),
    /// A leadership: its term.
    Leadership(u64),
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Someone else held the lock for the whole wait.
    #[error("lock {name:?} not acquired: held by {holder_owner:?} for {holder_ttl:?} more")]
    NotAcquired {
        name: String,
        /// The holder's owner label.
        holder_owner: String,
        /// The holder's remaining TTL when the wait ran out.
        holder_ttl: Duration,
    },
    /// coord answered with an error (or could not be reached for a call).
    #[error("coord answered {:?}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// [`LockClient::connect`] could not connect.
    #[error("cannot connect to coord: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// An argument was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A client of coord's `LockService`. Cheap to clone: clones share the
/// channel.
#[derive(Debug, Clone)]
pub struct LockClient {
    inner: lock_service_client::LockServiceClient<Channel>,
    semaphores: semaphore_service_client::SemaphoreServiceClient<Channel>,
    elections: election_service_client::ElectionServiceClient<Channel>,
    namespace: Option<AsciiMetadataValue>,
    authorization: Option<AsciiMetadataValue>,
}

impl LockClient {
    /// A client on an existing channel (set TLS, timeouts and such on the
    /// channel).
    pub fn new(channel: Channel) -> Self {
        LockClient {
            inner: lock_service_client::LockServiceClient::new(channel.clone()),
            semaphores: semaphore_service_client::SemaphoreServiceClient::new(channel.clone()),
            elections: election_service_client::ElectionServiceClient::new(channel),
            namespace: None,
            authorization: None,
        }
    }

    /// Connects to `endpoint`, e.g. `"http://127.0.0.1:50051"`.
    pub async fn connect<D>(endpoint: D) -> Result<Self, ClientError>
    where
        D: TryInto<Endpoint>,
        D::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let endpoint = Endpoint::new(endpoint)?;
        Ok(LockClient::new(endpoint.connect().await?))
    }

    /// Sends every call in namespace `ns` (the `coord-namespace` header);
    /// without it coord uses `default`. coord validates the name; here it
    /// only has to be printable ASCII.
    pub fn with_namespace(mut self, ns: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidArgument(format!("namespace {ns:?}: must be printable ASCII"));
        if ns.is_empty() || !ns.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        self.namespace = Some(AsciiMetadataValue::try_from(ns).map_err(|_| invalid())?);
        Ok(self)
    }

    /// Sends `token` (an API key or a JWT) as `authorization: Bearer` on
    /// every call, for a coord with auth enabled.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidArgument("token: must be printable ASCII".into()))?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// The generated client, for calls this module does not wrap. It does
    /// not add the namespace or token: use [`LockClient::request`].
    pub fn raw(&self) -> lock_service_client::LockServiceClient<Channel> {
        self.inner.clone()
    }

    /// A request carrying this client's namespace and token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(ns) = &self.namespace {
            request.metadata_mut().insert(NAMESPACE_HEADER, ns.clone());
        }
        if let Some(token) = &self.authorization {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }

    /// Acquires lock `name` under a private lease of `options.ttl`,
    /// waiting up to `options.wait`, and returns a guard that keeps it.
    ///
    /// Not getting the lock in time is [`ClientError::NotAcquired`]. A call
    /// that fails with `UNAVAILABLE` or `DEADLINE_EXCEEDED` is retried up to
    /// `options.retries` times with the same request id, so a grant whose
    /// answer was lost is returned by the retry rather than granted twice.
    pub async fn lock(&self, name: &str, options: LockOptions) -> Result<LockGuard, ClientError> {
        let ttl_ms = positive_ttl(options.ttl)?;
        let request_id = options.request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let started = Instant::now();
        let mut attempt = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let (reply, sent, waited) = loop {
            // A retry waits only for what is left of the wait.
            let wait = options.wait.saturating_sub(started.elapsed());
            let mut request = self.request(AcquireRequest {
                name: name.to_owned(),
                ttl_ms,
                wait_ms: i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                owner: options.owner.clone(),
                request_id: request_id.clone(),
                ..Default::default()
            });
            request.set_timeout(options.timeout.saturating_add(wait));
            let sent = Instant::now();
            match self.inner.clone().acquire(request).await {
                Ok(reply) => break (reply.into_inner(), sent, !wait.is_zero()),
                Err(status) if attempt < options.retries && retryable(&status) => {
                    tracing::debug!(lock = name, error = %status.message(), "acquire failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(status) => return Err(status.into()),
            }
        };
        if reply.status() != AcquireStatus::Acquired {
            return Err(ClientError::NotAcquired {
                name: name.to_owned(),
                holder_owner: reply.holder_owner,
                holder_ttl: millis(reply.ttl_ms),
            });
        }
        Ok(self.guard(name, Hold::Lock, reply.lease_id, reply.fencing_token, reply.ttl_ms, sent, waited, &options))
    }

    /// A read (`LockMode::Shared`) or write (`LockMode::Exclusive`) hold
    /// of read/write lock `name` under a private lease, kept like [`lock`]'s
    /// (Self::lock). Read/write locks are not re-entrant: a second hold by
    /// the same guard's lease cannot happen, each call makes a new lease.
    /// Not retried (read/write Acquire takes no request id).
    pub async fn rw_lock(&self, name: &str, mode: LockMode, options: LockOptions) -> Result<LockGuard, ClientError> {
        let ttl_ms = positive_ttl(options.ttl)?;
        let mut request = self.request(AcquireRequest {
            name: name.to_owned(),
            ttl_ms,
            wait_ms: i64::try_from(options.wait.as_millis()).unwrap_or(i64::MAX),
            owner: options.owner.clone(),
            mode: mode as i32,
            ..Default::default()
        });
        request.set_timeout(options.timeout.saturating_add(options.wait));
        let sent = Instant::now();
        let reply = self.inner.clone().acquire(request).await?.into_inner();
        if reply.status() != AcquireStatus::Acquired {
            return Err(ClientError::NotAcquired {
                name: name.to_owned(),
                holder_owner: String::new(),
                holder_ttl: Duration::ZERO,
            });
        }
        let hold = Hold::ReadWrite(mode);
        Ok(self.guard(
            name,
            hold,
            reply.lease_id,
            reply.fencing_token,
            reply.ttl_ms,
            sent,
            !options.wait.is_zero(),
            &options,
        ))
    }

    /// `permits` permits of semaphore `name` (created with `size` permits
    /// on first use) under a private lease, kept like [`lock`](Self::lock);
    /// the guard's fencing token is the permit id. Not retried.
    pub async fn permits(
        &self,
        name: &str,
        permits: u32,
        size: u32,
        options: LockOptions,
    ) -> Result<LockGuard, ClientError> {
        let ttl_ms = positive_ttl(options.ttl)?;
        let mut request = self.request(SemaphoreServiceAcquireRequest {
            name: name.to_owned(),
            permits,
            size,
            ttl_ms,
            wait_ms: i64::try_from(options.wait.as_millis()).unwrap_or(i64::MAX),
            owner: options.owner.clone(),
            ..Default::default()
        });
        request.set_timeout(options.timeout.saturating_add(options.wait));
        let sent = Instant::now();
        let reply = self.semaphores.clone().acquire(request).await?.into_inner();
        if reply.status() != SemaphoreAcquireStatus::Acquired {
            return Err(ClientError::NotAcquired {
                name: name.to_owned(),
                holder_owner: String::new(),
                holder_ttl: Duration::ZERO,
            });
        }
        let hold = Hold::Permits(reply.permit_id);
        Ok(self.guard(
            name,
            hold,
            reply.lease_id,
            reply.permit_id,
            reply.ttl_ms,
            sent,
            !options.wait.is_zero(),
            &options,
        ))
    }

    /// Campaigns in election `name` with `value` under a private lease,
    /// kept like [`lock`](Self::lock), until this candidate leads: the
    /// guard's fencing token is the term, and [`LockGuard::lost`] resolves
    /// when the leadership is lost. With `options.wait` zero it campaigns
    /// until elected (call after call, keeping its place in the queue as
    /// long as each call lasts); else not leading within the wait is
    /// [`ClientError::NotAcquired`]. Dropping the guard resigns.
    pub async fn campaign(&self, name: &str, value: &[u8], options: LockOptions) -> Result<LockGuard, ClientError> {
        let ttl_ms = positive_ttl(options.ttl)?;
        let forever = options.wait.is_zero();
        loop {
            let mut request = self.request(ElectionServiceCampaignRequest {
                election: name.to_owned(),
                ttl_ms,
                value: value.to_vec(),
                // 0: as long as the server allows (its max wait).
                wait_ms: i64::try_from(options.wait.as_millis()).unwrap_or(i64::MAX),
                owner: options.owner.clone(),
                ..Default::default()
            });
            if !forever {
                request.set_timeout(options.timeout.saturating_add(options.wait));
            }
            let sent = Instant::now();
            let reply = self.elections.clone().campaign(request).await?.into_inner();
            match (reply.status(), reply.leadership) {
                (CampaignStatus::Elected, Some(l)) => {
                    let hold = Hold::Leadership(l.term);
                    return Ok(self.guard(name, hold, l.lease_id, l.term, reply.ttl_ms, sent, true, &options));
                }
                _ if forever => continue,
                _ => {
                    return Err(ClientError::NotAcquired {
                        name: name.to_owned(),
                        holder_owner: String::new(),
                        holder_ttl: Duration::ZERO,
                    });
                }
            }
        }
    }

    /// The guard of a grant, with its keepalive task started.
    #[allow(clippy::too_many_arguments)]
    fn guard(
        &self,
        name: &str,
        hold: Hold,
        lease_id: String,
        fencing_token: u64,
        ttl_ms: i64,
        sent: Instant,
        waited: bool,
        options: &LockOptions,
    ) -> LockGuard {
        let received = Instant::now();
        let ttl = millis(ttl_ms);
        // The lock holds for at least its TTL from the grant. The grant came
        // after the request was sent; when coord had to wait for the lock,
        // it answered right after granting, so the answer's arrival is the
        // estimate. The first renewal, sent at once, replaces it.
        let granted_at = if waited { received } else { sent };
        let (state_tx, state) = watch::channel(State::Held);
        let (stop, stop_rx) = oneshot::channel();
        let keeper = keepalive::Keeper {
            client: self.clone(),
            name: name.to_owned(),
            hold,
            lease_id: lease_id.clone(),
            fencing_token,
            ttl,
            confirmed_until: granted_at + ttl,
            timeout: options.timeout,
            trouble: None,
        };
        tokio::spawn(keeper.run(state_tx, stop_rx));
        LockGuard {
            client: self.clone(),
            name: name.to_owned(),
            hold,
            lease_id,
            fencing_token,
            ttl,
            timeout: options.timeout,
            state,
            stop: Some(stop),
        }
    }

    /// One Release call of what `hold` says.
    async fn release_call(
        &self,
        name: &str,
        hold: Hold,
        lease_id: &str,
        timeout: Duration,
    ) -> Result<ReleaseStatus, Status> {
        if let Hold::Leadership(term) = hold {
            let leadership = Leadership { election: name.to_owned(), lease_id: lease_id.to_owned(), term };
            let mut request = self.request(ElectionServiceResignRequest { leadership: Some(leadership) });
            request.set_timeout(timeout);
            return Ok(match self.elections.clone().resign(request).await?.into_inner().resigned {
                true => ReleaseStatus::Released,
                false => ReleaseStatus::NotHeld,
            });
        }
        if let Hold::Permits(permit_id) = hold {
            let mut request = self.request(SemaphoreServiceReleaseRequest {
                name: name.to_owned(),
                permit_id,
                lease_id: lease_id.to_owned(),
            });
            request.set_timeout(timeout);
            return Ok(match self.semaphores.clone().release(request).await?.into_inner().status() {
                SemaphoreReleaseStatus::Released => ReleaseStatus::Released,
                SemaphoreReleaseStatus::HeldByOther => ReleaseStatus::HeldByOther,
                _ => ReleaseStatus::NotHeld,
            });
        }
        let mode = match hold {
            Hold::ReadWrite(mode) => mode as i32,
            _ => 0,
        };
        let mut request = self.request(ReleaseRequest { name: name.to_owned(), lease_id: lease_id.to_owned(), mode });
        request.set_timeout(timeout);
        Ok(self.inner.clone().release(request).await?.into_inner().status())
    }
}

/// Worth retrying with the same request id: the call may not have reached
/// coord, or its answer may have been lost.
fn retryable(status: &Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
}

fn positive_ttl(ttl: Duration) -> Result<i64, ClientError> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ttl_ms <= 0 {
        return Err(ClientError::InvalidArgument(format!("ttl {ttl:?}: must be at least 1 ms")));
    }
    Ok(ttl_ms)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// How to acquire a lock. Build with struct update syntax:
/// `LockOptions { wait: Duration::from_secs(5), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// The lease TTL, clamped by coord to its bounds (default 1 s … 1 h);
    /// renewed every third of it. Default 10 s.
    pub ttl: Duration,
    /// How long to wait for the lock; zero (the default) tries once.
    pub wait: Duration,
    /// Free text shown in Describe, e.g. `"billing-7f9c"`. Default empty.
    pub owner: String,
    /// Identifies this logical request so that retries are safe (see
    /// `AcquireRequest.request_id`); a fresh UUID when `None`.
    pub request_id: Option<String>,
    /// Deadline of each call, on top of `wait` for Acquire. Default 10 s.
    pub timeout: Duration,
    /// Retries of an Acquire that failed `UNAVAILABLE` or
    /// `DEADLINE_EXCEEDED`. Default 2.
    pub retries: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(10),
            wait: Duration::ZERO,
            owner: String::new(),
            request_id: None,
            timeout: Duration::from_secs(10),
            retries: 2,
        }
    }
}

/// How a lock was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Why: pushed by coord (`FORCE_RELEASED`, `LEASE_REVOKED`, …) or
    /// concluded here, `BACKEND_UNAVAILABLE` when coord could not confirm a
    /// renewal for a whole TTL, `EXPIRED` when the lease ran out.
    pub reason: LockLostReason,
    /// The fencing token of the lost grant.
    pub fencing_token: u64,
    /// Details for people (may be empty).
    pub detail: String,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.as_str_name().trim_start_matches("LOCK_LOST_REASON_"))?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// What the keepalive task reports to the guard.
#[derive(Debug, Clone)]
enum State {
    Held,
    Lost(Lost),
    /// The guard stopped the task (released or dropped).
    Stopped,
}

/// What the guard asks of the keepalive task when it goes.
#[derive(Debug)]
enum Stop {
    /// Dropped: release the lock on the way out.
    Release,
    /// Released explicitly: the guard does it.
    Quiet,
}

/// A held lock, kept alive on a KeepAlive stream by a background task
/// until the guard is released or dropped.
///
/// Dropping the guard stops renewing and releases the lock in the
/// background (best effort: without a running tokio runtime the lease
/// simply runs out its TTL). [`LockGuard::release`] does it now and
/// reports the outcome.
#[derive(Debug)]
pub struct LockGuard {
    client: LockClient,
    name: String,
    hold: Hold,
    lease_id: String,
    fencing_token: u64,
    ttl: Duration,
    timeout: Duration,
    state: watch::Receiver<State>,
    stop: Option<oneshot::Sender<Stop>>,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it holds: a lock, a read/write hold, or semaphore permits.
    pub fn hold(&self) -> Hold {
        self.hold
    }

    /// The private lease holding the lock.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The grant's fencing token: strictly increasing per lock name across
    /// grants. Pass it to the resource you protect.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The TTL coord granted (after clamping).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// True once the lock is known to be lost.
    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), State::Lost(_))
    }

    /// Resolves when the lock is lost (at once if it already was); never
    /// while it is held. Can be called any number of times; the future does
    /// not borrow the guard.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        let mut state = self.state.clone();
        let fencing_token = self.fencing_token;
        async move {
            let lost = match state.wait_for(|s| !matches!(s, State::Held)).await {
                Ok(s) => match &*s {
                    State::Lost(lost) => Some(lost.clone()),
                    // Released or dropped: not lost.
                    State::Held | State::Stopped => None,
                },
                // The task ended while the lock was held (its runtime shut
                // down): nothing renews it any more.
                Err(_) => Some(Lost {
                    reason: LockLostReason::Unspecified,
                    fencing_token,
                    detail: "the keepalive task ended".to_owned(),
                }),
            };
            match lost {
                Some(lost) => lost,
                None => std::future::pending().await,
            }
        }
    }

    /// A leader sets its value (see `ElectionService.Proclaim`); refused
    /// (`FAILED_PRECONDITION`) once the leadership is lost, and
    /// `INVALID_ARGUMENT` for a guard that holds no leadership.
    pub async fn proclaim(&self, value: &[u8]) -> Result<(), ClientError> {
        let Hold::Leadership(term) = self.hold else {
            return Err(ClientError::InvalidArgument("only a leadership (campaign) can proclaim".to_owned()));
        };
        let leadership = Leadership { election: self.name.clone(), lease_id: self.lease_id.clone(), term };
        let mut request =
            self.client.request(ElectionServiceProclaimRequest { leadership: Some(leadership), value: value.to_vec() });
        request.set_timeout(self.timeout);
        self.client.elections.clone().proclaim(request).await?;
        Ok(())
    }

    /// Stops renewing and releases the lock. After a loss this answers
    /// `NOT_HELD` (or `HELD_BY_OTHER`), which is harmless.
    pub async fn release(mut self) -> Result<ReleaseStatus, ClientError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Quiet);
        }
        Ok(self.client.release_call(&self.name, self.hold, &self.lease_id, self.timeout).await?)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        // The keepalive task releases the lock once it stops renewing, so a
        // late renewal cannot race the release.
        if stop.send(Stop::Release).is_ok() {
            return;
        }
        // The task is gone (its runtime shut down): release from here if
        // this thread runs a tokio runtime; else the lease runs out its TTL.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (client, name, hold, lease, timeout) =
                (self.client.clone(), self.name.clone(), self.hold, self.lease_id.clone(), self.timeout);
            handle.spawn(async move {
                let _ = client.release_call(&name, hold, &lease, timeout).await;
            });
        }
    }
}
