//! Helpers for actor-level tests: a Supervisor + PodWatcher on the shared test control
//! plane (real kube-apiserver + etcd, kubesim as kubelet), a collector of results in the
//! place of the results publisher, and event builders.

#![allow(dead_code)] // each test binary uses its own subset

pub mod chaos;
pub mod ottoscaler;
pub mod redis;
pub mod tools;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use ::ottoscaler::actors::event_recorder;
use ::ottoscaler::actors::pod_watcher::PodWatcher;
use ::ottoscaler::actors::supervisor::{Supervisor, SupervisorConfig};
use ::ottoscaler::actors::worker_pod::WorkerEnv;
use ::ottoscaler::messages::supervisor::{
    EventAccepted, EventAcknowledged, EventRefused, GetStatus, SupervisorStatus,
};
use ::ottoscaler::messages::{PublishError, ScaleEvent, ScaleKind, WorkerFinished};
use ::ottoscaler::metrics::Metrics;
use ::ottoscaler::pods::{PodTemplate, resolve_templates};
use ::ottoscaler::retry::Backoff;
use ::ottoscaler::scheduler::Rules;
use ::ottoscaler::settings::{Settings, TemplateSettings};

pub const RUN_SECONDS: &str = "kubesim.ottoscaler.dev/run-seconds";
pub const EXIT_CODE: &str = "kubesim.ottoscaler.dev/exit-code";
pub const PULL: &str = "kubesim.ottoscaler.dev/pull";
pub const SCHEDULE: &str = "kubesim.ottoscaler.dev/schedule";

/// A template named `name` whose pods behave as the kubesim annotations say.
pub fn sim_template(settings: &mut Settings, name: &str, annotations: &[(&str, &str)]) {
    settings.templates.insert(
        name.to_string(),
        TemplateSettings {
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..TemplateSettings::builtin_default()
        },
    );
}

/// Settings for tests: short timeouts, and templates for every kubesim behaviour.
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    // Long enough that a loaded 2-core machine never times out a pod that will start.
    s.worker.pending_timeout = Duration::from_secs(60);
    s.worker.image_pull_grace = Duration::from_secs(1);
    sim_template(&mut s, "default", &[(RUN_SECONDS, "0.5")]);
    sim_template(&mut s, "slow", &[(RUN_SECONDS, "3")]);
    sim_template(&mut s, "long", &[(RUN_SECONDS, "120")]);
    sim_template(&mut s, "exit3", &[(RUN_SECONDS, "0.2"), (EXIT_CODE, "3")]);
    sim_template(&mut s, "pullfail", &[(PULL, "fail")]);
    sim_template(&mut s, "never", &[(SCHEDULE, "never")]);
    s
}

/// Stands in for the results publisher: records every result it is given.
#[derive(Default, Clone)]
pub struct Collected(pub Arc<Mutex<Vec<WorkerFinished>>>);

impl Collected {
    pub fn all(&self) -> Vec<WorkerFinished> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits (without polling the API: the results arrive in memory) for `n` results.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<WorkerFinished> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.all();
            if all.len() >= n || Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct Collector(pub Collected);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<WorkerFinished> for Collector {
    type Result = Result<(), PublishError>;

    fn handle(&mut self, msg: WorkerFinished, _ctx: &mut Self::Context) -> Self::Result {
        self.0
            .0
            .lock()
            .map_err(|e| PublishError(e.to_string()))?
            .push(msg);
        Ok(())
    }
}

/// How to start a [`Harness`].
pub struct Options {
    /// The test's own client (direct to the API server).
    pub client: kube::Client,
    /// The actors' client, when it differs (through a fault proxy).
    pub actors_client: Option<kube::Client>,
    pub namespace: String,
    pub settings: Settings,
    pub results: Collected,
    pub restart_backoff: Backoff,
    /// A standby Supervisor (leader election): it adopts nothing until it leads.
    pub standby: bool,
}

impl Options {
    pub fn new(
        client: kube::Client,
        namespace: String,
        settings: &Settings,
        results: Collected,
    ) -> Options {
        Options {
            client,
            actors_client: None,
            namespace,
            settings: settings.clone(),
            results,
            restart_backoff: Backoff::RESTART,
            standby: false,
        }
    }
}

/// A fault proxy in front of the shared API server, and a client of ottoscaler's own
/// making that goes through it.
pub struct Proxied {
    pub proxy: testenv::FaultProxy,
    pub client: kube::Client,
    _dir: testenv::WorkDir,
}

impl Proxied {
    pub async fn start(namespace: &str) -> Proxied {
        let env = testenv::shared();
        let proxy = testenv::FaultProxy::start(env.server_url(), testenv::Faults::none())
            .await
            .expect("fault proxy");
        let dir = testenv::WorkDir::temp("proxied").expect("temp dir");
        let path = dir.path().join("kubeconfig");
        proxy
            .write_kubeconfig(&path, env.admin_token(), namespace)
            .expect("proxy kubeconfig");
        let (client, _) = ::ottoscaler::kube_client::client(
            &Default::default(),
            Some(&path),
            Arc::new(Metrics::default()),
        )
        .await
        .expect("client through the proxy");
        Proxied {
            proxy,
            client,
            _dir: dir,
        }
    }
}

/// A running Supervisor + PodWatcher on one test namespace.
pub struct Harness {
    pub namespace: String,
    pub client: kube::Client,
    pub pods: Api<Pod>,
    /// The pods API the actors use (through a proxy when the test asked for one).
    pub actor_pods: Api<Pod>,
    pub supervisor: Addr<Supervisor>,
    pub watcher: std::sync::Mutex<Option<Addr<PodWatcher>>>,
    pub results: Collected,
    pub metrics: Arc<Metrics>,
}

pub async fn namespace(prefix: &str) -> (kube::Client, String) {
    let env = testenv::shared();
    let ns = env.namespace(prefix).await;
    (env.client(), ns)
}

impl Harness {
    /// Starts the actors on a new namespace.
    pub async fn start(prefix: &str, settings: &Settings) -> Harness {
        let (client, ns) = namespace(prefix).await;
        Harness::start_in(client, ns, settings, Collected::default()).await
    }

    /// Starts the actors on an existing namespace (a second instance, for adoption).
    pub async fn start_in(
        client: kube::Client,
        namespace: String,
        settings: &Settings,
        results: Collected,
    ) -> Harness {
        let h = Harness::build(Options::new(client, namespace, settings, results));
        h.start_watcher();
        h.wait_ready(Duration::from_secs(30)).await;
        h
    }

    /// Starts the actors with their Kubernetes requests going through a fault proxy
    /// (so a test can hold pod creates); the test's own requests go direct.
    pub async fn start_proxied(prefix: &str, settings: &Settings) -> (Harness, Proxied) {
        let (client, ns) = namespace(prefix).await;
        let proxied = Proxied::start(&ns).await;
        let mut options = Options::new(client, ns, settings, Collected::default());
        options.actors_client = Some(proxied.client.clone());
        let h = Harness::build(options);
        h.start_watcher();
        h.wait_ready(Duration::from_secs(30)).await;
        (h, proxied)
    }

    /// The actors without their pod watch: start it with [`Harness::start_watcher`].
    pub fn build(options: Options) -> Harness {
        let Options {
            client,
            actors_client,
            namespace,
            settings,
            results,
            restart_backoff,
            standby,
        } = options;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let actor_pods: Api<Pod> = Api::namespaced(
            actors_client.clone().unwrap_or_else(|| client.clone()),
            &namespace,
        );
        let metrics = Arc::new(Metrics::default());
        let templates: BTreeMap<String, PodTemplate> =
            resolve_templates(&settings).expect("test templates resolve");
        let collector = Collector(results.clone()).start();
        let rules = Rules::from_settings(&settings);
        let builder = ::ottoscaler::pods::PodBuilder {
            templates: templates.clone(),
            priority_class_names: rules.priority_class_names.clone(),
        };
        let config = SupervisorConfig {
            worker_env: Arc::new(
                WorkerEnv::new(actor_pods.clone(), &settings, metrics.clone())
                    .with_builder(builder)
                    .with_events(event_recorder::start(
                        actors_client.unwrap_or_else(|| client.clone()),
                        &namespace,
                        &settings,
                        metrics.clone(),
                    )),
            ),
            templates,
            max_workers: settings.limits.max_workers as usize,
            settle_timeout: settings.limits.settle_timeout,
            restart_backoff,
            results: collector.recipient(),
            pending_checker: None,
            rules,
            metrics: metrics.clone(),
        };
        let supervisor = if standby {
            Supervisor::standby(config)
        } else {
            Supervisor::new(config)
        }
        .start();
        Harness {
            namespace,
            client,
            pods,
            actor_pods,
            supervisor,
            watcher: std::sync::Mutex::new(None),
            results,
            metrics,
        }
    }

    /// Starts the one shared pod watch; the Supervisor syncs on its first list.
    pub fn start_watcher(&self) {
        let watcher =
            PodWatcher::new(self.actor_pods.clone(), self.supervisor.clone().recipient()).start();
        if let Ok(mut slot) = self.watcher.lock() {
            *slot = Some(watcher);
        }
    }

    pub async fn status(&self) -> SupervisorStatus {
        self.supervisor
            .send(GetStatus)
            .await
            .expect("supervisor answers")
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.status().await.ready {
            assert!(
                Instant::now() < deadline,
                "supervisor not ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the event and, once accepted, acknowledges it as the Redis reader would.
    pub async fn send(&self, event: ScaleEvent) -> Result<EventAccepted, EventRefused> {
        let id = event.event_id.clone();
        let answer = self
            .supervisor
            .send(event)
            .await
            .expect("supervisor answers");
        if answer.is_ok() {
            self.supervisor.do_send(EventAcknowledged { event_id: id });
        }
        answer
    }

    pub async fn pods_now(&self) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels("managed-by=ottoscaler"))
            .await
            .expect("list pods")
            .items
    }

    /// Waits until no ottoscaler pod is left in the namespace.
    pub async fn wait_no_pods(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pods = self.pods_now().await;
            if pods.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pods left after {timeout:?}:\n{}",
                self.describe_pods().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn describe_pods(&self) -> String {
        testenv::pods_summary(self.client.clone(), &self.namespace).await
    }
}

pub fn scale_up(event_id: &str, task_id: &str, pod_count: u32, template: &str) -> ScaleEvent {
    ScaleEvent {
        event_id: event_id.into(),
        kind: ScaleKind::Up { pod_count },
        task_id: task_id.into(),
        template: template.into(),
        priority: "normal".into(),
        tenant: task_id.into(),
        metadata: BTreeMap::new(),
        timestamp: None,
        trace: None,
        read_at: Instant::now(),
    }
}

pub fn scale_down(event_id: &str, task_id: &str, pod_count: Option<u32>) -> ScaleEvent {
    ScaleEvent {
        kind: ScaleKind::Down { pod_count },
        ..scale_up(event_id, task_id, 1, "default")
    }
}

/// Counts results per outcome name.
pub fn outcomes(results: &[WorkerFinished]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.outcome.as_str().to_string()).or_insert(0) += 1;
    }
    m
}

/// Waits until `ok` holds, checking every 100 ms; panics naming `what` after `timeout`.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut ok: F) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the future that `ok` makes resolves to true, checking every 200 ms; panics
/// naming `what` after `timeout`.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
