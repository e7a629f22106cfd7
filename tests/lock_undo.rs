//! The undo contract of acquire.lua and release.lua, driven on a real Redis
//! as coord's Redlock mode drives each node: a failed try is undone exactly
//! (its hold, never a later try's grant), a retry of the same Acquire call
//! takes the earlier hold over instead of entering twice, a stale try that
//! arrives late changes nothing, and the repair of a release that a node
//! missed ends that grant and never a later one.

mod support;

use std::time::Duration;

use coord::redis::{ConnectOptions, Redis, scripts};
use redis::Value;
use support::redis::RedisServer;

const KEY: &str = "coord:default:lock:{u}";

struct Node {
    server: RedisServer,
    redis: Redis,
}

fn node() -> Node {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        pool_size: 1,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let redis = Redis::single(&server.url(), &opts).unwrap();
    Node { server, redis }
}

impl Node {
    /// One try: (lease, call id, try id `<instance hex>.<seq>`); returns the
    /// hold count, or None when held by another lease.
    async fn acquire(&self, lease: &str, call: &str, attempt: &str) -> Option<i64> {
        let reply: Vec<Value> = self
            .redis
            .invoke(&scripts::ACQUIRE, |inv| {
                inv.key(KEY)
                    .key(format!("{KEY}:fence"))
                    .key(format!("{KEY}:waiters"))
                    .arg(lease)
                    .arg(10_000)
                    .arg("owner")
                    .arg("")
                    .arg(60_000)
                    .arg(call)
                    .arg(attempt)
                    .arg("")
                    .arg("")
                    .arg("u");
            })
            .await
            .unwrap();
        match reply.as_slice() {
            [Value::Int(1), _, Value::Int(count), ..] => Some(*count),
            [Value::Int(0), ..] => None,
            other => panic!("{other:?}"),
        }
    }

    /// release.lua with (id, latest) as coord passes them; returns the
    /// reply's first element and, when released, (remaining, grant, latest).
    async fn release(&self, lease: &str, id: &str, latest: &str) -> (i64, Option<(i64, String, String)>) {
        let reply: Vec<Value> = self
            .redis
            .invoke(&scripts::RELEASE, |inv| {
                inv.key(KEY).arg(lease).arg("coord:_:lock-events").arg(id).arg(latest).arg("u");
            })
            .await
            .unwrap();
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        match reply.as_slice() {
            [Value::Int(1), Value::Int(remaining), grant, _, latest] => {
                (1, Some((*remaining, text(grant), text(latest))))
            }
            [Value::Int(flag)] => (*flag, None),
            other => panic!("{other:?}"),
        }
    }

    fn field(&self, name: &str) -> String {
        self.server.cli(&["HGET", KEY, name])
    }

    fn held_by(&self, lease: &str) -> bool {
        self.field("state") == "held" && self.field("lease") == lease
    }
}

#[tokio::test]
async fn a_retry_of_the_same_call_takes_the_hold_over_instead_of_entering_twice() {
    let n = node();
    assert_eq!(n.acquire("p1", "call", "a0.0").await, Some(1));
    assert_eq!(n.acquire("p1", "call", "a0.1000").await, Some(1), "a retry entered twice");
    // The undo of the failed first try leaves the second try's hold.
    assert_eq!(n.release("p1", "a0.0", "").await.0, 0);
    assert!(n.held_by("p1"));
    assert_eq!(n.field("count"), "1");
    // The second try's own undo ends it.
    assert_eq!(n.release("p1", "a0.1000", "").await.1.map(|r| r.0), Some(0));
    assert!(!n.held_by("p1"));
}

#[tokio::test]
async fn a_stale_try_arriving_after_a_later_one_changes_nothing() {
    let n = node();
    assert_eq!(n.acquire("p1", "call", "a0.1000").await, Some(1));
    // The earlier try reaches the node late (it was paused).
    assert_eq!(n.acquire("p1", "call", "a0.0").await, Some(1));
    assert_eq!(n.release("p1", "a0.0", "").await.0, 0, "the stale try's undo matched the later grant");
    assert!(n.held_by("p1"));
    assert_eq!(n.field("count"), "1");
}

#[tokio::test]
async fn an_undo_of_a_failed_reentry_drops_only_its_hold_and_is_safe_to_repeat() {
    let n = node();
    assert_eq!(n.acquire("l1", "a", "a0.0").await, Some(1));
    assert_eq!(n.acquire("l1", "b", "b0.0").await, Some(2));
    for _ in 0..3 {
        n.release("l1", "b0.0", "").await;
    }
    assert!(n.held_by("l1"));
    assert_eq!(n.field("count"), "1");
    // Undoing the try that created the grant, with a later hold on top,
    // drops one hold, once.
    assert_eq!(n.acquire("l1", "c", "c0.0").await, Some(2));
    for _ in 0..3 {
        n.release("l1", "a0.0", "").await;
    }
    assert!(n.held_by("l1"));
    assert_eq!(n.field("count"), "1");
}

#[tokio::test]
async fn an_undo_never_touches_another_leases_grant() {
    let n = node();
    assert_eq!(n.acquire("p1", "call", "a0.0").await, Some(1));
    assert_eq!(n.release("p1", "a0.0", "").await.1.map(|r| r.0), Some(0));
    assert_eq!(n.acquire("p2", "other", "f9.0").await, Some(1));
    assert_eq!(n.release("p1", "a0.0", "").await.0, 2, "held by another lease");
    assert!(n.held_by("p2"));
}

#[tokio::test]
async fn a_release_repair_ends_the_missed_grant_and_never_a_later_one() {
    // Node A got the release, node B missed it.
    let (a, b) = (node(), node());
    for n in [&a, &b] {
        assert_eq!(n.acquire("l1", "g1", "b0.0").await, Some(1));
    }
    let (flag, released) = a.release("l1", "", "").await;
    assert_eq!(flag, 1);
    let (remaining, grant, latest) = released.unwrap();
    assert_eq!((remaining, grant.as_str(), latest.as_str()), (0, "b0.0", "b0.0"));

    // The repair on B ends the grant the release ended elsewhere.
    assert_eq!(b.release("l1", &grant, &latest).await.1.map(|r| r.0), Some(0));
    assert!(!b.held_by("l1"));

    // The same lease is granted the lock again (a new call): a repair of the
    // earlier release, arriving late, leaves it alone...
    assert_eq!(b.acquire("l1", "g2", "c0.0").await, Some(1));
    assert_eq!(b.release("l1", &grant, &latest).await.0, 0);
    assert!(b.held_by("l1"));

    // ...also when the new grant entered on top of the missed one.
    let c = node();
    assert_eq!(c.acquire("l1", "g1", "b0.0").await, Some(1));
    assert_eq!(c.acquire("l1", "g3", "d0.0").await, Some(2));
    assert_eq!(c.release("l1", &grant, &latest).await.0, 0);
    assert!(c.held_by("l1"));
    assert_eq!(c.field("count"), "2");
}

#[tokio::test]
async fn a_clients_retry_takes_the_grant_over_so_the_first_calls_undo_leaves_it() {
    // Call instance a0 was granted but its caller gave up; the client's
    // retry (instance b0, same request id) gets the grant back before a0's
    // undo arrives: the undo must not take it from under the retry.
    let n = node();
    assert_eq!(n.acquire("p1", "req-7", "a0.0").await, Some(1));
    assert_eq!(n.acquire("p1", "req-7", "b0.0").await, Some(1));
    assert_eq!(n.release("p1", "a0.0", "").await.0, 0);
    assert!(n.held_by("p1"));
}
