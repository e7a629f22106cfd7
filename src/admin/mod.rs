//! AdminService: operator diagnostics about the backend (seed property O2:
//! ping latency, version, clients, memory; L17: warn when the eviction
//! policy can silently drop lock keys; L15: clock offset to Redis `TIME`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::{
    backend::Backend,
    error::{Error, Result},
    pb::{self, admin_service_server::AdminService},
    redis::{Redis, Topology, scripts},
};

/// What the backend reports about itself.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackendStatus {
    pub round_trip_us: u64,
    pub clock_offset_us: i64,
    pub info: Info,
    pub pool: (u32, u32),
    pub warnings: Vec<String>,
}

/// The INFO fields coord cares about.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Info {
    pub redis_version: String,
    pub connected_clients: u64,
    pub used_memory: u64,
    pub maxmemory: u64,
    pub maxmemory_policy: String,
    pub uptime_seconds: u64,
}

impl Info {
    /// Parses `INFO` text (`key:value` lines).
    pub fn parse(text: &str) -> Info {
        let mut info = Info::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else { continue };
            let num = || value.parse().unwrap_or(0);
            match key {
                "redis_version" => info.redis_version = value.to_owned(),
                "connected_clients" => info.connected_clients = num(),
                "used_memory" => info.used_memory = num(),
                "maxmemory" => info.maxmemory = num(),
                "maxmemory_policy" => info.maxmemory_policy = value.to_owned(),
                "uptime_in_seconds" => info.uptime_seconds = num(),
                _ => {}
            }
        }
        info
    }

    /// Conditions an operator must know about.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.maxmemory_policy.is_empty() && self.maxmemory_policy != "noeviction" {
            warnings.push(format!(
                "maxmemory-policy is {:?}: Redis may evict lock, lease and rate-limit keys; use noeviction",
                self.maxmemory_policy
            ));
        }
        warnings
    }
}

/// Measures the backend: one probe script call (round trip and Redis
/// clock) and one INFO.
pub async fn backend_status(redis: &Redis, probe_key: &str) -> Result<BackendStatus> {
    let sent_wall = wall_us();
    let started = Instant::now();
    let (secs, micros): (i64, i64) = redis
        .invoke(&scripts::PROBE, |inv| {
            inv.key(probe_key).arg(60_000);
        })
        .await?;
    let round_trip_us = started.elapsed().as_micros() as u64;
    let redis_us = secs * 1_000_000 + micros;
    // Redis read its clock about half-way through the round trip.
    let clock_offset_us = redis_us - (sent_wall + round_trip_us as i64 / 2);

    let raw: redis::Value = redis.query(redis::cmd("INFO").arg("server").arg("clients").arg("memory")).await?;
    let text = info_text(raw).ok_or_else(|| Error::Internal("unexpected INFO reply".into()))?;
    let info = Info::parse(&text);
    let warnings = info.warnings();
    Ok(BackendStatus { round_trip_us, clock_offset_us, pool: redis.pool_state(), warnings, info })
}

/// INFO is text on one node; a cluster connection may answer with one
/// entry per node — the first node's text is representative.
fn info_text(value: redis::Value) -> Option<String> {
    use redis::Value;
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::VerbatimString { text, .. } => Some(text),
        Value::SimpleString(s) => Some(s),
        Value::Map(entries) => entries.into_iter().next().and_then(|(_, v)| info_text(v)),
        _ => None,
    }
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

// === gRPC adapter ===

pub struct Service {
    backend: Backend,
}

impl Service {
    pub fn new(backend: Backend) -> Self {
        Service { backend }
    }
}

#[tonic::async_trait]
impl AdminService for Service {
    async fn get_backend_status(
        &self,
        _request: Request<pb::GetBackendStatusRequest>,
    ) -> std::result::Result<Response<pb::GetBackendStatusResponse>, Status> {
        let status = backend_status(&self.backend.redis, &self.backend.probe_key).await?;
        let shards = self.backend.redis.shards().await?;
        let mode = match (self.backend.embedded, self.backend.redis.topology()) {
            (true, _) => pb::RedisMode::Embedded,
            (false, Topology::Single) => pb::RedisMode::Single,
            (false, Topology::Cluster) => pb::RedisMode::Cluster,
        };
        Ok(Response::new(pb::GetBackendStatusResponse {
            mode: mode.into(),
            round_trip_us: status.round_trip_us,
            redis_version: status.info.redis_version,
            connected_clients: status.info.connected_clients,
            used_memory_bytes: status.info.used_memory,
            maxmemory_bytes: status.info.maxmemory,
            maxmemory_policy: status.info.maxmemory_policy,
            warnings: status.warnings,
            clock_offset_us: status.clock_offset_us,
            pool_connections: status.pool.0,
            pool_idle_connections: status.pool.1,
            uptime_seconds: status.info.uptime_seconds,
            shards: shards.into_iter().map(shard).collect(),
        }))
    }
}

fn shard(s: crate::redis::shards::Shard) -> pb::Shard {
    pb::Shard {
        slots: s.slots.into_iter().map(|(start, end)| pb::SlotRange { start: start.into(), end: end.into() }).collect(),
        nodes: s
            .nodes
            .into_iter()
            .map(|n| pb::ShardNode {
                id: n.id,
                address: n.address,
                role: n.role,
                health: n.health,
                replication_offset: n.replication_offset,
                reachable: n.reachable,
                round_trip_us: n.round_trip_us,
                error: n.error,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parsing_and_eviction_warning() {
        let info = Info::parse(
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:12\r\n# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n",
        );
        assert_eq!(info.redis_version, "7.0.15");
        assert_eq!(info.used_memory, 1024);
        assert_eq!(info.uptime_seconds, 12);
        assert_eq!(info.warnings().len(), 1);
        assert!(info.warnings()[0].contains("allkeys-lru"));
        assert!(Info::parse("maxmemory_policy:noeviction").warnings().is_empty());
    }
}
