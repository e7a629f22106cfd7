//! The Redis backend: connections and pools ([`connect`]), the script
//! registry ([`scripts`]), key construction ([`keys`]) and the embedded
//! default server ([`embedded`]).

pub mod connect;
pub mod embedded;
pub mod keys;
pub mod pubsub;
pub mod scripts;

pub use connect::{ConnectOptions, Redis, RedisNodes, Topology};
pub use keys::{KeyBuilder, Name, Namespace, ResourceKey};
