//! End-to-end: the compiled `ottoscaler` binary as a separate process, configured by
//! environment variables (and a template file, as the Deployment's ConfigMap does),
//! against a real redis-server, kube-apiserver + etcd, and kubesim.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use testenv::RedisServer;

mod common;

use common::ottoscaler::{
    Launch, Ottoscaler, SHORT_AND_LONG_TEMPLATES, connections_to, metric_sum, temp_dir,
};
use common::redis::{entries, pending, xadd};
use common::wait_until;

const STREAM: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";

fn results(port: u16) -> Vec<BTreeMap<String, String>> {
    entries(port, RESULTS)
}

fn pending_count(port: u16) -> u64 {
    pending(port, STREAM, "ottoscaler")
}

async fn live_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("managed-by=ottoscaler"))
        .await
        .expect("list pods")
        .items
}

/// Waits until no ottoscaler pod is left in `ns`.
async fn wait_no_pods(ns: &str, timeout: Duration) {
    let env = testenv::shared();
    let pods: Api<Pod> = Api::namespaced(env.client(), ns);
    let deadline = Instant::now() + timeout;
    while !live_pods(&pods).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "pods left: {}",
            testenv::pods_summary(env.client(), ns).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A namespace, a redis-server and the binary running against both.
async fn start(label: &str) -> (String, RedisServer, Ottoscaler) {
    start_with(label, &[]).await
}

/// [`start`], with these environment variables set for ottoscaler.
async fn start_with(label: &str, env: &[(&str, &str)]) -> (String, RedisServer, Ottoscaler) {
    let ns = testenv::shared().namespace(label).await;
    let redis = RedisServer::start();
    let dir = temp_dir(&format!("e2e-{label}"));
    let launch = env.iter().fold(
        Launch::new(redis.port(), &ns, &dir)
            .config(SHORT_AND_LONG_TEMPLATES)
            .consumer(&format!("ottoscaler-e2e-{label}")),
        |launch, (key, value)| launch.env(key, value),
    );
    let ottoscaler = Ottoscaler::start(launch);
    (ns, redis, ottoscaler)
}

#[tokio::test]
async fn the_binary_runs_the_seed_event_end_to_end_and_stops_cleanly() {
    let env = testenv::shared();
    let (ns, mut redis, mut ottoscaler) = start("e2e").await;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let port = redis.port();
    ottoscaler.wait_http("/healthz", 200, Duration::from_secs(30));
    ottoscaler.wait_http("/readyz", 200, Duration::from_secs(30));

    // The seed's event, with the real redis-cli.
    let id = xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "3"),
            ("task_id", "task-123"),
        ],
    );
    wait_until("3 results", Duration::from_secs(60), || {
        results(port).len() >= 3
    })
    .await;
    let got = results(port);
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        assert_eq!(r["task_id"], "task-123");
        assert_eq!(r["event_id"], id);
        assert_eq!(r["outcome"], "succeeded");
        assert_eq!(r["exit_code"], "0");
        assert!(r["pod"].starts_with("otto-agent-task-123-"));
        assert!(r.contains_key("duration_ms") && r.contains_key("finished_at"));
    }
    let mut indexes: Vec<_> = got.iter().map(|r| r["worker_index"].clone()).collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    assert_eq!(pending_count(port), 0, "no pending entries left");
    wait_no_pods(&ns, Duration::from_secs(30)).await;

    // Metrics agree with what happened.
    let accepted =
        ottoscaler.metric("ottoscaler_events_total{type=\"scale_up\",result=\"accepted\"}");
    assert_eq!(accepted, Some(1.0));
    let succeeded = metric_sum(
        &ottoscaler.metrics(),
        "ottoscaler_workers_finished_total",
        &[r#"outcome="succeeded""#, r#"template="default""#],
    );
    assert_eq!(succeeded, 3.0);
    let creates = ottoscaler.metric("ottoscaler_kube_requests_total{verb=\"create\",code=\"201\"}");
    assert_eq!(creates, Some(3.0));
    // Each created pod's first watch event is timed once.
    let first_seen = ottoscaler.metric("ottoscaler_pod_watch_delay_seconds_count");
    assert_eq!(first_seen, Some(3.0));
    // A worker ends when ottoscaler's own watch delivers its pod's DELETED, which may be
    // a moment after the list above found the pods gone.
    wait_until("no worker active", Duration::from_secs(10), || {
        ottoscaler.metric("ottoscaler_workers_active") == Some(0.0)
    })
    .await;

    // Readiness follows Redis.
    redis.stop();
    ottoscaler.wait_http("/readyz", 503, Duration::from_secs(20));
    assert_eq!(
        ottoscaler.get("/healthz").0,
        200,
        "alive while Redis is away"
    );
    redis.start_again();
    ottoscaler.wait_http("/readyz", 200, Duration::from_secs(30));

    // Long-running workers, then SIGTERM: exit 0 in time, pods left for the next instance.
    xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "2"),
            ("task_id", "task-long"),
            ("template", "long"),
        ],
    );
    wait_until("long pods acknowledged", Duration::from_secs(30), || {
        pending_count(port) == 0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_pods(&pods).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "{}",
            testenv::pods_summary(env.client(), &ns).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let status = ottoscaler.stop(Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status after SIGTERM\n{}",
        ottoscaler.log_tail(8000)
    );
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let left = live_pods(&pods).await;
    assert_eq!(left.len(), 2, "running pods are left alone");
    assert!(left.iter().all(|p| p.metadata.deletion_timestamp.is_none()));
    let log = ottoscaler.log();
    assert!(log.contains("task_id"), "worker log lines carry task_id");
}

/// Every request and the watch share a few HTTP/2 connections to the API server
/// (`kubernetes.http2_connections`, default 4, plus one for the leader elector's Lease):
/// a burst of creates does not open a connection per request in flight (over HTTP/1.1
/// it did, and each one kept its TLS state and buffers).
#[tokio::test]
async fn a_burst_of_creates_shares_a_few_connections_to_the_api_server() {
    let connections = burst_of_creates("h2", &[]).await;
    // An HTTP/1.1 pool would still hold an idle connection per create that was in flight.
    assert!(
        (1..=HTTP2_CONNECTIONS).contains(&connections),
        "{connections} connections to the API server after 50 concurrent creates"
    );
}

/// The default `kubernetes.http2_connections` plus the leader elector's own.
const HTTP2_CONNECTIONS: usize = 4 + 1;

/// `kubernetes.http2 = false`: HTTP/1.1, as the stock kube client, a connection per
/// request in flight; the workers run as with HTTP/2.
#[tokio::test]
async fn with_http2_off_a_burst_of_creates_opens_connections_of_their_own() {
    let connections = burst_of_creates("h1", &[("OTTOSCALER_KUBERNETES__HTTP2", "false")]).await;
    assert!(
        connections > HTTP2_CONNECTIONS,
        "{connections} connections to the API server after 50 concurrent creates over HTTP/1.1"
    );
}

/// Starts ottoscaler with `env`, has it create 50 pods at once (the most one event may
/// ask for), and returns how many connections it then holds to the API server; then
/// scales the task down and waits until its pods are gone.
async fn burst_of_creates(label: &str, env_vars: &[(&str, &str)]) -> usize {
    let env = testenv::shared();
    let (ns, redis, mut ottoscaler) = start_with(label, env_vars).await;
    let port = redis.port();
    ottoscaler.wait_http("/readyz", 200, Duration::from_secs(30));
    let apiserver_port: u16 = env
        .server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the server URL ends with its port");

    let pod_count = 50;
    let count = pod_count.to_string();
    xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", &count),
            ("task_id", "task-burst"),
            ("template", "long"),
        ],
    );
    let created = "ottoscaler_kube_requests_total{verb=\"create\",code=\"201\"}";
    wait_until("all creates answered", Duration::from_secs(60), || {
        ottoscaler.metric(created) == Some(f64::from(pod_count))
    })
    .await;
    let connections = connections_to(ottoscaler.pid(), apiserver_port);

    xadd(
        port,
        STREAM,
        &[("type", "scale_down"), ("task_id", "task-burst")],
    );
    wait_no_pods(&ns, Duration::from_secs(60)).await;
    connections
}
