//! Settings: built-in defaults, then a TOML file (`--config`), then `COORD_*`
//! environment variables, then flags — each layer overrides the one before.
//! clap reads a flag or, when it is absent, its environment variable; the
//! file is the layer below both. Everything is validated once at start-up,
//! and every error names the setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::{
    redis::ConnectOptions,
    transport::{ClientAuth, TlsSettings},
};

/// The effective configuration; also the TOML file's format.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub redis: RedisConfig,
    pub lock: LockConfig,
    pub ratelimit: RateLimitConfig,
    pub pubsub: PubSubConfig,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// How long a graceful shutdown may take before open streams and
    /// connections are dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often health checks Redis.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// TLS on the gRPC port (and, with `metrics.tls`, on metrics).
    pub tls: TlsSettings,
    /// A second, plaintext port serving only grpc.health.v1, for probes
    /// that cannot speak TLS (Kubernetes' gRPC probes). None: off.
    pub health_listen: Option<SocketAddr>,
    /// How often the TLS files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// Open connections this instance serves; calls on more get
    /// RESOURCE_EXHAUSTED.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) at once per connection; clients queue beyond.
    pub max_concurrent_streams: u32,
    /// Largest request message, bytes; larger is RESOURCE_EXHAUSTED.
    pub max_recv_message_bytes: usize,
    /// Largest response message, bytes.
    pub max_send_message_bytes: usize,
    /// HTTP/2 PING interval, and how long a PING may go unanswered before
    /// the connection is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// A connection with no call in flight for this long is closed; 0: never.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ([0, 0, 0, 0], 50051).into(),
            shutdown_grace: Duration::from_secs(10),
            health_interval: Duration::from_millis(250),
            tls: TlsSettings::default(),
            health_listen: None,
            tls_reload_interval: Duration::from_secs(5),
            max_connections: 10_000,
            max_concurrent_streams: 1024,
            max_recv_message_bytes: 4 << 20,
            max_send_message_bytes: 16 << 20,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// `[auth]`: who may call. Off by default (the embedded/dev mode).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    /// TOML file of principals (see `auth::principals`); reloaded on change
    /// and SIGHUP.
    pub principals_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// grpc.health.v1 without credentials (Kubernetes gRPC probes cannot send any).
    pub open_health: bool,
    /// Server reflection without credentials.
    pub open_reflection: bool,
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            principals_file: None,
            reload_interval: Duration::from_secs(2),
            open_health: true,
            open_reflection: true,
            jwt: JwtConfig::default(),
        }
    }
}

/// `[auth.jwt]`: JWT bearer tokens; on when a key is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    pub hs256_secret_file: Option<PathBuf>,
    pub public_key_files: Vec<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }
    }
}

impl AuthConfig {
    /// The authentication settings, when enabled.
    pub fn settings(&self) -> Option<crate::auth::Settings> {
        let jwt = &self.jwt;
        let jwt_on = jwt.hs256_secret_file.is_some() || !jwt.public_key_files.is_empty() || jwt.jwks_file.is_some();
        self.enabled.then(|| crate::auth::Settings {
            principals_file: self.principals_file.clone(),
            jwt: jwt_on.then(|| crate::auth::jwt::Settings {
                hs256_secret_file: jwt.hs256_secret_file.clone(),
                public_key_files: jwt.public_key_files.clone(),
                jwks_file: jwt.jwks_file.clone(),
                issuer: jwt.issuer.clone(),
                audience: jwt.audience.clone(),
                leeway: jwt.leeway,
            }),
            open_health: self.open_health,
            open_reflection: self.open_reflection,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Prometheus endpoint (`GET /metrics`).
    pub listen: SocketAddr,
    /// Serve metrics over TLS with `server.tls`'s certificate (and client CA).
    pub tls: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: ([0, 0, 0, 0], 9090).into(), tls: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `coord=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Auto, level: "info".into() }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL of one node. Empty with no `cluster`
    /// nodes: coord starts its embedded redis-server.
    pub url: String,
    /// Seed node URLs of a Redis Cluster; non-empty selects cluster mode.
    pub cluster: Vec<String>,
    /// On a cluster: sharded pub/sub (SPUBLISH / SSUBSCRIBE, one connection
    /// per shard) instead of classic PUBLISH, which every node relays to
    /// every other. Pattern subscriptions need classic pub/sub.
    pub sharded_pubsub: bool,
    /// ACL user and password; override any in the URL.
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM files for TLS: a private CA, and a client certificate + key.
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Connections per pool (each multiplexes many concurrent requests).
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on one Redis command; past it the RPC fails UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// First segment of every key.
    pub key_prefix: String,
    /// redis-server binary for the embedded mode.
    pub embedded_binary: PathBuf,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            cluster: Vec::new(),
            sharded_pubsub: true,
            username: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            key_prefix: "coord".into(),
            embedded_binary: PathBuf::from("redis-server"),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&toml::to_string(&self.redacted()).unwrap_or_default())
    }
}

impl RedisConfig {
    /// True when coord must start its own redis-server.
    pub fn embedded(&self) -> bool {
        self.url.is_empty() && self.cluster.is_empty()
    }

    /// A copy safe to print: passwords (also inside URLs) are replaced.
    pub fn redacted(&self) -> RedisConfig {
        let mut copy = self.clone();
        copy.url = redact_url(&copy.url);
        copy.cluster = copy.cluster.iter().map(|u| redact_url(u)).collect();
        if copy.password.is_some() {
            copy.password = Some(REDACTED.into());
        }
        copy
    }

    /// Connection options, reading the TLS files.
    pub fn connect_options(&self) -> Result<ConnectOptions, ConfigError> {
        let read = |setting: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, ConfigError> {
            path.as_ref()
                .map(|p| std::fs::read(p).map_err(|e| ConfigError::new(setting, format!("{}: {e}", p.display()))))
                .transpose()
        };
        // Checked here rather than at the first connect, where a file with
        // no certificate in it would only show up as a failed handshake.
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certificates = |setting: &str, pem: &[u8]| -> Result<(), ConfigError> {
            match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err(ConfigError::new(setting, "no PEM certificate in the file")),
                Err(e) => Err(ConfigError::new(setting, format!("not a PEM certificate: {e}"))),
            }
        };
        let tls_ca = read("redis.tls_ca_file", &self.tls_ca_file)?;
        if let Some(pem) = &tls_ca {
            certificates("redis.tls_ca_file", pem)?;
        }
        let tls_client = match (
            read("redis.tls_cert_file", &self.tls_cert_file)?,
            read("redis.tls_key_file", &self.tls_key_file)?,
        ) {
            (Some(cert), Some(key)) => {
                certificates("redis.tls_cert_file", &cert)?;
                PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| ConfigError::new("redis.tls_key_file", format!("not a PEM private key: {e}")))?;
                Some((cert, key))
            }
            _ => None,
        };
        Ok(ConnectOptions {
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            username: self.username.clone(),
            password: self.password.clone(),
            tls_ca,
            tls_client,
            sharded_pubsub: self.sharded_pubsub && !self.cluster.is_empty(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    /// Requested TTLs are clamped into [min_ttl, max_ttl]; the granted
    /// value is returned to the caller.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Longest wait an Acquire may ask for.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Replicas that must acknowledge a grant (WAIT) before it is returned;
    /// 0 = do not wait (single node without replicas).
    pub min_replicas: u32,
    #[serde(with = "humantime_serde")]
    pub replica_ack_timeout: Duration,
    /// Redlock mode: locks and leases on N independent Redis masters.
    pub redlock: RedlockConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// TOML file of named policies; reloaded when it changes and on SIGHUP.
    pub policy_file: Option<PathBuf>,
    /// How often the policy file is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Remember denials in-process until their retry-after.
    pub deny_cache: bool,
    pub deny_cache_entries: usize,
    /// Only denials with at least this retry-after are remembered.
    #[serde(with = "humantime_serde")]
    pub deny_cache_min_retry: Duration,
    /// Redis timeout of policies that set none.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Most concurrent checks of one Redis node (slot) decided in one
    /// script call; 1 turns batching off.
    pub batch_max_size: usize,
    /// Batches of one node (slot) in flight at once; a check goes out at
    /// once while fewer are.
    pub batch_in_flight: usize,
    /// Envoy's rate limit service (`envoy.service.ratelimit.v3`).
    pub envoy: EnvoyRlsConfig,
}

/// `ratelimit.envoy`: coord as Envoy's global rate limit service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvoyRlsConfig {
    /// Directory of envoyproxy/ratelimit YAML files (one domain each);
    /// reloaded when a file changes (every `ratelimit.reload_interval`).
    pub config_dir: Option<PathBuf>,
    /// The answer when Redis does not answer within `timeout`: `error`
    /// (UNAVAILABLE: Envoy's failure_mode_deny decides), `open` or `closed`.
    pub failure: crate::rls::Failure,
    /// Redis time budget of one ShouldRateLimit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `coord`: a denied hit charges nothing and a request over limit on
    /// one descriptor charges none of the others; `envoy`: every hit is
    /// charged to each descriptor on its own, as envoyproxy/ratelimit does.
    pub semantics: crate::rls::Semantics,
    /// Add RateLimit-Limit / -Remaining / -Reset (of the descriptor closest
    /// to its limit) to `response_headers_to_add`.
    pub response_headers: bool,
    pub limit_header: String,
    pub remaining_header: String,
    pub reset_header: String,
}

impl Default for EnvoyRlsConfig {
    fn default() -> Self {
        EnvoyRlsConfig {
            config_dir: None,
            failure: crate::rls::Failure::Error,
            timeout: Duration::from_millis(20),
            semantics: crate::rls::Semantics::Coord,
            response_headers: false,
            limit_header: "RateLimit-Limit".into(),
            remaining_header: "RateLimit-Remaining".into(),
            reset_header: "RateLimit-Reset".into(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            policy_file: None,
            reload_interval: Duration::from_secs(2),
            deny_cache: true,
            deny_cache_entries: 100_000,
            deny_cache_min_retry: Duration::from_secs(1),
            default_timeout: Duration::from_millis(50),
            batch_max_size: 64,
            batch_in_flight: 2,
            envoy: EnvoyRlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubConfig {
    /// Channels whose names start with one of these are RECOVERABLE
    /// (offsets, history, recovery); all others are EPHEMERAL.
    pub recoverable_prefixes: Vec<String>,
    /// Messages kept per recoverable channel (approximately: Redis trims
    /// whole stream nodes, so at least this many).
    pub history_size: u64,
    /// A recoverable channel's history and epoch expire after this long
    /// without publishes.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Largest payload, bytes.
    pub max_payload: usize,
    /// How often an idle stream gets a Heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Messages buffered per subscriber before its stream is cut.
    pub subscriber_buffer_messages: usize,
    /// Bytes buffered per subscriber before its stream is cut.
    pub subscriber_buffer_bytes: usize,
    /// How long an idempotency key is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Most messages one recovery replays; a subscriber further behind gets
    /// recovered = false.
    pub max_recovery: u64,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        PubSubConfig {
            recoverable_prefixes: Vec::new(),
            history_size: 1000,
            history_ttl: Duration::from_secs(24 * 3600),
            max_payload: 1 << 20,
            heartbeat_interval: Duration::from_secs(15),
            subscriber_buffer_messages: 1024,
            subscriber_buffer_bytes: 16 << 20,
            idempotency_ttl: Duration::from_secs(300),
            max_recovery: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedlockConfig {
    /// URLs of independent Redis masters (≥ 3; odd is best). Empty: off.
    pub nodes: Vec<String>,
    /// Bound on one node's reply; unset = max(5 ms, 2 % of the lock TTL).
    #[serde(with = "humantime_serde")]
    pub node_timeout: Option<Duration>,
    /// Attempts when votes split without a holder, each after a random
    /// delay of up to `retry_delay`.
    pub retry_count: u32,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// A node that restarts empty does not vote until `lock.max_ttl` has
    /// passed (Redlock's delayed restart).
    pub delayed_restart: bool,
}

impl Default for RedlockConfig {
    fn default() -> Self {
        RedlockConfig {
            nodes: Vec::new(),
            node_timeout: None,
            retry_count: 3,
            retry_delay: Duration::from_millis(200),
            delayed_restart: true,
        }
    }
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            max_wait: Duration::from_secs(300),
            min_replicas: 0,
            replica_ack_timeout: Duration::from_millis(100),
            redlock: RedlockConfig::default(),
        }
    }
}

const REDACTED: &str = "<redacted>";

/// True when binding both addresses must fail: one port (not 0, which
/// picks a free one) on overlapping addresses.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

pub(crate) fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// A setting that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &str, reason: impl Into<String>) -> Self {
        ConfigError { setting: setting.into(), reason: reason.into() }
    }
}

/// Flags of `coord serve`; each also reads its `COORD_*` variable.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "COORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Validate the configuration as `serve` would (settings, Redis URLs,
    /// TLS files, the rate-limit policy file), print a one-line summary and
    /// exit, without starting Redis, binding ports or connecting anywhere.
    #[arg(long)]
    pub check_config: bool,
    /// gRPC listen address [default: 0.0.0.0:50051]
    #[arg(long, env = "COORD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Graceful shutdown limit, e.g. `10s` [default: 10s]
    #[arg(long, env = "COORD_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Redis health check interval [default: 250ms]
    #[arg(long, env = "COORD_HEALTH_INTERVAL", value_parser = humantime::parse_duration)]
    pub health_interval: Option<Duration>,
    /// Prometheus endpoint address [default: 0.0.0.0:9090]
    #[arg(long, env = "COORD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve metrics [default: true]
    #[arg(long, env = "COORD_METRICS_ENABLED")]
    pub metrics_enabled: Option<bool>,
    /// Log format [default: auto]
    #[arg(long, env = "COORD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `coord=debug` [default: info]
    #[arg(long, env = "COORD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// URL of one Redis node (redis:// or rediss://); none: embedded Redis.
    #[arg(long, env = "COORD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Comma-separated seed URLs of a Redis Cluster.
    #[arg(long, env = "COORD_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Option<Vec<String>>,
    /// On a cluster: sharded pub/sub (true) or classic PUBLISH (false) [default: true]
    #[arg(long, env = "COORD_REDIS_SHARDED_PUBSUB")]
    pub redis_sharded_pubsub: Option<bool>,
    /// Redis ACL user.
    #[arg(long, env = "COORD_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password (prefer the environment variable).
    #[arg(long, env = "COORD_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// PEM CA certificate for rediss://.
    #[arg(long, env = "COORD_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, env = "COORD_REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,
    /// PEM client key for mutual TLS.
    #[arg(long, env = "COORD_REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,
    /// Connections per Redis pool [default: 4]
    #[arg(long, env = "COORD_REDIS_POOL_SIZE")]
    pub redis_pool_size: Option<u32>,
    /// Redis connect timeout [default: 1s]
    #[arg(long, env = "COORD_REDIS_CONNECT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redis_connect_timeout: Option<Duration>,
    /// Redis per-command timeout [default: 1s]
    #[arg(long, env = "COORD_REDIS_COMMAND_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redis_command_timeout: Option<Duration>,
    /// First segment of every Redis key [default: coord]
    #[arg(long, env = "COORD_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// redis-server binary for the embedded mode [default: redis-server]
    #[arg(long, env = "COORD_REDIS_SERVER")]
    pub redis_server: Option<PathBuf>,
    /// Smallest lease/lock TTL granted [default: 1s]
    #[arg(long, env = "COORD_LOCK_MIN_TTL", value_parser = humantime::parse_duration)]
    pub lock_min_ttl: Option<Duration>,
    /// Largest lease/lock TTL granted [default: 1h]
    #[arg(long, env = "COORD_LOCK_MAX_TTL", value_parser = humantime::parse_duration)]
    pub lock_max_ttl: Option<Duration>,
    /// Longest Acquire wait [default: 5m]
    #[arg(long, env = "COORD_LOCK_MAX_WAIT", value_parser = humantime::parse_duration)]
    pub lock_max_wait: Option<Duration>,
    /// Replicas that must acknowledge each lock grant [default: 0]
    #[arg(long, env = "COORD_LOCK_MIN_REPLICAS")]
    pub lock_min_replicas: Option<u32>,
    /// How long to wait for those acknowledgements [default: 100ms]
    #[arg(long, env = "COORD_LOCK_REPLICA_ACK_TIMEOUT", value_parser = humantime::parse_duration)]
    pub lock_replica_ack_timeout: Option<Duration>,
    /// Comma-separated URLs of independent Redis masters: Redlock mode for locks.
    #[arg(long, env = "COORD_LOCK_REDLOCK_NODES", value_delimiter = ',')]
    pub redlock_nodes: Option<Vec<String>>,
    /// Per-node reply bound in Redlock mode [default: max(5ms, 2% of TTL)]
    #[arg(long, env = "COORD_LOCK_REDLOCK_NODE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redlock_node_timeout: Option<Duration>,
    /// Honour Redlock's delayed restart for nodes that come back empty [default: true]
    #[arg(long, env = "COORD_LOCK_REDLOCK_DELAYED_RESTART")]
    pub redlock_delayed_restart: Option<bool>,
    /// TOML file of named rate-limit policies (reloaded on change and SIGHUP)
    #[arg(long, env = "COORD_RATELIMIT_POLICY_FILE")]
    pub ratelimit_policy_file: Option<PathBuf>,
    /// Directory of envoyproxy/ratelimit YAML files for Envoy's rate limit service
    #[arg(long, env = "COORD_RATELIMIT_ENVOY_CONFIG_DIR")]
    pub ratelimit_envoy_config_dir: Option<PathBuf>,
    /// How often the policy file is checked for changes [default: 2s]
    #[arg(long, env = "COORD_RATELIMIT_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub ratelimit_reload_interval: Option<Duration>,
    /// Remember long denials in-process [default: true]
    #[arg(long, env = "COORD_RATELIMIT_DENY_CACHE")]
    pub ratelimit_deny_cache: Option<bool>,
    /// Most concurrent checks decided in one Redis call; 1 = no batching [default: 64]
    #[arg(long, env = "COORD_RATELIMIT_BATCH_MAX_SIZE")]
    pub ratelimit_batch_max_size: Option<usize>,
    /// PEM certificate (chain) for TLS on the gRPC port
    #[arg(long, env = "COORD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC port
    #[arg(long, env = "COORD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA that signs client certificates: turns on mTLS
    #[arg(long, env = "COORD_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// With a client CA: require or only request client certificates [default: require]
    #[arg(long, env = "COORD_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
    /// Plaintext health-only port for probes that cannot do TLS [default: off]
    #[arg(long, env = "COORD_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Serve metrics over TLS too [default: false]
    #[arg(long, env = "COORD_METRICS_TLS")]
    pub metrics_tls: Option<bool>,
    /// Require credentials on every call but health and reflection [default: false]
    #[arg(long, env = "COORD_AUTH_ENABLED")]
    pub auth_enabled: Option<bool>,
    /// TOML file of principals (reloaded on change and SIGHUP)
    #[arg(long, env = "COORD_AUTH_PRINCIPALS_FILE")]
    pub auth_principals_file: Option<PathBuf>,
    /// Comma-separated channel-name prefixes that make channels RECOVERABLE
    #[arg(long, env = "COORD_PUBSUB_RECOVERABLE_PREFIXES", value_delimiter = ',')]
    pub pubsub_recoverable_prefixes: Option<Vec<String>>,
}

impl Config {
    /// Defaults, then the file named by `args.config`, then env and flags.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        // toml's message names the offending key and line.
        toml::from_str(text).map_err(|e| ConfigError::new("--config", e.to_string()))
    }

    fn apply(&mut self, a: &ServeArgs) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        fn set_opt<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut self.server.listen, &a.listen);
        set(&mut self.server.shutdown_grace, &a.shutdown_grace);
        set(&mut self.server.health_interval, &a.health_interval);
        set(&mut self.metrics.listen, &a.metrics_addr);
        set(&mut self.metrics.enabled, &a.metrics_enabled);
        set(&mut self.log.format, &a.log_format);
        set(&mut self.log.level, &a.log_level);
        set(&mut self.redis.url, &a.redis_url);
        set(&mut self.redis.cluster, &a.redis_cluster);
        set(&mut self.redis.sharded_pubsub, &a.redis_sharded_pubsub);
        set_opt(&mut self.redis.username, &a.redis_username);
        set_opt(&mut self.redis.password, &a.redis_password);
        set_opt(&mut self.redis.tls_ca_file, &a.redis_tls_ca_file);
        set_opt(&mut self.redis.tls_cert_file, &a.redis_tls_cert_file);
        set_opt(&mut self.redis.tls_key_file, &a.redis_tls_key_file);
        set(&mut self.redis.pool_size, &a.redis_pool_size);
        set(&mut self.redis.connect_timeout, &a.redis_connect_timeout);
        set(&mut self.redis.command_timeout, &a.redis_command_timeout);
        set(&mut self.redis.key_prefix, &a.key_prefix);
        set(&mut self.redis.embedded_binary, &a.redis_server);
        set(&mut self.lock.min_ttl, &a.lock_min_ttl);
        set(&mut self.lock.max_ttl, &a.lock_max_ttl);
        set(&mut self.lock.max_wait, &a.lock_max_wait);
        set(&mut self.lock.min_replicas, &a.lock_min_replicas);
        set(&mut self.lock.replica_ack_timeout, &a.lock_replica_ack_timeout);
        set(&mut self.lock.redlock.nodes, &a.redlock_nodes);
        set_opt(&mut self.lock.redlock.node_timeout, &a.redlock_node_timeout);
        set(&mut self.lock.redlock.delayed_restart, &a.redlock_delayed_restart);
        set_opt(&mut self.ratelimit.policy_file, &a.ratelimit_policy_file);
        set_opt(&mut self.ratelimit.envoy.config_dir, &a.ratelimit_envoy_config_dir);
        set(&mut self.ratelimit.reload_interval, &a.ratelimit_reload_interval);
        set(&mut self.ratelimit.deny_cache, &a.ratelimit_deny_cache);
        set(&mut self.ratelimit.batch_max_size, &a.ratelimit_batch_max_size);
        set(&mut self.pubsub.recoverable_prefixes, &a.pubsub_recoverable_prefixes);
        set_opt(&mut self.server.tls.cert_file, &a.tls_cert_file);
        set_opt(&mut self.server.tls.key_file, &a.tls_key_file);
        set_opt(&mut self.server.tls.client_ca_file, &a.tls_client_ca_file);
        set(&mut self.server.tls.client_auth, &a.tls_client_auth);
        set(&mut self.metrics.tls, &a.metrics_tls);
        set_opt(&mut self.server.health_listen, &a.health_listen);
        set(&mut self.auth.enabled, &a.auth_enabled);
        set_opt(&mut self.auth.principals_file, &a.auth_principals_file);
    }

    /// Checks every bound; the error names the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let between = |setting: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                return Err(ConfigError::new(setting, format!("must be between {min:?} and {max:?}, got {value:?}")));
            }
            Ok(())
        };
        between("server.shutdown_grace", self.server.shutdown_grace, Duration::ZERO, Duration::from_secs(600))?;
        between(
            "server.health_interval",
            self.server.health_interval,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )?;
        between(
            "redis.connect_timeout",
            self.redis.connect_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        between(
            "redis.command_timeout",
            self.redis.command_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        // Keepalive renews at TTL/3; below ~100 ms a round trip or a GC pause
        // eats the whole lease.
        between("lock.min_ttl", self.lock.min_ttl, Duration::from_millis(100), Duration::from_secs(86_400))?;
        between("lock.max_ttl", self.lock.max_ttl, self.lock.min_ttl, Duration::from_secs(30 * 86_400))?;
        between("lock.max_wait", self.lock.max_wait, Duration::ZERO, Duration::from_secs(86_400))?;
        between(
            "lock.replica_ack_timeout",
            self.lock.replica_ack_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        // WAIT runs inside one command's response timeout: waiting longer
        // would turn "too few replicas" into a bare timeout.
        if self.lock.min_replicas > 0 && self.lock.replica_ack_timeout >= self.redis.command_timeout {
            return Err(ConfigError::new(
                "lock.replica_ack_timeout",
                format!(
                    "must be below redis.command_timeout ({:?}) when lock.min_replicas is set, got {:?}",
                    self.redis.command_timeout, self.lock.replica_ack_timeout
                ),
            ));
        }
        let redlock = &self.lock.redlock;
        if !redlock.nodes.is_empty() {
            if redlock.nodes.len() < 3 {
                return Err(ConfigError::new(
                    "lock.redlock.nodes",
                    format!("needs at least 3 nodes, got {}", redlock.nodes.len()),
                ));
            }
            for url in &redlock.nodes {
                if !matches!(url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(), Ok("redis" | "rediss")) {
                    return Err(ConfigError::new(
                        "lock.redlock.nodes",
                        format!("{url:?} is not a redis:// or rediss:// URL"),
                    ));
                }
            }
            if self.lock.min_replicas > 0 {
                return Err(ConfigError::new(
                    "lock.min_replicas",
                    "Redlock nodes are independent masters; replica WAIT does not apply",
                ));
            }
        }
        if let Some(t) = redlock.node_timeout {
            between("lock.redlock.node_timeout", t, Duration::from_millis(1), Duration::from_secs(10))?;
        }
        between("lock.redlock.retry_delay", redlock.retry_delay, Duration::ZERO, Duration::from_secs(10))?;
        if redlock.retry_count > 100 {
            return Err(ConfigError::new(
                "lock.redlock.retry_count",
                format!("must be at most 100, got {}", redlock.retry_count),
            ));
        }
        between(
            "ratelimit.reload_interval",
            self.ratelimit.reload_interval,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        between(
            "ratelimit.default_timeout",
            self.ratelimit.default_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        let ps = &self.pubsub;
        let count = |setting: &str, v: u64, min: u64, max: u64| {
            if !(min..=max).contains(&v) {
                return Err(ConfigError::new(setting, format!("must be between {min} and {max}, got {v}")));
            }
            Ok(())
        };
        count("pubsub.history_size", ps.history_size, 1, 1_000_000)?;
        count("pubsub.max_payload", ps.max_payload as u64, 1, 3 << 20)?;
        count("pubsub.subscriber_buffer_messages", ps.subscriber_buffer_messages as u64, 1, 1_000_000)?;
        count("pubsub.subscriber_buffer_bytes", ps.subscriber_buffer_bytes as u64, 1024, 1 << 30)?;
        count("pubsub.max_recovery", ps.max_recovery, 1, 1_000_000)?;
        between("pubsub.history_ttl", ps.history_ttl, Duration::from_secs(1), Duration::from_secs(365 * 86_400))?;
        between(
            "pubsub.heartbeat_interval",
            ps.heartbeat_interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )?;
        between("pubsub.idempotency_ttl", ps.idempotency_ttl, Duration::from_secs(1), Duration::from_secs(7 * 86_400))?;
        if let Some(p) = ps.recoverable_prefixes.iter().find(|p| p.len() > 256) {
            return Err(ConfigError::new("pubsub.recoverable_prefixes", format!("{p:?} is longer than 256 bytes")));
        }
        if self.lock.min_replicas > 0 && !self.redis.cluster.is_empty() {
            return Err(ConfigError::new(
                "lock.min_replicas",
                "replica acknowledgement is for a single primary, not a cluster",
            ));
        }
        if self.metrics.enabled && same_port(self.metrics.listen, self.server.listen) {
            return Err(ConfigError::new(
                "metrics.listen",
                format!("{} clashes with server.listen {}", self.metrics.listen, self.server.listen),
            ));
        }
        if !(1..=1024).contains(&self.redis.pool_size) {
            return Err(ConfigError::new(
                "redis.pool_size",
                format!("must be between 1 and 1024, got {}", self.redis.pool_size),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new("log.level", format!("not a valid filter: {:?}", self.log.level)));
        }
        if !self.redis.url.is_empty() && !self.redis.cluster.is_empty() {
            return Err(ConfigError::new("redis.cluster", "set either redis.url or redis.cluster, not both"));
        }
        for (setting, url) in std::iter::once(("redis.url", &self.redis.url))
            .filter(|(_, u)| !u.is_empty())
            .chain(self.redis.cluster.iter().map(|u| ("redis.cluster", u)))
        {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "unix" | "redis+unix") => {}
                Ok(u) => {
                    return Err(ConfigError::new(
                        setting,
                        format!("unsupported scheme {:?} (use redis:// or rediss://)", u.scheme()),
                    ));
                }
                Err(e) => return Err(ConfigError::new(setting, format!("{url:?}: {e}"))),
            }
        }
        if self.redis.tls_cert_file.is_some() != self.redis.tls_key_file.is_some() {
            return Err(ConfigError::new("redis.tls_key_file", "tls_cert_file and tls_key_file must be set together"));
        }
        crate::redis::KeyBuilder::new(&self.redis.key_prefix)
            .map_err(|e| ConfigError::new("redis.key_prefix", e.to_string()))?;
        self.validate_transport()?;
        self.validate_auth()
    }

    fn validate_transport(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let tls = &s.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(ConfigError::new("server.tls.key_file", "cert_file and key_file must be set together"));
        }
        if tls.client_ca_file.is_some() && !tls.enabled() {
            return Err(ConfigError::new("server.tls.client_ca_file", "mTLS needs server.tls.cert_file and key_file"));
        }
        if let Some(health) = s.health_listen
            && (same_port(health, s.listen) || (self.metrics.enabled && same_port(health, self.metrics.listen)))
        {
            return Err(ConfigError::new("server.health_listen", format!("{health} clashes with another port")));
        }
        if self.metrics.tls && !tls.enabled() {
            return Err(ConfigError::new("metrics.tls", "needs server.tls.cert_file and key_file"));
        }
        let count = |setting: &str, v: u64, min: u64, max: u64| {
            if !(min..=max).contains(&v) {
                return Err(ConfigError::new(setting, format!("must be between {min} and {max}, got {v}")));
            }
            Ok(())
        };
        count("server.max_connections", s.max_connections as u64, 1, 1_000_000)?;
        count("ratelimit.batch_max_size", self.ratelimit.batch_max_size as u64, 1, 1024)?;
        count("ratelimit.batch_in_flight", self.ratelimit.batch_in_flight as u64, 1, 64)?;
        count("server.max_concurrent_streams", u64::from(s.max_concurrent_streams), 1, 1_000_000)?;
        // A publish of the largest payload must fit, with room for its fields.
        let least = self.pubsub.max_payload as u64 + 64 * 1024;
        count("server.max_recv_message_bytes", s.max_recv_message_bytes as u64, least, 1 << 30)?;
        count("server.max_send_message_bytes", s.max_send_message_bytes as u64, least, 1 << 30)?;
        let between = |setting: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                return Err(ConfigError::new(setting, format!("must be between {min:?} and {max:?}, got {value:?}")));
            }
            Ok(())
        };
        let envoy = &self.ratelimit.envoy;
        between("ratelimit.envoy.timeout", envoy.timeout, Duration::from_millis(1), Duration::from_secs(60))?;
        for (key, name) in [
            ("ratelimit.envoy.limit_header", &envoy.limit_header),
            ("ratelimit.envoy.remaining_header", &envoy.remaining_header),
            ("ratelimit.envoy.reset_header", &envoy.reset_header),
        ] {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(ConfigError::new(key, format!("{name:?} is not an HTTP header name")));
            }
        }
        between("server.keepalive_interval", s.keepalive_interval, Duration::from_secs(1), Duration::from_secs(3600))?;
        between("server.keepalive_timeout", s.keepalive_timeout, Duration::from_secs(1), Duration::from_secs(600))?;
        between("server.idle_timeout", s.idle_timeout, Duration::ZERO, Duration::from_secs(7 * 86_400))?;
        if !s.idle_timeout.is_zero() && s.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new("server.idle_timeout", "must be 0 (never) or at least 1s"));
        }
        between(
            "server.tls_reload_interval",
            s.tls_reload_interval,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if !auth.enabled {
            return Ok(());
        }
        let jwt = &auth.jwt;
        let jwt_on = jwt.hs256_secret_file.is_some() || !jwt.public_key_files.is_empty() || jwt.jwks_file.is_some();
        if auth.principals_file.is_none() && !jwt_on {
            return Err(ConfigError::new(
                "auth.principals_file",
                "auth is enabled but no principals file or JWT key is set: nobody could call",
            ));
        }
        if auth.reload_interval < Duration::from_millis(10) || auth.reload_interval > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "auth.reload_interval",
                format!("must be between 10ms and 86400s, got {:?}", auth.reload_interval),
            ));
        }
        if jwt.leeway > Duration::from_secs(600) {
            return Err(ConfigError::new("auth.jwt.leeway", format!("must be at most 600s, got {:?}", jwt.leeway)));
        }
        Ok(())
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        copy.redis = self.redis.redacted();
        copy.lock.redlock.nodes = self.lock.redlock.nodes.iter().map(|u| redact_url(u)).collect();
        toml::to_string(&copy).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::default();
        config.validate().unwrap();
        assert!(config.redis.embedded());
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(config.metrics.listen.to_string(), "0.0.0.0:9090");
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = Config::from_toml("[redis]\npool_size = 7\nurl = \"redis://file:1\"\n").unwrap();
        config.apply(&ServeArgs { redis_url: Some("redis://flag:2".into()), ..Default::default() });
        assert_eq!(config.redis.url, "redis://flag:2");
        assert_eq!(config.redis.pool_size, 7);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_setting() {
        let err = Config::from_toml("[redis]\npool_sise = 7\n").unwrap_err();
        assert!(err.to_string().contains("pool_sise"), "{err}");
        let err = Config::from_toml("[server]\nshutdown_grace = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("shutdown_grace"), "{err}");
        let mut config = Config::default();
        config.redis.pool_size = 0;
        assert_eq!(config.validate().unwrap_err().setting, "redis.pool_size");
        let mut config = Config::default();
        config.redis.url = "http://x".into();
        let err = config.validate().unwrap_err();
        assert_eq!(err.setting, "redis.url");
        assert!(err.reason.contains("http"), "{err}");
    }

    #[test]
    fn metrics_and_grpc_cannot_share_a_port() {
        let mut config = Config::default();
        config.metrics.listen = "127.0.0.1:50051".parse().unwrap();
        assert_eq!(config.validate().unwrap_err().setting, "metrics.listen");
        config.metrics.enabled = false;
        config.validate().unwrap();
        config.metrics.enabled = true;
        config.metrics.listen = "127.0.0.1:0".parse().unwrap();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn printed_config_redacts_passwords() {
        let mut config = Config::default();
        config.redis.url = "redis://app:hunter2@db:6379".into();
        config.redis.password = Some("hunter3".into());
        let text = config.to_redacted_toml();
        assert!(!text.contains("hunter2") && !text.contains("hunter3"), "{text}");
        assert!(text.contains("redis://app:%3Credacted%3E@db:6379") || text.contains("<redacted>"), "{text}");
    }
}
