//! The Redis backend: connections and pools ([`connect`]), the script
//! registry ([`scripts`]), key construction ([`keys`]) and the embedded
//! default server ([`embedded`]), and a cluster's shards ([`shards`]).

pub mod connect;
pub mod embedded;
pub mod keys;
pub mod pubsub;
pub mod scripts;
pub mod shards;

pub use connect::{ConnectOptions, Redis, RedisNodes, Topology};
pub use keys::{KeyBuilder, Name, Namespace, ResourceKey};
