//! Configuration: one [`Settings`] struct, loaded once at start through the `config`
//! crate (built-in defaults < file < environment), validated before anything runs.
//!
//! The keys and defaults are the user contract (docs/contract.md section 8); the example file
//! `ottoscaler.example.toml` documents every one of them.
//!
//! # Sources, lowest precedence first
//! 1. the built-in defaults ([`Settings::default`]);
//! 2. the config file: `--config PATH` or `OTTOSCALER_CONFIG`, TOML or YAML by extension;
//! 3. the seed's variables (`REDIS_HOST`, `REDIS_PORT`, `REDIS_URL`, `REDIS_PASSWORD`,
//!    `REDIS_STREAM`, `REDIS_CONSUMER_GROUP`, `REDIS_CONSUMER`, `OTTO_AGENT_IMAGE`), see
//!    [`sources`] for how they combine;
//! 4. `OTTOSCALER_<SECTION>__<KEY>` variables: the most specific names, so they win.
//!
//! Empty variables count as unset, as they do in most Kubernetes manifests.

mod ha;
mod redact;
mod scheduling;
mod sources;
mod telemetry;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use ha::HaSettings;
pub use scheduling::{
    DEFAULT_PRIORITY, PriorityClassSettings, SchedulingPolicy, SchedulingSettings,
    default_priorities,
};
pub use sources::{UnknownVariable, unknown_variables};
pub use telemetry::TelemetrySettings;
pub use validate::ConfigError;

/// The template an event without a `template` field uses; it always exists.
pub const DEFAULT_TEMPLATE: &str = "default";

/// Everything an operator can tune. Every field has the default shown in its doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How long a SIGTERM waits for in-flight API calls before exiting. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub redis: RedisSettings,
    pub kubernetes: KubernetesSettings,
    pub limits: LimitSettings,
    pub worker: WorkerSettings,
    pub http: HttpSettings,
    /// Leader election between replicas.
    pub ha: HaSettings,
    /// Optional OTLP trace export; off unless `telemetry.otlp_endpoint` is set.
    pub telemetry: TelemetrySettings,
    /// Who goes first when capacity is short.
    pub scheduling: SchedulingSettings,
    /// Named priority classes an event's `priority` field may name; `normal` always
    /// exists (built in, overridable).
    pub priorities: BTreeMap<String, PriorityClassSettings>,
    /// Named pod templates; `default` always exists (built in, overridable).
    pub templates: BTreeMap<String, TemplateSettings>,
}

/// `Debug` is written by hand: it masks the password in `url`, so `?settings` in a log
/// line cannot leak it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL, credentials allowed. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Stream the scale events arrive on. Default `otto:scale:events`.
    pub stream: String,
    /// Consumer group. Default `ottoscaler`.
    pub group: String,
    /// Consumer name; empty means the hostname (the pod name in-cluster).
    pub consumer: String,
    /// Where malformed events go. Default `<stream>:dead` (`otto:scale:events:dead`), so a
    /// renamed stream keeps its own dead letters as the contract says.
    pub dead_letter_stream: String,
    /// Where worker outcomes go. Default `otto:scale:results`.
    pub results_stream: String,
    /// Approximate MAXLEN of the results stream. Default 100000.
    pub results_maxlen: u64,
    /// Approximate MAXLEN (`XADD ... MAXLEN ~`) of the dead-letter stream, at least 1:
    /// a flood of malformed events must not grow Redis without bound. Default 100000.
    pub dead_letter_maxlen: u64,
    /// How long the per-worker result marker
    /// (`ottoscaler:published:<results_stream>:<event_id>:<worker_index>`) is kept. It is
    /// what makes a redelivered event's result publish only once, so it must outlive every
    /// redelivery: longer than `claim_idle` x `max_deliveries`, and at least 1s. Default
    /// `7days`.
    #[serde(with = "humantime_serde")]
    pub result_marker_ttl: Duration,
    /// Entries idle longer than this on another consumer are claimed. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// Deliveries after which an entry that never succeeded is dead-lettered. Default 5.
    pub max_deliveries: u64,
    /// How often the reader refreshes `ottoscaler_stream_lag` and
    /// `ottoscaler_oldest_pending_age_seconds` (XINFO GROUPS, XPENDING). Default `15s`.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSettings {
    /// Namespace of the worker pods; empty: in-cluster namespace, kubeconfig context, `default`.
    pub namespace: String,
    /// Client-side rate limit, requests per second. Default 50.
    pub qps: u32,
    /// Requests allowed above `qps` in a burst. Default 100.
    pub burst: u32,
    /// Pod creates in flight at once; the other new workers wait for a slot without
    /// holding a request. Bounds memory and API server load in a burst. Default 64.
    pub max_concurrent_creates: u32,
    /// Offer HTTP/2 to the API server (ALPN): the requests and the watch share
    /// `http2_connections` connections. `false`: HTTP/1.1, a connection per request in
    /// flight (kept for reuse), as the stock kube client does. Default true.
    pub http2: bool,
    /// HTTP/2 connections to the API server (`http2` on), requests spread over them in
    /// turn: on an API server short of CPU, each connection is served by one goroutine
    /// there, so one connection for everything fell behind (README "Known limits").
    /// Default 4.
    pub http2_connections: u32,
    /// Record a Kubernetes Event on the pod of each worker that ends `failed`,
    /// `timed_out`, `lost` or `cancelled` (needs `events.k8s.io` `events: create,
    /// patch`). Default true.
    pub events: bool,
    /// Event requests per second at most (within `qps`). Default 5.
    pub events_per_second: u32,
    /// Event requests allowed above `events_per_second` in a burst. Default 20.
    pub events_burst: u32,
    /// Events waiting to be sent at most; more are dropped and counted. Default 1000.
    pub events_queue: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Workers alive at once; no new entries are read at this count. Default 200.
    pub max_workers: u32,
    /// Largest `pod_count` one scale_up may ask for. Default 50, lowered to `max_workers`
    /// when that is smaller and this is not set.
    pub max_pods_per_event: u32,
    /// How long a started scale event may take to become durable in Kubernetes before the
    /// Supervisor stops waiting for it and leaves its stream entry pending for a later
    /// delivery. At least 1s and longer than `worker.pending_timeout` (a create refused
    /// for quota waits up to that long). Waiting for capacity does not count. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub settle_timeout: Duration,
    /// Events read ahead of capacity at most, waiting (pending, unacknowledged) for a
    /// slot so the scheduler can choose among them; 0 reads only what fits now.
    /// Default 1000.
    pub max_waiting_events: u32,
    /// Workers one task may have alive at once; 0: no cap but `max_workers`. Default 0.
    pub max_workers_per_task: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// A pod Pending longer than this is `timed_out`. Default `300s`.
    #[serde(with = "humantime_serde")]
    pub pending_timeout: Duration,
    /// A container waiting on an image pull error longer than this is `timed_out`. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub image_pull_grace: Duration,
    /// `activeDeadlineSeconds` of the pod. Default `3600s`.
    #[serde(with = "humantime_serde")]
    pub run_timeout: Duration,
    /// A worker whose pod is disrupted (evicted, preempted, lost with its node: the pod's
    /// `DisruptionTarget` condition) runs again in a new pod, up to this many times;
    /// then it ends with its last attempt's outcome. 0 turns retries off. Default 2.
    pub max_disruption_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// How long the Supervisor and the Redis reader each have to answer `/healthz`'s
    /// ping before the probe fails (503). Below the liveness probe's `timeoutSeconds`.
    /// Default `2s`.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
}

/// A pod template: either the simple keys (image, command, ...) or `pod_spec_file`.
///
/// `Default` is the empty template (no image, no command, no resources) that a further
/// template starts from; the built-in `default` one is [`TemplateSettings::builtin_default`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateSettings {
    /// Image of the `worker` container (the `default` template's is `OTTO_AGENT_IMAGE`).
    pub image: String,
    /// Command of the `worker` container; empty keeps the image's entrypoint.
    pub command: Vec<String>,
    /// Added to the pod's annotations; the contract's own always win.
    pub annotations: BTreeMap<String, String>,
    /// Added to the pod's labels; the contract's own always win.
    pub labels: BTreeMap<String, String>,
    /// Requests and limits of the `worker` container, as Kubernetes quantities.
    pub resources: ResourceSettings,
    /// `nodeSelector` of the pod: the labels a node must carry.
    pub node_selector: BTreeMap<String, String>,
    /// `tolerations` of the pod.
    pub tolerations: Vec<TolerationSettings>,
    /// Variables of the `worker` container; ottoscaler's own (`OTTO_*`) always win.
    pub env: BTreeMap<String, String>,
    /// `serviceAccountName` of the pod; empty: the namespace's `default`.
    pub service_account_name: String,
    /// Secrets (in the worker namespace) to pull the image with.
    pub image_pull_secrets: Vec<String>,
    /// `priorityClassName` of the pod; empty: the cluster's default priority.
    pub priority_class_name: String,
    /// Workers of this template alive at once; 0: no cap but `limits.max_workers`.
    /// Default 0.
    pub max_workers: u32,
    /// A PodSpec in YAML; when set, the keys above except labels/annotations must stay
    /// unset (they go in the file) and its first container becomes `worker`.
    pub pod_spec_file: Option<String>,
}

/// One toleration of a simple template, as in a PodSpec (`tolerationSeconds` spelled
/// `toleration_seconds`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TolerationSettings {
    /// The taint key; empty with `operator = "Exists"` tolerates every taint.
    pub key: String,
    /// `Equal` (the default) or `Exists`.
    pub operator: String,
    /// The taint value, for `Equal`.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`, or empty for all three.
    pub effect: String,
    /// For `NoExecute`: how long the pod stays once the taint appears; unset: forever.
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceSettings {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(20),
            redis: RedisSettings::default(),
            kubernetes: KubernetesSettings::default(),
            limits: LimitSettings::default(),
            worker: WorkerSettings::default(),
            http: HttpSettings::default(),
            ha: HaSettings::default(),
            telemetry: TelemetrySettings::default(),
            scheduling: SchedulingSettings::default(),
            priorities: default_priorities(),
            templates: BTreeMap::from([(
                DEFAULT_TEMPLATE.to_string(),
                TemplateSettings::builtin_default(),
            )]),
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            stream: "otto:scale:events".into(),
            group: "ottoscaler".into(),
            consumer: String::new(),
            dead_letter_stream: "otto:scale:events:dead".into(),
            results_stream: "otto:scale:results".into(),
            results_maxlen: 100_000,
            dead_letter_maxlen: 100_000,
            result_marker_ttl: Duration::from_secs(7 * 24 * 3600),
            claim_idle: Duration::from_secs(60),
            max_deliveries: 5,
            stats_interval: Duration::from_secs(15),
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            stream,
            group,
            consumer,
            dead_letter_stream,
            results_stream,
            results_maxlen,
            dead_letter_maxlen,
            result_marker_ttl,
            claim_idle,
            max_deliveries,
            stats_interval,
        } = self;
        f.debug_struct("RedisSettings")
            .field("url", &redact::redact_url(url))
            .field("stream", stream)
            .field("group", group)
            .field("consumer", consumer)
            .field("dead_letter_stream", dead_letter_stream)
            .field("results_stream", results_stream)
            .field("results_maxlen", results_maxlen)
            .field("dead_letter_maxlen", dead_letter_maxlen)
            .field("result_marker_ttl", result_marker_ttl)
            .field("claim_idle", claim_idle)
            .field("max_deliveries", max_deliveries)
            .field("stats_interval", stats_interval)
            .finish()
    }
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            qps: 50,
            burst: 100,
            max_concurrent_creates: 64,
            http2: true,
            http2_connections: 4,
            events: true,
            events_per_second: 5,
            events_burst: 20,
            events_queue: 1000,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_workers: 200,
            max_pods_per_event: 50,
            settle_timeout: Duration::from_secs(600),
            max_waiting_events: 1000,
            max_workers_per_task: 0,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(300),
            image_pull_grace: Duration::from_secs(60),
            run_timeout: Duration::from_secs(3600),
            max_disruption_retries: 2,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            liveness_timeout: Duration::from_secs(2),
        }
    }
}

impl TemplateSettings {
    /// The built-in `default` template. A further template starts from
    /// [`TemplateSettings::default`] (empty) instead: a template that names only an image
    /// must not inherit this demo command, which would replace the image's entrypoint.
    pub fn builtin_default() -> Self {
        Self {
            image: "busybox:latest".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo \"otto agent $OTTO_POD_NAME working on $OTTO_TASK_ID\"; sleep 10".into(),
            ],
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            resources: ResourceSettings {
                requests: BTreeMap::from([
                    ("cpu".into(), "100m".into()),
                    ("memory".into(), "64Mi".into()),
                ]),
                limits: BTreeMap::from([
                    ("cpu".into(), "500m".into()),
                    ("memory".into(), "256Mi".into()),
                ]),
            },
            ..Self::default()
        }
    }
}

impl Settings {
    /// The effective settings of this process: [`Settings::load_from`] with the process
    /// environment. `file` is `--config`; without it `OTTOSCALER_CONFIG` names the file.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads and validates the settings from the defaults, the config file (`file`, else
    /// `OTTOSCALER_CONFIG` in `env`) and `env`. The environment is a parameter so tests
    /// need not mutate the process environment, which is shared by every test thread.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let settings = sources::load(file, sources::Env::new(env))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The Redis consumer name: `redis.consumer`, else the hostname (the pod name
    /// in-cluster, stable for the pod's life so a restarted process re-reads its own
    /// pending entries), else `ottoscaler` when the hostname cannot be read.
    pub fn consumer_name(&self) -> String {
        if !self.redis.consumer.is_empty() {
            return self.redis.consumer.clone();
        }
        hostname::get()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ottoscaler".to_string())
    }

    /// The `OTTOSCALER_*` variables of the process environment that name no setting.
    pub fn unknown_variables() -> Vec<UnknownVariable> {
        unknown_variables(std::env::vars())
    }

    /// The configured template names, sorted; always includes `default`.
    pub fn template_names(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }
}
