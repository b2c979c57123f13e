//! The operations endpoint on `http.addr`: `/healthz` (the actors answer), `/readyz`
//! (Redis and the Kubernetes API are reachable), `/metrics` (OpenMetrics text).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use futures::future::join_all;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::messages::health::Ping;
use crate::metrics::Metrics;

/// `http.liveness_timeout`'s default: under the Deployment's probe `timeoutSeconds` (3).
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type Prometheus asks for and [`Metrics::encode`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds a stopping server gives open requests; scrapes and probes are quick, and the
/// process's own shutdown budget is short.
const SHUTDOWN_GRACE_SECS: u64 = 2;

/// What `/readyz` reports. The Redis reader and the pod watch set their flag on every
/// success and failure, so readiness follows the real connections. Both start false: a
/// process that has not reached either yet is not ready.
///
/// Liveness is separate: `/healthz` asks each actor registered with [`Health::watch`]
/// for a [`Ping`] answer within the liveness timeout, so a wedged actor system fails the
/// probe and Kubernetes restarts the container.
#[derive(Debug)]
pub struct Health {
    redis: AtomicBool,
    kube: AtomicBool,
    /// The actors `/healthz` pings, by the name its answer gives.
    actors: Mutex<Vec<(&'static str, Recipient<Ping>)>>,
    liveness_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_liveness_timeout(DEFAULT_LIVENESS_TIMEOUT)
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// `http.liveness_timeout`: how long each actor has to answer a `/healthz` ping.
    pub fn with_liveness_timeout(liveness_timeout: Duration) -> Self {
        Self {
            redis: AtomicBool::new(false),
            kube: AtomicBool::new(false),
            actors: Mutex::new(Vec::new()),
            liveness_timeout,
        }
    }

    /// `/healthz` pings `actor` from now on, naming it `name` when it does not answer.
    pub fn watch(&self, name: &'static str, actor: Recipient<Ping>) {
        if let Ok(mut actors) = self.actors.lock() {
            actors.push((name, actor));
        }
    }

    /// Pings every watched actor at once; `Err` names those that did not answer in time
    /// (or have stopped). With none watched yet (starting), the process counts as alive.
    pub async fn check_alive(&self) -> Result<(), String> {
        let actors: Vec<(&'static str, Recipient<Ping>)> = match self.actors.lock() {
            Ok(actors) => actors.clone(),
            Err(_) => return Err("liveness state poisoned".into()),
        };
        let timeout = self.liveness_timeout;
        let answers = join_all(actors.into_iter().map(|(name, actor)| async move {
            match tokio::time::timeout(timeout, actor.send(Ping)).await {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some(format!("{name} stopped")),
                Err(_) => Some(format!(
                    "{name} did not answer within {}",
                    humantime::format_duration(timeout)
                )),
            }
        }))
        .await;
        let stuck: Vec<String> = answers.into_iter().flatten().collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!("not alive: {}", stuck.join(", ")))
        }
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

/// 200 `ok` when every watched actor answers a ping in time, else 503 naming the ones
/// that did not: Kubernetes then restarts a process whose actors are stuck.
async fn healthz(health: web::Data<Health>) -> HttpResponse {
    match health.check_alive().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ok"),
        Err(stuck) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(stuck),
    }
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
    async fn healthz_is_ok_when_no_actor_is_watched_yet_even_when_nothing_is_reachable() {
        let health = Arc::new(Health::new());
        assert_eq!(get(&health, "/healthz").await.0, StatusCode::OK);
    }

    /// Answers pings, unless wedged.
    struct Pinged;

    impl actix::Actor for Pinged {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<Ping> for Pinged {
        type Result = ();

        fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
    }

    impl actix::Handler<crate::messages::health::Wedge> for Pinged {
        type Result = ();

        fn handle(&mut self, msg: crate::messages::health::Wedge, ctx: &mut Self::Context) {
            use actix::AsyncContext;
            ctx.wait(actix::fut::wrap_future(tokio::time::sleep(msg.for_)));
        }
    }

    #[actix_web::test]
    async fn healthz_fails_naming_a_wedged_actor_and_recovers() {
        use actix::Actor;
        let health = Arc::new(Health::with_liveness_timeout(Duration::from_millis(200)));
        let actor = Pinged.start();
        health.watch("supervisor", actor.clone().recipient());
        assert_eq!(get(&health, "/healthz").await.0, StatusCode::OK);

        actor.do_send(crate::messages::health::Wedge {
            for_: Duration::from_secs(2),
        });
        let (status, _, body) = get(&health, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not alive: supervisor did not answer within 200ms");

        // Once the wedge ends the actor answers again (bounded wait, no fixed sleep).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while get(&health, "/healthz").await.0 != StatusCode::OK {
            assert!(std::time::Instant::now() < deadline, "never alive again");
        }
    }

    /// Stops as soon as it starts.
    struct Stopping;

    impl actix::Actor for Stopping {
        type Context = actix::Context<Self>;

        fn started(&mut self, ctx: &mut Self::Context) {
            use actix::ActorContext;
            ctx.stop();
        }
    }

    impl actix::Handler<Ping> for Stopping {
        type Result = ();

        fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
    }

    #[actix_web::test]
    async fn healthz_fails_when_an_actor_has_stopped() {
        use actix::Actor;
        let health = Arc::new(Health::new());
        let addr = Stopping.start();
        health.watch("reader", addr.clone().recipient());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while addr.connected() {
            assert!(std::time::Instant::now() < deadline, "never stopped");
            tokio::task::yield_now().await;
        }
        let (status, _, body) = get(&health, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not alive: reader stopped");
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
