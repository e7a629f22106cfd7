//! Redis Cluster hash slots, and the channels coord's scripts publish their
//! own events on (lock ends, semaphore wake-ups, election changes).
//!
//! With sharded pub/sub a script may `SPUBLISH` only to a channel in its
//! keys' slot, so on a sharded cluster the event channel is one channel per
//! slot, `<base>{<tag>}`, with a tag chosen to hash to that slot. Every
//! instance subscribes to all of them, each on the shard that owns it, so an
//! event travels only to its own shard's subscribers instead of over the
//! whole cluster bus.

use std::{borrow::Cow, sync::Arc, sync::LazyLock};

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot a key (or shard channel) hashes to: CRC16 of its hash tag (the
/// bytes between the first `{` and the first `}` after it, when non-empty),
/// else of the whole key.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&len| len > 0).map(|len| &rest[..len])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// For each slot, the shortest decimal tag that hashes to it.
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags = vec![String::new(); SLOTS as usize];
    let mut left = SLOTS as usize;
    let mut n = 0u32;
    while left > 0 {
        let tag = n.to_string();
        let s = crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS;
        if tags[s as usize].is_empty() {
            tags[s as usize] = tag;
            left -= 1;
        }
        n += 1;
    }
    tags
});

/// Where coord's own events are published and subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventChannel {
    /// One channel: a single node, a Redlock node, or a cluster with classic
    /// pub/sub (a PUBLISH reaches every node).
    One(Arc<str>),
    /// One channel per slot (`<base>{<tag>}`), for sharded pub/sub.
    PerSlot(Arc<str>),
}

impl EventChannel {
    /// The channel a script touching `key` publishes on.
    pub fn for_key(&self, key: &str) -> Cow<'_, str> {
        match self {
            EventChannel::One(name) => Cow::Borrowed(name),
            EventChannel::PerSlot(base) => Cow::Owned(Self::of_slot(base, slot(key))),
        }
    }

    /// Every channel to subscribe to.
    pub fn all(&self) -> Vec<String> {
        match self {
            EventChannel::One(name) => vec![name.to_string()],
            EventChannel::PerSlot(base) => (0..SLOTS).map(|s| Self::of_slot(base, s)).collect(),
        }
    }

    /// Whether `channel` is one of these.
    pub fn matches(&self, channel: &str) -> bool {
        match self {
            EventChannel::One(name) => channel == &**name,
            EventChannel::PerSlot(base) => channel
                .strip_prefix(&**base)
                .and_then(|rest| rest.strip_prefix('{')?.strip_suffix('}'))
                .is_some_and(|tag| TAGS[slot(channel) as usize] == tag),
        }
    }

    fn of_slot(base: &str, slot: u16) -> String {
        format!("{base}{{{}}}", TAGS[slot as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_redis_cluster_specification() {
        // Examples from the cluster specification and redis-cli CLUSTER KEYSLOT.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
    }

    #[test]
    fn every_slot_has_an_event_channel_in_that_slot() {
        let events = EventChannel::PerSlot("coord:_:lock-events".into());
        let all = events.all();
        assert_eq!(all.len(), SLOTS as usize);
        for (s, channel) in all.iter().enumerate() {
            assert_eq!(slot(channel) as usize, s, "{channel}");
            assert!(events.matches(channel));
        }
        assert_eq!(events.for_key("coord:ns:lock:{orders}"), all[slot("x{orders}") as usize]);
        assert!(!events.matches("coord:_:lock-events"));
        assert!(!events.matches("coord:_:lock-events{x}"));
        assert!(!EventChannel::One("a".into()).matches("b"));
    }
}
