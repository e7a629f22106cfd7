//! A Redis Cluster's shards as the cluster reports them (`CLUSTER SHARDS`,
//! Redis 7), each node probed from here: is it reachable, and how long a
//! PING takes. The cluster view is read from the first seed node that
//! answers, over direct connections, so a dead node (or a dead seed) never
//! hides the others.

use std::time::{Duration, Instant};

use redis::{Client, ConnectionAddr, ConnectionInfo, TlsCertificates, Value};

use crate::error::{Error, Result};

/// One shard: a master, its replicas and the slots they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    pub nodes: Vec<ShardNode>,
}

impl Shard {
    /// Whether a master the cluster sees online also answered our PING (a
    /// killed master is "online" until the cluster's node timeout passes).
    pub fn has_reachable_master(&self) -> bool {
        self.nodes.iter().any(|n| n.role == "master" && n.health == "online" && n.reachable)
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardNode {
    pub id: String,
    /// `ip:port`.
    pub address: String,
    /// `master` or `replica`.
    pub role: String,
    /// As the cluster sees it: `online`, `failed` or `loading`.
    pub health: String,
    pub replication_offset: u64,
    /// Whether a PING from this server was answered, and in how long.
    pub reachable: bool,
    pub round_trip_us: u64,
    /// Why it was not reachable.
    pub error: String,
}

/// Opens direct connections to cluster nodes with the seeds' settings
/// (credentials, TLS).
#[derive(Clone)]
pub struct Dialer {
    pub seeds: Vec<ConnectionInfo>,
    pub certs: Option<TlsCertificates>,
    pub timeout: Duration,
}

impl Dialer {
    /// The cluster's shards, every node probed.
    pub async fn shards(&self) -> Result<Vec<Shard>> {
        let mut last = String::from("no seed nodes");
        for seed in &self.seeds {
            match self.ask(seed.clone(), redis::cmd("CLUSTER").arg("SHARDS")).await {
                Ok(value) => {
                    let mut shards = parse(value)?;
                    // At once: a hung node costs one timeout, not one each.
                    let probes = shards.iter_mut().flat_map(|s| s.nodes.iter_mut()).map(|node| self.probe(node));
                    futures_util::future::join_all(probes).await;
                    shards.sort_by_key(|s| s.slots.first().copied());
                    return Ok(shards);
                }
                Err(e) => last = e,
            }
        }
        Err(Error::Unavailable(format!("no cluster node answered CLUSTER SHARDS: {last}")))
    }

    async fn probe(&self, node: &mut ShardNode) {
        let Some((host, port)) = node.address.rsplit_once(':') else {
            node.error = format!("unparsable address {:?}", node.address);
            return;
        };
        let Some(seed) = self.seeds.first() else { return };
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port: port.parse().unwrap_or(0),
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port.parse().unwrap_or(0)),
        };
        let started = Instant::now();
        match self.ask(seed.clone().set_addr(addr), &redis::cmd("PING")).await {
            Ok(_) => {
                node.reachable = true;
                node.round_trip_us = started.elapsed().as_micros() as u64;
            }
            Err(e) => node.error = e,
        }
    }

    /// One command on a fresh connection to `info`, within the timeout.
    async fn ask(&self, info: ConnectionInfo, cmd: &redis::Cmd) -> std::result::Result<Value, String> {
        let client = match &self.certs {
            Some(certs) => Client::build_with_tls(info, certs.clone()),
            None => Client::open(info),
        }
        .map_err(|e| e.to_string())?;
        let call = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            cmd.query_async::<Value>(&mut conn).await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// `CLUSTER SHARDS`: per shard a map (RESP3) or flat key/value array (RESP2)
/// with `slots` (flat start/end pairs) and `nodes` (maps or arrays).
pub fn parse(value: Value) -> Result<Vec<Shard>> {
    let Value::Array(shards) = value else {
        return Err(Error::Internal(format!("CLUSTER SHARDS answered {value:?}")));
    };
    shards
        .into_iter()
        .map(|shard| {
            let mut out = Shard { slots: Vec::new(), nodes: Vec::new() };
            for (key, value) in pairs(shard) {
                match (key.as_str(), value) {
                    ("slots", Value::Array(bounds)) => {
                        let bounds: Vec<u16> = bounds.iter().filter_map(int).map(|n| n as u16).collect();
                        out.slots = bounds.chunks_exact(2).map(|b| (b[0], b[1])).collect();
                    }
                    ("nodes", Value::Array(nodes)) => out.nodes = nodes.into_iter().map(node).collect(),
                    _ => {}
                }
            }
            Ok(out)
        })
        .collect()
}

fn node(value: Value) -> ShardNode {
    let mut node = ShardNode::default();
    let (mut ip, mut port, mut tls_port) = (String::new(), None, None);
    for (key, value) in pairs(value) {
        match key.as_str() {
            "id" => node.id = text(&value),
            "ip" => ip = text(&value),
            "endpoint" if ip.is_empty() => ip = text(&value),
            "port" => port = int(&value),
            "tls-port" => tls_port = int(&value),
            "role" => node.role = text(&value),
            "health" => node.health = text(&value),
            "replication-offset" => node.replication_offset = int(&value).unwrap_or(0).max(0) as u64,
            _ => {}
        }
    }
    node.address = format!("{ip}:{}", port.or(tls_port).unwrap_or(0));
    node
}

/// The key/value pairs of a map or of a flat array.
fn pairs(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Map(entries) => entries.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((text(&k), v));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other).parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn resp2_cluster_shards_parse() {
        let node = |id: &str, port: i64, role: &str, health: &str| {
            Value::Array(vec![
                bulk("id"),
                bulk(id),
                bulk("port"),
                Value::Int(port),
                bulk("ip"),
                bulk("127.0.0.1"),
                bulk("endpoint"),
                bulk("127.0.0.1"),
                bulk("role"),
                bulk(role),
                bulk("replication-offset"),
                Value::Int(42),
                bulk("health"),
                bulk(health),
            ])
        };
        let shard = Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![Value::Int(0), Value::Int(5460), Value::Int(10923), Value::Int(10930)]),
            bulk("nodes"),
            Value::Array(vec![node("a", 7000, "master", "online"), node("b", 7003, "replica", "failed")]),
        ]);
        let shards = parse(Value::Array(vec![shard])).unwrap();
        assert_eq!(shards[0].slots, [(0, 5460), (10923, 10930)]);
        assert_eq!(shards[0].nodes.len(), 2);
        let b = &shards[0].nodes[1];
        assert_eq!(
            (b.id.as_str(), b.address.as_str(), b.role.as_str(), b.health.as_str()),
            ("b", "127.0.0.1:7003", "replica", "failed")
        );
        assert_eq!(b.replication_offset, 42);
        assert!(parse(Value::Int(1)).is_err());
    }

    #[test]
    fn a_master_counts_only_when_the_cluster_sees_it_online_and_it_answers() {
        let master = |health: &str, reachable| ShardNode {
            role: "master".into(),
            health: health.into(),
            reachable,
            ..Default::default()
        };
        let shard = |node| Shard { slots: vec![(0, 1)], nodes: vec![node] };
        assert!(shard(master("online", true)).has_reachable_master());
        // Killed, before the cluster's node timeout marks it failed.
        assert!(!shard(master("online", false)).has_reachable_master());
        assert!(!shard(master("failed", true)).has_reachable_master());
        let replica =
            ShardNode { role: "replica".into(), health: "online".into(), reachable: true, ..Default::default() };
        assert!(!shard(replica).has_reachable_master());
    }
}
