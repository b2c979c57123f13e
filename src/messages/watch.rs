//! What the shared pod watch tells the Supervisor, and the compact view of a pod that
//! workers decide on. A [`PodObservation`] keeps only what the outcome rules need, so
//! ten thousand watched pods cost little memory.

use actix::Message;
use jiff::Timestamp;

/// The pod phase, as Kubernetes reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// How the `worker` container terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: Option<String>,
}

/// The state of one worker pod, as last seen by the watch (or a GET).
#[derive(Debug, Clone, PartialEq)]
pub struct PodObservation {
    pub name: String,
    /// `metadata.uid`: what a Kubernetes Event on the pod refers to, so that
    /// `kubectl describe pod` shows it.
    pub uid: Option<String>,
    /// `ottoscaler.io/task-id` label.
    pub task_id: Option<String>,
    /// `ottoscaler.io/worker-index` label.
    pub worker_index: Option<u32>,
    /// `ottoscaler.io/event-id` annotation.
    pub event_id: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    pub phase: PodPhase,
    /// `status.reason`, for example `DeadlineExceeded`.
    pub pod_reason: Option<String>,
    /// The reason the first container is waiting, for example `ImagePullBackOff`.
    pub waiting_reason: Option<String>,
    /// The first container's termination, once it terminated.
    pub terminated: Option<Terminated>,
    /// Why the scheduler cannot place the pod (the message of `PodScheduled=False`), for
    /// example `0/3 nodes are available: 3 Insufficient cpu.`
    pub unschedulable: Option<String>,
    /// `status.startTime`: when the kubelet accepted the pod.
    pub started_at: Option<Timestamp>,
    /// `lastTransitionTime` of `PodScheduled=True`: when the scheduler bound the pod.
    pub scheduled_at: Option<Timestamp>,
    /// When the worker container started running (its `startedAt`, running or
    /// terminated), else the `ContainersReady=True` transition.
    pub container_started_at: Option<Timestamp>,
    /// `ottoscaler.io/template` annotation: the pod template it was built from.
    pub template: Option<String>,
    /// `ottoscaler.io/priority` annotation: its event's priority class.
    pub priority: Option<String>,
    /// `ottoscaler.io/tenant` annotation: its event's tenant.
    pub tenant: Option<String>,
    /// `metadata.deletionTimestamp` is set: the pod is being deleted.
    pub deleting: bool,
    /// Which attempt of its worker the pod is (`ottoscaler.io/attempt`; 1 without it).
    pub attempt: u32,
    /// The pod is being disrupted: evicted, preempted or taken down with its node.
    /// Boxed: it is rare, and most observations should stay small.
    pub disruption: Option<Box<Disruption>>,
}

/// Why a pod is going away through no fault of its own, and how to build it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Disruption {
    /// For the result's reason, e.g. `DisruptionTarget: PreemptionByScheduler: Preempted
    /// by ...` or `Evicted: The node was low on resource: memory.`
    pub reason: String,
    /// From the pod's annotations: how its next attempt is built (`None`: it cannot be).
    pub recipe: Option<crate::pods::Recipe>,
}

impl PodObservation {
    /// A pod known only by name, as just created: Pending, nothing else seen yet.
    pub fn pending(name: &str) -> PodObservation {
        PodObservation {
            name: name.to_string(),
            uid: None,
            task_id: None,
            worker_index: None,
            event_id: None,
            created_at: None,
            phase: PodPhase::Pending,
            pod_reason: None,
            waiting_reason: None,
            terminated: None,
            unschedulable: None,
            started_at: None,
            scheduled_at: None,
            container_started_at: None,
            template: None,
            priority: None,
            tenant: None,
            deleting: false,
            attempt: 1,
            disruption: None,
        }
    }
}

/// One event of the shared pod watch.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub enum PodWatchEvent {
    /// The watch (re)started a full list; `Listed` events and then `ListDone` follow.
    Relisting,
    /// A pod seen during a (re)list.
    Listed(PodObservation),
    /// The (re)list is complete: pods not listed are gone.
    ListDone,
    /// A pod was added or modified.
    Applied(PodObservation),
    /// A pod was deleted.
    Deleted { name: String },
    /// The watch failed and is retrying with backoff; readiness goes down until it lists.
    Failed { error: String },
}
