//! What a finished worker reports (docs/contract.md section 5). The Supervisor receives
//! [`WorkerFinished`] from its workers and forwards it to the results sink (the results
//! publisher in production, a collector in tests).

use actix::Message;
use thiserror::Error;

/// How a worker ended (docs/contract.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Phase Succeeded.
    Succeeded,
    /// Phase Failed; exit code and reason from the container status.
    Failed,
    /// Pending too long, an image pull error past its grace, or DeadlineExceeded.
    TimedOut,
    /// Removed by a scale_down.
    Cancelled,
    /// The pod disappeared without ottoscaler deleting it.
    Lost,
}

impl Outcome {
    /// Every outcome, for metrics that want a series per outcome from the start.
    pub const ALL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Cancelled,
        Outcome::Lost,
    ];

    /// The `outcome` field of a result entry and the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Lost => "lost",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished worker: exactly one such result is published per (event, worker index).
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "Result<(), PublishError>")]
pub struct WorkerFinished {
    pub task_id: String,
    /// The stream entry id of the scale_up that created the worker.
    pub event_id: String,
    /// The pod's name.
    pub pod: String,
    pub worker_index: u32,
    pub outcome: Outcome,
    /// The worker container's exit code, when it terminated.
    pub exit_code: Option<i32>,
    /// Why, when known: the container's reason, `DeadlineExceeded`, `ImagePullBackOff`...
    pub reason: Option<String>,
    /// Pod created -> finished, in milliseconds.
    pub duration_ms: u64,
    /// When ottoscaler decided the outcome, RFC 3339.
    pub finished_at: String,
    /// The worker's trace (32 hex digits) when traces are exported; `None` otherwise,
    /// and then the entry has no `trace_id` field.
    pub trace_id: Option<String>,
    /// Pods the worker ran: 1, plus one per disruption it was retried after.
    pub attempts: u32,
}

impl WorkerFinished {
    /// The fields of the result stream entry, in the contract's order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("task_id", self.task_id.clone()),
            ("event_id", self.event_id.clone()),
            ("pod", self.pod.clone()),
            ("worker_index", self.worker_index.to_string()),
            ("outcome", self.outcome.as_str().to_string()),
        ];
        if let Some(code) = self.exit_code {
            f.push(("exit_code", code.to_string()));
        }
        if let Some(reason) = &self.reason {
            f.push(("reason", reason.clone()));
        }
        f.push(("duration_ms", self.duration_ms.to_string()));
        f.push(("finished_at", self.finished_at.clone()));
        f.push(("attempts", self.attempts.max(1).to_string()));
        if let Some(trace_id) = &self.trace_id {
            f.push(("trace_id", trace_id.clone()));
        }
        f
    }
}

/// The result could not be made durable; the worker keeps it and retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("publishing the result failed: {0}")]
pub struct PublishError(pub String);
