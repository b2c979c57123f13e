//! kubesim's record of one pod and the decision what to do with it next.
//!
//! The record keeps two kinds of facts apart: what the user asked for (spec,
//! annotations, deletion), refreshed from every watch event, and how far the
//! simulation has driven the pod ([`Progress`]), changed only when a write that
//! kubesim made has succeeded. Watch events can lag behind our own writes, so
//! progress is never re-read from them once the pod is known.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::behaviour::Behaviour;
use super::nodes::SimNode;
use super::status::{Shape, State};

/// How far a pod has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No node yet: the scheduler's business.
    Unbound,
    /// Bound to a node that is not ours: another kubelet's business.
    Foreign,
    /// Bound to one of our nodes, status not yet written.
    Bound,
    /// ContainerCreating reported; next: start (or a failing pull).
    Creating,
    /// ErrImagePull reported; next: ImagePullBackOff.
    PullError,
    /// ImagePullBackOff reported; stays so.
    PullBackOff,
    /// Containers running; next: exit.
    Running,
    /// Exited and waiting to restart (CrashLoopBackOff); next: start again.
    CrashBackOff,
    /// Succeeded or Failed.
    Terminal,
    /// Being deleted; containers reported killed; next: the final delete.
    Killed,
    /// Final delete sent; waiting for the DELETED event.
    Deleted,
}

/// The simulation's own state of a pod; replaced as a whole when a write succeeds.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Current stage.
    pub stage: Stage,
    /// When the stage's next step is due.
    pub due: Option<Instant>,
    /// Index of our node the pod is bound to.
    pub node: Option<usize>,
    /// `status.startTime`, as wall clock and as a monotonic instant (for deadlines).
    pub started: Option<(Timestamp, Instant)>,
    /// When the current container run began.
    pub run_started: Option<Timestamp>,
    /// Last readiness change, for condition transition times.
    pub changed_at: Option<Timestamp>,
    /// Container restarts so far.
    pub restart_count: i32,
    /// The previous container run, after a restart.
    pub last_state: Option<State>,
    /// Pod IP, once the sandbox exists.
    pub pod_ip: Option<String>,
}

/// Why a deletion was noticed and how long the pod may take.
#[derive(Debug, Clone, Copy)]
pub struct Deletion {
    /// When kubesim first saw `deletionTimestamp`.
    pub seen_at: Instant,
    /// `deletionGracePeriodSeconds`.
    pub grace: Duration,
}

/// Restart policy of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never restart: the pod ends Succeeded or Failed.
    Never,
    /// Restart failed containers.
    OnFailure,
    /// Restart always (the API default for pods).
    Always,
}

/// One pod as kubesim knows it.
#[derive(Debug, Clone)]
pub struct SimPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID; a new uid under the same name is a new pod.
    pub uid: String,
    /// Annotations.
    pub behaviour: Behaviour,
    /// Containers.
    pub shape: Shape,
    /// Restart policy.
    pub restart: Restart,
    /// `spec.activeDeadlineSeconds`.
    pub active_deadline: Option<Duration>,
    /// Set once `deletionTimestamp` was seen.
    pub deletion: Option<Deletion>,
    /// Conditions of the pod that a kubelet does not own (DisruptionTarget...), kept
    /// in every status written.
    pub other_conditions: Vec<serde_json::Value>,
    /// Simulation state.
    pub progress: Progress,
    /// A write is in flight; no new one is started until it ends.
    pub busy: bool,
    /// After a failed write: not before this instant.
    pub retry_at: Option<Instant>,
}

/// The next step for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing until something changes.
    Nothing,
    /// Look again at this instant.
    WaitUntil(Instant),
    /// Write now.
    Act(Action),
}

/// A write kubesim makes to move a pod along.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Report Pending with ContainerCreating.
    Accept,
    /// Report ErrImagePull.
    PullError,
    /// Report ImagePullBackOff.
    PullBackOff,
    /// Report the containers running.
    Start,
    /// Report the containers exited (terminal, or waiting to restart).
    Exit,
    /// Report Failed/DeadlineExceeded.
    DeadlineExceeded,
    /// Report the containers killed for deletion.
    Kill,
    /// Delete with grace period 0 (after the kill was reported, or at once for a pod
    /// on a node whose kubelet is down).
    Delete,
}

/// Converts a wall-clock time in the past to a monotonic instant.
pub fn instant_of(ts: Timestamp) -> Instant {
    let now = Instant::now();
    let ago = Timestamp::now().duration_since(ts);
    let ago = Duration::try_from(ago).unwrap_or(Duration::ZERO);
    now.checked_sub(ago).unwrap_or(now)
}

impl SimPod {
    /// The record for a pod kubesim has not seen before, with its progress read from
    /// the pod's status (so kubesim can attach to a cluster with running pods).
    pub fn observe_new(pod: &Pod, nodes: &[SimNode], default_run: Duration) -> SimPod {
        let now = Instant::now();
        let mut sim = SimPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            behaviour: Behaviour::of(pod, default_run),
            shape: Shape::of(pod),
            restart: Restart::Always,
            active_deadline: None,
            other_conditions: Vec::new(),
            deletion: None,
            progress: Progress {
                stage: Stage::Unbound,
                due: None,
                node: None,
                started: None,
                run_started: None,
                changed_at: None,
                restart_count: 0,
                last_state: None,
                pod_ip: None,
            },
            busy: false,
            retry_at: None,
        };
        sim.refresh_spec(pod, nodes);
        let status = pod.status.as_ref();
        let p = &mut sim.progress;
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        p.node = node_name.and_then(|n| nodes.iter().position(|node| node.name == n));
        p.started = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| (t.0, instant_of(t.0)));
        p.pod_ip = status.and_then(|s| s.pod_ip.clone());
        let container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first());
        p.restart_count = container.map(|c| c.restart_count).unwrap_or(0);
        let waiting = container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        let running_since = container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0);
        let phase = status.and_then(|s| s.phase.as_deref());
        p.stage = match (node_name.filter(|n| !n.is_empty()), p.node) {
            (None, _) => Stage::Unbound,
            (Some(_), None) => Stage::Foreign,
            _ if matches!(phase, Some("Succeeded" | "Failed")) => Stage::Terminal,
            _ if p.started.is_none() => Stage::Bound,
            _ => match (running_since, waiting) {
                (Some(since), _) => {
                    p.run_started = Some(since);
                    p.due = Some(instant_of(since) + sim.behaviour.run);
                    Stage::Running
                }
                (None, Some("ImagePullBackOff")) => Stage::PullBackOff,
                (None, Some("ErrImagePull")) => Stage::PullError,
                (None, Some("CrashLoopBackOff")) => Stage::CrashBackOff,
                (None, _) => Stage::Creating,
            },
        };
        if p.due.is_none()
            && matches!(
                p.stage,
                Stage::Creating | Stage::PullError | Stage::CrashBackOff
            )
        {
            p.due = Some(now);
        }
        sim
    }

    /// Takes in what others may change on a live pod: deadline, deletion, conditions
    /// they own, and the binding the scheduler made.
    pub fn refresh_spec(&mut self, pod: &Pod, nodes: &[SimNode]) {
        let spec = pod.spec.as_ref();
        self.restart = match spec.and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        };
        self.other_conditions = super::status::foreign_conditions(pod);
        self.active_deadline = spec
            .and_then(|s| s.active_deadline_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        if self.deletion.is_none() && pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(30);
            self.deletion = Some(Deletion {
                seen_at: Instant::now(),
                grace: Duration::from_secs(grace),
            });
        }
        let node_name = spec.and_then(|s| s.node_name.as_deref()).unwrap_or("");
        if !self.busy && !node_name.is_empty() && self.progress.stage == Stage::Unbound {
            match nodes.iter().position(|n| n.name == node_name) {
                Some(index) => {
                    self.progress.node = Some(index);
                    self.progress.stage = Stage::Bound;
                }
                None => self.progress.stage = Stage::Foreign,
            }
        }
    }

    /// When `activeDeadlineSeconds` runs out, if set and the pod has started.
    pub fn deadline(&self) -> Option<Instant> {
        let (_, started) = self.progress.started?;
        Some(started + self.active_deadline?)
    }

    /// Decides the next step at `now`. `node_down` says that the kubelet of the pod's
    /// node is down (its heartbeats were stopped): then nothing happens to the pod but
    /// a force delete once someone deletes it.
    pub fn next(&self, now: Instant, node_down: bool) -> Next {
        if self.busy {
            return Next::Nothing;
        }
        if node_down {
            return match self.progress.stage {
                Stage::Deleted => Next::Nothing,
                _ if self.deletion.is_some() => Next::Act(Action::Delete),
                _ => Next::Nothing,
            };
        }
        if let Some(at) = self.retry_at.filter(|at| *at > now) {
            return Next::WaitUntil(at);
        }
        let p = &self.progress;
        let due = |at: Option<Instant>, action: Action| match at {
            Some(at) if at > now => Next::WaitUntil(at),
            _ => Next::Act(action),
        };
        match p.stage {
            // Unbound pods wait for the scheduler (the apiserver deletes them at once).
            Stage::Foreign | Stage::Deleted | Stage::Unbound => return Next::Nothing,
            Stage::Terminal | Stage::Killed if self.deletion.is_some() => {
                return Next::Act(Action::Delete);
            }
            _ => {}
        }
        if let Some(deletion) = self.deletion {
            // A running container takes its termination time (at most the grace
            // period) to exit; anything else is gone at once.
            let exit_time = if p.stage == Stage::Running {
                self.behaviour.termination.min(deletion.grace)
            } else {
                Duration::ZERO
            };
            return due(Some(deletion.seen_at + exit_time), Action::Kill);
        }
        if p.stage == Stage::Terminal {
            return Next::Nothing;
        }
        let deadline = self.deadline();
        if deadline.is_some_and(|d| d <= now) {
            return Next::Act(Action::DeadlineExceeded);
        }
        let step = match p.stage {
            Stage::Bound => Next::Act(Action::Accept),
            Stage::Creating if self.behaviour.pull_fails => due(p.due, Action::PullError),
            Stage::Creating | Stage::CrashBackOff => due(p.due, Action::Start),
            Stage::PullError => due(p.due, Action::PullBackOff),
            Stage::Running => due(p.due, Action::Exit),
            _ => Next::Nothing,
        };
        // Wake up for the deadline if it comes before the next step.
        match (step, deadline) {
            (Next::Nothing, Some(d)) => Next::WaitUntil(d),
            (Next::WaitUntil(at), Some(d)) => Next::WaitUntil(at.min(d)),
            (step, _) => step,
        }
    }
}
