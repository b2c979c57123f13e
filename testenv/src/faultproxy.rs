//! A fault-injecting HTTP proxy between a Kubernetes client and the test apiserver.
//!
//! ```text
//!  client ──http://127.0.0.1:P──► FaultProxy ──https (no verify)──► kube-apiserver
//!                                   │ non-watch requests: a configured share is
//!                                   │ answered 429 / 500 / 503, reset, or delayed
//! ```
//!
//! The client speaks plain HTTP on loopback (its kubeconfig names
//! `http://127.0.0.1:<port>`, see [`FaultProxy::write_kubeconfig`]); its bearer token
//! passes through untouched. Watches (`watch=true`, `/watch/` paths) are always
//! forwarded and streamed: the faults are those a busy or restarting control plane
//! gives to ordinary requests. Every injected fault is counted ([`FaultStats`]), so a
//! test can compare what the client saw with what was done to it.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What share (0.0 to 1.0) of non-watch requests gets which fault. The shares add up
/// to at most 1; the rest is forwarded untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Answered `429 Too Many Requests` with `Retry-After: 1`.
    pub too_many_requests: f64,
    /// Answered `500 Internal Server Error`.
    pub internal_error: f64,
    /// Answered `503 Service Unavailable`.
    pub unavailable: f64,
    /// The connection is reset (RST) after the request was read, without an answer.
    pub reset: f64,
    /// Forwarded after a delay drawn from `delay_range`.
    pub delay: f64,
    /// Shortest and longest injected delay.
    pub delay_range: (Duration, Duration),
}

impl Faults {
    /// Forwards everything untouched (a proxy that only counts).
    pub fn none() -> Faults {
        Faults {
            too_many_requests: 0.0,
            internal_error: 0.0,
            unavailable: 0.0,
            reset: 0.0,
            delay: 0.0,
            delay_range: (Duration::from_millis(200), Duration::from_millis(1500)),
        }
    }

    /// The share of requests that get any fault.
    pub fn total(&self) -> f64 {
        self.too_many_requests + self.internal_error + self.unavailable + self.reset + self.delay
    }

    fn decide(&self) -> Fault {
        let roll: f64 = rand::random();
        let mut edge = 0.0;
        for (share, fault) in [
            (
                self.too_many_requests,
                Fault::Status(StatusCode::TOO_MANY_REQUESTS),
            ),
            (
                self.internal_error,
                Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            (
                self.unavailable,
                Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
            ),
            (self.reset, Fault::Reset),
            (self.delay, Fault::Delay),
        ] {
            edge += share;
            if roll < edge {
                return fault;
            }
        }
        Fault::None
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::none()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Status(StatusCode),
    Reset,
    Delay,
}

/// What the proxy saw and did, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Non-watch requests received (faulted or not).
    pub requests: u64,
    /// Watch requests received (never faulted).
    pub watches: u64,
    /// Requests passed on to the apiserver (delayed ones included).
    pub forwarded: u64,
    /// Answered 429.
    pub too_many_requests: u64,
    /// Answered 500.
    pub internal_error: u64,
    /// Answered 503.
    pub unavailable: u64,
    /// Connections reset.
    pub resets: u64,
    /// Requests delayed, then forwarded.
    pub delays: u64,
    /// Forwarding failed (the apiserver did not answer); answered 502.
    pub upstream_errors: u64,
    /// Pod creates that waited because creates were held.
    pub creates_held: u64,
    /// Pod creates in flight (received, not yet answered) right now.
    pub creates_in_flight: u64,
    /// The most pod creates that were ever in flight at once.
    pub max_creates_in_flight: u64,
}

impl FaultStats {
    /// Every fault injected (statuses, resets and delays).
    pub fn injected(&self) -> u64 {
        self.too_many_requests + self.internal_error + self.unavailable + self.resets + self.delays
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    watches: AtomicU64,
    forwarded: AtomicU64,
    too_many_requests: AtomicU64,
    internal_error: AtomicU64,
    unavailable: AtomicU64,
    resets: AtomicU64,
    delays: AtomicU64,
    upstream_errors: AtomicU64,
    creates_held: AtomicU64,
    creates_in_flight: AtomicU64,
    max_creates_in_flight: AtomicU64,
}

/// Counts one pod create in flight while it lives.
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn new(counters: &'a Counters) -> Self {
        let now = counters.creates_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters
            .max_creates_in_flight
            .fetch_max(now, Ordering::SeqCst);
        InFlight(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.creates_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct State {
    /// `https://host:port` of the apiserver, without a trailing slash.
    upstream: String,
    // A std mutex: nothing awaits while it is held.
    faults: Mutex<Faults>,
    /// `true` while pod creates are held.
    hold: tokio::sync::watch::Sender<bool>,
    counters: Counters,
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
}

/// A running proxy; stops (with every connection through it) when dropped.
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream`
    /// (`https://127.0.0.1:PORT`, the apiserver's URL) without verifying its
    /// certificate. Runs on the current tokio runtime.
    pub async fn start(upstream: &str, faults: Faults) -> Result<FaultProxy> {
        let upstream: Uri = upstream
            .parse()
            .with_context(|| format!("upstream {upstream:?} is not a URL"))?;
        let authority = upstream
            .authority()
            .with_context(|| format!("upstream {upstream} has no host"))?;
        let upstream = format!("https://{authority}");
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot bind the fault proxy")?;
        let port = listener.local_addr().context("no local address")?.port();
        let state = Arc::new(State {
            upstream,
            faults: Mutex::new(faults),
            hold: tokio::sync::watch::Sender::new(false),
            counters: Counters::default(),
            client: Client::builder(TokioExecutor::new()).build(https_without_verification()?),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(FaultProxy { port, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .state
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Holds pod creates from now on (`true`): each waits in the proxy, unforwarded
    /// and unanswered, until `hold_creates(false)` releases them all.
    pub fn hold_creates(&self, hold: bool) {
        self.state.hold.send_replace(hold);
    }

    /// Waits until at least `n` pod creates are in flight (held or not), for at most
    /// `timeout`; returns whether they are.
    pub async fn wait_creates_in_flight(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stats().creates_in_flight >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the proxy saw and injected so far.
    pub fn stats(&self) -> FaultStats {
        let c = &self.state.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            requests: get(&c.requests),
            watches: get(&c.watches),
            forwarded: get(&c.forwarded),
            too_many_requests: get(&c.too_many_requests),
            internal_error: get(&c.internal_error),
            unavailable: get(&c.unavailable),
            resets: get(&c.resets),
            delays: get(&c.delays),
            upstream_errors: get(&c.upstream_errors),
            creates_held: get(&c.creates_held),
            creates_in_flight: get(&c.creates_in_flight),
            max_creates_in_flight: get(&c.max_creates_in_flight),
        }
    }

    /// Writes a kubeconfig that reaches the apiserver through this proxy (plain HTTP,
    /// bearer `token`, context namespace `namespace`).
    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: faultproxy
  cluster:
    server: {server:?}
users:
- name: admin
  user:
    token: {token:?}
contexts:
- name: faultproxy
  context:
    cluster: faultproxy
    user: admin
    namespace: {namespace:?}
current-context: faultproxy
",
            server = self.url(),
        );
        std::fs::write(path, yaml).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connections are tasks of the accept loop's JoinSet: they go with it.
        self.task.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .field("upstream", &self.state.upstream)
            .field("stats", &self.stats())
            .finish()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "fault proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    // Valid while hyper serves the connection, which is when a request handler runs.
    let fd = stream.as_raw_fd();
    let service = service_fn(move |req| handle(req, state.clone(), fd));
    // An error ends the connection: a reset we injected, or the client went away.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    fd: RawFd,
) -> Result<Response<ProxyBody>, BoxError> {
    let counters = &state.counters;
    if is_watch(req.uri()) {
        bump(&counters.watches);
        return Ok(forward(req, &state).await);
    }
    bump(&counters.requests);
    let _in_flight = is_pod_create(&req).then(|| InFlight::new(counters));
    if _in_flight.is_some() && *state.hold.borrow() {
        bump(&counters.creates_held);
        let mut released = state.hold.subscribe();
        // The sender lives in `state`, so this ends only when the hold is lifted.
        let _ = released.wait_for(|held| !held).await;
    }
    let faults = state
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match faults.decide() {
        Fault::None => {}
        Fault::Status(code) => {
            bump(match code {
                StatusCode::TOO_MANY_REQUESTS => &counters.too_many_requests,
                StatusCode::INTERNAL_SERVER_ERROR => &counters.internal_error,
                _ => &counters.unavailable,
            });
            return Ok(status_response(code, "injected by the testenv fault proxy"));
        }
        Fault::Reset => {
            bump(&counters.resets);
            reset_on_close(fd);
            return Err("connection reset injected by the testenv fault proxy".into());
        }
        Fault::Delay => {
            bump(&counters.delays);
            let (min, max) = faults.delay_range;
            let delay = if max > min {
                rand::rng().random_range(min..=max)
            } else {
                min
            };
            tokio::time::sleep(delay).await;
        }
    }
    Ok(forward(req, &state).await)
}

/// `POST /api/v1/namespaces/<ns>/pods`: a pod create.
fn is_pod_create<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST && req.uri().path().ends_with("/pods")
}

/// Sends the request on to the apiserver and streams its answer back.
async fn forward(req: Request<Incoming>, state: &State) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match format!("{}{path}", state.upstream).parse() {
        Ok(uri) => uri,
        Err(err) => {
            return status_response(StatusCode::BAD_REQUEST, &format!("bad path: {err}"));
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.version = http::Version::HTTP_11;
    bump(&state.counters.forwarded);
    match state.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(err) => {
            bump(&state.counters.upstream_errors);
            status_response(
                StatusCode::BAD_GATEWAY,
                &format!("the apiserver did not answer: {err}"),
            )
        }
    }
}

/// A Kubernetes `Status` answer, as the apiserver itself sends for errors.
fn status_response(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let reason = match code {
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => "InternalError",
    };
    let mut status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if code == StatusCode::TOO_MANY_REQUESTS {
        status["details"] = serde_json::json!({ "retryAfterSeconds": 1 });
    }
    let body = Full::new(Bytes::from(status.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Whether the request is a watch: `watch=true` (or `1`) in the query, or a legacy
/// `/watch/` path.
fn is_watch(uri: &Uri) -> bool {
    let query = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch=True" | "watch=t"))
    });
    query || uri.path().contains("/watch/")
}

/// Headers that describe one connection, not the message: never forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Makes the kernel answer the socket's close with RST instead of FIN (SO_LINGER 0):
/// the client sees "connection reset by peer", as when a load balancer drops it.
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: `fd` is the open socket of the connection whose request is being handled
    // (hyper owns it until the handler's error closes it); `linger` outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast::<libc::c_void>(),
            len,
        );
    }
}

/// An HTTPS connector that accepts any certificate: the proxy's upstream is the test
/// apiserver on loopback, whose certificate the client already trusts through the proxy.
fn https_without_verification() -> Result<HttpsConnector<HttpConnector>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build())
}

/// Accepts every server certificate; still checks the handshake signatures.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_recognised_by_query_and_path() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert!(is_watch(&uri("/api/v1/namespaces/a/pods?watch=true&rv=1")));
        assert!(is_watch(&uri(
            "/api/v1/namespaces/a/pods?labelSelector=x&watch=1"
        )));
        assert!(is_watch(&uri("/api/v1/watch/namespaces/a/pods")));
        assert!(!is_watch(&uri("/api/v1/namespaces/a/pods?watch=false")));
        assert!(!is_watch(&uri("/api/v1/namespaces/a/pods/watcher")));
    }

    #[test]
    fn shares_split_the_requests() {
        let faults = Faults {
            too_many_requests: 0.25,
            internal_error: 0.25,
            unavailable: 0.25,
            reset: 0.25,
            ..Faults::none()
        };
        assert!((faults.total() - 1.0).abs() < 1e-9);
        let mut seen = [0u32; 5];
        for _ in 0..4000 {
            let i = match faults.decide() {
                Fault::Status(StatusCode::TOO_MANY_REQUESTS) => 0,
                Fault::Status(StatusCode::INTERNAL_SERVER_ERROR) => 1,
                Fault::Status(_) => 2,
                Fault::Reset => 3,
                Fault::Delay | Fault::None => 4,
            };
            seen[i] += 1;
        }
        assert_eq!(seen[4], 0, "{seen:?}");
        assert!(
            seen[..4].iter().all(|n| (800..1200).contains(n)),
            "{seen:?}"
        );
        assert!(matches!(Faults::none().decide(), Fault::None));
    }
}
