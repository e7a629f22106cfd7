//! coord: a gRPC coordination service on Redis — distributed locks with
//! leases and fencing tokens, rate limits, leaderboards and pub/sub — for
//! services written in any language.
//!
//! # Layout
//! - [`server`]: the tonic server, health, reflection, graceful shutdown.
//! - [`config`]: settings from file, `COORD_*` environment and flags.
//! - [`backend`]: what every service is built on (Redis client, key builder), below the services and the server.
//! - [`error`]: the one error enum and its mapping to gRPC codes.
//! - [`context`]: the per-request caller context (namespace, principal).
//! - [`auth`]: principals, API keys, JWTs, permissions, quotas; the layer that authorises every call.
//! - [`transport`]: the gRPC listener: TLS with reload, mTLS identities, connection limits.
//! - [`metrics`]: Prometheus endpoint and the per-RPC tower layer.
//! - [`redis`]: pools, script registry, key builder, embedded redis-server.
//! - [`backoff`]: the retry delay of every reconnect loop; [`reload`]: the file watcher.
//! - one module per service: [`admin`], [`lock`], [`ratelimit`], [`leaderboard`], [`pubsub`].
//! - [`client`]: the Rust client library: `LockClient` and its lease-keeping `LockGuard`.
//! - [`cli`], [`bench`]: the `coord` client subcommands and the bench tool.
//! - [`pb`]: generated protobuf code only.

#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod context;
pub mod error;
pub mod leaderboard;
pub mod lock;
pub mod metrics;
pub mod pubsub;
pub mod ratelimit;
pub mod redis;
pub mod reload;
pub mod rls;
pub mod server;
pub mod telemetry;
pub mod transport;

/// Generated protobuf and gRPC code for `coord.v1`.
pub mod pb {
    tonic::include_proto!("coord.v1");

    /// Encoded descriptors of every coord proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("coord_descriptor");
}

/// Envoy's rate limit service v3 (`third_party/envoy/`), nested by package
/// as the generated code expects.
pub mod envoy {
    pub mod service {
        pub mod ratelimit {
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
}
