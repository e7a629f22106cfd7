//! Generated and garbage requests to every RPC of every coord service,
//! through a real gRPC client to a live coord on a real Redis: no answer is
//! INTERNAL or UNKNOWN, every INVALID_ARGUMENT names a field, and coord stays
//! up and SERVING.
//!
//! Requests are built from the services' own descriptors, so a new RPC or
//! field is fuzzed without touching this file: strings empty, huge, or full
//! of separators, braces and non-ASCII; integers at their extremes; unknown
//! enum values; lists empty or oversized; nested messages. Then random and
//! truncated bytes. `COORD_FUZZ_ROUNDS` (default 150 per RPC) and
//! `COORD_FUZZ_SEED` replay or lengthen a run.

mod support;

use std::collections::BTreeMap;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use support::{raw::call, redis::RedisServer, rng::Rng, serving};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_and_garbage_requests_never_get_internal_or_unknown() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let pool = DescriptorPool::decode(coord::pb::FILE_DESCRIPTOR_SET).unwrap();
    let rounds: usize = std::env::var("COORD_FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let seed = Rng::seed_from_env("COORD_FUZZ_SEED");
    let mut rng = Rng(seed);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut sent = 0;
    let methods: Vec<_> = pool.services().flat_map(|s| s.methods().collect::<Vec<_>>()).collect();
    assert_eq!(methods.len(), 38, "every RPC of coord.v1, and Envoy's ShouldRateLimit");
    for method in &methods {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        for round in 0..rounds {
            let body = match round % 10 {
                // Random bytes, and a valid message cut short.
                8 => (0..rng.below(40)).map(|_| rng.below(256) as u8).collect(),
                9 => {
                    let mut bytes = generate(&method.input(), &mut rng, 0).encode_to_vec();
                    bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                    bytes
                }
                _ => generate(&method.input(), &mut rng, 0).encode_to_vec(),
            };
            let status = call(coord.channel(), &path, body.clone()).await;
            sent += 1;
            *outcomes.entry(format!("{:?}", status.code())).or_default() += 1;
            let bad = match status.code() {
                Code::Internal | Code::Unknown => true,
                Code::InvalidArgument => !names_a_field(status.message()),
                _ => false,
            };
            if bad && failures.len() < 20 {
                failures.push(format!("{path} {:?} {:?} (body {:02x?})", status.code(), status.message(), body));
            }
        }
    }
    let health = coord.health_status("").await;
    eprintln!("fuzz (seed {seed}): {sent} requests to {} RPCs: {outcomes:?}; health {health:?}", methods.len());
    assert!(failures.is_empty(), "{} bad answers, e.g.:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(health, Some(ServingStatus::Serving), "coord stays SERVING");
}

/// `field: reason`, where the field is a request field path (or `request`
/// for a message that does not decode).
fn names_a_field(message: &str) -> bool {
    message.split_once(": ").is_some_and(|(field, _)| {
        !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
    })
}

// === generated requests ===

/// A message of `desc` with a random subset of its fields set to values
/// chosen to hurt.
fn generate(desc: &MessageDescriptor, rng: &mut Rng, depth: u32) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        if rng.below(3) == 0 {
            continue;
        }
        if let Some(value) = field_value(&field, rng, depth) {
            message.set_field(&field, value);
        }
    }
    message
}

fn field_value(field: &FieldDescriptor, rng: &mut Rng, depth: u32) -> Option<Value> {
    if field.is_map() {
        return None; // coord's requests have none
    }
    if field.is_list() {
        let len = rng.pick(&[0, 1, 2, 5, 1_001, 10_001]);
        if depth > 0 && len > 5 {
            return Some(Value::List(Vec::new()));
        }
        let items = (0..len).filter_map(|_| scalar(&field.kind(), rng, depth)).collect();
        return Some(Value::List(items));
    }
    scalar(&field.kind(), rng, depth)
}

fn scalar(kind: &Kind, rng: &mut Rng, depth: u32) -> Option<Value> {
    Some(match kind {
        Kind::Bool => Value::Bool(rng.below(2) == 0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(rng.pick(&[0, 1, -1, 2, 1_000, i32::MAX, i32::MIN, 86_400_000]))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.pick(&[
            0,
            1,
            -1,
            100,
            60_000,
            i64::MAX,
            i64::MIN,
            1 << 53,
            (1 << 53) + 1,
            -(1 << 53),
            99_999_999_999_999,
        ])),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.pick(&[0, 1, 2, 1_000, 1_001, u32::MAX])),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.pick(&[
            0,
            1,
            2,
            1_000,
            u64::MAX,
            u64::MAX - 1,
            i64::MAX as u64,
            (i64::MAX as u64) + 1,
            1 << 53,
            99_999_999_999_999_897,
        ])),
        Kind::Float => Value::F32(rng.pick(&[0.0, -1.0, f32::NAN, f32::INFINITY, f32::MAX])),
        Kind::Double => Value::F64(rng.pick(&[0.0, -1.0, f64::NAN, f64::INFINITY, f64::MAX, 1e300])),
        Kind::String => Value::String(text(rng)),
        Kind::Bytes => Value::Bytes(text(rng).into_bytes().into()),
        // Known values, and some that are not.
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(if rng.below(3) == 0 { rng.pick(&[-1, 3, 42, 99, i32::MAX]) } else { rng.pick(&known) })
        }
        Kind::Message(m) if depth < 3 => Value::Message(generate(m, rng, depth + 1)),
        Kind::Message(_) => return None,
    })
}

fn text(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => "x".repeat(rng.pick(&[255, 256, 257, 512, 513, 1_024, 1_025, 70_000])),
        2 => "{}:%*?[]|\\/\n\t\0".into(),
        3 => "ünïcødé ✓ 🔒".into(),
        4 => "-1".into(),
        5 => "18446744073709551616".into(),
        6 => "fixed:1/1m".into(),
        7 => "l0123456789abcdef0123456789abcdef".into(),
        8 => "p0123456789abcdef0123456789abcdef.name".into(),
        9 => "0@epoch".into(),
        _ => format!("name-{}", rng.below(5)),
    }
}
