//! Authentication and tenancy on a live coord and a real Redis: who may
//! call which RPC in which namespace, what the codes are, what reaches
//! Redis, and what happens to open streams when credentials change.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use coord::{auth::principals::new_key, config::Config, pb};
use prost::Message as _;
use support::{Coord, raw, redis::RedisServer};
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, metadata::MetadataValue};

/// A principal of the test file: its key and grants.
struct Principal {
    name: &'static str,
    key: String,
    /// (namespace pattern, permissions) as written in the file.
    grants: &'static [(&'static str, &'static [&'static str])],
}

fn principal(name: &'static str, grants: &'static [(&'static str, &'static [&'static str])]) -> (Principal, String) {
    let (key, id, digest) = new_key().unwrap();
    let grants_toml: Vec<String> = grants
        .iter()
        .map(|(ns, perms)| {
            let perms: Vec<String> = perms.iter().map(|p| format!("{p:?}")).collect();
            format!("{{ namespaces = [{ns:?}], permissions = [{}] }}", perms.join(", "))
        })
        .collect();
    let toml = format!(
        "[[principal]]\nname = {name:?}\nkeys = [{{ id = {id:?}, sha256 = {digest:?} }}]\ngrants = [{}]\n",
        grants_toml.join(", ")
    );
    (Principal { name, key, grants }, toml)
}

fn covers(pattern: &str, ns: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ns.starts_with(prefix),
        None => pattern == ns,
    }
}

impl Principal {
    /// What the spec says: a grant covering `ns` lists the permission, its
    /// service's `.*`, or `*`.
    fn may(&self, ns: &str, permission: &str) -> bool {
        let service = permission.split('.').next().unwrap_or_default();
        self.grants
            .iter()
            .filter(|(p, _)| covers(p, ns))
            .any(|(_, perms)| perms.iter().any(|p| *p == permission || *p == "*" || *p == format!("{service}.*")))
    }

    fn uses(&self, ns: &str) -> bool {
        self.grants.iter().any(|(p, _)| covers(p, ns))
    }
}

fn auth_config(redis: &RedisServer, principals: &Path) -> Config {
    let mut config = support::config(&redis.url());
    config.auth.enabled = true;
    config.auth.principals_file = Some(principals.to_owned());
    config.auth.reload_interval = Duration::from_millis(50);
    config
}

fn write(path: &Path, text: &str) {
    // Written aside and renamed, as Kubernetes swaps a Secret's files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tempfile(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    write(&path, text);
    path
}

fn with<T>(message: T, key: &str, ns: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {key}")).unwrap());
    if let Some(ns) = ns {
        request.metadata_mut().insert("coord-namespace", ns.parse().unwrap());
    }
    request
}

/// Every RPC with a request that does real work, and the permission the
/// spec gives it.
fn rpcs(tag: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let name = format!("res-{tag}");
    let limit = pb::Limit {
        name: "s".into(),
        algorithm: Some(pb::limit::Algorithm::FixedWindow(pb::FixedWindow { limit: 100, window_ms: 60_000 })),
    };
    let board = || name.clone();
    vec![
        ("/coord.v1.LockService/Grant", "lock", pb::GrantRequest { ttl_ms: 5000, owner: "t".into() }.encode_to_vec()),
        (
            "/coord.v1.LockService/Revoke",
            "lock",
            pb::RevokeRequest { lease_id: "l0000000000000000".into() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LockService/KeepAlive",
            "lock",
            pb::KeepAliveRequest { lease_id: "l0000000000000000".into() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LockService/Acquire",
            "lock",
            pb::AcquireRequest { name: name.clone(), ttl_ms: 5000, ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LockService/Release",
            "lock",
            pb::ReleaseRequest { name: name.clone(), lease_id: "l0000000000000000".into(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/coord.v1.LockService/Describe",
            "lock",
            pb::DescribeRequest { name: name.clone(), ..Default::default() }.encode_to_vec(),
        ),
        ("/coord.v1.LockService/List", "lock.admin", pb::ListRequest::default().encode_to_vec()),
        (
            "/coord.v1.LockService/ForceRelease",
            "lock.admin",
            pb::ForceReleaseRequest { name: name.clone(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.RateLimitService/Check",
            "ratelimit.check",
            pb::CheckRequest { subject: name.clone(), limits: vec![limit.clone()], ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/coord.v1.RateLimitService/Refund",
            "ratelimit.admin",
            pb::RefundRequest { subject: name.clone(), limit: Some(limit), amount: 1, ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/coord.v1.RateLimitService/AcquireSlot",
            "ratelimit.check",
            pb::AcquireSlotRequest { subject: name.clone(), max_in_flight: 5, ttl_ms: 5000, ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/coord.v1.RateLimitService/ReleaseSlot",
            "ratelimit.check",
            pb::ReleaseSlotRequest { subject: name.clone(), slot_id: "s1".into() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/CreateBoard",
            "board.admin",
            pb::CreateBoardRequest { board: Some(pb::Board { name: board(), ..Default::default() }) }.encode_to_vec(),
        ),
        ("/coord.v1.LeaderboardService/GetBoard", "board.read", pb::GetBoardRequest { board: board() }.encode_to_vec()),
        (
            "/coord.v1.LeaderboardService/Submit",
            "board.write",
            pb::SubmitRequest { board: board(), member: "m".into(), score: 5, ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/GetRanks",
            "board.read",
            pb::GetRanksRequest { board: board(), members: vec!["m".into()], ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/Top",
            "board.read",
            pb::TopRequest { board: board(), limit: 5, ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/Around",
            "board.read",
            pb::AroundRequest { board: board(), member: "m".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/Count",
            "board.read",
            pb::CountRequest { board: board(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/Percentile",
            "board.read",
            pb::PercentileRequest { board: board(), member: "m".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/Remove",
            "board.write",
            pb::RemoveRequest { board: board(), member: "m".into() }.encode_to_vec(),
        ),
        (
            "/coord.v1.LeaderboardService/DeleteBoard",
            "board.admin",
            pb::DeleteBoardRequest { board: board() }.encode_to_vec(),
        ),
        (
            "/coord.v1.PubSubService/Publish",
            "pubsub.publish",
            pb::PublishRequest {
                channel: name.clone(),
                payload: bytes::Bytes::from_static(b"x"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/coord.v1.PubSubService/PublishBatch",
            "pubsub.publish",
            pb::PublishBatchRequest {
                messages: vec![pb::PublishRequest {
                    channel: name.clone(),
                    payload: bytes::Bytes::from_static(b"y"),
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        ),
        (
            "/coord.v1.PubSubService/Subscribe",
            "pubsub.subscribe",
            pb::SubscribeRequest {
                channels: vec![pb::ChannelSubscription { channel: name.clone(), since: None }],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        ("/coord.v1.AdminService/GetBackendStatus", "admin", pb::GetBackendStatusRequest {}.encode_to_vec()),
        (
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            "ratelimit.check",
            coord::envoy::service::ratelimit::v3::RateLimitRequest {
                domain: "edge".into(),
                descriptors: vec![coord::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor {
                    entries: vec![coord::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry {
                        key: "user".into(),
                        value: name.clone(),
                    }],
                    ..Default::default()
                }],
                hits_addend: 1,
            }
            .encode_to_vec(),
        ),
    ]
}

/// Namespaces of the keys in Redis, but coord's own (`_` internal, `` quotas).
fn key_namespaces(redis: &RedisServer) -> BTreeSet<String> {
    redis
        .cli(&["--scan", "--pattern", "coord:*"])
        .lines()
        .filter_map(|k| k.split(':').nth(1).map(str::to_owned))
        .filter(|ns| ns != "_" && !ns.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_allowed_exactly_where_the_principal_is_granted() {
    let redis = RedisServer::start();
    let (alpha, a) = principal("alpha", &[("alpha", &["*"])]);
    let (reader, r) =
        principal("reader", &[("beta", &["board.read", "ratelimit.check"]), ("alpha", &["pubsub.subscribe"])]);
    let (locker, l) = principal("locker", &[("alpha", &["lock"]), ("team-*", &["lock.*", "board.write"])]);
    let (ops, o) = principal("ops", &[("*", &["*"])]);
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &[a, r, l, o].concat());
    let coord = support::serving_with(auth_config(&redis, &file)).await;

    let namespaces = ["alpha", "beta", "gamma", "team-x"];
    let (mut allowed, mut denied) = (0, 0);
    for p in [&alpha, &reader, &locker, &ops] {
        let before = key_namespaces(&redis);
        for ns in namespaces {
            for (path, permission, body) in rpcs(&format!("{}-{ns}", p.name)) {
                let auth = format!("Bearer {}", p.key);
                let meta = [("authorization", auth.as_str()), ("coord-namespace", ns)];
                let status = raw::call_with(coord.channel(), path, body, &meta).await;
                if p.may(ns, permission) {
                    allowed += 1;
                    assert!(
                        !matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated),
                        "{} in {ns}: {path} must be allowed, got {status:?}",
                        p.name
                    );
                } else {
                    denied += 1;
                    assert_eq!(status.code(), Code::PermissionDenied, "{} in {ns}: {path}: {status:?}", p.name);
                    let missing = if p.uses(ns) { permission.to_owned() } else { format!("namespace \"{ns}\"") };
                    assert!(status.message().contains(&missing), "{} in {ns}: {path}: {:?}", p.name, status.message());
                }
            }
        }
        // Everything this principal wrote is in a namespace it may use.
        for ns in key_namespaces(&redis).difference(&before) {
            assert!(p.uses(ns), "{} wrote keys in namespace {ns}", p.name);
        }
    }
    // The allowed calls did write, in every namespace someone may use.
    let written = key_namespaces(&redis);
    assert!(["alpha", "beta", "gamma", "team-x"].iter().all(|ns| written.contains(*ns)), "{written:?}");
    println!("{allowed} calls allowed, {denied} denied as PERMISSION_DENIED; keys in {written:?}");
    assert!(allowed > 100 && denied > 100, "{allowed} allowed, {denied} denied");
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthenticated_and_health_stays_open() {
    let redis = RedisServer::start();
    let (alpha, a) = principal("alpha", &[("alpha", &["*"])]);
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &a);
    let coord = support::serving_with(auth_config(&redis, &file)).await;
    let path = "/coord.v1.RateLimitService/Check";
    let body = || rpcs("x").into_iter().find(|r| r.0 == path).unwrap().2;

    let (_, id_part) = alpha.key.strip_prefix("coord_").unwrap().split_once('_').unwrap();
    let tampered =
        format!("coord_{}_{}", alpha.key.split('_').nth(1).unwrap(), id_part.replace(char::is_alphanumeric, "A"));
    let (other_key, _, _) = new_key().unwrap();
    for (what, auth) in [
        ("no credentials", None),
        ("not a key", Some("Bearer hello".to_owned())),
        ("another scheme", Some(format!("Basic {}", alpha.key))),
        ("right id, wrong secret", Some(format!("Bearer {tampered}"))),
        ("unknown key", Some(format!("Bearer {other_key}"))),
    ] {
        let meta: Vec<(&'static str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let status = raw::call_with(coord.channel(), path, body(), &meta).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let ok =
        raw::call_with(coord.channel(), path, body(), &[("authorization", &format!("Bearer {}", alpha.key))]).await;
    assert_eq!(ok.code(), Code::Ok, "{ok:?}");

    // Probes and tooling need no credentials.
    assert_eq!(coord.health_status("").await, Some(tonic_health::pb::health_check_response::ServingStatus::Serving));
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(coord.channel());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_defaults_to_the_principals_own_and_denials_reveal_nothing() {
    let redis = RedisServer::start();
    let (alpha, a) = principal("alpha", &[("alpha", &["*"])]);
    let (ops, o) = principal("ops", &[("*", &["*"])]);
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &[a, o].concat());
    let coord = support::serving_with(auth_config(&redis, &file)).await;
    let mut locks = coord.locks();

    // No header: alpha's own namespace.
    let acquired = locks
        .acquire(with(pb::AcquireRequest { name: "door".into(), ttl_ms: 5000, ..Default::default() }, &alpha.key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acquired.status(), pb::AcquireStatus::Acquired);
    assert_eq!(redis.cli(&["exists", "coord:alpha:lock:{door}"]), "1");

    // A board that exists in gamma and one that does not: alpha hears the same.
    let mut boards = coord.boards();
    let board = pb::Board { name: "secret".into(), ..Default::default() };
    boards.create_board(with(pb::CreateBoardRequest { board: Some(board) }, &ops.key, Some("gamma"))).await.unwrap();
    let ask = |name: &str| with(pb::GetBoardRequest { board: name.into() }, &alpha.key, Some("gamma"));
    let exists = boards.get_board(ask("secret")).await.unwrap_err();
    let absent = boards.get_board(ask("nothing")).await.unwrap_err();
    assert_eq!((exists.code(), exists.message()), (absent.code(), absent.message()));
    assert_eq!(exists.code(), Code::PermissionDenied);

    // A lease of alpha's cannot be used from another namespace: there it
    // does not exist, and alpha's own namespace is closed to others.
    let (beta, b) = principal("beta", &[("beta", &["lock"])]);
    let lease = locks
        .grant(with(pb::GrantRequest { ttl_ms: 5000, owner: "a".into() }, &alpha.key, None))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    write(&file, &[std::fs::read_to_string(&file).unwrap(), b.clone()].concat());
    wait_accepted(&coord, &beta.key).await;
    let beta_key = beta.key.clone();
    let revoke = |ns: &str| with(pb::RevokeRequest { lease_id: lease.clone() }, &beta_key, Some(ns));
    let other_ns = locks.revoke(revoke("beta")).await;
    assert!(
        matches!(&other_ns, Ok(r) if r.get_ref().released.is_empty())
            || other_ns.as_ref().is_err_and(|s| s.code() == Code::NotFound),
        "{other_ns:?}"
    );
    assert_eq!(locks.revoke(revoke("alpha")).await.unwrap_err().code(), Code::PermissionDenied);
    let ttl: i64 = redis.cli(&["pttl", &format!("coord:alpha:lease:{{{lease}}}")]).parse().unwrap();
    assert!(ttl > 0, "alpha's lease must still be alive, pttl {ttl}");

    // A live KeepAlive stream in beta cannot renew alpha's lease: it is not
    // there, and alpha's TTL keeps running down.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
    let mut stream = locks
        .keep_alive(with(tokio_stream::wrappers::ReceiverStream::new(rx), &beta_key, Some("beta")))
        .await
        .unwrap()
        .into_inner();
    match stream.next().await.unwrap().unwrap().event {
        Some(pb::keep_alive_response::Event::Renewed(r)) => assert_eq!(r.ttl_ms, 0, "{r:?}"),
        other => panic!("{other:?}"),
    }
    let after: i64 = redis.cli(&["pttl", &format!("coord:alpha:lease:{{{lease}}}")]).parse().unwrap();
    assert!(after <= ttl, "alpha's lease was renewed from beta: pttl {ttl} -> {after}");
    drop(tx);
    coord.shutdown().await;
}

/// Waits until coord accepts `key` (a reload picked it up).
async fn wait_accepted(coord: &Coord, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let auth = format!("Bearer {key}");
    loop {
        let status =
            raw::call_with(coord.channel(), "/coord.v1.Nothing/Here", vec![], &[("authorization", &auth)]).await;
        if status.code() != Code::Unauthenticated {
            return;
        }
        assert!(Instant::now() < deadline, "key not accepted within 10 s: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_their_key_is_removed_or_their_namespace_is_taken_away() {
    let redis = RedisServer::start();
    let (alpha, a) = principal("alpha", &[("alpha", &["*"])]);
    let (watcher, w) = principal("watcher", &[("alpha", &["pubsub.subscribe"])]);
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &[a.clone(), w].concat());
    let coord = support::serving_with(auth_config(&redis, &file)).await;

    let mut locks = coord.locks();
    let lease = locks
        .grant(with(pb::GrantRequest { ttl_ms: 3000, owner: "a".into() }, &alpha.key, None))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
    let mut keepalive = locks
        .keep_alive(with(tokio_stream::wrappers::ReceiverStream::new(rx), &alpha.key, None))
        .await
        .unwrap()
        .into_inner();
    keepalive.next().await.unwrap().unwrap();
    let subscribe = pb::SubscribeRequest {
        channels: vec![pb::ChannelSubscription { channel: "news".into(), since: None }],
        ..Default::default()
    };
    let mut subscription =
        coord.pubsub().subscribe(with(subscribe, &watcher.key, Some("alpha"))).await.unwrap().into_inner();
    subscription.next().await.unwrap().unwrap();

    // A bad file changes nothing.
    write(&file, "[[principal]]\nname = 1\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(pb::KeepAliveRequest { lease_id: lease.clone() }).await.unwrap();
    keepalive.next().await.unwrap().expect("stream survives a rejected file");

    // alpha's key goes, the watcher loses the namespace: both streams end.
    let narrowed = a.replace(&alpha.key, "");
    let removed = narrowed.lines().filter(|l| !l.starts_with("keys")).collect::<Vec<_>>().join("\n");
    let start = Instant::now();
    let watcher_beta = format!(
        "[[principal]]\nname = \"watcher\"\nkeys = [{}]\ngrants = [{{ namespaces = [\"beta\"], permissions = [\"pubsub.subscribe\"] }}]\n",
        key_line(&watcher.key)
    );
    write(&file, &format!("{removed}\n{watcher_beta}"));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match keepalive.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("KeepAlive ended without a status"),
            }
        }
    })
    .await
    .expect("KeepAlive must end within 5 s of the key's removal");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match subscription.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("Subscribe ended without a status"),
            }
        }
    })
    .await
    .expect("Subscribe must end within 5 s of the grant's removal");
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    println!("streams ended {:?} after the file changed", start.elapsed());
    let status =
        locks.grant(with(pb::GrantRequest { ttl_ms: 3000, owner: "a".into() }, &alpha.key, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The cut KeepAlive must not linger half-open while this client keeps
    // its request side (`tx`) open: shutdown would wait out its grace.
    let took = coord.shutdown().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    drop(tx);
}

/// The `{ id, sha256 }` entry of a key made by `new_key`.
fn key_line(key: &str) -> String {
    let id = key.strip_prefix("coord_").unwrap().split('_').next().unwrap();
    let digest: String = coord::auth::key_digest(key).iter().map(|b| format!("{b:02x}")).collect();
    format!("{{ id = {id:?}, sha256 = {digest:?} }}")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str, exp: u64, namespaces: &[&str], permissions: &[&str]) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "exp": exp, "namespaces": namespaces, "permissions": permissions })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_and_end_their_streams_when_they_expire() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-hs256";
    let secret_file = tempfile(&dir, "hs256", secret);
    let ec = rcgen::KeyPair::generate().unwrap();
    let ec_public = tempfile(&dir, "ec.pem", &ec.public_key_pem());
    let file = tempfile(&dir, "principals.toml", "");
    let mut config = auth_config(&redis, &file);
    config.auth.jwt.hs256_secret_file = Some(secret_file);
    config.auth.jwt.public_key_files = vec![ec_public];
    config.auth.jwt.leeway = Duration::ZERO;
    let coord = support::serving_with(config).await;

    let hs = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let sign =
        |alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value| encode(&Header::new(alg), claims, key).unwrap();
    let good = claims("svc", now_secs() + 600, &["shop"], &["ratelimit.check", "lock"]);
    let path = "/coord.v1.RateLimitService/Check";
    let check = |token: String| {
        let coord = coord.channel();
        async move {
            let body = rpcs("jwt").into_iter().find(|r| r.0 == path).unwrap().2;
            let auth = format!("Bearer {token}");
            raw::call_with(coord, path, body, &[("authorization", &auth)]).await
        }
    };
    assert_eq!(check(sign(Algorithm::HS256, &hs, &good)).await.code(), Code::Ok);
    assert_eq!(check(sign(Algorithm::ES256, &es, &good)).await.code(), Code::Ok);
    let written = redis.cli(&["--scan", "--pattern", "coord:shop:rl:*"]);
    assert!(!written.is_empty(), "the default namespace is the claims' first");

    let expired = sign(Algorithm::HS256, &hs, &claims("svc", now_secs() - 60, &["shop"], &["*"]));
    let other_secret = EncodingKey::from_secret(b"another secret of thirty-two bytes!!").unwrap();
    let forged = sign(Algorithm::HS256, &other_secret, &good);
    let valid = sign(Algorithm::HS256, &hs, &good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let widened = b64.encode(claims("svc", now_secs() + 600, &["*"], &["*"]).to_string());
    let tampered = format!("{head}.{widened}.{signature}");
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", b64.encode(good.to_string()));
    let no_exp =
        sign(Algorithm::HS256, &hs, &serde_json::json!({ "sub": "svc", "namespaces": ["shop"], "permissions": ["*"] }));
    for (what, token) in
        [("expired", expired), ("forged", forged), ("tampered", tampered), ("alg none", alg_none), ("no exp", no_exp)]
    {
        let status = check(token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    // Valid but not for this namespace.
    let bank = sign(Algorithm::HS256, &hs, &claims("svc", now_secs() + 600, &["bank"], &["*"]));
    let body = rpcs("jwt").into_iter().find(|r| r.0 == path).unwrap().2;
    let meta = [("authorization", format!("Bearer {bank}")), ("coord-namespace", "shop".to_owned())];
    let meta: Vec<(&'static str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let status = raw::call_with(coord.channel(), path, body, &meta).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A stream opened with a token that expires in 2 s ends then.
    let short = sign(Algorithm::HS256, &hs, &claims("svc", now_secs() + 2, &["shop"], &["pubsub.subscribe"]));
    let subscribe = pb::SubscribeRequest {
        channels: vec![pb::ChannelSubscription { channel: "news".into(), since: None }],
        ..Default::default()
    };
    let opened = Instant::now();
    let mut stream = coord.pubsub().subscribe(with(subscribe, &short, None)).await.unwrap().into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream must end when its token expires");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    println!("stream ended {:?} after opening with a token valid for ~2 s", opened.elapsed());
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_limit_a_noisy_tenant_without_starving_another() {
    let redis = RedisServer::start();
    let (noisy, n) = principal("noisy", &[("noisy", &["*"])]);
    let (quiet, q) = principal("quiet", &[("quiet", &["*"])]);
    let n = n + "quota = { requests_per_second = 50, streams = 2, subscriptions = 1 }\n";
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &[n, q].concat());
    let coord = support::serving_with(auth_config(&redis, &file)).await;
    let path = "/coord.v1.RateLimitService/Check";
    let body = || rpcs("q").into_iter().find(|r| r.0 == path).unwrap().2;

    // Streams: two at most, one of them a subscription.
    let subscribe = || pb::SubscribeRequest {
        channels: vec![pb::ChannelSubscription { channel: "c".into(), since: None }],
        ..Default::default()
    };
    let mut pubsub = coord.pubsub();
    let first = pubsub.subscribe(with(subscribe(), &noisy.key, None)).await.unwrap().into_inner();
    let second = pubsub.subscribe(with(subscribe(), &noisy.key, None)).await.unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted, "{second:?}");
    assert!(second.message().contains("subscriptions"), "{second:?}");
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::KeepAliveRequest>(1);
    let mut locks = coord.locks();
    let _keepalive =
        locks.keep_alive(with(tokio_stream::wrappers::ReceiverStream::new(rx), &noisy.key, None)).await.unwrap();
    let (_tx3, rx3) = tokio::sync::mpsc::channel::<pb::KeepAliveRequest>(1);
    let third =
        locks.keep_alive(with(tokio_stream::wrappers::ReceiverStream::new(rx3), &noisy.key, None)).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    // Closing one frees its place.
    drop(first);
    drop(tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pubsub.subscribe(with(subscribe(), &noisy.key, None)).await.expect("a place was freed");

    // Requests per second: a baseline for quiet, then noisy floods.
    let quiet_auth = format!("Bearer {}", quiet.key);
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() * 99 / 100]
    };
    let mut baseline = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(
            raw::call_with(coord.channel(), path, body(), &[("authorization", &quiet_auth)]).await.code(),
            Code::Ok
        );
        baseline.push(t.elapsed());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..16 {
        let (channel, stop) = (coord.channel(), stop.clone());
        let auth = format!("Bearer {}", noisy.key);
        let body = body();
        flood.push(tokio::spawn(async move {
            let (mut ok, mut limited, mut retry_info) = (0u64, 0u64, true);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = raw::call_with(channel.clone(), path, body.clone(), &[("authorization", &auth)]).await;
                match status.code() {
                    Code::Ok => ok += 1,
                    Code::ResourceExhausted => {
                        limited += 1;
                        retry_info &= status.metadata().get("retry-after-ms").is_some();
                    }
                    other => panic!("noisy got {other:?}: {status:?}"),
                }
            }
            (ok, limited, retry_info)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut loaded = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(
            raw::call_with(coord.channel(), path, body(), &[("authorization", &quiet_auth)]).await.code(),
            Code::Ok
        );
        loaded.push(t.elapsed());
    }
    let window = started.elapsed() + Duration::from_millis(300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut limited) = (0, 0);
    for task in flood {
        let (o, l, retry_info) = task.await.unwrap();
        assert!(retry_info, "every RESOURCE_EXHAUSTED carries retry-after-ms");
        ok += o;
        limited += l;
    }
    let (base, load) = (p99(baseline), p99(loaded));
    println!(
        "noisy: {ok} allowed, {limited} limited in {window:?}; quiet p99 {base:?} alone, {load:?} during the flood"
    );
    // 50/s with a burst of 50, over the flood's window (plus slack).
    let most = 50 + (window.as_secs_f64() * 50.0).ceil() as u64 + 10;
    assert!(ok <= most, "noisy got {ok} calls through in {window:?}, at most {most} expected");
    assert!(limited > ok, "the flood was mostly refused: {ok} allowed, {limited} limited");
    assert!(load < base * 20 + Duration::from_millis(100), "quiet p99 {load:?} vs {base:?} alone");
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_leases_are_capped_per_principal_and_freed_by_revoke_or_expiry() {
    let redis = RedisServer::start();
    let (team, t) = principal("team", &[("team", &["lock"])]);
    let t = t + "quota = { leases = 2 }\n";
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile(&dir, "principals.toml", &t);
    let coord = support::serving_with(auth_config(&redis, &file)).await;
    let mut locks = coord.locks();
    let grant = |ttl_ms: i64| with(pb::GrantRequest { ttl_ms, owner: "t".into() }, &team.key, None);
    let leases = || redis.cli(&["--scan", "--pattern", "coord:team:lease:*"]).lines().count();

    // One lease kept alive well past its first TTL still counts.
    let kept = locks.grant(grant(300)).await.unwrap().into_inner().lease_id;
    let short = locks.grant(grant(300)).await.unwrap().into_inner().lease_id;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut keepalive = locks
        .keep_alive(with(tokio_stream::wrappers::ReceiverStream::new(rx), &team.key, None))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..8 {
        tx.send(pb::KeepAliveRequest { lease_id: kept.clone() }).await.unwrap();
        keepalive.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `short` expired meanwhile: its place is free, `kept`'s is not.
    let third = locks.grant(grant(5000)).await.unwrap().into_inner().lease_id;
    let over = locks.grant(grant(5000)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("2 live leases"), "{over:?}");
    assert_eq!(leases(), 2, "a refused grant leaves no lease behind");
    let _ = short;

    // Revoking one frees a place at once.
    locks.revoke(with(pb::RevokeRequest { lease_id: third }, &team.key, None)).await.unwrap();
    locks.grant(grant(5000)).await.expect("a revoked lease's place is free");
    drop(tx);
    coord.shutdown().await;
}
