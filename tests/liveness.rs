//! `/healthz` asks the actor system: with the real Supervisor on the test control plane
//! it answers 200, and 503 naming the Supervisor while a test hook wedges the
//! Supervisor's mailbox, so Kubernetes' liveness probe would restart such a process.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::ottoscaler::http::{Health, serve_on};
use ::ottoscaler::messages::health::Wedge;
use ::ottoscaler::metrics::Metrics;
use common::*;

#[actix_rt::test]
async fn healthz_fails_while_the_supervisor_is_wedged_and_recovers() {
    let h = Harness::start("liveness", &test_settings()).await;
    let health = Arc::new(Health::with_liveness_timeout(Duration::from_millis(500)));
    health.watch("supervisor", h.supervisor.clone().recipient());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/healthz", listener.local_addr().expect("addr"));
    let server = serve_on(listener, health, Arc::new(Metrics::default())).expect("serve");
    let handle = server.handle();
    actix_rt::spawn(server);

    let get = |url: String| async move {
        tokio::task::spawn_blocking(move || common::ottoscaler::http_get(&url))
            .await
            .expect("probe")
    };
    assert_eq!(get(url.clone()).await, (200, "ok".to_string()));

    h.supervisor.do_send(Wedge {
        for_: Duration::from_secs(5),
    });
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not alive: supervisor did not answer within 500ms");

    // The wedge over, the same Supervisor answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(url.clone()).await.0 != 200 {
        assert!(Instant::now() < deadline, "healthz never recovered");
    }
    assert!(h.status().await.ready, "the Supervisor carried on");
    handle.stop(true).await;
}
