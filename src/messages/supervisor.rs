//! Messages the Supervisor receives (besides [`ScaleEvent`](super::ScaleEvent),
//! [`WorkerFinished`](super::WorkerFinished) and [`PodWatchEvent`](super::PodWatchEvent)),
//! and its answers.

use std::sync::Arc;

use actix::Message;
use k8s_openapi::api::core::v1::Pod;
use thiserror::Error;

/// The event's effect is durable in Kubernetes: the sender may acknowledge it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAccepted {
    pub event_id: String,
    /// scale_up: the pods created or found; scale_down: the pods whose deletion was accepted.
    pub pods: Vec<String>,
}

/// The event could not be carried out now. The sender must not acknowledge it: a later
/// delivery retries it (and after `redis.max_deliveries` it is dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventRefused {
    /// Creating or deleting pods failed; `pods_ok` of them did succeed.
    #[error("{reason} ({pods_ok} of {pods_total} pods done)")]
    Kubernetes {
        reason: String,
        pods_ok: usize,
        pods_total: usize,
    },
    /// The Supervisor is shutting down and takes no new work.
    #[error("ottoscaler is shutting down")]
    ShuttingDown,
    /// The event was started but its pods did not all settle within
    /// `limits.settle_timeout`; its workers carry on, and the entry stays pending for a
    /// later delivery (which finds them).
    #[error("the event's pods did not all settle within {}", humantime::format_duration(*.after))]
    Stalled { after: std::time::Duration },
}

/// The sender acknowledged the event's stream entry: its finished workers may now delete
/// their pods (docs/contract.md section 2: never before, or a crash could run them twice).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct EventAcknowledged {
    pub event_id: String,
}

/// What a worker tells its Supervisor about its lifecycle.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub enum WorkerReport {
    /// The worker's create request settled: the pod exists (created now or found), or it
    /// never will (rejected for good, or cancelled before creation and reported). Its
    /// event stops waiting for it.
    Settled {
        pod: String,
        result: Result<(), String>,
    },
    /// The worker's result is published and its pod gone: it is done.
    Gone { pod: String },
    /// The pod `previous` was disrupted: the worker runs attempt `attempt` in `pod`
    /// (built at `built_at`), which it creates next. From now on it reports as that pod.
    Retrying {
        previous: String,
        attempt: u32,
        pod: Arc<Pod>,
        built_at: jiff::Timestamp,
    },
    /// The worker actor stopped. Unless it said `Gone` first (`error` is `None`), the
    /// Supervisor restarts it with backoff, resuming from the pod's real state.
    Stopped {
        pod: String,
        /// The incarnation that stopped (a late stop of an old one is ignored).
        incarnation: u32,
        /// Why it failed, when it did.
        error: Option<String>,
    },
}

/// Stop taking events: the process is shutting down. Workers are left alone; their pods
/// are adopted by the next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct StopIntake;

/// Ask the Supervisor what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "SupervisorStatus")]
pub struct GetStatus;

/// What the Supervisor runs, for tests, `/readyz`, metrics and the reader's backpressure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SupervisorStatus {
    /// The initial pod list is done (adoption complete) and the watch is up.
    pub ready: bool,
    /// The initial pod list is done (the watch may have failed since).
    pub synced: bool,
    /// Workers alive (pods not yet gone).
    pub active: usize,
    /// `limits.max_workers - active`, never negative; 0 while events wait in the queue.
    pub free_slots: usize,
    /// scale_up events waiting for free slots.
    pub queued_events: usize,
    /// Events the Supervisor takes now: the free slots (none while events wait) plus
    /// what `limits.max_waiting_events` leaves for reading ahead. The reader reads at
    /// most this many.
    pub room: usize,
    /// Worker restarts since start.
    pub restarts: u64,
}

/// Fault injection for supervision tests: make the named worker fail as if an
/// unrecoverable error happened. Answers whether such a worker was running. Only in
/// test builds (the `test-hooks` feature); the shipped binary has no such message.
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "bool")]
pub struct FailWorker {
    pub pod: String,
    pub reason: String,
}
