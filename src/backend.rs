//! The backend every service is built on: the Redis client, the key
//! builder, and what this instance is. It lives below the services (and
//! the server that assembles them), so nothing imports upwards.

use crate::{
    config::Config,
    redis::{KeyBuilder, Redis},
};

/// The backend every service shares.
#[derive(Clone)]
pub struct Backend {
    pub redis: Redis,
    pub keys: KeyBuilder,
    /// True when `redis` is coord's own embedded redis-server.
    pub embedded: bool,
    /// This instance's health probe key.
    pub probe_key: String,
}

impl Backend {
    /// Connects (lazily) to the Redis the configuration names.
    /// An error names the setting.
    pub fn connect(config: &Config, embedded: bool) -> Result<Self, String> {
        let opts = config.redis.connect_options().map_err(|e| e.to_string())?;
        let redis = if config.redis.cluster.is_empty() {
            Redis::single(&config.redis.url, &opts)
        } else {
            Redis::cluster(&config.redis.cluster, &opts)
        }
        .map_err(|e| e.to_string())?;
        let keys = KeyBuilder::new(&config.redis.key_prefix).map_err(|e| e.to_string())?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let probe_key = keys.internal("health", &instance).as_str().to_owned();
        Ok(Backend { redis, keys, embedded, probe_key })
    }
}
