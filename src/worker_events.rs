//! What Kubernetes Event a finished worker gets on its pod (docs/contract.md section 4):
//! plain data, decided from the result alone. The EventRecorder actor sends it.

use crate::messages::{Outcome, WorkerFinished};

/// Longest Event note the API server takes (`note` is at most 1 kB).
pub const MAX_NOTE_BYTES: usize = 1024;
/// The Event's `action`: what ottoscaler did.
pub const ACTION: &str = "FinishWorker";

/// The Event of one worker's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEventText {
    /// `Warning` for an outcome a person should look at, `Normal` for a cancel.
    pub warning: bool,
    /// `WorkerFailed`, `WorkerTimedOut`, `WorkerLost`, `WorkerCancelled`.
    pub reason: &'static str,
    /// One sentence naming the task, the event and why.
    pub note: String,
}

/// The Event for `result`, or `None` for an outcome that needs none (`succeeded`).
pub fn worker_event(result: &WorkerFinished) -> Option<WorkerEventText> {
    let (warning, reason, what) = match result.outcome {
        Outcome::Succeeded => return None,
        Outcome::Failed => (true, "WorkerFailed", "failed"),
        Outcome::TimedOut => (true, "WorkerTimedOut", "timed out"),
        Outcome::Lost => (true, "WorkerLost", "was lost (its pod vanished)"),
        Outcome::Cancelled => (false, "WorkerCancelled", "was cancelled by a scale_down"),
    };
    let mut why = Vec::new();
    if let Some(code) = result.exit_code {
        why.push(format!("exit code {code}"));
    }
    if let Some(r) = result.reason.as_deref().filter(|r| !r.is_empty()) {
        why.push(r.to_string());
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {}", why.join(", "))
    };
    let note = format!(
        "worker {} of task {} (event {}) {what}{why}",
        result.worker_index, result.task_id, result.event_id
    );
    Some(WorkerEventText {
        warning,
        reason,
        note: truncate(note, MAX_NOTE_BYTES),
    })
}

/// At most `max` bytes, cut at a character boundary, ending in `...` when cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, exit_code: Option<i32>, reason: Option<&str>) -> WorkerFinished {
        WorkerFinished {
            task_id: "task-123".into(),
            event_id: "1718000000000-0".into(),
            pod: "otto-agent-task-123-abcd1234-2".into(),
            worker_index: 2,
            outcome,
            exit_code,
            reason: reason.map(String::from),
            duration_ms: 10,
            finished_at: "2026-12-02T00:00:00Z".into(),
            trace_id: None,
            attempts: 1,
        }
    }

    #[test]
    fn each_notable_outcome_gets_a_reason_and_a_sentence() {
        let timed_out = worker_event(&result(
            Outcome::TimedOut,
            None,
            Some("pending longer than 5m: 0/3 nodes are available: 3 Insufficient cpu."),
        ))
        .expect("event");
        assert_eq!(
            timed_out,
            WorkerEventText {
                warning: true,
                reason: "WorkerTimedOut",
                note: "worker 2 of task task-123 (event 1718000000000-0) timed out: pending \
                       longer than 5m: 0/3 nodes are available: 3 Insufficient cpu."
                    .into(),
            }
        );
        let failed = worker_event(&result(Outcome::Failed, Some(3), Some("Error"))).expect("event");
        assert_eq!(failed.reason, "WorkerFailed");
        assert!(
            failed.note.ends_with("failed: exit code 3, Error"),
            "{}",
            failed.note
        );
        let lost = worker_event(&result(Outcome::Lost, None, None)).expect("event");
        assert_eq!(lost.reason, "WorkerLost");
        assert!(
            lost.note.ends_with("was lost (its pod vanished)"),
            "{}",
            lost.note
        );
        let cancelled = worker_event(&result(Outcome::Cancelled, None, None)).expect("event");
        assert_eq!(
            (cancelled.warning, cancelled.reason),
            (false, "WorkerCancelled")
        );
    }

    #[test]
    fn a_success_gets_no_event() {
        assert_eq!(
            worker_event(&result(Outcome::Succeeded, Some(0), None)),
            None
        );
    }

    #[test]
    fn a_long_reason_is_cut_to_the_api_limit_at_a_character_boundary() {
        let long = "é".repeat(2000);
        let event = worker_event(&result(Outcome::Failed, None, Some(&long))).expect("event");
        assert!(event.note.len() <= MAX_NOTE_BYTES, "{}", event.note.len());
        assert!(event.note.ends_with("..."));
    }
}
