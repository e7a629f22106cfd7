//! How entries are stored (see `src/lua/lb_submit.lua`): every ZSET score
//! is 0 and the member is `key48 ‖ member id`, where key48 is
//! `score key ‖ subscore key ‖ reached-at µs`, 16 lower-case hex digits
//! each. A key is the int64 plus 2^63 (so unsigned order is signed order),
//! bit-inverted on descending boards, so bytewise order is rank order over
//! the whole int64 range. The record hash holds `key48 ‖ num ‖ ':' ‖ metadata`.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use redis::Value;

use super::board::Order;
use crate::error::{Error, Result};

/// Length of the sort key in front of every ZSET member.
pub const KEY_LEN: usize = 48;

/// An int64 as the scripts take it: plus 2^63, 16 hex digits.
pub fn biased(v: i64) -> String {
    format!("{:016x}", (v as u64) ^ (1 << 63))
}

/// A stored entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub score: i64,
    pub subscore: i64,
    pub reached_at_us: i64,
    pub num_submits: u64,
    pub metadata: String,
}

fn column(key: &str, at: usize) -> Result<u64> {
    key.get(at..at + 16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| Error::Internal(format!("malformed leaderboard key {key:?}")))
}

/// Decodes a sort key.
pub fn decode_key(key: &str, order: Order) -> Result<(i64, i64, i64)> {
    let flip = |k: u64| if order == Order::Descending { !k } else { k };
    let value = |k: u64| (flip(k) ^ (1 << 63)) as i64;
    Ok((value(column(key, 0)?), value(column(key, 16)?), column(key, 32)? as i64))
}

/// The sort key an entry would have (used by tests and tools).
pub fn encode_key(score: i64, subscore: i64, reached_at_us: i64, order: Order) -> String {
    let flip = |v: i64| {
        let k = (v as u64) ^ (1 << 63);
        if order == Order::Descending { !k } else { k }
    };
    format!("{:016x}{:016x}{:016x}", flip(score), flip(subscore), reached_at_us as u64)
}

/// Decodes a record (`key48 ‖ num ‖ ':' ‖ metadata`).
pub fn decode_record(record: &str, order: Order) -> Result<Stored> {
    let malformed = || Error::Internal(format!("malformed leaderboard record {record:?}"));
    let key = record.get(..KEY_LEN).ok_or_else(malformed)?;
    let (score, subscore, reached_at_us) = decode_key(key, order)?;
    let (num, metadata) = record[KEY_LEN..].split_once(':').ok_or_else(malformed)?;
    Ok(Stored {
        score,
        subscore,
        reached_at_us,
        num_submits: num.parse().map_err(|_| malformed())?,
        metadata: metadata.to_owned(),
    })
}

/// A Top cursor: binds the board incarnation and the period instance to the
/// last ZSET member returned, so it cannot be replayed against another.
pub fn encode_cursor(inc: &str, instance: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{inc}\n{instance}\n{last}"))
}

/// The last ZSET member of a cursor made for this board and instance.
pub fn decode_cursor(cursor: &str, inc: &str, instance: &str) -> Result<String> {
    let invalid = |why: &str| Error::invalid("cursor", why.to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid("not a cursor returned by Top"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("not a cursor returned by Top"))?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(i), Some(p), Some(last)) if i == inc && p == instance && last.len() > KEY_LEN => Ok(last.to_owned()),
        (Some(_), Some(_), Some(_)) => Err(invalid("belongs to another board or period instance")),
        _ => Err(invalid("not a cursor returned by Top")),
    }
}

// Script replies.

/// Moves item `i` out of a reply list (Nil when absent).
pub fn take(items: &mut [Value], i: usize) -> Value {
    items.get_mut(i).map(std::mem::take).unwrap_or(Value::Nil)
}

/// A reply string, moved.
pub fn into_string(v: Value) -> Result<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| Error::Internal("script returned non-UTF-8 text".into()))
        }
        other => string(&other),
    }
}

pub fn string(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|_| Error::Internal("script returned non-UTF-8 text".into()))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Internal(format!("script returned {other:?} where text was expected"))),
    }
}

pub fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => {
            string(other)?.parse().map_err(|_| Error::Internal(format!("script returned {other:?}, not a number")))
        }
    }
}

pub fn array(v: &Value) -> Result<&[Value]> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Error::Internal(format!("script returned {other:?} where a list was expected"))),
    }
}

pub fn into_array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Error::Internal(format!("script returned {other:?} where a list was expected"))),
    }
}

/// Item `i` of a reply list.
pub fn at(items: &[Value], i: usize) -> Result<&Value> {
    items.get(i).ok_or_else(|| Error::Internal(format!("script reply has no item {i}")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_round_trip_at_the_extremes() {
        for order in [Order::Ascending, Order::Descending] {
            for v in [i64::MIN, i64::MIN + 1, -(1 << 53) - 1, -1, 0, 1, (1 << 53) + 1, 1 << 62, i64::MAX] {
                let key = encode_key(v, -v.saturating_add(1), 1_795_000_000_000_000, order);
                assert_eq!(decode_key(&key, order).unwrap(), (v, -v.saturating_add(1), 1_795_000_000_000_000));
            }
        }
    }

    #[test]
    fn records_decode_with_colons_in_metadata() {
        let record = format!("{}{}:{}", encode_key(7, -3, 42, Order::Ascending), 12, "a:b:c");
        let stored = decode_record(&record, Order::Ascending).unwrap();
        assert_eq!((stored.score, stored.subscore, stored.reached_at_us), (7, -3, 42));
        assert_eq!((stored.num_submits, stored.metadata.as_str()), (12, "a:b:c"));
    }

    #[test]
    fn cursors_are_bound_to_board_and_instance() {
        let last = format!("{}m", encode_key(1, 0, 0, Order::Descending));
        let c = encode_cursor("abc", "d2026-11-24", &last);
        assert_eq!(decode_cursor(&c, "abc", "d2026-11-24").unwrap(), last);
        let err = decode_cursor(&c, "abc", "d2026-11-25").unwrap_err();
        assert!(err.to_string().starts_with("cursor:"), "{err}");
        assert!(decode_cursor("%%%", "abc", "all").is_err());
    }

    proptest! {
        /// Bytewise order of keys is (score, subscore, time) order, reversed
        /// on the score columns for descending boards.
        #[test]
        fn key_order_is_rank_order(a: (i64, i64, u32), b: (i64, i64, u32)) {
            let asc = |x: (i64, i64, u32)| encode_key(x.0, x.1, i64::from(x.2), Order::Ascending);
            prop_assert_eq!(asc(a).cmp(&asc(b)), a.cmp(&b));
            let desc = |x: (i64, i64, u32)| encode_key(x.0, x.1, i64::from(x.2), Order::Descending);
            let expected = (b.0, b.1).cmp(&(a.0, a.1)).then(a.2.cmp(&b.2));
            prop_assert_eq!(desc(a).cmp(&desc(b)), expected);
        }
    }
}
