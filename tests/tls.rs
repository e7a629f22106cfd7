//! TLS on coord's gRPC port with real certificates: mTLS identities,
//! refused handshakes, rotation under load, connection and message limits.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use coord::{config::Config, pb, transport::ClientAuth};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use support::{Coord, redis::RedisServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// A certificate authority for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    fn leaf(&self, cn: &str, sans: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for san in sans {
            params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if san.contains("://") => SanType::URI(san.to_string().try_into().unwrap()),
                Err(_) => SanType::DnsName(san.to_string().try_into().unwrap()),
            });
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Leaf { cert: params.signed_by(&key, &self.issuer).unwrap().pem(), key: key.serialize_pem() }
    }

    fn server(&self) -> Leaf {
        self.leaf("coord", &["localhost", "127.0.0.1"], false)
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap() }
    }

    fn put(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write(&path, text);
        path
    }
}

fn tls_config(redis: &RedisServer, files: &Files, ca: &Ca, server: &Leaf) -> Config {
    let mut config = support::config(&redis.url());
    config.server.tls.cert_file = Some(files.put("server.pem", &server.cert));
    config.server.tls.key_file = Some(files.put("server.key", &server.key));
    config.server.tls_reload_interval = Duration::from_millis(50);
    let _ = ca;
    config
}

async fn channel(coord: &Coord, ca: &Ca, client: Option<&Leaf>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)).domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", coord.addr.port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A rate-limit Check in `ns`; its status.
async fn check(channel: Channel, ns: &str) -> tonic::Status {
    let mut client = pb::rate_limit_service_client::RateLimitServiceClient::new(channel);
    let limit = pb::Limit {
        name: "s".into(),
        algorithm: Some(pb::limit::Algorithm::FixedWindow(pb::FixedWindow { limit: 1_000_000, window_ms: 60_000 })),
    };
    let mut request = Request::new(pb::CheckRequest { subject: "u".into(), limits: vec![limit], ..Default::default() });
    request.metadata_mut().insert("coord-namespace", ns.parse().unwrap());
    match client.check(request).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

/// Waits until coord answers health over TLS.
async fn wait_serving(channel: Channel) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    loop {
        let reply = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
        if reply.is_ok_and(|r| r.into_inner().status == 1) {
            return;
        }
        assert!(Instant::now() < deadline, "coord not SERVING over TLS within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_map_to_principals_and_bad_ones_are_refused() {
    let redis = RedisServer::start();
    let (ca, other_ca) = (Ca::new("coord test CA"), Ca::new("someone else's CA"));
    let files = Files::new();
    let mut config = tls_config(&redis, &files, &ca, &ca.server());
    config.server.tls.client_ca_file = Some(files.put("clients.pem", &ca.pem));
    config.server.tls.client_auth = ClientAuth::Require;
    config.auth.enabled = true;
    config.auth.principals_file = Some(files.put(
        "principals.toml",
        "[[principal]]\nname = \"orders\"\ncertificates = [\"spiffe://test/orders\"]\n\
         grants = [{ namespaces = [\"orders\"], permissions = [\"ratelimit.check\"] }]\n\
         [[principal]]\nname = \"billing\"\ncertificates = [\"CN=billing\"]\n\
         grants = [{ namespaces = [\"billing\"], permissions = [\"*\"] }]\n",
    ));
    let coord = Coord::start_with(config).await;

    let orders = ca.leaf("orders-api", &["spiffe://test/orders"], false);
    let billing = ca.leaf("billing", &[], false);
    let stranger = ca.leaf("stranger", &["stranger.local"], false);
    let orders_channel = channel(&coord, &ca, Some(&orders)).await.unwrap();
    wait_serving(orders_channel.clone()).await;
    assert_eq!(check(orders_channel.clone(), "orders").await.code(), Code::Ok);
    let denied = check(orders_channel, "billing").await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(check(channel(&coord, &ca, Some(&billing)).await.unwrap(), "billing").await.code(), Code::Ok);
    let unknown = check(channel(&coord, &ca, Some(&stranger)).await.unwrap(), "orders").await;
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");

    // Refused at the handshake: nothing is served.
    for (what, client) in [
        ("expired certificate", Some(ca.leaf("orders-api", &["spiffe://test/orders"], true))),
        ("certificate of another CA", Some(other_ca.leaf("orders-api", &["spiffe://test/orders"], false))),
        ("no certificate", None),
    ] {
        let status = match channel(&coord, &ca, client.as_ref()).await {
            Ok(channel) => check(channel, "orders").await,
            Err(e) => tonic::Status::unavailable(e.to_string()),
        };
        // Refused by the transport (how the client words it varies).
        assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{what}: {status:?}");
        assert!(format!("{status:?}").contains("transport"), "{what}: {status:?}");
    }
    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{}", coord.addr.port())).unwrap().connect_lazy();
    assert_ne!(check(plaintext, "orders").await.code(), Code::Ok);
    // A client that does not trust coord's CA refuses it.
    let status = match channel(&coord, &other_ca, Some(&orders)).await {
        Ok(channel) => check(channel, "orders").await,
        Err(e) => tonic::Status::unavailable(e.to_string()),
    };
    assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{status:?}");
    coord.shutdown().await;
}

/// The certificate coord presents to a new connection, as DER.
async fn presented(port: u16, ca: &Ca) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_dropping_connections() {
    let redis = RedisServer::start();
    let ca = Ca::new("coord test CA");
    let files = Files::new();
    let first = ca.server();
    let config = tls_config(&redis, &files, &ca, &first);
    let (cert_file, key_file) =
        (config.server.tls.cert_file.clone().unwrap(), config.server.tls.key_file.clone().unwrap());
    let coord = Coord::start_with(config).await;
    let existing = channel(&coord, &ca, None).await.unwrap();
    wait_serving(existing.clone()).await;
    assert_eq!(presented(coord.addr.port(), &ca).await, der(&first.cert));

    // Load on the existing connection throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (channel, stop, ok, failed) = (existing.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match check(channel.clone(), "t").await.code() {
                    Code::Ok => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    // Rotate: key first, then certificate (a half-written pair is rejected).
    let second = ca.server();
    write(&key_file, &second.key);
    write(&cert_file, &second.cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(coord.addr.port(), &ca).await != der(&second.cert) {
        assert!(Instant::now() < deadline, "new connections did not get the new certificate within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file is rejected: the second certificate stays.
    write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(coord.addr.port(), &ca).await, der(&second.cert));
    // So is a certificate that does not fit the key.
    write(&cert_file, &ca.server().cert);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(coord.addr.port(), &ca).await, der(&second.cert));

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{ok} calls on the existing connection during rotation, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 10, "{ok}");
    // New connections work with the new certificate.
    assert_eq!(check(channel(&coord, &ca, None).await.unwrap(), "t").await.code(), Code::Ok);
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits_calls_get_resource_exhausted_and_idle_connections_close() {
    let redis = RedisServer::start();
    let mut config = support::config(&redis.url());
    config.server.max_connections = 2;
    config.server.idle_timeout = Duration::from_secs(1);
    config.pubsub.max_payload = 1024;
    config.server.max_recv_message_bytes = 70_000;
    let coord = support::serving_with(config).await;
    let connect = || async {
        Channel::from_shared(format!("http://127.0.0.1:{}", coord.addr.port())).unwrap().connect().await.unwrap()
    };

    // The harness's own channel holds one connection; a second fits.
    let second = connect().await;
    assert_eq!(check(second.clone(), "a").await.code(), Code::Ok);
    let third = connect().await;
    let refused = check(third.clone(), "a").await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    drop((second, third));

    // A message over the limit.
    let mut pubsub = coord.pubsub();
    let big = pb::PublishRequest { channel: "c".into(), payload: vec![7u8; 100_000].into(), ..Default::default() };
    let status = pubsub.publish(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A connection that never makes a call is closed after the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(coord.addr).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the server's SETTINGS frame
            }
        }
    })
    .await;
    assert!(read.is_ok(), "idle connection still open after 10 s");
    let closed = start.elapsed();
    assert!(closed >= Duration::from_millis(900), "closed after {closed:?}, before the idle timeout");
    println!("idle connection closed after {closed:?}");
    let _ = idle.shutdown().await;
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_over_tls() {
    let redis = RedisServer::start();
    let ca = Ca::new("coord test CA");
    let files = Files::new();
    let mut config = tls_config(&redis, &files, &ca, &ca.server());
    let metrics_port = support::redis::free_port();
    config.metrics.enabled = true;
    config.metrics.tls = true;
    config.metrics.listen = ([127, 0, 0, 1], metrics_port).into();
    let coord = Coord::start_with(config).await;
    wait_serving(channel(&coord, &ca, None).await.unwrap()).await;

    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut page = String::new();
    tls.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("coord_"), "{page:.500}");
    // Plaintext is not served.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await.unwrap();
    plain.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply)).await;
    assert!(!String::from_utf8_lossy(&reply).contains("coord_"), "metrics served in plaintext");
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_calls_over_tls_with_a_token() {
    let redis = RedisServer::start();
    let ca = Ca::new("coord test CA");
    let files = Files::new();
    let mut config = tls_config(&redis, &files, &ca, &ca.server());
    let (key, id, digest) = coord::auth::principals::new_key().unwrap();
    config.auth.enabled = true;
    config.auth.principals_file = Some(files.put(
        "principals.toml",
        &format!(
            "[[principal]]\nname = \"shop\"\nkeys = [{{ id = {id:?}, sha256 = {digest:?} }}]\n\
             grants = [{{ namespaces = [\"shop\"], permissions = [\"ratelimit.check\", \"lock\"] }}]\n"
        ),
    ));
    let coord = Coord::start_with(config).await;
    wait_serving(channel(&coord, &ca, None).await.unwrap()).await;
    let ca_file = files.put("ca.pem", &ca.pem);
    let endpoint = format!("https://localhost:{}", coord.addr.port());
    // No --namespace: the key's own (shop) is used.
    let run_with = |token: Option<String>, command: &'static [&'static str]| {
        let (endpoint, ca_file) = (endpoint.clone(), ca_file.clone());
        tokio::task::spawn_blocking(move || {
            let mut cmd = support::process::coord_command();
            cmd.args(["--endpoint", &endpoint, "--tls-ca", ca_file.to_str().unwrap()]);
            cmd.args(command);
            if let Some(token) = token {
                cmd.env("COORD_TOKEN", token);
            }
            cmd.output().unwrap()
        })
    };
    let run = |token| run_with(token, &["limit", "check", "visitor", "--limit", "fixed:5/1m"]);
    let ok = run(Some(key.clone())).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let refused = run(None).await.unwrap();
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"), "{refused:?}");
    // `lock run` keeps its lease alive through the Rust client, token included.
    let held = run_with(Some(key), &["lock", "run", "door", "--ttl", "2s", "--", "sleep", "1"]).await.unwrap();
    assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stderr));
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_health_port_answers_probes_beside_tls() {
    let redis = RedisServer::start();
    let ca = Ca::new("coord test CA");
    let files = Files::new();
    let mut config = tls_config(&redis, &files, &ca, &ca.server());
    let port = support::redis::free_port();
    config.server.health_listen = Some(([127, 0, 0, 1], port).into());
    let coord = Coord::start_with(config).await;
    wait_serving(channel(&coord, &ca, None).await.unwrap()).await;
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    wait_serving(plain.clone()).await;
    // Only health is there.
    let status = check(plain, "x").await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    coord.shutdown().await;
}
