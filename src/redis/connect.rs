//! Connections to Redis: a bb8 pool of multiplexed connections for one node,
//! a bb8 pool of cluster connections for Redis Cluster, and a set of
//! independent single-node pools (for Redlock).
//!
//! Three choices matter for correctness and speed:
//! - A checkout is returned to the pool at once and a clone of the
//!   connection used for the command: the connections multiplex, so the
//!   pool is a set of sockets to spread load over, not a lock per request.
//! - bb8's `test_on_check_out` is off: it sends a PING on every checkout
//!   (a third of the throughput in the reference measurements). Instead
//!   every connection tracks its own health: a command that fails with an
//!   I/O error or a timeout marks it (and its clones) broken, and bb8
//!   discards it at the next return (`has_broken`), so a restarted Redis is
//!   reconnected to instead of being failed against forever.
//! - Every wait is bounded: checkout by `connect_timeout` (and bb8 does not
//!   retry a refused connect), each command by `command_timeout` on the
//!   connection itself, so a dead or stopped Redis gives UNAVAILABLE quickly.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt as _;
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::scripts::NamedScript;
use crate::error::{Error, Result};

/// How to reach Redis, independent of topology.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// ACL user and password; override those in the URL when set.
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM files for `rediss://`: a private CA, and a client certificate
    /// and key for mutual TLS.
    pub tls_ca: Option<Vec<u8>>,
    pub tls_client: Option<(Vec<u8>, Vec<u8>)>,
    /// On a cluster: publish with SPUBLISH and subscribe per shard.
    pub sharded_pubsub: bool,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("username", &self.username)
            .field("sharded_pubsub", &self.sharded_pubsub)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Which topology a [`Redis`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
}

/// A pooled Redis client. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    /// Why the last connect failed: bb8 connects in the background and a
    /// checkout only learns that it timed out.
    last_connect_error: ConnectErrors,
    /// For the dedicated pub/sub connection: the node, or every seed of a
    /// cluster (PUBLISH reaches every node, so any live seed will do).
    pubsub_clients: Vec<Client>,
    /// Outer bound on one call (checkout + command), a safety net over the
    /// per-step timeouts.
    call_timeout: Duration,
    /// Direct connections to a cluster's nodes (None on a single node).
    dialer: Option<super::shards::Dialer>,
    /// Set on a cluster with sharded pub/sub: builds the hub's connection.
    sharded_pubsub: Option<Arc<ShardedPubSub>>,
}

/// How to open a cluster connection for sharded pub/sub: RESP3, so
/// SSUBSCRIBE works and messages arrive as pushes.
pub struct ShardedPubSub {
    seeds: Vec<redis::ConnectionInfo>,
    certs: Option<redis::TlsCertificates>,
    opts: ConnectOptions,
    /// The cluster's shards over direct connections, independent of the
    /// cluster connection (whose own view can be what is stuck).
    pub dialer: super::shards::Dialer,
}

impl ShardedPubSub {
    /// A client whose connections hand every push (messages, unsubscribes
    /// by the server, disconnections) to `pushes`.
    pub fn client(&self, pushes: impl redis::aio::AsyncPushSender) -> redis::RedisResult<ClusterClient> {
        let mut builder = ClusterClient::builder(self.seeds.clone())
            .connection_timeout(self.opts.connect_timeout)
            .response_timeout(self.opts.command_timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes);
        if let Some(certs) = &self.certs {
            builder = builder.certs(certs.clone());
        }
        builder.build()
    }
}

#[derive(Clone)]
enum Pool {
    Single(bb8::Pool<NodeManager>),
    Cluster(bb8::Pool<ClusterManager>),
}

impl Redis {
    /// A pool for one node. Connects lazily: an unreachable Redis is not a
    /// start-up error (health reports it instead).
    pub fn single(url: &str, opts: &ConnectOptions) -> Result<Self> {
        let info = connection_info(url, opts)?;
        let client = node_client(info, opts).map_err(|e| config_error("redis.url", e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_response_timeout(Some(opts.command_timeout));
        let errors = ConnectErrors::default();
        let pubsub_clients = vec![client.clone()];
        let pool = builder(opts, &errors).build_unchecked(NodeManager { client, config });
        Ok(Redis {
            pool: Pool::Single(pool),
            last_connect_error: errors,
            pubsub_clients,
            call_timeout: call_timeout(opts),
            dialer: None,
            sharded_pubsub: None,
        })
    }

    /// A pool of cluster connections; `seeds` are any of the cluster's nodes.
    pub fn cluster(seeds: &[String], opts: &ConnectOptions) -> Result<Self> {
        let infos = seeds.iter().map(|url| connection_info(url, opts)).collect::<Result<Vec<_>>>()?;
        if infos.is_empty() {
            return Err(Error::invalid("redis.cluster", "no seed nodes"));
        }
        let pubsub_clients = infos
            .iter()
            .map(|info| node_client(info.clone(), opts))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|e| config_error("redis.cluster", e))?;
        let mut builder_ = ClusterClient::builder(infos.clone())
            .connection_timeout(opts.connect_timeout)
            .response_timeout(opts.command_timeout);
        if let Some(certs) = tls_certificates(opts) {
            builder_ = builder_.certs(certs);
        }
        let client = builder_.build().map_err(|e| config_error("redis.cluster", e))?;
        let errors = ConnectErrors::default();
        let pool = builder(opts, &errors).build_unchecked(ClusterManager { client });
        let dialer = super::shards::Dialer {
            seeds: infos.clone(),
            certs: tls_certificates(opts),
            timeout: opts.connect_timeout + opts.command_timeout,
        };
        let sharded_pubsub = opts.sharded_pubsub.then(|| {
            Arc::new(ShardedPubSub {
                seeds: infos.clone(),
                certs: tls_certificates(opts),
                opts: opts.clone(),
                dialer: dialer.clone(),
            })
        });
        Ok(Redis {
            pool: Pool::Cluster(pool),
            last_connect_error: errors,
            pubsub_clients,
            call_timeout: call_timeout(opts),
            dialer: Some(dialer),
            sharded_pubsub,
        })
    }

    pub fn topology(&self) -> Topology {
        match self.pool {
            Pool::Single(_) => Topology::Single,
            Pool::Cluster(_) => Topology::Cluster,
        }
    }

    /// Whether scripts publish with SPUBLISH (a cluster with sharded pub/sub).
    pub fn sharded(&self) -> bool {
        self.sharded_pubsub.is_some()
    }

    /// How to connect the hub for sharded pub/sub (None: classic pub/sub).
    pub fn sharded_pubsub(&self) -> Option<&Arc<ShardedPubSub>> {
        self.sharded_pubsub.as_ref()
    }

    /// Runs `script` with the given KEYS and ARGV as EVALSHA (loading it on
    /// NOSCRIPT).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &NamedScript,
        prepare: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T> {
        let mut invocation = script.variant(self.sharded()).prepare_invoke();
        prepare(&mut invocation);
        let result = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(invocation.invoke_async(&mut conn).await?)
            })
            .await;
        if let Err(err) = &result {
            metrics::counter!("coord_redis_errors_total", "op" => script.name, "kind" => err_kind(err)).increment(1);
        }
        result
    }

    /// Runs `script`, then `WAIT replicas timeout` on the same connection in
    /// the same pipeline; returns the script's reply and how many replicas
    /// acknowledged the write. WAIT holds the connection's later requests
    /// until the replicas answer or the timeout passes.
    pub async fn invoke_and_wait<T: FromRedisValue>(
        &self,
        script: &NamedScript,
        prepare: impl FnOnce(&mut redis::ScriptInvocation<'_>),
        replicas: u32,
        timeout: Duration,
    ) -> Result<(T, i64)> {
        let mut invocation = script.variant(self.sharded()).prepare_invoke();
        prepare(&mut invocation);
        let result = self
            .bounded(async {
                let mut conn = self.conn().await?;
                let mut pipe = redis::pipe();
                pipe.invoke_script(&invocation).cmd("WAIT").arg(replicas).arg(timeout.as_millis() as u64);
                match pipe.query_async::<(T, i64)>(&mut conn).await {
                    Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        // Pipelines do not reload scripts by themselves.
                        script.variant(self.sharded()).load_async(&mut conn).await?;
                        Ok(pipe.query_async(&mut conn).await?)
                    }
                    other => Ok(other?),
                }
            })
            .await;
        if let Err(err) = &result {
            metrics::counter!("coord_redis_errors_total", "op" => script.name, "kind" => err_kind(err)).increment(1);
        }
        result
    }

    /// One SCAN step over every node holding data: on a cluster, the
    /// masters one after the other. Returns the keys and the cursor for the
    /// next step (None when done). The cursor is `<node index>:<cursor>`.
    pub async fn scan(&self, pattern: &str, cursor: Option<&str>, count: u32) -> Result<(Vec<String>, Option<String>)> {
        let (node, position) = match cursor {
            None => (0usize, 0u64),
            Some(text) => text
                .split_once(':')
                .and_then(|(n, c)| Some((n.parse().ok()?, c.parse().ok()?)))
                .ok_or_else(|| Error::invalid("page.cursor", "not a cursor returned by this service"))?,
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(position).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
        let (keys, next, nodes): (Vec<String>, u64, usize) = match &self.pool {
            Pool::Single(_) => {
                let (next, keys): (u64, Vec<String>) = self.query(&cmd).await?;
                (keys, next, 1)
            }
            Pool::Cluster(_) => {
                let masters = self.cluster_masters().await?;
                let Some((host, port)) = masters.get(node).cloned() else {
                    return Ok((Vec::new(), None));
                };
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
                );
                let value = self
                    .bounded(async {
                        let Conn::Cluster(mut conn) = self.conn().await? else {
                            return Err(Error::Internal("cluster pool without cluster connection".into()));
                        };
                        Ok(conn.inner.route_command(cmd, routing).await?)
                    })
                    .await?;
                let (next, keys): (u64, Vec<String>) =
                    redis::from_redis_value(value).map_err(|e| Error::Internal(e.to_string()))?;
                (keys, next, masters.len())
            }
        };
        let next = match (next, node + 1 < nodes) {
            (0, false) => None,
            (0, true) => Some(format!("{}:0", node + 1)),
            (c, _) => Some(format!("{node}:{c}")),
        };
        Ok((keys, next))
    }

    /// `(host, port)` of every healthy master, in a stable order.
    async fn cluster_masters(&self) -> Result<Vec<(String, u16)>> {
        let text: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let mut masters: Vec<(String, u16)> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = *fields.get(2)?;
                if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                    return None;
                }
                // ip:port@cport[,hostname]
                let addr = fields.get(1)?.split('@').next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect();
        masters.sort();
        Ok(masters)
    }

    /// A cluster's shards, every node probed; empty on a single node.
    pub async fn shards(&self) -> Result<Vec<super::shards::Shard>> {
        match &self.dialer {
            Some(dialer) => dialer.shards().await,
            None => Ok(Vec::new()),
        }
    }

    /// A client for a dedicated pub/sub connection (the first seed).
    pub fn pubsub_client(&self) -> &Client {
        &self.pubsub_clients[0]
    }

    /// Clients for a dedicated pub/sub connection, to try in turn.
    pub fn pubsub_clients(&self) -> &[Client] {
        &self.pubsub_clients
    }

    /// Runs one command (PING, INFO, SCRIPT LOAD…).
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let result = self
            .bounded(async {
                let mut conn = self.conn().await?;
                Ok(cmd.query_async(&mut conn).await?)
            })
            .await;
        if let Err(err) = &result {
            metrics::counter!("coord_redis_errors_total", "op" => "command", "kind" => err_kind(err)).increment(1);
        }
        result
    }

    /// Loads every registered script (on every master, in a cluster) so the
    /// first requests do not pay for NOSCRIPT round trips.
    pub async fn load_scripts(&self, scripts: &[&NamedScript]) -> Result<()> {
        for script in scripts {
            let sha: String = self
                .bounded(async {
                    let mut conn = self.conn().await?;
                    Ok(script.variant(self.sharded()).load_async(&mut conn).await?)
                })
                .await?;
            debug_assert_eq!(sha, script.variant(self.sharded()).get_hash());
        }
        Ok(())
    }

    /// Connections the pool holds, and how many of them are idle.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = match &self.pool {
            Pool::Single(p) => p.state(),
            Pool::Cluster(p) => p.state(),
        };
        (state.connections, state.idle_connections)
    }

    async fn conn(&self) -> Result<Conn> {
        // Armed before the checkout, so a connect failing meanwhile is seen.
        let failed = self.last_connect_error.failed.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        let get = async {
            Ok(match &self.pool {
                Pool::Single(p) => Conn::Single(checkout(p).await.map_err(|e| self.checkout_error(e))?),
                Pool::Cluster(p) => Conn::Cluster(checkout(p).await.map_err(|e| self.checkout_error(e))?),
            })
        };
        tokio::select! {
            biased;
            conn = get => conn,
            _ = failed => Err(Error::Unavailable(self.last_connect_error.get().unwrap_or_else(|| "connect failed".into()))),
        }
    }

    fn checkout_error(&self, err: bb8::RunError<RedisError>) -> Error {
        match err {
            bb8::RunError::User(e) => Error::Unavailable(e.to_string()),
            bb8::RunError::TimedOut => Error::Unavailable(match self.last_connect_error.get() {
                Some(cause) => format!("no connection: {cause}"),
                None => "timed out waiting for a connection".into(),
            }),
        }
    }

    async fn bounded<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!("no reply within {:?}", self.call_timeout))),
        }
    }
}

/// Independent Redis masters (no replication between them), for Redlock.
#[derive(Clone)]
pub struct RedisNodes {
    nodes: Vec<Redis>,
}

impl RedisNodes {
    pub fn connect(urls: &[String], opts: &ConnectOptions) -> Result<Self> {
        let nodes = urls.iter().map(|url| Redis::single(url, opts)).collect::<Result<_>>()?;
        Ok(RedisNodes { nodes })
    }

    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }
}

fn call_timeout(opts: &ConnectOptions) -> Duration {
    opts.connect_timeout + opts.command_timeout + Duration::from_millis(100)
}

fn builder<M: bb8::ManageConnection<Error = RedisError>>(
    opts: &ConnectOptions,
    errors: &ConnectErrors,
) -> bb8::Builder<M> {
    bb8::Pool::builder()
        .error_sink(Box::new(errors.clone()))
        .max_size(opts.pool_size.max(1))
        .connection_timeout(opts.connect_timeout.max(Duration::from_millis(1)))
        // A PING per checkout costs a third of the throughput; broken
        // connections are detected by `has_broken` instead.
        .test_on_check_out(false)
        // A refused connect fails the checkout at once rather than spinning
        // until the timeout: callers get UNAVAILABLE immediately.
        .retry_connection(false)
}

fn connection_info(url: &str, opts: &ConnectOptions) -> Result<redis::ConnectionInfo> {
    let info = url.into_connection_info().map_err(|e| config_error("redis.url", e))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &opts.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &opts.password {
        settings = settings.set_password(password);
    }
    Ok(info.set_redis_settings(settings))
}

fn node_client(info: redis::ConnectionInfo, opts: &ConnectOptions) -> redis::RedisResult<Client> {
    match tls_certificates(opts) {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    }
}

fn tls_certificates(opts: &ConnectOptions) -> Option<redis::TlsCertificates> {
    if opts.tls_ca.is_none() && opts.tls_client.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: opts
            .tls_client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
        root_cert: opts.tls_ca.clone(),
    })
}

fn config_error(field: &str, err: RedisError) -> Error {
    Error::invalid(field, err.to_string())
}

/// A clone of a healthy pooled connection. An entry found broken is dropped
/// (bb8 then discards it) and the next one tried, so after a Redis restart
/// each dead socket costs at most the one request that found it dead.
async fn checkout<M, C>(pool: &bb8::Pool<M>) -> Result<Tracked<C>, bb8::RunError<RedisError>>
where
    M: bb8::ManageConnection<Connection = Tracked<C>, Error = RedisError>,
    C: Clone,
{
    let attempts = pool.state().connections + 1;
    for _ in 0..attempts {
        let entry = pool.get().await?;
        if !entry.broken.load(Ordering::Relaxed) {
            return Ok(entry.clone());
        }
    }
    // Every entry was broken: the next get() connects afresh.
    Ok(pool.get().await?.clone())
}

/// Keeps the latest connect error for checkout errors, logs changes, and
/// wakes checkouts waiting for a connection: bb8 only hands connect errors
/// to this sink and lets waiters sit out the whole connect timeout, while a
/// refused connection should fail the call at once.
#[derive(Debug, Clone, Default)]
struct ConnectErrors {
    last: Arc<Mutex<Option<String>>>,
    failed: Arc<tokio::sync::Notify>,
}

impl ConnectErrors {
    fn get(&self) -> Option<String> {
        self.last.lock().ok().and_then(|last| last.clone())
    }
}

impl bb8::ErrorSink<RedisError> for ConnectErrors {
    fn sink(&self, error: RedisError) {
        let text = error.to_string();
        if let Ok(mut last) = self.last.lock() {
            if last.as_deref() != Some(text.as_str()) {
                tracing::warn!(error = %text, "redis connect failed");
            }
            *last = Some(text);
        }
        self.failed.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

fn err_kind(err: &Error) -> &'static str {
    if err.is_unavailable() { "unavailable" } else { "error" }
}

// === connection managers ===

/// A connection plus a flag, shared by all its clones, saying a command on
/// it failed in a way that means it must be replaced.
#[derive(Clone)]
pub struct Tracked<C> {
    inner: C,
    broken: Arc<AtomicBool>,
}

impl<C> Tracked<C> {
    fn new(inner: C) -> Self {
        Tracked { inner, broken: Arc::new(AtomicBool::new(false)) }
    }
}

/// Errors after which a connection must be replaced. A timed-out command
/// leaves a reply in flight or a dead socket; both are cured by a fresh
/// connection.
fn is_fatal(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

pub struct NodeManager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl bb8::ManageConnection for NodeManager {
    type Connection = Tracked<MultiplexedConnection>;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.client.get_multiplexed_async_connection_with_config(&self.config).await.map(Tracked::new)
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

pub struct ClusterManager {
    client: ClusterClient,
}

impl bb8::ManageConnection for ClusterManager {
    type Connection = Tracked<ClusterConnection>;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.client.get_async_connection().await.map(Tracked::new)
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// A clone of a pooled connection. Multiplexed and cluster connections
/// pipeline any number of concurrent requests, so the pool entry is
/// returned at once and the clone used: holding the checkout for the
/// command would serialise requests per socket (measured: half of
/// redis-benchmark's throughput with 4 sockets, and checkout timeouts under
/// load with 1).
enum Conn {
    Single(Tracked<MultiplexedConnection>),
    Cluster(Tracked<ClusterConnection>),
}

fn tracked<'a, C: ConnectionLike + Send, T: Send + 'a>(
    conn: &'a mut Tracked<C>,
    call: impl FnOnce(&'a mut C) -> RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    let broken = conn.broken.clone();
    let fut = call(&mut conn.inner);
    async move {
        let result = fut.await;
        if result.as_ref().is_err_and(is_fatal) {
            broken.store(true, Ordering::Relaxed);
        }
        result
    }
    .boxed()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => tracked(c, |c| c.req_packed_command(cmd)),
            Conn::Cluster(c) => tracked(c, |c| c.req_packed_command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => tracked(c, |c| c.req_packed_commands(pipeline, offset, count)),
            Conn::Cluster(c) => tracked(c, |c| c.req_packed_commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.inner.get_db(),
            Conn::Cluster(c) => c.inner.get_db(),
        }
    }
}
