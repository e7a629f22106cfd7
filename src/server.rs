//! Builds and runs the tonic server: services, health, reflection, metrics,
//! and graceful shutdown.
//!
//! Shutdown (SIGTERM from Kubernetes, or SIGINT): health goes NOT_SERVING,
//! tonic stops accepting and sends GOAWAY (new RPCs are refused), open
//! streams end with UNAVAILABLE (the RPC layer cuts them), and whatever is
//! still open when `server.shutdown_grace` runs out is dropped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    admin,
    auth::{Auth, layer::AuthLayer},
    backend::Backend,
    config::Config,
    leaderboard, lock,
    metrics::{self, RpcLayer},
    pb, pubsub, ratelimit,
    redis::{KeyBuilder, Topology, scripts},
    transport::{self, Tls},
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Every coord service's fully-qualified name, for health. Taken from the
/// generated servers so that a new service cannot be left out by a typo.
pub const SERVICES: &[&str] = &[
    pb::admin_service_server::SERVICE_NAME,
    pb::leaderboard_service_server::SERVICE_NAME,
    pb::lock_service_server::SERVICE_NAME,
    pb::pub_sub_service_server::SERVICE_NAME,
    pb::rate_limit_service_server::SERVICE_NAME,
];

/// A health entry that is SERVING while the process serves gRPC, whatever
/// Redis does, and stays so while draining: for a liveness probe, which
/// must not restart every pod during a Redis outage (readiness uses `""`).
pub const LIVENESS: &str = "liveness";

/// Everything coord derives from its configuration before it touches the
/// network (TLS files read and parsed, credentials loaded, Redlock URLs
/// turned into clients, rate-limit policies parsed): built once, the same
/// way, by `serve` and by `serve --check-config`.
pub struct Prepared {
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
    pub redlock: Option<lock::Redlock>,
    pub policies: ratelimit::policy::PolicyStore,
    pub envoy_domains: crate::rls::config::DomainStore,
}

impl Prepared {
    pub fn from_config(config: &Config) -> Result<Prepared, ServeError> {
        let invalid = |e: String| ServeError::Config(format!("invalid setting {e}"));
        let tls = match config.server.tls.enabled() {
            true => Some(Tls::load(&config.server.tls).map_err(invalid)?),
            false => None,
        };
        let auth = config.auth.settings().map(Auth::load).transpose().map_err(invalid)?;
        let redlock = match config.lock.redlock.nodes.is_empty() {
            true => None,
            false => {
                let keys = KeyBuilder::new(&config.redis.key_prefix).map_err(|e| ServeError::Config(e.to_string()))?;
                let channel = lock::Locks::channel_for(&keys);
                let opts = redlock_options(config)?;
                Some(
                    lock::Redlock::connect(&config.lock.redlock, &opts, &keys, &channel, config.lock.max_ttl)
                        .map_err(redlock_error)?,
                )
            }
        };
        let rl = &config.ratelimit;
        let policies = ratelimit::policy::PolicyStore::load(rl.policy_file.as_deref(), rl.default_timeout)
            .map_err(|e| ServeError::Config(format!("invalid setting ratelimit.policy_file: {e}")))?;
        let envoy_domains = crate::rls::config::DomainStore::load(rl.envoy.config_dir.as_deref())
            .map_err(|e| ServeError::Config(format!("invalid setting ratelimit.envoy.config_dir: {e}")))?;
        Ok(Prepared { tls, auth, redlock, policies, envoy_domains })
    }
}

/// What `coord serve --check-config` does: everything `serve` derives from
/// the configuration before it touches the network (TLS files read and
/// parsed, Redis and Redlock URLs turned into clients, the rate-limit policy
/// file parsed), without connecting, binding or starting Redis. Returns a
/// one-line summary.
pub fn check(config: &Config) -> Result<String, ServeError> {
    let mut redis = if config.redis.embedded() {
        let binary = &config.redis.embedded_binary;
        if !executable_exists(binary) {
            return Err(ServeError::Config(format!(
                "invalid setting redis.embedded_binary: {} not found (no redis.url or redis.cluster set, so coord \
                 would start its embedded Redis)",
                binary.display()
            )));
        }
        format!("embedded {} (not started)", binary.display())
    } else {
        let backend = Backend::connect(config, false).map_err(ServeError::Config)?;
        let tls = config.redis.tls_ca_file.is_some() || config.redis.tls_cert_file.is_some();
        let (what, urls) = match backend.redis.topology() {
            Topology::Single => ("single node", vec![config.redis.url.clone()]),
            Topology::Cluster => ("cluster", config.redis.cluster.clone()),
        };
        let urls: Vec<String> = urls.iter().map(|u| crate::config::redact_url(u)).collect();
        format!("{what} {}{}", urls.join(","), if tls { " (TLS files ok)" } else { "" })
    };
    let prepared = Prepared::from_config(config)?;
    if let Some(redlock) = &prepared.redlock {
        redis.push_str(&format!("; locks on Redlock ({} nodes)", redlock.node_count()));
    }
    let policies = match &config.ratelimit.policy_file {
        Some(path) => format!("{} rate-limit policies from {}", prepared.policies.len(), path.display()),
        None => "no rate-limit policy file".to_owned(),
    };
    let metrics = match (config.metrics.enabled, config.metrics.tls) {
        (true, false) => config.metrics.listen.to_string(),
        (true, true) => format!("{} (TLS)", config.metrics.listen),
        (false, _) => "off".to_owned(),
    };
    let tls = match &prepared.tls {
        Some(_)
            if config.server.tls.client_ca_file.is_some()
                && config.server.tls.client_auth != transport::ClientAuth::None =>
        {
            " (TLS, client certificates)"
        }
        Some(_) => " (TLS)",
        None => "",
    };
    let auth = match &prepared.auth {
        Some(auth) => {
            let snapshot = auth.snapshot();
            format!(
                "auth on ({} principals{})",
                snapshot.principals.len(),
                if snapshot.jwt.is_some() { ", JWT" } else { "" }
            )
        }
        None => "auth off".to_owned(),
    };
    Ok(format!(
        "configuration ok: gRPC {}{tls}, {auth}, metrics {metrics}, redis {redis}, {policies}, health services \"\" {LIVENESS} {}",
        config.server.listen,
        SERVICES.join(" ")
    ))
}

/// Whether `binary` would be found the way the embedded mode runs it: a
/// path as given, a bare name on PATH.
fn executable_exists(binary: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if binary.components().count() > 1 {
        return runnable(binary);
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(binary))))
}

/// A node's URL is checked as `redis.url` would be; say which setting it is.
fn redlock_error(e: crate::error::Error) -> ServeError {
    ServeError::Config(format!("invalid setting lock.redlock.nodes: {e}"))
}

/// Redlock nodes share the TLS material (so with TLS files set their URLs
/// must be rediss:// too) but not the main Redis's
/// credentials: those come from each node's URL.
fn redlock_options(config: &Config) -> Result<crate::redis::ConnectOptions, ServeError> {
    let mut opts = config.redis.connect_options().map_err(|e| ServeError::Config(e.to_string()))?;
    (opts.username, opts.password) = (None, None);
    Ok(opts)
}

/// How long connections stay open after the streams end at shutdown.
const STATUS_LINGER: Duration = Duration::from_millis(250);

/// Runs coord on `listener` until `signal` resolves, then drains within
/// the configured grace period.
pub async fn serve(
    config: &Config,
    backend: Backend,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let shutdown = CancellationToken::new();
    let _stop_background = shutdown.clone().drop_guard();
    let health_port_stop = CancellationToken::new();
    let _stop_health_port = health_port_stop.clone().drop_guard();

    // Metrics first, so start-up problems are counted too.
    metrics::handle();
    let prepared = Prepared::from_config(config)?;
    let tls = prepared.tls.map(Arc::new);
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(config.server.tls_reload_interval, shutdown.clone()));
    }
    let auth = prepared.auth.map(Arc::new);
    if let Some(auth) = &auth {
        tokio::spawn(auth.clone().watch(config.auth.reload_interval, shutdown.clone()));
    }
    warn_if_exposed(config, &listener);
    if config.metrics.enabled {
        let addr = config.metrics.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr: format!("{addr} (metrics.listen)"), source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), tls = config.metrics.tls, "metrics endpoint listening");
        let tls = if config.metrics.tls { tls.clone() } else { None };
        tokio::spawn(metrics::serve(listener, tls, shutdown.clone()));
    }

    if let Err(e) = backend.redis.load_scripts(scripts::ALL).await {
        tracing::warn!(error = %e, "could not preload scripts; they load on first use");
    }

    // One pub/sub connection per instance (per shard, on a sharded cluster)
    // carries every lock event and every PubSubService subscription.
    let hub = Arc::new(lock::LockEvents::default());
    let channel = lock::Locks::channel_for(&backend.keys);
    let subscribed = Arc::new(AtomicBool::new(false));
    let lock_events: Arc<dyn crate::redis::pubsub::Handler> = hub.clone();
    let upstream = match backend.redis.sharded_pubsub() {
        Some(sharded) => pubsub::hub::Upstream::Sharded(sharded.clone()),
        None => pubsub::hub::Upstream::Classic(backend.redis.pubsub_clients().to_vec()),
    };
    let pubsub_hub = pubsub::hub::Hub::start(
        upstream,
        vec![(lock::Locks::events_for(&backend.redis, &backend.keys), lock_events)],
        subscribed.clone(),
        shutdown.clone(),
    );
    // Redlock mode: locks on independent nodes, each with its own reader and
    // a monitor for reachability and restarts.
    let (redlock, lock_quorum) = match prepared.redlock {
        None => (None, None),
        Some(redlock) => {
            let redlock = Arc::new(redlock);
            for client in redlock.pubsub_clients() {
                let flag = Arc::new(AtomicBool::new(false));
                tokio::spawn(crate::redis::pubsub::run(client, channel.clone(), hub.clone(), flag, shutdown.clone()));
            }
            let quorum = Arc::new(AtomicBool::new(false));
            tokio::spawn(redlock.clone().monitor(config.server.health_interval, quorum.clone(), shutdown.clone()));
            (Some(redlock), Some(quorum))
        }
    };
    let locks = Arc::new(lock::Locks::new(&backend, redlock, hub, (&config.lock).into(), shutdown.clone()));

    let rl = &config.ratelimit;
    let policies = Arc::new(prepared.policies);
    tokio::spawn(policies.clone().watch(rl.reload_interval, shutdown.clone()));
    let rate_limits = Arc::new(ratelimit::RateLimits::new(
        backend.redis.clone(),
        backend.keys.clone(),
        policies,
        ratelimit::CacheSettings {
            enabled: rl.deny_cache,
            entries: rl.deny_cache_entries,
            min_retry: rl.deny_cache_min_retry,
        },
        ratelimit::batch::BatchSettings { max_size: rl.batch_max_size, in_flight: rl.batch_in_flight },
    ));
    let envoy_domains = Arc::new(prepared.envoy_domains);
    tokio::spawn(envoy_domains.clone().watch(rl.reload_interval, shutdown.clone()));
    let rls = Arc::new(crate::rls::Rls::new(rate_limits.clone(), envoy_domains, rls_settings(&rl.envoy)));

    let boards = Arc::new(leaderboard::Leaderboards::new(backend.redis.clone(), backend.keys.clone()));
    let pubsub =
        Arc::new(pubsub::PubSub::new(backend.redis.clone(), backend.keys.clone(), pubsub_hub, config.pubsub.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::NotServing).await;
    // Never set NOT_SERVING: it ends with the process (see LIVENESS).
    reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
    tokio::spawn(health_loop(
        backend.clone(),
        subscribed,
        lock_quorum,
        reporter.clone(),
        config.server.health_interval,
        probe_timeout(config),
        shutdown.clone(),
    ));

    if let Some(addr) = config.server.health_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr: format!("{addr} (server.health_listen)"), source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "plaintext health-only port listening");
        let health = tonic::transport::Server::builder().add_service(health_service.clone());
        // Open until coord exits, so liveness holds while draining.
        let stop = health_port_stop.clone();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move { health.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await });
    }

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "coord serving gRPC");
    }
    let s = &config.server;
    let limits = transport::Limits {
        max_connections: s.max_connections,
        idle_timeout: (!s.idle_timeout.is_zero()).then_some(s.idle_timeout),
        handshake_timeout: Duration::from_secs(10),
    };
    let incoming = transport::incoming(listener, tls, limits);

    let grace = config.server.shutdown_grace;
    let drain = {
        let shutdown = shutdown.clone();
        let reporter = reporter.clone();
        async move {
            signal.await;
            tracing::info!("shutting down: health NOT_SERVING, refusing new RPCs, ending streams");
            // Cancel first so the health loop cannot flip back to SERVING.
            shutdown.cancel();
            set_all(&reporter, ServingStatus::NotServing).await;
            // The streams just ended send their UNAVAILABLE status; give
            // clients a moment to read it before connections close, or a
            // client still writing (a KeepAlive renewal) sees a broken pipe
            // instead of the status.
            tokio::time::sleep(STATUS_LINGER.min(grace)).await;
        }
    };

    // Every coord service gets the same message limits.
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(s.max_recv_message_bytes)
                .max_encoding_message_size(s.max_send_message_bytes)
        };
    }
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(s.keepalive_interval))
        .http2_keepalive_timeout(Some(s.keepalive_timeout))
        .max_concurrent_streams(Some(s.max_concurrent_streams))
        // Outermost first: every call is counted, then checked against its
        // connection, then authorised.
        .layer(RpcLayer::new(shutdown.clone()))
        .layer(transport::ConnLayer)
        .layer(AuthLayer::new(auth, rate_limits.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(pb::admin_service_server::AdminServiceServer::new(admin::Service::new(backend.clone()))))
        .add_service(limited!(pb::semaphore_service_server::SemaphoreServiceServer::new(
            lock::semaphore_grpc::Service::new(locks.clone())
        )))
        .add_service(limited!(pb::election_service_server::ElectionServiceServer::new(
            lock::election_grpc::Service::new(locks.clone())
        )))
        .add_service(limited!(pb::lock_service_server::LockServiceServer::new(lock::grpc::Service::new(
            locks,
            shutdown.clone()
        ))))
        .add_service(limited!(pb::rate_limit_service_server::RateLimitServiceServer::new(
            ratelimit::grpc::Service::new(rate_limits)
        )))
        .add_service(limited!(
            crate::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer::new(
                crate::rls::grpc::Service::new(rls)
            )
        ))
        .add_service(limited!(pb::leaderboard_service_server::LeaderboardServiceServer::new(
            leaderboard::grpc::Service::new(boards)
        )))
        .add_service(limited!(pb::pub_sub_service_server::PubSubServiceServer::new(pubsub::grpc::Service::new(pubsub))))
        .serve_with_incoming_shutdown(incoming, drain);

    tokio::select! {
        result = server => result?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; dropping remaining connections");
        }
    }
    tracing::info!("coord stopped");
    Ok(())
}

/// A plaintext or unauthenticated port that others can reach is worth a
/// loud line: anyone who reaches it can use every namespace.
fn warn_if_exposed(config: &Config, listener: &TcpListener) {
    let addr = listener.local_addr().unwrap_or(config.server.listen);
    if addr.ip().is_loopback() {
        return;
    }
    if !config.auth.enabled {
        tracing::warn!(%addr, "auth is disabled on a non-loopback address: any client that reaches this port can use every namespace (set auth.enabled)");
    }
    if !config.server.tls.enabled() {
        tracing::warn!(%addr, "TLS is off on a non-loopback address: calls and credentials travel in plaintext (set server.tls.cert_file and key_file)");
    }
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}

/// A probe must fail fast enough that a hung Redis is reported within about
/// a second, whatever the command timeout.
fn probe_timeout(config: &Config) -> Duration {
    config.redis.command_timeout.min(Duration::from_millis(500))
}

/// Probes Redis every `interval` and reports SERVING only while a scripted
/// write succeeds and the event subscription is up.
async fn health_loop(
    backend: Backend,
    subscribed: Arc<AtomicBool>,
    lock_quorum: Option<Arc<AtomicBool>>,
    reporter: HealthReporter,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let ttl_ms = (interval * 4).max(Duration::from_secs(1)).as_millis() as u64;
    // While not serving, look again soon whatever the interval, so coming
    // back (and start-up) is reported quickly.
    let retry = interval.min(Duration::from_millis(100));
    let mut serving: Option<bool> = None;
    let mut lock_serving: Option<bool> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + if serving == Some(true) { interval } else { retry };
        let probe = backend.redis.invoke::<(i64, i64)>(&scripts::PROBE, |inv| {
            inv.key(&backend.probe_key).arg(ttl_ms);
        });
        let result = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(_)) if !subscribed.load(Ordering::Relaxed) => Err("event subscription is down".to_owned()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no reply within {timeout:?}")),
        };
        let (connections, idle) = backend.redis.pool_state();
        ::metrics::gauge!("coord_redis_pool_connections").set(connections);
        ::metrics::gauge!("coord_redis_pool_idle_connections").set(idle);
        ::metrics::gauge!("coord_redis_up").set(if result.is_ok() { 1.0 } else { 0.0 });
        if shutdown.is_cancelled() {
            return;
        }
        let up = result.is_ok();
        if serving != Some(up) {
            match &result {
                Ok(()) => tracing::info!("redis reachable: SERVING"),
                Err(e) => tracing::warn!(error = %e, "redis unreachable: NOT_SERVING"),
            }
            set_all(&reporter, if up { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
            serving = Some(up);
            lock_serving = None;
        }
        // Redlock mode: LockService also needs a majority of its nodes.
        if let Some(quorum) = &lock_quorum {
            let lock_up = up && quorum.load(Ordering::Relaxed);
            if lock_serving != Some(lock_up) {
                if up && !lock_up {
                    tracing::warn!("fewer than a majority of Redlock nodes reachable: LockService NOT_SERVING");
                }
                let status = if lock_up { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status("coord.v1.LockService", status).await;
                lock_serving = Some(lock_up);
            }
        }
    }
}

fn rls_settings(c: &crate::config::EnvoyRlsConfig) -> crate::rls::Settings {
    crate::rls::Settings {
        failure: c.failure,
        timeout: c.timeout,
        semantics: c.semantics,
        headers: c.response_headers.then(|| crate::rls::HeaderNames {
            limit: c.limit_header.clone(),
            remaining: c.remaining_header.clone(),
            reset: c.reset_header.clone(),
        }),
    }
}
