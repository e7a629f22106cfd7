//! Shared test harness: real redis-server processes ([`redis`]) and coord
//! running in-process on 127.0.0.1:0, reached through generated clients as
//! users reach it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod keepalive;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod rng;
pub mod subscriber;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use coord::{
    backend::Backend,
    config::Config,
    pb::{
        admin_service_client::AdminServiceClient, election_service_client::ElectionServiceClient,
        leaderboard_service_client::LeaderboardServiceClient, lock_service_client::LockServiceClient,
        pub_sub_service_client::PubSubServiceClient, rate_limit_service_client::RateLimitServiceClient,
        semaphore_service_client::SemaphoreServiceClient,
    },
    server::{self, ServeError},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Sends coord's logs (info and up, Redis client warnings) to libtest's
/// captured output: shown only for a test that fails, so a fault test that
/// fails on a CI machine says what coord saw. Worker threads of the test's
/// runtime inherit its capture, so parallel tests' logs stay apart.
pub fn capture_logs() {
    // RUST_LOG, when set, chooses what a failing test shows (e.g. coord=debug).
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "coord=info,redis=warn".to_owned());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Waits, if needed, so that the next `needed` fits inside one aligned
/// window of `window`: fixed and sliding windows align to the epoch, so a
/// test that counts charges across a window's end would see a fresh window.
/// (Redis runs on this host, so its TIME is this clock.)
pub async fn inside_one_window(window: Duration, needed: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    if window - into < needed {
        tokio::time::sleep(window - into + Duration::from_millis(20)).await;
    }
}

/// A test configuration for a coord on `redis_url`: no metrics endpoint, a
/// fast health interval, short Redis timeouts.
pub fn config(redis_url: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.server.health_interval = Duration::from_millis(50);
    config.server.shutdown_grace = Duration::from_secs(10);
    config.metrics.enabled = false;
    config.redis.url = redis_url.to_owned();
    config.redis.command_timeout = Duration::from_millis(500);
    config.redis.connect_timeout = Duration::from_millis(500);
    // Short leases keep expiry tests fast.
    config.lock.min_ttl = Duration::from_millis(100);
    config
}

/// Starts coord on `redis_url` and waits until it reports SERVING.
pub async fn serving(redis_url: &str) -> Coord {
    serving_with(config(redis_url)).await
}

pub async fn serving_with(config: Config) -> Coord {
    let coord = Coord::start_with(config).await;
    coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
    coord
}

/// coord running in this process.
pub struct Coord {
    pub addr: SocketAddr,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Coord {
    pub async fn start(redis_url: &str) -> Coord {
        Coord::start_with(config(redis_url)).await
    }

    pub async fn start_with(config: Config) -> Coord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind coord listener");
        Coord::serve_on(config, listener)
    }

    /// Runs coord on `listener` in this process.
    fn serve_on(config: Config, listener: tokio::net::TcpListener) -> Coord {
        let addr = listener.local_addr().expect("local addr");
        let backend = Backend::connect(&config, false).expect("backend config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(&config, backend, listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        Coord { addr, channel, stop: Some(stop), task: Some(task) }
    }

    /// Starts coord on `addr`, e.g. where a coord that was shut down
    /// listened (a restart in place), retrying the bind briefly while the
    /// old socket goes away; waits until it reports SERVING.
    pub async fn serving_at(config: Config, addr: SocketAddr) -> Coord {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind coord listener on {addr}: {e}"),
            }
        };
        let coord = Coord::serve_on(config, listener);
        coord.wait_health("", ServingStatus::Serving, Duration::from_secs(10)).await;
        coord
    }

    /// A handle for a coord running elsewhere (another process): clients
    /// only, nothing to shut down.
    pub fn client_only(uri: &str) -> Coord {
        let channel = Channel::from_shared(uri.to_owned()).expect("uri").connect_lazy();
        Coord { addr: ([127, 0, 0, 1], 0).into(), channel, stop: None, task: None }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel())
    }

    pub fn locks(&self) -> LockServiceClient<Channel> {
        LockServiceClient::new(self.channel())
    }

    pub fn semaphores(&self) -> SemaphoreServiceClient<Channel> {
        SemaphoreServiceClient::new(self.channel())
    }

    pub fn elections(&self) -> ElectionServiceClient<Channel> {
        ElectionServiceClient::new(self.channel())
    }

    pub fn rate_limits(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::new(self.channel())
    }

    pub fn pubsub(&self) -> PubSubServiceClient<Channel> {
        PubSubServiceClient::new(self.channel())
    }

    pub fn boards(&self) -> LeaderboardServiceClient<Channel> {
        LeaderboardServiceClient::new(self.channel())
    }

    /// Health of `service` ("" = overall) as the server reports it.
    pub async fn health_status(&self, service: &str) -> Option<ServingStatus> {
        let reply = self.health().check(HealthCheckRequest { service: service.to_owned() }).await.ok()?.into_inner();
        ServingStatus::try_from(reply.status).ok()
    }

    /// Polls health until `service` reports `want`; returns how long it
    /// took, or panics after `within`.
    pub async fn wait_health(&self, service: &str, want: ServingStatus, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.health_status(service).await;
            if got == Some(want) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "health of {service:?} still {got:?} after {within:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Triggers graceful shutdown and waits for the server to finish;
    /// returns how long the drain took.
    pub async fn shutdown(mut self) -> Duration {
        let start = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task panicked").expect("server failed");
        }
        start.elapsed()
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
