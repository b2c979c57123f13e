//! The Kubernetes client: which cluster and namespace, and the layers every request
//! passes (rate limit, timeout, request counter; see [`layers`]).
//!
//! Config source, first that applies:
//! 1. `--kubeconfig PATH`: the operator asked for it explicitly;
//! 2. in-cluster, when running in a pod (`KUBERNETES_SERVICE_HOST` set and the service
//!    account token mounted);
//! 3. `KUBECONFIG`, else `~/.kube/config`.
//!
//! Namespace: `kubernetes.namespace` when set, else the config's own (the pod's namespace
//! in-cluster, the kubeconfig context's), else `default`.

pub mod layers;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use rustls::pki_types::ServerName;
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder};

use crate::metrics::Metrics;
use crate::settings::KubernetesSettings;

use self::layers::{CountLayer, RateLimitLayer, TimeoutLayer};

/// Mounted into every pod with a service account; its presence (with
/// `KUBERNETES_SERVICE_HOST`) is what "running in a pod" means here.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Time to the response headers of a non-watch request. The API server answers a create
/// or delete in milliseconds; past this the connection is likely dead, and the caller's
/// retry does better than waiting on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP stack under our layers; the same type as kube's own builder gives.
type BaseService = BoxService<http::Request<Body>, http::Response<Box<DynBody>>, BoxError>;

/// How often an HTTP/2 connection to the API server is pinged, and how long the answer
/// may take before the connection is dropped (client-go uses 30 s and 15 s).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(15);
/// The same for HTTP/1.1 connections (`kubernetes.http2` off), with TCP keepalive: the
/// first probe after this much silence, then every [`TCP_PROBE_INTERVAL`], dropped after
/// [`TCP_PROBES`] unanswered (30 s + 3 x 5 s, as the HTTP/2 pings).
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
const TCP_PROBE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_PROBES: u32 = 3;

/// Time for the readiness probe's `/version` request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("--kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("in-cluster Kubernetes config: {0}")]
    InCluster(#[source] InClusterError),
    #[error("kubeconfig (KUBECONFIG or ~/.kube/config): {0}")]
    DefaultKubeconfig(#[source] KubeconfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("Kubernetes client: tls-server-name {name:?} is not a valid server name: {reason}")]
    TlsServerName { name: String, reason: String },
}

/// A client for the cluster this process should manage, and the namespace of its worker
/// pods. Reads local files only; the first request goes out when the caller makes one.
pub async fn client(
    settings: &KubernetesSettings,
    kubeconfig: Option<&Path>,
    metrics: Arc<Metrics>,
) -> Result<(Client, String), KubeClientError> {
    let mut config = load_config(kubeconfig).await?;
    // Retries are ours (the workers' capped, jittered backoff): kube's own retry layer
    // would sit inside the rate limiter and the request counter, so a throttled or
    // failing API server would be retried unseen, unpaced and uncounted.
    config.default_retry = false;
    let namespace = namespace(&settings.namespace, &config.default_namespace);
    // Validated (at least 1) at start; 1 if not.
    let connections = settings
        .http2
        .then(|| NonZeroU32::new(settings.http2_connections).unwrap_or(NonZeroU32::MIN));
    let client = base_service(config, connections)?
        // Innermost first: the timeout starts once the rate limit let the request go, and
        // the counter sees timeouts as `error`.
        .with_layer(&TimeoutLayer::new(REQUEST_TIMEOUT))
        .with_layer(&RateLimitLayer::new(settings.qps, settings.burst))
        .with_layer(&CountLayer::new(metrics))
        .build();
    Ok((client, namespace))
}

/// kube's HTTP stack (TLS, base URI, auth, extra headers) over our own connection
/// handling, for two reasons:
/// - HTTP/2 where the server offers it (ALPN) and `http2_connections` is given: the
///   requests and the watch share that many connections, in turn ([`Pools`]). kube's
///   builder speaks HTTP/1.1 only, so each request in flight holds a connection of its
///   own, with its TLS state and buffers (before `kubernetes.max_concurrent_creates`,
///   5,000 sockets and ~300 MiB at 10,000 workers starting at once). With `None`
///   (`http2` off), that is what we do too.
/// - `TCP_NODELAY`: kube leaves Nagle on (kube-rs/kube#2056), so the first request on a
///   new connection waited ~40 ms for the server's delayed ACK.
///
/// HTTP/2 pings every [`H2_PING_INTERVAL`] find a dead connection (an API server gone
/// without closing it) in seconds instead of at the next request's timeout. With a
/// proxy configured, kube's builder is used as is, since it alone knows how to tunnel.
fn base_service(
    config: Config,
    http2_connections: Option<NonZeroU32>,
) -> Result<ClientBuilder<BaseService>, KubeClientError> {
    let http2 = http2_connections.is_some();
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config).map_err(KubeClientError::Client);
    }
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(config.connect_timeout);
    if !http2 {
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        connector.set_keepalive_interval(Some(TCP_PROBE_INTERVAL));
        connector.set_keepalive_retries(Some(TCP_PROBES));
    }
    let tls = config
        .rustls_client_config()
        .map_err(KubeClientError::Client)?;
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match &config.tls_server_name {
        Some(name) => {
            let name =
                ServerName::try_from(name.clone()).map_err(|e| KubeClientError::TlsServerName {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            https.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => https,
    };
    let https = if http2 {
        https.enable_all_versions().wrap_connector(connector)
    } else {
        https.enable_http1().wrap_connector(connector)
    };
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(H2_PING_INTERVAL)
        .http2_keep_alive_timeout(H2_PING_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    // Each legacy client has a pool of its own, so over HTTP/2 each is one connection.
    let pools = http2_connections.map_or(1, NonZeroU32::get);
    let http = Pools::new((0..pools).map(|_| builder.build(https.clone())).collect());
    let service = ServiceBuilder::new()
        .map_response(|response: http::Response<Incoming>| {
            response.map(|body| Box::new(BodyExt::map_err(body, BoxError::from)) as Box<DynBody>)
        })
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(KubeClientError::Client)?)
        .layer(
            config
                .extra_headers_layer()
                .map_err(KubeClientError::Client)?,
        )
        .map_err(BoxError::from)
        .service(http);
    Ok(ClientBuilder::new(
        BoxService::new(service),
        config.default_namespace,
    ))
}

/// Requests spread in turn over a few HTTP clients, each with a pool (over HTTP/2: a
/// connection) of its own. On an API server short of CPU, one multiplexed connection
/// is read and written by one goroutine there, and everything on it (creates, deletes,
/// the pod watch) waits its turn; a few connections get the share a few client-go
/// clients would.
#[derive(Clone)]
struct Pools<C: Clone> {
    clients: Arc<[hyper_util::client::legacy::Client<C, Body>]>,
    next: Arc<AtomicUsize>,
}

impl<C: Clone> Pools<C> {
    fn new(clients: Vec<hyper_util::client::legacy::Client<C, Body>>) -> Self {
        assert!(!clients.is_empty(), "at least one HTTP client");
        Self {
            clients: clients.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<C> tower::Service<http::Request<Body>> for Pools<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    type Response = http::Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A legacy client is always ready: it queues for a connection itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.clients[n % self.clients.len()].request(request)
    }
}

/// Whether the API server answers `/version` within a few seconds; for `/readyz`.
pub async fn reachable(client: &Client) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await,
        Ok(Ok(_))
    )
}

async fn load_config(kubeconfig: Option<&Path>) -> Result<Config, KubeClientError> {
    if let Some(path) = kubeconfig {
        let kubeconfig_error = |source| KubeClientError::Kubeconfig {
            path: path.display().to_string(),
            source,
        };
        let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
        return Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(kubeconfig_error);
    }
    if in_cluster() {
        return Config::incluster().map_err(KubeClientError::InCluster);
    }
    Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .map_err(KubeClientError::DefaultKubeconfig)
}

fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty())
        && Path::new(SERVICE_ACCOUNT_TOKEN).is_file()
}

/// `configured` when set, else the config's default (kube fills it from the in-cluster
/// namespace file or the kubeconfig context), else `default`.
fn namespace(configured: &str, from_config: &str) -> String {
    [configured, from_config]
        .into_iter()
        .find(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_namespace_wins_then_the_configs_then_default() {
        assert_eq!(namespace("ci", "team-a"), "ci");
        assert_eq!(namespace("", "team-a"), "team-a");
        assert_eq!(namespace("", ""), "default");
    }

    #[tokio::test]
    async fn a_kubeconfig_file_gives_a_client_in_its_contexts_namespace() {
        let dir =
            std::env::temp_dir().join(format!("ottoscaler-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\n\
             contexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n    namespace: team-a\n\
             users:\n- name: u\n  user:\n    token: abc\n",
        )
        .expect("write");
        let metrics = Arc::new(Metrics::default());
        let settings = KubernetesSettings::default();
        let result = client(&settings, Some(&path), Arc::clone(&metrics)).await;
        let _ = std::fs::remove_dir_all(&dir);
        let (client, ns) = result.expect("client");
        assert_eq!(ns, "team-a");

        // Nothing listens on port 1: the request fails fast and is counted as an error.
        assert!(!reachable(&client).await);
        let text = metrics.encode();
        assert!(
            text.contains(r#"ottoscaler_kube_requests_total{verb="get",code="error"}"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_file_names_the_path() {
        let result = client(
            &KubernetesSettings::default(),
            Some(Path::new("/nonexistent/kubeconfig")),
            Arc::new(Metrics::default()),
        )
        .await;
        let Err(err) = result else {
            panic!("a missing kubeconfig must fail");
        };
        assert!(
            err.to_string()
                .starts_with("--kubeconfig /nonexistent/kubeconfig: "),
            "{err}"
        );
    }
}
