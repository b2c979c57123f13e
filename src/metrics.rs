//! Prometheus metrics, all named `ottoscaler_*`, served as OpenMetrics text on `/metrics`.
//!
//! One [`Metrics`] per process, shared as `Arc<Metrics>`; every method takes `&self`
//! (the metric types are atomics or locked inside), so actors and the Kubernetes client
//! layer record without coordination.

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
    redis_errors: Counter,
    results_published: Counter,
    dead_letters: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ottoscaler");
        let events = Family::<EventLabels, Counter>::default();
        let workers_active = Gauge::default();
        let workers_finished = Family::<OutcomeLabels, Counter>::default();
        let pod_create = Histogram::new(POD_CREATE_BUCKETS);
        let pod_watch_delay = Histogram::new(POD_CREATE_BUCKETS);
        let worker_duration = Histogram::new(WORKER_DURATION_BUCKETS);
        let kube_requests = Family::<KubeLabels, Counter>::default();
        let worker_restarts = Counter::default();
        let redis_errors = Counter::default();
        let results_published = Counter::default();
        let dead_letters = Counter::default();

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
            "Workers that reached an outcome",
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

        // Every series whose labels are known up front exists from the start at 0, so
        // a dashboard shows zeros rather than gaps, and `absent()` or `rate()` alerts work
        // on a process that has not counted anything yet.
        for outcome in OUTCOMES {
            let _ = workers_finished.get_or_create_owned(&OutcomeLabels {
                outcome: outcome.into(),
            });
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
            redis_errors,
            results_published,
            dead_letters,
        }
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

    /// A worker reached `outcome` (`succeeded`, `failed`, `timed_out`, `cancelled`,
    /// `lost`) after running `duration` (pod created -> finished).
    pub fn worker_finished(&self, outcome: &str, duration: Duration) {
        self.workers_finished
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
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

    pub fn redis_error(&self) {
        self.redis_errors.inc();
    }

    pub fn result_published(&self) {
        self.results_published.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
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
        m.worker_finished("succeeded", Duration::from_secs(12));
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
            r#"ottoscaler_workers_finished_total{outcome="succeeded"} 1"#,
            r#"ottoscaler_workers_finished_total{outcome="lost"} 0"#,
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
        expected.extend(
            OUTCOMES
                .iter()
                .map(|o| format!(r#"ottoscaler_workers_finished_total{{outcome="{o}"}} 0"#)),
        );
        expected.extend(KUBE_SERIES.iter().map(|(verb, code)| {
            format!(r#"ottoscaler_kube_requests_total{{verb="{verb}",code="{code}"}} 0"#)
        }));
        expected.extend(
            [
                "ottoscaler_dead_letters_total 0",
                "ottoscaler_results_published_total 0",
                "ottoscaler_redis_errors_total 0",
                "ottoscaler_worker_restarts_total 0",
                "ottoscaler_workers_active 0",
                "ottoscaler_pod_create_seconds_count 0",
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
}
