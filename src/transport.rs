//! The gRPC listener: plaintext or TLS (rustls; optional mTLS), with the
//! certificate, key and client CA reloaded when their files change, a cap
//! on connections and an idle timeout.
//!
//! Reload: every `server.tls.reload_interval` the files are read; when they
//! changed, a new rustls configuration is built and used for connections
//! accepted from then on. Open connections keep the session they
//! negotiated. A file that does not parse, or a key that does not match its
//! certificate, is rejected, logged and counted
//! (`coord_tls_reloads_total{result="error"}`), and the previous
//! configuration stays.
//!
//! Limits: beyond `server.max_connections` a connection is still accepted,
//! but its calls are answered RESOURCE_EXHAUSTED and it is closed a second
//! later; a connection with no call in flight for `server.idle_timeout` is
//! closed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Do not ask for one.
    None,
    /// Ask, verify it when sent, accept connections without one.
    Request,
    /// Refuse the handshake without a certificate signed by the client CA.
    #[default]
    Require,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle that signs client certificates: turns on mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: require (default) or only request certificates.
    pub client_auth: ClientAuth,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file].into_iter().flatten().cloned().collect()
    }
}

/// The TLS configurations in force (gRPC: h2; metrics: http/1.1).
pub struct Tls {
    settings: TlsSettings,
    grpc: ArcSwap<ServerConfig>,
    metrics: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Reads and checks every file; an error names the setting.
    pub fn load(settings: &TlsSettings) -> Result<Tls, String> {
        let (grpc, metrics) = build(settings)?;
        Ok(Tls { settings: settings.clone(), grpc: ArcSwap::from(grpc), metrics: ArcSwap::from(metrics) })
    }

    pub fn grpc_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.grpc.load_full())
    }

    pub fn metrics_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.metrics.load_full())
    }

    /// Re-reads the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        match build(&self.settings) {
            Ok((grpc, metrics)) => {
                self.grpc.store(grpc);
                self.metrics.store(metrics);
                metrics::counter!("coord_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(target: "coord::audit", event = "tls_reload", "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("coord_tls_reloads_total", "result" => "error").increment(1);
                tracing::error!(target: "coord::audit", event = "tls_reload_rejected", error = %e, "new TLS files rejected; keeping the previous certificate");
                Err(e)
            }
        }
    }

    /// Reloads whenever a file's contents change (checked every
    /// `interval`, which also catches Kubernetes' Secret symlink swaps).
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        crate::reload::on_change(self.settings.files(), interval, false, shutdown, || {
            let _ = self.reload();
        })
        .await;
    }
}

fn read(setting: &str, path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting}: {}: {e}", path.display()))
}

fn build(settings: &TlsSettings) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), String> {
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        return Err("server.tls.key_file: cert_file and key_file must be set together".into());
    };
    let pem = read("server.tls.cert_file", cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.cert_file: {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert_file: {}: no certificate in the file", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("server.tls.key_file", key_file)?)
        .map_err(|e| format!("server.tls.key_file: {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match &settings.client_ca_file {
        Some(ca_file) if settings.client_auth != ClientAuth::None => {
            let pem = read("server.tls.client_ca_file", ca_file)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("server.tls.client_ca_file: {}: {e}", ca_file.display()))?;
                roots.add(cert).map_err(|e| format!("server.tls.client_ca_file: {}: {e}", ca_file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("server.tls.client_ca_file: {}: no certificate in the file", ca_file.display()));
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = match settings.client_auth {
                ClientAuth::Request => builder.allow_unauthenticated(),
                _ => builder,
            };
            Some(builder.build().map_err(|e| format!("server.tls.client_ca_file: {}: {e}", ca_file.display()))?)
        }
        _ => None,
    };
    let config = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("server.tls: {e}"))?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs.clone(), key.clone_key()).map_err(|e| {
            format!("server.tls.key_file: {} does not fit {}: {e}", key_file.display(), cert_file.display())
        })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    Ok((config(b"h2")?, config(b"http/1.1")?))
}

/// The names a client certificate proves: its SANs (DNS, URI, e-mail, IP)
/// and `CN=<common name>`.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => names.push(n.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default()).to_string()),
                    16 => {
                        names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default()).to_string())
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(format!("CN={cn}"));
        }
    }
    names
}

/// Connection limits (`[server]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// None: never close idle connections.
    pub idle_timeout: Option<Duration>,
    pub handshake_timeout: Duration,
}

/// What every call knows about its connection (request extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// Names of the verified client certificate, with mTLS.
    pub certificate: Option<Arc<[String]>>,
    pub state: Arc<ConnState>,
}

/// A connection's live state.
#[derive(Debug)]
pub struct ConnState {
    /// Past `server.max_connections`: every call is refused.
    pub over_cap: bool,
    /// Calls in flight.
    active: AtomicUsize,
    last_call: Mutex<Instant>,
    close: CancellationToken,
}

/// Accepts connections on `listener` (and completes TLS handshakes off the
/// accept loop) until the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: Limits,
) -> ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                // tonic dropped the stream (shutdown): close the port now.
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let count = open.fetch_add(1, Ordering::AcqRel) + 1;
            let slot = OpenSlot(open.clone());
            let over_cap = count > limits.max_connections;
            if over_cap {
                metrics::counter!("coord_connections_refused_total").increment(1);
            }
            let state = Arc::new(ConnState {
                over_cap,
                active: AtomicUsize::new(0),
                last_call: Mutex::new(Instant::now()),
                close: CancellationToken::new(),
            });
            let (tx, tls, limits) = (tx.clone(), tls.clone(), limits.clone());
            tokio::spawn(async move {
                let (io, certificate): (Box<dyn Io>, _) = match tls {
                    None => (Box::new(stream), None),
                    Some(tls) => {
                        match tokio::time::timeout(limits.handshake_timeout, tls.grpc_acceptor().accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let names = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| Arc::from(certificate_names(c.as_ref())));
                                (Box::new(stream), names)
                            }
                            Ok(Err(e)) => {
                                metrics::counter!("coord_tls_handshake_failures_total").increment(1);
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                metrics::counter!("coord_tls_handshake_failures_total").increment(1);
                                return;
                            }
                        }
                    }
                };
                if state.over_cap {
                    let close = state.close.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        close.cancel();
                    });
                } else if let Some(idle) = limits.idle_timeout {
                    tokio::spawn(close_when_idle(Arc::downgrade(&state), idle));
                }
                let info = ConnInfo { remote: Some(remote), certificate, state: state.clone() };
                let closed = Box::pin(state.close.clone().cancelled_owned());
                let _ = tx.send(Ok(Conn { io, info, closed, _slot: slot })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a connection once it had no call in flight for `idle`.
async fn close_when_idle(state: Weak<ConnState>, idle: Duration) {
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let Some(state) = state.upgrade() else { return };
        let since = state.last_call.lock().map(|t| t.elapsed()).unwrap_or_default();
        if state.active.load(Ordering::Acquire) == 0 && since >= idle {
            tracing::debug!(?idle, "closing idle connection");
            state.close.cancel();
            return;
        }
        wait = idle.saturating_sub(since).max(Duration::from_millis(100));
    }
}

/// Gives a connection's place back when it closes.
struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted connection, plaintext or TLS.
pub struct Conn {
    io: Box<dyn Io>,
    info: ConnInfo,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    _slot: OpenSlot,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Closing: reading end-of-stream makes hyper close the connection.
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

// === impl ConnLayer ===

/// Per call: refuses calls on connections over the cap, tracks calls in
/// flight for the idle timeout, and reports oversized messages as
/// RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE; gRPC's convention, and
/// other servers', is RESOURCE_EXHAUSTED).
#[derive(Clone, Default)]
pub struct ConnLayer;

impl<S> Layer<S> for ConnLayer {
    type Service = ConnService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnService { inner }
    }
}

#[derive(Clone)]
pub struct ConnService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConnService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let state = req.extensions().get::<ConnInfo>().map(|c| c.state.clone());
        if let Some(state) = &state
            && state.over_cap
        {
            let status = tonic::Status::from(crate::error::Error::ResourceExhausted(
                "too many connections to this coord instance; retry later".into(),
            ));
            return Box::pin(
                async move { Ok(status.into_http::<ResBody>().map(|b| CallBody { inner: b, call: None })) },
            );
        }
        let call = state.map(InFlight::start);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            oversized_is_exhausted(response.headers_mut());
            Ok(response.map(|inner| CallBody { inner, call }))
        })
    }
}

/// Rewrites tonic's OUT_OF_RANGE for a message over the size limit.
fn oversized_is_exhausted(headers: &mut HeaderMap) {
    if headers.get("grpc-status").is_none_or(|v| v != "11") {
        return;
    }
    let oversized =
        tonic::Status::from_header_map(headers).is_some_and(|s| s.message().contains("message length too large"));
    if oversized {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
}

/// A call in flight on a connection.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: Arc<ConnState>) -> InFlight {
        state.active.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.last_call.lock() {
            *t = Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts as "in flight" until it is dropped.
    pub struct CallBody<B> {
        #[pin]
        inner: B,
        call: Option<InFlight>,
    }
}

impl<B> Body for CallBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    oversized_is_exhausted(trailers);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
