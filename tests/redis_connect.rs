//! Connecting to a secured Redis: ACL user and password, and `rediss://`
//! with a private CA and a client certificate (mutual TLS).

mod support;

use std::{path::Path, time::Duration};

use coord::pb::GetBackendStatusRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{
    Coord,
    redis::{RedisServer, free_port},
};
use tonic_health::pb::health_check_response::ServingStatus;

const GENEROUS: Duration = Duration::from_secs(10);

#[tokio::test]
async fn acl_user_and_password_from_config_are_used() {
    // The default user stays open for the harness's own PING.
    let redis = RedisServer::start_with(&["--user", "app", "on", ">s3cret", "~*", "&*", "+@all"]);
    let url = redis.url();

    let mut config = support::config(&url);
    config.redis.username = Some("app".into());
    config.redis.password = Some("s3cret".into());
    let coord = Coord::start_with(config).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    coord.admin().get_backend_status(GetBackendStatusRequest {}).await.expect("authenticated call");
    let clients = redis.cli(&["CLIENT", "LIST"]);
    assert!(clients.contains("user=app"), "coord connects as app:\n{clients}");

    // The same credentials work inside the URL.
    let coord = Coord::start(&url.replace("redis://", "redis://app:s3cret@")).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;

    // A wrong password never becomes SERVING, and calls fail UNAVAILABLE.
    let mut config = support::config(&url);
    config.redis.username = Some("app".into());
    config.redis.password = Some("wrong".into());
    let coord = Coord::start_with(config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(coord.health_status("").await, Some(ServingStatus::NotServing));
    let err = coord.admin().get_backend_status(GetBackendStatusRequest {}).await.expect_err("bad password");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // The cause reaches the caller, not just "timed out".
    assert!(err.message().contains("authentication failed"), "{err:?}");
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "coord test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, sans) in
            [("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]), ("client", vec!["coord".to_owned()])]
        {
            let key = KeyPair::generate().unwrap();
            // A leaf whose subject equals the CA's looks self-signed to OpenSSL.
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, format!("coord test {name}"));
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        Path::new(&self.path(name)).to_path_buf()
    }
}

#[tokio::test]
async fn rediss_with_private_ca_and_client_certificate() {
    let pki = Pki::new();
    let tls_port = free_port().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &pki.path("server.pem"),
        "--tls-key-file",
        &pki.path("server.key"),
        "--tls-ca-cert-file",
        &pki.path("ca.pem"),
        "--tls-auth-clients",
        "yes",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let mut config = support::config(&url);
    config.redis.tls_ca_file = Some(pki.file("ca.pem"));
    config.redis.tls_cert_file = Some(pki.file("client.pem"));
    config.redis.tls_key_file = Some(pki.file("client.key"));
    let coord = Coord::start_with(config).await;
    coord.wait_health("", ServingStatus::Serving, GENEROUS).await;
    let status = coord.admin().get_backend_status(GetBackendStatusRequest {}).await.expect("call over TLS");
    assert!(!status.into_inner().redis_version.is_empty());

    // Without the client certificate the server refuses the handshake.
    let mut config = support::config(&url);
    config.redis.tls_ca_file = Some(pki.file("ca.pem"));
    let coord = Coord::start_with(config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(coord.health_status("").await, Some(ServingStatus::NotServing));
    drop(redis);
}
