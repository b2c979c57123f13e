//! EventRecorder: puts a Kubernetes Event on the pod of each worker that ended
//! `failed`, `timed_out`, `lost` or `cancelled`, through kube-runtime's event recorder
//! (which turns repeats into a series, patching one Event instead of creating many).
//!
//! Best effort by design: the results stream is the durable record. The Supervisor
//! hands results over with `do_send` and never waits; this actor keeps at most
//! `kubernetes.events_queue` of them, sends one request at a time, paced by a token
//! bucket (`kubernetes.events_per_second`, `kubernetes.events_burst`), each bounded by
//! a timeout, and drops (and counts) what does not fit. 5,000 workers failing at once
//! cost at most that many Event requests, spread over time, never a stalled worker.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

use crate::messages::events::RecordWorkerEvent;
use crate::metrics::Metrics;
use crate::retry;
use crate::settings::{KubernetesSettings, Settings};
use crate::worker_events::{ACTION, worker_event};

/// The `reportingController` of every Event.
pub const CONTROLLER: &str = "ottoscaler.io/ottoscaler";
/// One Event request may take this long; then it counts as failed and is not retried.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// A warning for dropped Events at most once per this many drops.
const DROP_WARN_EVERY: u64 = 1000;

/// How the recorder is paced and bounded (from `kubernetes.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    pub per_second: u32,
    pub burst: u32,
    pub queue: usize,
}

impl EventLimits {
    pub fn from_settings(k: &KubernetesSettings) -> Self {
        Self {
            per_second: k.events_per_second,
            burst: k.events_burst,
            queue: k.events_queue as usize,
        }
    }
}

/// Starts the recorder for worker pods in `namespace`, or `None` when
/// `kubernetes.events` is off.
pub fn start(
    client: kube::Client,
    namespace: &str,
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> Option<Recipient<RecordWorkerEvent>> {
    settings.kubernetes.events.then(|| {
        EventRecorder::new(
            client,
            namespace.to_string(),
            settings.consumer_name(),
            EventLimits::from_settings(&settings.kubernetes),
            metrics,
        )
        .start()
        .recipient()
    })
}

pub struct EventRecorder {
    recorder: Recorder,
    namespace: String,
    limits: EventLimits,
    permits: Arc<DefaultDirectRateLimiter>,
    queue: VecDeque<RecordWorkerEvent>,
    /// A request is in flight.
    busy: bool,
    dropped: u64,
    metrics: Arc<Metrics>,
}

impl EventRecorder {
    /// `instance` is the `reportingInstance` (the consumer name, the pod name in-cluster).
    pub fn new(
        client: kube::Client,
        namespace: String,
        instance: String,
        limits: EventLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance: Some(instance),
        };
        let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota =
            Quota::per_second(nonzero(limits.per_second)).allow_burst(nonzero(limits.burst));
        Self {
            recorder: Recorder::new(client, reporter),
            namespace,
            limits,
            permits: Arc::new(RateLimiter::direct(quota)),
            queue: VecDeque::new(),
            busy: false,
            dropped: 0,
            metrics,
        }
    }

    /// Sends the next queued Event when none is in flight.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        let Some(text) = worker_event(&next.result) else {
            return self.pump(ctx);
        };
        self.busy = true;
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(next.result.pod.clone()),
            namespace: Some(self.namespace.clone()),
            uid: next.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: if text.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: text.reason.into(),
            note: Some(text.note),
            action: ACTION.into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let permits = self.permits.clone();
        let pod = next.result.pod;
        let fut = async move {
            permits.until_ready().await;
            tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&event, &reference)).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            match res {
                Ok(Ok(())) => act.metrics.kube_event("published"),
                Ok(Err(e)) => {
                    act.metrics.kube_event("failed");
                    debug!(%pod, error = %retry::describe(&e), "Event not recorded");
                }
                Err(_) => {
                    act.metrics.kube_event("failed");
                    debug!(%pod, timeout = ?PUBLISH_TIMEOUT, "Event not recorded in time");
                }
            }
            act.pump(ctx);
        }));
    }
}

impl Actor for EventRecorder {
    type Context = Context<Self>;
}

impl Handler<RecordWorkerEvent> for EventRecorder {
    type Result = ();

    fn handle(&mut self, msg: RecordWorkerEvent, ctx: &mut Self::Context) {
        if worker_event(&msg.result).is_none() {
            return;
        }
        if self.queue.len() >= self.limits.queue {
            self.dropped += 1;
            self.metrics.kube_event("dropped");
            if self.dropped % DROP_WARN_EVERY == 1 {
                warn!(
                    dropped = self.dropped,
                    queue = self.limits.queue,
                    "too many worker Events at once; dropping some (the results stream has every outcome)"
                );
            }
            return;
        }
        self.queue.push_back(msg);
        self.pump(ctx);
    }
}
