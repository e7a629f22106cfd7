//! The Redis backend: connections and pools ([`connect`]), the script
//! registry ([`scripts`]), key construction ([`keys`]) and the embedded
//! default server ([`embedded`]), a cluster's shards ([`shards`]) and hash
//! slots ([`slots`]).

pub mod connect;
pub mod embedded;
pub mod keys;
pub mod pubsub;
pub mod scripts;
pub mod shards;
pub mod slots;

pub use connect::{ConnectOptions, Redis, RedisNodes, Topology};
pub use keys::{KeyBuilder, Name, Namespace, ResourceKey};
pub use slots::EventChannel;
