//! Messages a WorkerPodActor receives. Only its Supervisor sends them.

use actix::Message;

use std::sync::Arc;

use super::PodObservation;

/// The shared watch saw the worker's pod change, or a pod of it disappear. The
/// observation is shared with the Supervisor's books: one copy per worker, not two.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub enum PodUpdate {
    Seen(Arc<PodObservation>),
    /// The pod of this name is gone (an earlier attempt's, when it no longer is the
    /// worker's current pod).
    Gone(String),
}

/// An earlier attempt's pod of this worker was found left behind (not being deleted):
/// delete it.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct DeleteStale {
    pub pod: String,
}

/// The watch had a gap and re-listed without this pod: confirm with a GET whether it is
/// really gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Resync;

/// The worker's event was acknowledged: once its result is published it may delete its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct DeleteAllowed;

/// A scale_down chose this worker: outcome `cancelled`, delete the pod. Answers once the
/// deletion is accepted by the API server (or the pod was already gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<(), String>")]
pub struct Cancel;

/// Fault injection for supervision tests: the worker fails as if an unrecoverable
/// error (or a panic turned into a stop) happened, and stops. Test builds only.
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct InjectFailure {
    pub reason: String,
}
