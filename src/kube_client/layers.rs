//! Tower layers around every Kubernetes API request: a client-side rate limit, a timeout,
//! and a counter per verb and status code.
//!
//! Watches are long-lived streams: they are neither rate-limited (a watch held behind a
//! burst of creates would miss nothing but delay every outcome) nor timed out (the
//! watcher restarts them itself when the server closes them). Lease requests (leader
//! election) are not rate-limited either: a renewal queued behind a burst of pod creates
//! would miss its renew deadline, and there is one every `ha.retry_period` at most.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Method, Request, Response, Uri};
use tower::{BoxError, Layer, Service};

use crate::metrics::Metrics;

/// Whether the request is a watch: `watch=true` (or `1`, any spelling Go's
/// `strconv.ParseBool` takes as true) in the query, or the legacy `/watch/` path prefix.
pub fn is_watch(uri: &Uri) -> bool {
    let query_says_watch = uri.query().is_some_and(|q| {
        q.split('&').any(|pair| {
            matches!(
                pair.split_once('='),
                Some(("watch", "true" | "1" | "t" | "T" | "TRUE" | "True"))
            )
        })
    });
    query_says_watch || resource_segments(uri.path()).is_some_and(|s| s.first() == Some(&"watch"))
}

/// The Kubernetes verb of a request, as the API server's audit log and RBAC name it:
/// `get`/`list`/`watch` for GET, `create`, `update`, `patch`, `delete`/`deletecollection`.
/// A request outside the resource API (`/version`, `/openapi/v2`) is named by its method.
pub fn kube_verb(method: &Method, uri: &Uri) -> &'static str {
    let names_object = resource_segments(uri.path()).map(|s| {
        // `namespaces/<ns>/<resource>[/<name>[/<subresource>]]` or
        // `<resource>[/<name>[/<subresource>]]` (cluster-scoped, including namespaces).
        let s = match s.first() {
            Some(&"watch") => &s[1..],
            _ => s.as_slice(),
        };
        let s = match s {
            ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        s.len() >= 2
    });
    match (method, names_object) {
        (&Method::GET, Some(_)) if is_watch(uri) => "watch",
        (&Method::GET, Some(true)) => "get",
        (&Method::GET, Some(false)) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Some(false)) => "deletecollection",
        (&Method::DELETE, _) => "delete",
        (&Method::GET | &Method::HEAD, None) => "get",
        _ => "other",
    }
}

/// The path after `/api/<version>` or `/apis/<group>/<version>`, split on `/`; `None` for
/// paths outside the resource API and for discovery (`/api/v1` itself).
fn resource_segments(path: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    (!rest.is_empty()).then(|| rest.to_vec())
}

/// Whether the request is about Leases (`coordination.k8s.io`): leader election's own
/// few requests, which must not wait behind the pods' traffic.
pub fn is_lease(uri: &Uri) -> bool {
    uri.path().starts_with("/apis/coordination.k8s.io/")
}

/// Lets non-watch requests go at `qps` per second, `burst` at once, through `governor`'s
/// GCRA limiter, waiting in arrival order.
///
/// A waiting request holds nothing ahead of time: it takes its permit only when it goes.
/// A caller that gives up (the workers time out each call and retry it) drops its wait,
/// and the requests behind it move up; a reservation taken on arrival would instead stay
/// owed after the caller left, and a storm of timed-out retries would make every later
/// request wait for permits nobody uses.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Limiter>,
}

#[derive(Debug)]
struct Limiter {
    permits: DefaultDirectRateLimiter,
    /// The queue of waiting requests. Only its head polls `permits`: the others wait on
    /// this (fair, FIFO) lock, so a permit freed goes to the oldest waiter, and a hundred
    /// waiters cost one timer, not a hundred woken at every permit.
    queue: tokio::sync::Mutex<()>,
}

impl Limiter {
    /// Resolves when the request may go. Cancel-safe: dropped while waiting, it has
    /// taken no permit and leaves its place in the queue.
    async fn until_ready(&self) {
        let _head = self.queue.lock().await;
        self.permits.until_ready().await;
    }
}

impl RateLimitLayer {
    /// `qps` and `burst` of 0 count as 1 (settings validation refuses 0 anyway).
    pub fn new(qps: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(qps).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            shared: Arc::new(Limiter {
                permits: RateLimiter::direct(quota),
                queue: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let exempt = is_watch(req.uri()) || is_lease(req.uri());
        let limiter = (!exempt).then(|| Arc::clone(&self.shared));
        // The waiting happens in the returned future, not in poll_ready, so a held request
        // never blocks the client's buffer (and the watches behind it). The inner future
        // is lazy (kube's stack sends nothing until polled), so calling it now is safe.
        let response = self.inner.call(req);
        Box::pin(async move {
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            response.await
        })
    }
}

/// The request took longer than the timeout of non-watch requests.
#[derive(Debug, thiserror::Error)]
#[error("Kubernetes API request timed out after {0:?}")]
pub struct RequestTimedOut(pub Duration);

/// Bounds the time to the response headers of every request but watches.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let watch = is_watch(req.uri());
        let limit = self.limit;
        let response = self.inner.call(req);
        Box::pin(async move {
            if watch {
                return response.await.map_err(Into::into);
            }
            match tokio::time::timeout(limit, response).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(RequestTimedOut(limit)) as BoxError),
            }
        })
    }
}

/// Counts every request in `ottoscaler_kube_requests_total{verb,code}`.
#[derive(Debug, Clone)]
pub struct CountLayer {
    metrics: Arc<Metrics>,
}

impl CountLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug)]
pub struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<Request<B>> for Count<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = kube_verb(req.method(), req.uri());
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            match &result {
                Ok(response) => metrics.kube_request(verb, response.status().as_str()),
                Err(_) => metrics.kube_request(verb, "error"),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;
    use tower::ServiceExt;

    fn verb(method: Method, uri: &str) -> &'static str {
        kube_verb(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn verbs_follow_method_path_and_watch() {
        let pods = "/api/v1/namespaces/ci/pods";
        assert_eq!(verb(Method::GET, pods), "list");
        assert_eq!(
            verb(Method::GET, &format!("{pods}?labelSelector=a%3Db")),
            "list"
        );
        assert_eq!(
            verb(Method::GET, &format!("{pods}?watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(verb(Method::GET, &format!("{pods}?watch=1")), "watch");
        assert_eq!(verb(Method::GET, &format!("{pods}?watch=false")), "list");
        assert_eq!(verb(Method::GET, &format!("{pods}/otto-agent-1")), "get");
        assert_eq!(
            verb(Method::GET, &format!("{pods}/otto-agent-1/status")),
            "get"
        );
        assert_eq!(verb(Method::POST, pods), "create");
        assert_eq!(verb(Method::PUT, &format!("{pods}/p")), "update");
        assert_eq!(verb(Method::PATCH, &format!("{pods}/p/status")), "patch");
        assert_eq!(verb(Method::DELETE, &format!("{pods}/p")), "delete");
        assert_eq!(verb(Method::DELETE, pods), "deletecollection");
        assert_eq!(verb(Method::GET, "/api/v1/pods"), "list");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(verb(Method::GET, "/api/v1/namespaces/ci"), "get");
        assert_eq!(verb(Method::DELETE, "/api/v1/namespaces/ci"), "delete");
        assert_eq!(verb(Method::GET, "/api/v1/nodes/n1"), "get");
        assert_eq!(
            verb(Method::GET, "/apis/apps/v1/namespaces/ci/deployments"),
            "list"
        );
        assert_eq!(
            verb(Method::GET, "/apis/apps/v1/namespaces/ci/deployments/d"),
            "get"
        );
        assert_eq!(
            verb(Method::GET, "/api/v1/watch/namespaces/ci/pods"),
            "watch"
        );
        assert_eq!(verb(Method::GET, "/version"), "get");
        assert_eq!(verb(Method::GET, "/api/v1"), "get");
    }

    fn ok_service(
        status: u16,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone
    {
        tower::service_fn(move |_req: Request<()>| async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(())
                    .expect("response"),
            )
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).expect("request")
    }

    #[tokio::test]
    async fn watches_and_lease_requests_pass_an_empty_bucket_and_other_requests_wait() {
        let layer = RateLimitLayer::new(1, 1);
        let mut limited = layer.layer(ok_service(200));
        let list = "/api/v1/namespaces/ci/pods";
        let quick = Duration::from_millis(200);

        let first = limited.ready().await.expect("ready").call(get(list));
        tokio::time::timeout(quick, first)
            .await
            .expect("first is immediate")
            .expect("ok");
        let watch = limited
            .ready()
            .await
            .expect("ready")
            .call(get(&format!("{list}?watch=true")));
        tokio::time::timeout(quick, watch)
            .await
            .expect("watch is not held")
            .expect("ok");
        let lease = limited.ready().await.expect("ready").call(get(
            "/apis/coordination.k8s.io/v1/namespaces/ci/leases/ottoscaler",
        ));
        tokio::time::timeout(quick, lease)
            .await
            .expect("a Lease request is not held")
            .expect("ok");
        let second = limited.ready().await.expect("ready").call(get(list));
        assert!(
            tokio::time::timeout(quick, second).await.is_err(),
            "second waits ~1s"
        );
    }

    #[tokio::test]
    async fn a_burst_goes_at_once_then_requests_go_at_qps_in_arrival_order() {
        // 10 per second, burst 3: three at once, then one every 100 ms.
        let layer = RateLimitLayer::new(10, 3);
        let done = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        let requests = (0..6).map(|i| {
            let mut limited = layer.layer(ok_service(200));
            let done = Arc::clone(&done);
            async move {
                let call = limited
                    .ready()
                    .await
                    .expect("ready")
                    .call(get("/api/v1/namespaces/ci/pods"));
                call.await.expect("ok");
                let at = started.elapsed();
                done.lock().expect("lock").push((i, at));
            }
        });
        futures::future::join_all(requests).await;
        let done = done.lock().expect("lock").clone();
        let order: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5], "{done:?}");
        // The burst goes at once; the sixth waits three permit intervals (300 ms).
        assert!(done[2].1 < Duration::from_millis(100), "{done:?}");
        assert!(done[5].1 >= Duration::from_millis(290), "{done:?}");
        assert!(done[5].1 < Duration::from_secs(2), "{done:?}");
    }

    #[tokio::test]
    async fn callers_that_gave_up_leave_nothing_owed_to_a_new_request() {
        // 5 per second, burst 1: a permit every 200 ms.
        let layer = RateLimitLayer::new(5, 1);
        let list = "/api/v1/namespaces/ci/pods";
        let mut first = layer.layer(ok_service(200));
        first
            .ready()
            .await
            .expect("ready")
            .call(get(list))
            .await
            .expect("the burst lets the first one through");

        // 40 callers time out after 50 ms and retry twice, as the workers do with their
        // per-call timeout: 120 abandoned waits, 24 s of permits if each kept one.
        let callers = (0..40).map(|_| {
            let mut limited = layer.layer(ok_service(200));
            async move {
                for _ in 0..3 {
                    let call = limited.ready().await.expect("ready").call(get(list));
                    let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
                }
            }
        });
        futures::future::join_all(callers).await;

        let mut fresh = layer.layer(ok_service(200));
        let started = Instant::now();
        let call = fresh.ready().await.expect("ready").call(get(list));
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a new request is not held behind abandoned ones")
            .expect("ok");
        let waited = started.elapsed();
        // One permit interval is 200 ms; allow a busy machine three of them.
        assert!(waited < Duration::from_millis(600), "waited {waited:?}");
    }

    #[tokio::test]
    async fn requests_are_counted_by_verb_and_status() {
        let metrics = Arc::new(Metrics::default());
        let mut counted = CountLayer::new(Arc::clone(&metrics)).layer(ok_service(404));
        let req = get("/api/v1/namespaces/ci/pods/missing");
        counted
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await
            .expect("ok");

        let failing = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, BoxError>("connection refused".into())
        });
        let mut counted_failing = CountLayer::new(Arc::clone(&metrics)).layer(failing);
        let req = Request::post("/api/v1/namespaces/ci/pods")
            .body(())
            .expect("request");
        let _ = counted_failing
            .ready()
            .await
            .expect("ready")
            .call(req)
            .await;

        let text = metrics.encode();
        assert!(
            text.contains(r#"ottoscaler_kube_requests_total{verb="get",code="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ottoscaler_kube_requests_total{verb="create",code="error"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_slow_request_times_out_but_a_slow_watch_does_not() {
        let slow = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, BoxError>(Response::new(()))
        });
        let mut timed = TimeoutLayer::new(Duration::from_millis(50)).layer(slow);
        let err = timed
            .ready()
            .await
            .expect("ready")
            .call(get("/api/v1/namespaces/ci/pods"))
            .await
            .expect_err("times out");
        assert!(err.is::<RequestTimedOut>(), "{err}");
        timed
            .ready()
            .await
            .expect("ready")
            .call(get("/api/v1/namespaces/ci/pods?watch=true"))
            .await
            .expect("a watch is not timed out");
    }
}
