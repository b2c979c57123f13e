//! The operations endpoint on `http.addr`: `/healthz` (the process runs), `/readyz`
//! (Redis and the Kubernetes API are reachable), `/metrics` (OpenMetrics text).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::metrics::Metrics;

/// The content type Prometheus asks for and [`Metrics::encode`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds a stopping server gives open requests; scrapes and probes are quick, and the
/// process's own shutdown budget is short.
const SHUTDOWN_GRACE_SECS: u64 = 2;

/// What `/readyz` reports. The Redis reader and the pod watch set their flag on every
/// success and failure, so readiness follows the real connections. Both start false: a
/// process that has not reached either yet is not ready.
#[derive(Debug, Default)]
pub struct Health {
    redis: AtomicBool,
    kube: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_redis(&self, reachable: bool) {
        self.redis.store(reachable, Ordering::Relaxed);
    }

    pub fn set_kube(&self, reachable: bool) {
        self.kube.store(reachable, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.redis.load(Ordering::Relaxed) && self.kube.load(Ordering::Relaxed)
    }

    /// `ready`, or what is missing: `not ready: redis unreachable, pod watch not up`.
    pub fn describe(&self) -> String {
        let missing: Vec<&str> = [
            (self.redis.load(Ordering::Relaxed), "redis unreachable"),
            (self.kube.load(Ordering::Relaxed), "pod watch not up"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect();
        if missing.is_empty() {
            "ready".to_string()
        } else {
            format!("not ready: {}", missing.join(", "))
        }
    }
}

/// Binds `addr` and returns the running server; the caller spawns it
/// (`actix_rt::spawn(server)` or `tokio::spawn`) and stops it with
/// `server.handle().stop(true)`. Signals are left to the caller's shutdown sequence.
pub fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<Server, std::io::Error> {
    serve_on(TcpListener::bind(addr)?, health, metrics)
}

/// [`serve`] on a listener already bound, for example to port 0 in tests.
pub fn serve_on(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<Server, std::io::Error> {
    let server = HttpServer::new(move || {
        App::new().configure(routes(Arc::clone(&health), Arc::clone(&metrics)))
    })
    // One worker: the traffic is a probe or a scrape every few seconds.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .listen(listener)?
    .run();
    Ok(server)
}

/// The three routes with their shared state; also what the unit tests mount.
pub fn routes(health: Arc<Health>, metrics: Arc<Metrics>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(health))
            .app_data(web::Data::from(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text));
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let status = if health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(health.describe())
}

async fn metrics_text(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(OPENMETRICS_CONTENT_TYPE)
        .body(metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(health: &Arc<Health>, path: &str) -> (StatusCode, String, String) {
        let app = test::init_service(
            App::new().configure(routes(Arc::clone(health), Arc::new(Metrics::default()))),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = test::read_body(response).await;
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[actix_web::test]
    async fn healthz_is_ok_even_when_nothing_is_reachable() {
        let health = Arc::new(Health::new());
        assert_eq!(get(&health, "/healthz").await.0, StatusCode::OK);
    }

    #[actix_web::test]
    async fn readyz_names_what_is_not_reachable() {
        let health = Arc::new(Health::new());
        health.set_kube(true);
        let (status, _, body) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: redis unreachable");

        health.set_redis(true);
        let (status, _, body) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ready");

        health.set_kube(false);
        assert_eq!(
            get(&health, "/readyz").await.2,
            "not ready: pod watch not up"
        );
    }

    #[actix_web::test]
    async fn metrics_are_openmetrics_text() {
        let (status, content_type, body) = get(&Arc::new(Health::new()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(body.contains("ottoscaler_workers_active"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[actix_web::test]
    async fn the_server_answers_on_a_real_socket_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = serve_on(
            listener,
            Arc::new(Health::new()),
            Arc::new(Metrics::default()),
        )
        .expect("serve");
        let handle = server.handle();
        actix_rt::spawn(server);

        let mut stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("answer in time")
        .expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("ok"), "{response}");

        handle.stop(true).await;
    }
}
