//! The client-side rate limit (`kubernetes.qps`, `kubernetes.burst`) of the real client
//! against the real kube-apiserver: callers that gave up (a timed-out call, as the
//! workers time out and retry each call) leave nothing behind, so a new request waits
//! about one permit interval, not behind every abandoned wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use ottoscaler::kube_client;
use ottoscaler::metrics::Metrics;
use ottoscaler::settings::KubernetesSettings;

mod common;

use common::ottoscaler::metric_sum;

const QPS: u32 = 5;
const CALLERS: usize = 30;
const ATTEMPTS: usize = 3;
/// Each caller's timeout per attempt (the workers' is 15 s, with qps 50).
const CALLER_TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_is_not_held_behind_callers_that_timed_out() {
    let env = testenv::shared();
    let ns = env.namespace("rate-limit").await;
    let metrics = Arc::new(Metrics::new());
    let settings = KubernetesSettings {
        namespace: ns.clone(),
        qps: QPS,
        burst: 1,
        ..KubernetesSettings::default()
    };
    let (client, namespace) =
        kube_client::client(&settings, Some(env.kubeconfig_path()), Arc::clone(&metrics))
            .await
            .expect("client");
    assert_eq!(namespace, ns);
    let pods: Api<Pod> = Api::namespaced(client, &ns);

    // 30 callers, 3 attempts each, every attempt given up after 300 ms: 90 waits
    // abandoned within about a second, 18 s of permits at 5 per second if each one
    // kept its place.
    let storm = Instant::now();
    let callers = (0..CALLERS).map(|_| {
        let pods = pods.clone();
        async move {
            let mut answered = 0;
            let params = ListParams::default();
            for _ in 0..ATTEMPTS {
                let list = pods.list(&params);
                if let Ok(Ok(_)) = tokio::time::timeout(CALLER_TIMEOUT, list).await {
                    answered += 1;
                }
            }
            answered
        }
    });
    let answered: usize = futures::future::join_all(callers).await.into_iter().sum();
    let storm = storm.elapsed();

    // The limit still held during the storm: at most the burst plus qps per second.
    let sent = metric_sum(
        &metrics.encode(),
        "ottoscaler_kube_requests_total",
        &[r#"verb="list""#],
    );
    let allowed = 1.0 + f64::from(QPS) * storm.as_secs_f64() + 1.0;
    assert!(
        sent <= allowed,
        "{sent} lists sent in {storm:?}, more than the limit allows ({allowed})"
    );
    assert!(
        answered < CALLERS * ATTEMPTS,
        "the callers must have given up on some requests for this test to mean anything"
    );

    // A new request now waits for one permit (200 ms), not for the abandoned ones.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), pods.list(&ListParams::default()))
        .await
        .expect("the new request is answered within 10 s")
        .expect("the list succeeds");
    let waited = started.elapsed();
    eprintln!(
        "storm {storm:?}: {answered} of {} attempts answered, {sent} lists sent; \
         a new request then took {waited:?}",
        CALLERS * ATTEMPTS
    );
    // One permit interval plus the API server's answer; a busy machine gets a margin.
    assert!(
        waited < Duration::from_millis(1500),
        "a new request waited {waited:?} after {} abandoned calls",
        CALLERS * ATTEMPTS - answered
    );
}
