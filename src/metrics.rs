//! Prometheus metrics, all named `ottoscaler_*`, served as OpenMetrics text on `/metrics`.
//!
//! One [`Metrics`] per process, shared as `Arc<Metrics>`; every method takes `&self`
//! (the metric types are atomics or locked inside), so actors and the Kubernetes client
//! layer record without coordination.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Event -> pod created: a create normally takes milliseconds; ten seconds means the API
/// server or the rate limiter is the bottleneck.
const POD_CREATE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Worker runtime: from quick jobs to `worker.run_timeout`'s default of an hour, and a
/// bucket above it.
const WORKER_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];
/// Event added -> pod running: from an idle cluster's seconds to a queue that waited for
/// `limits.max_workers` slots or for nodes for half an hour.
const QUEUE_WAIT_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Created -> scheduled, and scheduled -> running. Kubernetes' timestamps have whole
/// seconds, so the small buckets mostly catch zeros.
const POD_START_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// The `template` label of a pod whose template is not configured (a pod adopted from an
/// older configuration, or built before pods carried the annotation).
const UNKNOWN_TEMPLATE: &str = "unknown";
/// The outcomes of docs/contract.md section 4, pre-created so a dashboard shows zeros, not gaps.
const OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "cancelled", "lost"];
/// The `(type, result)` pairs of `ottoscaler_events_total` that can happen: a valid
/// event is accepted, refused (retried later) or dead-lettered after too many
/// deliveries; an invalid one is only ever dead-lettered.
const EVENT_SERIES: [(&str, &str); 7] = [
    ("scale_up", "accepted"),
    ("scale_up", "refused"),
    ("scale_up", "dead_lettered"),
    ("scale_down", "accepted"),
    ("scale_down", "refused"),
    ("scale_down", "dead_lettered"),
    ("invalid", "dead_lettered"),
];
/// The `(verb, code)` pairs of `ottoscaler_kube_requests_total` pre-created at 0: for
/// each verb ottoscaler sends, its success code and `error` (no response). Other codes
/// (404, 409, 429, 5xx) are an open set and appear with their first request.
const KUBE_SERIES: [(&str, &str); 10] = [
    ("create", "201"),
    ("create", "error"),
    ("get", "200"),
    ("get", "error"),
    ("delete", "200"),
    ("delete", "error"),
    ("list", "200"),
    ("list", "error"),
    ("watch", "200"),
    ("watch", "error"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabels {
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The `result` values of `ottoscaler_kube_events_total`, each exported from the start.
const KUBE_EVENT_RESULTS: [&str; 3] = ["published", "failed", "dropped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    priority: String,
    tenant: String,
}

/// The `tenant` label of the tenants outside the top `scheduling.metrics_tenants`.
pub const OTHER_TENANTS: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A histogram per template, all with the same buckets.
type TemplateHistograms = Family<TemplateLabels, Histogram, fn() -> Histogram>;

/// The `top` tenants with the most waiting events and workers together (ties: by name),
/// so that the tenant label stays a bounded set however many tenants there are.
pub fn top_tenants(counts: [&BTreeMap<(String, String), usize>; 2], top: usize) -> BTreeSet<&str> {
    let mut totals: HashMap<&str, usize> = HashMap::new();
    for map in counts {
        for ((_, tenant), n) in map {
            *totals.entry(tenant.as_str()).or_insert(0) += n;
        }
    }
    let mut ranked: Vec<(&str, usize)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.into_iter().take(top).map(|(t, _)| t).collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeLabels {
    verb: String,
    code: String,
}

/// Every metric of the process and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    workers_active: Gauge,
    workers_finished: Family<OutcomeLabels, Counter>,
    pod_create: Histogram,
    pod_watch_delay: Histogram,
    worker_duration: Histogram,
    kube_requests: Family<KubeLabels, Counter>,
    worker_restarts: Counter,
    worker_retries: Counter,
    redis_errors: Counter,
    results_published: Counter,
    dead_letters: Counter,
    kube_events: Family<ResultLabels, Counter>,
    queue_wait: TemplateHistograms,
    pod_scheduling: TemplateHistograms,
    pod_starting: TemplateHistograms,
    stream_lag: Gauge,
    oldest_pending_age: Gauge<f64, AtomicU64>,
    leader: Gauge,
    leader_transitions: Counter,
    lease_errors: Counter,
    queue_wait_by_priority: Family<PriorityLabels, Histogram, fn() -> Histogram>,
    waiting_events: Family<ShareLabels, Gauge>,
    workers_by_tenant: Family<ShareLabels, Gauge>,
    /// The configured priority classes: the `priority` label takes only these values and
    /// `unknown`.
    priorities: BTreeSet<String>,
    /// The configured template names: the `template` label takes only these values and
    /// [`UNKNOWN_TEMPLATE`].
    templates: BTreeSet<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of a process whose only template is `default`.
    pub fn new() -> Self {
        Self::with_templates(["default"])
    }

    /// The metrics of a process with these pod templates (the `template` label's values,
    /// each exported at 0 from the start).
    pub fn with_templates<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let templates: BTreeSet<String> = templates.into_iter().map(String::from).collect();
        let mut registry = Registry::with_prefix("ottoscaler");
        let events = Family::<EventLabels, Counter>::default();
        let workers_active = Gauge::default();
        let workers_finished = Family::<OutcomeLabels, Counter>::default();
        let pod_create = Histogram::new(POD_CREATE_BUCKETS);
        let pod_watch_delay = Histogram::new(POD_CREATE_BUCKETS);
        let worker_duration = Histogram::new(WORKER_DURATION_BUCKETS);
        let kube_requests = Family::<KubeLabels, Counter>::default();
        let worker_restarts = Counter::default();
        let worker_retries = Counter::default();
        let redis_errors = Counter::default();
        let results_published = Counter::default();
        let dead_letters = Counter::default();
        let kube_events = Family::<ResultLabels, Counter>::default();
        let queue_wait: TemplateHistograms =
            Family::new_with_constructor(|| Histogram::new(QUEUE_WAIT_BUCKETS));
        let pod_scheduling: TemplateHistograms =
            Family::new_with_constructor(|| Histogram::new(POD_START_BUCKETS));
        let pod_starting: TemplateHistograms =
            Family::new_with_constructor(|| Histogram::new(POD_START_BUCKETS));
        let stream_lag = Gauge::default();
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        let leader = Gauge::default();
        let leader_transitions = Counter::default();
        let lease_errors = Counter::default();
        let queue_wait_by_priority: Family<PriorityLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(QUEUE_WAIT_BUCKETS));
        let waiting_events = Family::<ShareLabels, Gauge>::default();
        let workers_by_tenant = Family::<ShareLabels, Gauge>::default();

        registry.register(
            "events",
            "Scale events read, by type (scale_up, scale_down, invalid) and result",
            events.clone(),
        );
        registry.register(
            "workers_active",
            "Workers created and not yet finished",
            workers_active.clone(),
        );
        registry.register(
            "workers_finished",
            "Workers that reached an outcome, by outcome and pod template",
            workers_finished.clone(),
        );
        registry.register_with_unit(
            "pod_create",
            "Time from reading an event to its pod being created",
            Unit::Seconds,
            pod_create.clone(),
        );
        registry.register_with_unit(
            "pod_watch_delay",
            "Time from building a pod (its created-at annotation) to the first watch event \
             for it: create slot, create request and watch delivery",
            Unit::Seconds,
            pod_watch_delay.clone(),
        );
        registry.register_with_unit(
            "worker_duration",
            "Time from pod created to worker finished",
            Unit::Seconds,
            worker_duration.clone(),
        );
        registry.register(
            "kube_requests",
            "Kubernetes API requests, by verb and HTTP status code (or error)",
            kube_requests.clone(),
        );
        registry.register(
            "worker_restarts",
            "Restarts of supervised actors after a failure",
            worker_restarts.clone(),
        );
        registry.register(
            "worker_retries",
            "New attempts of workers whose pod was disrupted (evicted, preempted, lost with \
             its node), each in a new pod",
            worker_retries.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed Redis commands",
            redis_errors.clone(),
        );
        registry.register(
            "results_published",
            "Entries written to the results stream",
            results_published.clone(),
        );
        registry.register(
            "dead_letters",
            "Events copied to the dead-letter stream",
            dead_letters.clone(),
        );
        registry.register(
            "kube_events",
            "Kubernetes Events on worker pods (failed, timed_out, lost, cancelled), by result: \
             published, failed (the API refused or did not answer), dropped (queue full)",
            kube_events.clone(),
        );

        registry.register_with_unit(
            "queue_wait",
            "Time from an event's entry being added to the stream (its id) to a worker's pod \
             first seen Running, once per worker that saw its pod start",
            Unit::Seconds,
            queue_wait.clone(),
        );
        registry.register_with_unit(
            "pod_scheduling",
            "Time from a pod being built (its created-at annotation) to PodScheduled=True, \
             once per worker that saw its pod start",
            Unit::Seconds,
            pod_scheduling.clone(),
        );
        registry.register_with_unit(
            "pod_starting",
            "Time from PodScheduled=True to the worker container running (its startedAt), \
             once per worker that saw its pod start",
            Unit::Seconds,
            pod_starting.clone(),
        );
        registry.register(
            "stream_lag",
            "Entries of the event stream not yet delivered to the consumer group (XINFO \
             GROUPS lag); -1 when Redis does not know it or it was never read",
            stream_lag.clone(),
        );
        registry.register_with_unit(
            "oldest_pending_age",
            "Age of the group's oldest delivered but unacknowledged entry (from its id); 0 \
             when none is pending",
            Unit::Seconds,
            oldest_pending_age.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the version label is the running ottoscaler's",
            build_info.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease and acts (always 1 with ha.enabled = false), \
             0 while it stands by",
            leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica became the leader",
            leader_transitions.clone(),
        );
        registry.register(
            "lease_errors",
            "Failed Lease requests (get, create, replace)",
            lease_errors.clone(),
        );
        registry.register_with_unit(
            "queue_wait_by_priority",
            "ottoscaler_queue_wait_seconds by the event's priority class",
            Unit::Seconds,
            queue_wait_by_priority.clone(),
        );
        registry.register(
            "waiting_events",
            "scale_up events read and waiting for capacity, by priority class and tenant (the \
             top scheduling.metrics_tenants tenants; the rest as tenant=\"other\")",
            waiting_events.clone(),
        );
        registry.register(
            "tenant_workers",
            "Workers alive, by priority class and tenant (the top scheduling.metrics_tenants \
             tenants; the rest as tenant=\"other\"; \"unknown\" for pods without the annotations)",
            workers_by_tenant.clone(),
        );
        stream_lag.set(-1);
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);

        // Every series whose labels are known up front exists from the start at 0, so
        // a dashboard shows zeros rather than gaps, and `absent()` or `rate()` alerts work
        // on a process that has not counted anything yet.
        for outcome in OUTCOMES {
            for template in &templates {
                let _ = workers_finished.get_or_create_owned(&OutcomeLabels {
                    outcome: outcome.into(),
                    template: template.clone(),
                });
            }
        }
        for (kind, result) in EVENT_SERIES {
            let _ = events.get_or_create_owned(&EventLabels {
                r#type: kind.into(),
                result: result.into(),
            });
        }
        for (verb, code) in KUBE_SERIES {
            let _ = kube_requests.get_or_create_owned(&KubeLabels {
                verb: verb.into(),
                code: code.into(),
            });
        }
        for result in KUBE_EVENT_RESULTS {
            let _ = kube_events.get_or_create_owned(&ResultLabels {
                result: result.into(),
            });
        }
        for template in &templates {
            let labels = TemplateLabels {
                template: template.clone(),
            };
            for family in [&queue_wait, &pod_scheduling, &pod_starting] {
                let _ = family.get_or_create_owned(&labels);
            }
        }

        Self {
            registry,
            events,
            workers_active,
            workers_finished,
            pod_create,
            pod_watch_delay,
            worker_duration,
            kube_requests,
            worker_restarts,
            worker_retries,
            redis_errors,
            results_published,
            dead_letters,
            kube_events,
            queue_wait,
            pod_scheduling,
            pod_starting,
            stream_lag,
            oldest_pending_age,
            leader,
            leader_transitions,
            lease_errors,
            queue_wait_by_priority,
            waiting_events,
            workers_by_tenant,
            priorities: BTreeSet::new(),
            templates,
        }
    }

    /// The configured priority classes: the `priority` label's values, each exported at
    /// 0 from the start.
    pub fn with_priorities<'a>(mut self, priorities: impl IntoIterator<Item = &'a str>) -> Self {
        self.priorities = priorities.into_iter().map(String::from).collect();
        for p in &self.priorities {
            let _ = self
                .queue_wait_by_priority
                .get_or_create_owned(&PriorityLabels {
                    priority: p.clone(),
                });
        }
        self
    }

    /// Replaces the waiting-events and workers gauges: `waiting` and `workers` count by
    /// (priority class, tenant); only the `top` tenants with the most of both keep their
    /// name, the others are summed as [`OTHER_TENANTS`].
    pub fn set_shares(
        &self,
        waiting: &BTreeMap<(String, String), usize>,
        workers: &BTreeMap<(String, String), usize>,
        top: usize,
    ) {
        let named = top_tenants([waiting, workers], top);
        for (family, counts) in [
            (&self.waiting_events, waiting),
            (&self.workers_by_tenant, workers),
        ] {
            family.clear();
            for ((priority, tenant), n) in counts {
                let tenant = if named.contains(tenant.as_str()) {
                    tenant.clone()
                } else {
                    OTHER_TENANTS.to_string()
                };
                let labels = ShareLabels {
                    priority: self.priority_label(Some(priority)),
                    tenant,
                };
                family
                    .get_or_create(&labels)
                    .inc_by(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
    }

    fn priority_label(&self, priority: Option<&str>) -> String {
        priority
            .filter(|p| self.priorities.contains(*p))
            .unwrap_or(UNKNOWN_TEMPLATE)
            .to_string()
    }

    /// The `template` label for `template`: a configured name, else `unknown`, so a pod's
    /// annotation cannot create series.
    fn template_labels(&self, template: Option<&str>) -> TemplateLabels {
        let template = template
            .filter(|t| self.templates.contains(*t))
            .unwrap_or(UNKNOWN_TEMPLATE);
        TemplateLabels {
            template: template.into(),
        }
    }

    /// A worker first saw its pod Running: the parts of its start that are known.
    pub fn pod_started(
        &self,
        template: Option<&str>,
        priority: Option<&str>,
        queue_wait: Option<Duration>,
        scheduling: Option<Duration>,
        starting: Option<Duration>,
    ) {
        if let Some(wait) = queue_wait {
            let labels = PriorityLabels {
                priority: self.priority_label(priority),
            };
            self.queue_wait_by_priority
                .get_or_create(&labels)
                .observe(wait.as_secs_f64());
        }
        let labels = self.template_labels(template);
        for (family, value) in [
            (&self.queue_wait, queue_wait),
            (&self.pod_scheduling, scheduling),
            (&self.pod_starting, starting),
        ] {
            if let Some(value) = value {
                family.get_or_create(&labels).observe(value.as_secs_f64());
            }
        }
    }

    /// The group's lag as XINFO GROUPS reports it; `None` (unknown) exports -1.
    pub fn set_stream_lag(&self, lag: Option<u64>) {
        self.stream_lag
            .set(lag.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
    }

    /// The age of the oldest pending entry (0 when none is).
    pub fn set_oldest_pending_age(&self, age: Duration) {
        self.oldest_pending_age.set(age.as_secs_f64());
    }

    /// One event read. `kind` comes from the event itself, so anything but `scale_up` and
    /// `scale_down` is counted as `invalid`: a sender must not be able to create series.
    /// `result`: `accepted`, `dead_lettered`, `refused`, ... (chosen by the caller).
    pub fn event(&self, kind: &str, result: &str) {
        let kind = match kind {
            "scale_up" | "scale_down" => kind,
            _ => "invalid",
        };
        self.events
            .get_or_create(&EventLabels {
                r#type: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn set_workers_active(&self, n: usize) {
        self.workers_active
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A worker of `template` reached `outcome` (`succeeded`, `failed`, `timed_out`,
    /// `cancelled`, `lost`) after running `duration` (pod built -> finished).
    pub fn worker_finished(&self, outcome: &str, template: Option<&str>, duration: Duration) {
        self.workers_finished
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
                template: self.template_labels(template).template,
            })
            .inc();
        self.worker_duration.observe(duration.as_secs_f64());
    }

    /// A pod was created `since_read` after its event was read.
    pub fn pod_created(&self, since_read: Duration) {
        self.pod_create.observe(since_read.as_secs_f64());
    }

    /// The shared watch first showed a pod ottoscaler created, `delay` after it was built.
    pub fn pod_first_seen(&self, delay: Duration) {
        self.pod_watch_delay.observe(delay.as_secs_f64());
    }

    /// One Kubernetes API request: `verb` as Kubernetes names it, `code` the HTTP status
    /// or `error` when no response came.
    pub fn kube_request(&self, verb: &str, code: &str) {
        self.kube_requests
            .get_or_create(&KubeLabels {
                verb: verb.into(),
                code: code.into(),
            })
            .inc();
    }

    pub fn worker_restarted(&self) {
        self.worker_restarts.inc();
    }

    /// A worker whose pod was disrupted runs again in a new pod.
    pub fn worker_retried(&self) {
        self.worker_retries.inc();
    }

    /// This replica leads (`true`) or stands by.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// This replica just became the leader.
    pub fn leader_transition(&self) {
        self.leader_transitions.inc();
    }

    /// A Lease request failed.
    pub fn lease_error(&self) {
        self.lease_errors.inc();
    }

    pub fn redis_error(&self) {
        self.redis_errors.inc();
    }

    pub fn result_published(&self) {
        self.results_published.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
    }

    /// One worker Event `published`, `failed` or `dropped`.
    pub fn kube_event(&self, result: &str) {
        self.kube_events
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an empty body would only hide metrics.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_names_every_metric() {
        let m = Metrics::default();
        m.event("scale_up", "accepted");
        m.set_workers_active(3);
        m.worker_finished("succeeded", Some("default"), Duration::from_secs(12));
        m.pod_created(Duration::from_millis(40));
        m.kube_request("create", "201");
        m.worker_restarted();
        m.redis_error();
        m.result_published();
        m.dead_lettered();
        let text = m.encode();
        for line in [
            r#"ottoscaler_events_total{type="scale_up",result="accepted"} 1"#,
            "ottoscaler_workers_active 3",
            r#"ottoscaler_workers_finished_total{outcome="succeeded",template="default"} 1"#,
            r#"ottoscaler_workers_finished_total{outcome="lost",template="default"} 0"#,
            "ottoscaler_pod_create_seconds_count 1",
            r#"ottoscaler_pod_create_seconds_bucket{le="0.05"} 1"#,
            "ottoscaler_worker_duration_seconds_count 1",
            r#"ottoscaler_kube_requests_total{verb="create",code="201"} 1"#,
            "ottoscaler_worker_restarts_total 1",
            "ottoscaler_redis_errors_total 1",
            "ottoscaler_results_published_total 1",
            "ottoscaler_dead_letters_total 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_series_with_known_labels_is_exported_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        let mut expected: Vec<String> = EVENT_SERIES
            .iter()
            .map(|(kind, result)| {
                format!(r#"ottoscaler_events_total{{type="{kind}",result="{result}"}} 0"#)
            })
            .collect();
        expected.extend(OUTCOMES.iter().map(|o| {
            format!(r#"ottoscaler_workers_finished_total{{outcome="{o}",template="default"}} 0"#)
        }));
        expected.extend(KUBE_SERIES.iter().map(|(verb, code)| {
            format!(r#"ottoscaler_kube_requests_total{{verb="{verb}",code="{code}"}} 0"#)
        }));
        expected.extend(
            KUBE_EVENT_RESULTS
                .iter()
                .map(|r| format!(r#"ottoscaler_kube_events_total{{result="{r}"}} 0"#)),
        );
        expected.extend(
            [
                "ottoscaler_dead_letters_total 0",
                "ottoscaler_results_published_total 0",
                "ottoscaler_redis_errors_total 0",
                "ottoscaler_worker_restarts_total 0",
                "ottoscaler_worker_retries_total 0",
                "ottoscaler_workers_active 0",
                "ottoscaler_pod_create_seconds_count 0",
                r#"ottoscaler_queue_wait_seconds_count{template="default"} 0"#,
                r#"ottoscaler_pod_scheduling_seconds_count{template="default"} 0"#,
                r#"ottoscaler_pod_starting_seconds_count{template="default"} 0"#,
                "ottoscaler_stream_lag -1",
                "ottoscaler_oldest_pending_age_seconds 0.0",
                &format!(
                    r#"ottoscaler_build_info{{version="{}"}} 1"#,
                    env!("CARGO_PKG_VERSION")
                ),
            ]
            .map(String::from),
        );
        // Spelled out too, so a renamed label cannot pass by changing both sides.
        expected.push(r#"ottoscaler_events_total{type="scale_up",result="accepted"} 0"#.into());
        expected.push(r#"ottoscaler_events_total{type="invalid",result="dead_lettered"} 0"#.into());
        for line in &expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn start_up_histograms_are_per_configured_template_and_the_rest_is_unknown() {
        let m = Metrics::with_templates(["default", "gpu"]);
        let text = m.encode();
        for t in ["default", "gpu"] {
            assert!(
                text.contains(&format!(
                    r#"ottoscaler_queue_wait_seconds_count{{template="{t}"}} 0"#
                )),
                "{text}"
            );
        }
        m.pod_started(
            Some("gpu"),
            None,
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(1)),
            None,
        );
        m.pod_started(
            Some("made-up"),
            None,
            None,
            None,
            Some(Duration::from_secs(2)),
        );
        m.pod_started(None, None, Some(Duration::from_millis(200)), None, None);
        m.worker_finished("failed", Some("made-up"), Duration::from_secs(1));
        m.worker_finished("succeeded", Some("gpu"), Duration::from_secs(1));
        let text = m.encode();
        for line in [
            r#"ottoscaler_queue_wait_seconds_count{template="gpu"} 1"#,
            r#"ottoscaler_queue_wait_seconds_sum{template="gpu"} 3.0"#,
            r#"ottoscaler_pod_scheduling_seconds_count{template="gpu"} 1"#,
            r#"ottoscaler_pod_starting_seconds_count{template="gpu"} 0"#,
            r#"ottoscaler_pod_starting_seconds_count{template="unknown"} 1"#,
            r#"ottoscaler_queue_wait_seconds_count{template="unknown"} 1"#,
            r#"ottoscaler_workers_finished_total{outcome="failed",template="unknown"} 1"#,
            r#"ottoscaler_workers_finished_total{outcome="succeeded",template="gpu"} 1"#,
            r#"ottoscaler_workers_finished_total{outcome="cancelled",template="gpu"} 0"#,
            r#"ottoscaler_workers_finished_total{outcome="cancelled",template="default"} 0"#,
            r#"ottoscaler_queue_wait_by_priority_seconds_count{priority="unknown"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("made-up"), "{text}");
    }

    #[test]
    fn the_stream_gauges_take_what_the_reader_saw() {
        let m = Metrics::default();
        m.set_stream_lag(Some(7));
        m.set_oldest_pending_age(Duration::from_millis(2500));
        let text = m.encode();
        assert!(text.contains("ottoscaler_stream_lag 7\n"), "{text}");
        assert!(
            text.contains("ottoscaler_oldest_pending_age_seconds 2.5\n"),
            "{text}"
        );
        m.set_stream_lag(None);
        assert!(m.encode().contains("ottoscaler_stream_lag -1\n"));
    }

    #[test]
    fn an_unknown_event_type_is_counted_as_invalid() {
        let m = Metrics::default();
        m.event("drop_tables", "dead_lettered");
        let text = m.encode();
        assert!(
            text.contains(r#"ottoscaler_events_total{type="invalid",result="dead_lettered"} 1"#),
            "{text}"
        );
        assert!(!text.contains("drop_tables"), "{text}");
    }

    #[test]
    fn metrics_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn queue_wait_by_priority_has_a_series_per_class_from_the_start() {
        let m = Metrics::new().with_priorities(["high", "normal"]);
        m.pod_started(None, Some("high"), Some(Duration::from_secs(2)), None, None);
        m.pod_started(
            None,
            Some("made-up"),
            Some(Duration::from_secs(1)),
            None,
            None,
        );
        let text = m.encode();
        for line in [
            r#"ottoscaler_queue_wait_by_priority_seconds_count{priority="high"} 1"#,
            r#"ottoscaler_queue_wait_by_priority_seconds_count{priority="normal"} 0"#,
            r#"ottoscaler_queue_wait_by_priority_seconds_count{priority="unknown"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn tenants_beyond_the_top_share_the_other_label_and_old_series_go() {
        let m = Metrics::new().with_priorities(["normal"]);
        let key = |t: &str| ("normal".to_string(), t.to_string());
        let waiting = BTreeMap::from([(key("big"), 300), (key("mid"), 20), (key("tiny"), 1)]);
        let workers = BTreeMap::from([(key("tiny"), 1), (key("small"), 1)]);
        m.set_shares(&waiting, &workers, 2);
        let text = m.encode();
        for line in [
            r#"ottoscaler_waiting_events{priority="normal",tenant="big"} 300"#,
            r#"ottoscaler_waiting_events{priority="normal",tenant="mid"} 20"#,
            r#"ottoscaler_waiting_events{priority="normal",tenant="other"} 1"#,
            r#"ottoscaler_tenant_workers{priority="normal",tenant="other"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // When the queue drains, its series go rather than sticking at their last value.
        m.set_shares(&BTreeMap::new(), &workers, 2);
        assert!(
            !m.encode().contains("ottoscaler_waiting_events{"),
            "{}",
            m.encode()
        );
    }
}
