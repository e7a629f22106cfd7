//! Prometheus metrics: the process-wide recorder, the `/metrics` endpoint,
//! and the one tower layer that every gRPC call passes through.
//!
//! The layer records, per RPC, a request count and a latency histogram
//! labelled with the gRPC status code. A unary error arrives as a
//! trailers-only response (status in the headers); everything else carries
//! its status in the trailers at the end of the body, so the body is wrapped
//! and the call is recorded when it ends — for a stream, that is when the
//! stream closes. The same wrapper ends open streams with UNAVAILABLE when
//! the server starts draining, so graceful shutdown never waits on them.

use std::{
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};

/// Installs the global recorder once per process and returns its handle.
/// Several in-process servers (tests) share it, as they share the process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        const BUCKETS: &[f64] =
            &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let builder = PrometheusBuilder::new();
        // Board sizes are counts, not seconds.
        const SIZES: &[f64] = &[10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
        let builder = builder
            .set_buckets(BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("coord_leaderboard_board_entries".into()), SIZES))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; metrics then
        // go there, and this handle renders an empty page.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `GET /metrics` (any path, in fact) until `shutdown` is cancelled,
/// over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<crate::transport::Tls>>,
    shutdown: CancellationToken,
) {
    use hyper::{server::conn::http1, service::service_fn};
    let handle = handle();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
            handle.run_upkeep();
            let mut response = Response::new(http_body_util::Full::new(Bytes::from(handle.render())));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            Ok::<_, std::convert::Infallible>(response)
        });
        let acceptor = tls.as_ref().map(|t| t.metrics_acceptor());
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let _ = http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = http1::Builder::new().serve_connection(io, service).await;
                    }
                }
            }
        });
    }
}

// === impl RpcLayer ===

/// Records every RPC and cuts open streams on shutdown.
#[derive(Clone)]
pub struct RpcLayer {
    shutdown: CancellationToken,
}

impl RpcLayer {
    pub fn new(shutdown: CancellationToken) -> Self {
        RpcLayer { shutdown }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, shutdown: self.shutdown.clone() }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    shutdown: CancellationToken,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let rpc = Rpc { path: req.uri().path().to_owned(), start: Instant::now() };
        let cancelled = self.shutdown.clone().cancelled_owned();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let (parts, body) = response.into_parts();
            // Trailers-only response: the call is over.
            let rpc = match grpc_code(&parts.headers) {
                Some(code) => {
                    rpc.record(code);
                    None
                }
                None => Some(rpc),
            };
            Ok(Response::from_parts(parts, RpcBody { inner: body, rpc, cut: false, cancelled }))
        })
    }
}

/// One call in flight.
struct Rpc {
    path: String,
    start: Instant,
}

impl Rpc {
    fn record(self, code: i32) {
        let code_name = code_name(code);
        // Unknown paths (UNIMPLEMENTED) would let clients mint label values.
        let (service, method) = match (code, self.path.trim_start_matches('/').split_once('/')) {
            (12, _) | (_, None) => ("unknown".to_owned(), "unknown".to_owned()),
            (_, Some((s, m))) => (s.to_owned(), m.to_owned()),
        };
        let elapsed = self.start.elapsed();
        metrics::counter!("coord_rpc_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code_name).increment(1);
        metrics::histogram!("coord_rpc_duration_seconds", "service" => service, "method" => method)
            .record(elapsed.as_secs_f64());
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok())
}

fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends and ends itself
    /// with UNAVAILABLE when the server shuts down.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        // Some while the call's outcome is not yet recorded.
        rpc: Option<Rpc>,
        // Set once the body was cut for shutdown: nothing more is sent.
        cut: bool,
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
    }

    impl<B> PinnedDrop for RpcBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its trailers: the client went away.
            if let Some(rpc) = this.project().rpc.take() {
                rpc.record(1);
            }
        }
    }
}

impl<B> Body for RpcBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.cut {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let code = match &frame {
                    Some(Ok(f)) => f.trailers_ref().and_then(grpc_code),
                    Some(Err(_)) => Some(2),
                    None => Some(0),
                };
                if let Some(code) = code
                    && let Some(rpc) = this.rpc.take()
                {
                    rpc.record(code);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                ready!(this.cancelled.poll(cx));
                *this.cut = true;
                if let Some(rpc) = this.rpc.take() {
                    rpc.record(14);
                }
                let mut trailers = HeaderMap::new();
                match tonic::Status::from(crate::error::Error::ShuttingDown).add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(_) => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
