//! A crash between "pods created" and XACK must neither lose the event nor run any
//! worker twice (docs/contract.md section 2). Each ottoscaler instance here is the real set
//! of actors (RedisReader, Supervisor, PodWatcher, ResultsPublisher) in an actix System
//! of its own thread; "crashing" tears that System down at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};

use ottoscaler::actors::pod_watcher::PodWatcher;
use ottoscaler::actors::redis_reader::{ReaderConfig, RedisReader};
use ottoscaler::actors::results_publisher::{PublisherConfig, ResultsPublisher};
use ottoscaler::actors::supervisor::{Supervisor, SupervisorConfig};
use ottoscaler::actors::worker_pod::WorkerEnv;
use ottoscaler::http::Health;
use ottoscaler::messages::supervisor::{EventAccepted, EventRefused};
use ottoscaler::messages::{EventLimits, ScaleEvent};
use ottoscaler::metrics::Metrics;
use ottoscaler::pods::resolve_templates;
use ottoscaler::settings::Settings;
use testenv::RedisServer;

use common::redis::{entries, pending, redis_cli};
use common::{RUN_SECONDS, sim_template, wait_until};

/// Stands between the reader and the Supervisor: forwards the event, and once the
/// Supervisor has accepted it (pods created), stops the whole System before the
/// reader can acknowledge: a crash at the worst moment.
struct CrashAfterAccept {
    supervisor: Addr<Supervisor>,
    crashed: Arc<AtomicBool>,
}

impl Actor for CrashAfterAccept {
    type Context = Context<Self>;
}

impl Handler<ScaleEvent> for CrashAfterAccept {
    type Result = ResponseFuture<Result<EventAccepted, EventRefused>>;

    fn handle(&mut self, event: ScaleEvent, _ctx: &mut Self::Context) -> Self::Result {
        let supervisor = self.supervisor.clone();
        let crashed = self.crashed.clone();
        Box::pin(async move {
            let answer = supervisor.send(event).await;
            assert!(
                matches!(answer, Ok(Ok(_))),
                "first instance accepted: {answer:?}"
            );
            crashed.store(true, Ordering::SeqCst);
            System::current().stop();
            // Never answer: the reader must not get to XACK.
            std::future::pending().await
        })
    }
}

fn settings(redis_url: &str, namespace: &str) -> Settings {
    let mut s = Settings::default();
    s.redis.url = redis_url.to_string();
    s.redis.consumer = "crash-test-0".into();
    s.redis.claim_idle = Duration::from_secs(60);
    s.kubernetes.namespace = namespace.to_string();
    sim_template(&mut s, "default", &[(RUN_SECONDS, "1")]);
    s
}

/// Starts one instance's actors in the current System. With `crash`, events go
/// through [`CrashAfterAccept`].
fn start_instance(settings: &Settings, crash: Option<Arc<AtomicBool>>) {
    let client = testenv::shared().client();
    let pods: Api<Pod> = Api::namespaced(client, &settings.kubernetes.namespace);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new());
    let publisher = ResultsPublisher::new(
        PublisherConfig::from_settings(&settings.redis),
        metrics.clone(),
    )
    .start();
    let supervisor_ctx = Context::<Supervisor>::new();
    let supervisor_addr = supervisor_ctx.address();
    let events: Recipient<ScaleEvent> = match crash {
        Some(crashed) => CrashAfterAccept {
            supervisor: supervisor_addr.clone(),
            crashed,
        }
        .start()
        .recipient(),
        None => supervisor_addr.clone().recipient(),
    };
    let limits = EventLimits::from_settings(settings);
    let reader = RedisReader::new(
        ReaderConfig::from_settings(&settings.redis, settings.consumer_name()),
        events,
        supervisor_addr.clone().recipient(),
        supervisor_addr.clone().recipient(),
        metrics.clone(),
        health,
        limits,
    )
    .start();
    let supervisor = supervisor_ctx.run(Supervisor::new(SupervisorConfig {
        worker_env: Arc::new(WorkerEnv::new(pods.clone(), settings, metrics.clone())),
        templates: resolve_templates(settings).expect("templates"),
        max_workers: settings.limits.max_workers as usize,
        settle_timeout: settings.limits.settle_timeout,
        restart_backoff: ::ottoscaler::retry::Backoff::RESTART,
        results: publisher.recipient(),
        pending_checker: Some(reader.recipient()),
        rules: ::ottoscaler::scheduler::Rules::from_settings(settings),
        metrics,
    }));
    PodWatcher::new(pods, supervisor.recipient()).start();
}

/// Runs a crashing instance on its own thread until it has crashed.
fn run_crashing_instance(settings: Settings) {
    std::thread::spawn(move || {
        let system = System::new();
        let crashed = Arc::new(AtomicBool::new(false));
        system.block_on(async { start_instance(&settings, Some(crashed.clone())) });
        // Runs until CrashAfterAccept stops the System; then every actor is dropped.
        let _ = system.run();
        assert!(crashed.load(Ordering::SeqCst), "stopped by the crash");
    })
    .join()
    .expect("crashing instance");
}

/// (worker_index, outcome) of every entry on the results stream.
fn results(port: u16) -> Vec<(String, String)> {
    entries(port, "otto:scale:results")
        .into_iter()
        .map(|f| {
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            (get("worker_index"), get("outcome"))
        })
        .collect()
}

/// Records the uid of every pod the API server ever shows in the namespace.
fn record_pod_uids(pods: Api<Pod>) -> Arc<std::sync::Mutex<BTreeSet<String>>> {
    let uids = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let sink = uids.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(Event::Apply(p) | Event::InitApply(p)) = event
                && let (Some(uid), Ok(mut set)) = (p.metadata.uid, sink.lock())
            {
                set.insert(uid);
            }
        }
    });
    uids
}

async fn all_pods_succeeded(pods: &Api<Pod>, n: usize) -> bool {
    let list = pods.list(&Default::default()).await.expect("list");
    list.items.len() == n
        && list
            .items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
}

/// The scenario: XADD, crash after the pods exist but before XACK, optionally wait for
/// the pods to finish, restart, and check that each worker ran and reported once.
async fn crash_before_ack_then_restart(wait_for_pods_to_finish: bool) {
    let env = testenv::shared();
    let ns = env.namespace("crash").await;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let uids = record_pod_uids(pods.clone());
    let redis = RedisServer::start();
    let port = redis.port();
    let settings = settings(&redis.url(), &ns);

    let id = redis_cli(
        port,
        &[
            "XADD",
            "otto:scale:events",
            "*",
            "type",
            "scale_up",
            "pod_count",
            "3",
            "task_id",
            "task-crash",
        ],
    );
    assert!(!id.is_empty());
    // The instances block their thread; the test's runtime keeps recording pod uids.
    let first = settings.clone();
    tokio::task::spawn_blocking(move || run_crashing_instance(first))
        .await
        .expect("crashing instance");
    assert_eq!(
        pending(port, "otto:scale:events", "ottoscaler"),
        1,
        "the entry is still pending after the crash"
    );
    assert_eq!(
        pods.list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        3
    );

    if wait_for_pods_to_finish {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_pods_succeeded(&pods, 3).await {
            assert!(Instant::now() < deadline, "{}", env.pods_summary(&ns).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The restarted instance: same consumer name, so it re-reads its pending entry.
    tokio::task::spawn_blocking(move || {
        let system = System::new();
        system.block_on(async move {
            start_instance(&settings, None);
            wait_until("3 results", Duration::from_secs(60), || {
                results(port).len() >= 3
            })
            .await;
            wait_until("the entry acknowledged", Duration::from_secs(30), || {
                pending(port, "otto:scale:events", "ottoscaler") == 0
            })
            .await;
            let client = testenv::shared().client();
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !pods
                .list(&Default::default())
                .await
                .expect("list")
                .items
                .is_empty()
            {
                assert!(Instant::now() < deadline, "pods left behind");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    })
    .await
    .expect("restarted instance");

    let got = results(port);
    let mut indexes: Vec<_> = got.iter().map(|(i, _)| i.clone()).collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"], "one result per worker: {got:?}");
    assert!(got.iter().all(|(_, o)| o == "succeeded"), "{got:?}");
    let created = uids.lock().map(|s| s.len()).unwrap_or_default();
    assert_eq!(created, 3, "no pod was ever created twice");
}

#[actix_rt::test]
async fn crash_before_ack_redelivers_without_running_any_worker_twice() {
    crash_before_ack_then_restart(false).await;
}

#[actix_rt::test]
async fn crash_before_ack_with_restart_after_pods_finished_adopts_them() {
    crash_before_ack_then_restart(true).await;
}
