//! Messages the EventRecorder receives: a Kubernetes Event to put on a worker's pod.

use actix::Message;

use super::WorkerFinished;

/// A worker ended `failed`, `timed_out`, `lost` or `cancelled`: record it as an Event
/// on its pod. Best effort and never answered: the results stream stays the durable
/// record, and the sender never waits (it uses `do_send`).
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub struct RecordWorkerEvent {
    /// The result, as published.
    pub result: WorkerFinished,
    /// The pod's `metadata.uid`, when the worker saw it: `kubectl describe pod` shows
    /// only Events whose reference carries the pod's uid.
    pub uid: Option<String>,
}
