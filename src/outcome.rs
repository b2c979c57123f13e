//! Outcome rules (docs/contract.md section 4) and scale_down selection, as plain functions
//! over [`PodObservation`]s. Workers call these; tests call them directly.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::messages::watch::Disruption;
use crate::messages::{Outcome, PodObservation, PodPhase, Terminated};
use crate::pods::{
    ANNOTATION_ATTEMPT, ANNOTATION_CREATED_AT, ANNOTATION_EVENT_ID, ANNOTATION_PRIORITY,
    ANNOTATION_TEMPLATE, ANNOTATION_TENANT, LABEL_TASK_ID, LABEL_WORKER_INDEX, Recipe,
    WORKER_CONTAINER,
};

/// Container waiting reasons that mean the pod will not start by itself.
pub const IMAGE_ERRORS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// The longest scheduler message kept for a result's reason (in bytes); with thousands of
/// nodes the scheduler lists every reason.
const MAX_SCHEDULING_MESSAGE: usize = 300;

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The compact view of a pod that workers decide on.
pub fn observe(pod: &Pod) -> PodObservation {
    let meta = &pod.metadata;
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
    };
    // The worker container's status; the first one when a template renamed nothing.
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let container = statuses
        .iter()
        .find(|c| c.name == WORKER_CONTAINER)
        .or_else(|| statuses.first());
    let state = container.and_then(|c| c.state.as_ref());
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let transition_to_true = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    };
    let container_started_at = state
        .and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
        })
        .map(|t| t.0)
        .or_else(|| transition_to_true("ContainersReady"));
    PodObservation {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
        task_id: label(LABEL_TASK_ID),
        worker_index: label(LABEL_WORKER_INDEX).and_then(|i| i.parse().ok()),
        event_id: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_EVENT_ID))
            .cloned(),
        // Our own annotation has sub-second precision; creationTimestamp only seconds.
        created_at: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CREATED_AT))
            .and_then(|t| t.parse().ok())
            .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0)),
        phase,
        pod_reason: status.and_then(|s| s.reason.clone()),
        waiting_reason: state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone()),
        terminated: state
            .and_then(|s| s.terminated.as_ref())
            .map(|t| Terminated {
                exit_code: t.exit_code,
                reason: t.reason.clone(),
            }),
        unschedulable: status
            .and_then(|s| s.conditions.as_deref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .filter(|c| c.status == "False")
            .map(|c| {
                let what = c.reason.as_deref().unwrap_or("Unschedulable");
                match c.message.as_deref() {
                    Some(m) => clip(&format!("{what}: {m}"), MAX_SCHEDULING_MESSAGE),
                    None => what.to_string(),
                }
            }),
        started_at: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        scheduled_at: transition_to_true("PodScheduled"),
        container_started_at,
        template: annotation(ANNOTATION_TEMPLATE),
        priority: annotation(ANNOTATION_PRIORITY),
        tenant: annotation(ANNOTATION_TENANT),
        deleting: meta.deletion_timestamp.is_some(),
        attempt: annotation(ANNOTATION_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .filter(|a| *a >= 1)
            .unwrap_or(1),
        disruption: disruption_reason(pod).map(|reason| {
            Box::new(Disruption {
                reason,
                recipe: Recipe::of(pod),
            })
        }),
    }
}

/// Pod `status.reason`s that mean the pod was taken away from a healthy run: the
/// kubelet's eviction, its preemption of a critical pod, and the node controller's
/// older node loss.
pub const DISRUPTION_REASONS: [&str; 3] = ["Evicted", "Preempting", "NodeLost"];

/// Why the pod is being disrupted, if it is: the `DisruptionTarget` condition (set by
/// the scheduler when it preempts, by the taint manager when a node is lost, by the
/// Eviction API on a drain, by the kubelet when it evicts), else a
/// [`DISRUPTION_REASONS`] status reason. A pod that succeeded is never disrupted.
pub fn disruption_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Succeeded") {
        return None;
    }
    if let Some(c) = status
        .conditions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        let what = format!(
            "DisruptionTarget: {}",
            c.reason.as_deref().unwrap_or("unknown")
        );
        return Some(with_message(&what, c.message.as_deref()));
    }
    let reason = status.reason.as_deref()?;
    DISRUPTION_REASONS
        .contains(&reason)
        .then(|| with_message(reason, status.message.as_deref()))
}

/// `what: message` (just `what` without a message), clipped for a result's reason.
fn with_message(what: &str, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(message) => clip(&format!("{what}: {message}"), MAX_SCHEDULING_MESSAGE),
        None => clip(what, MAX_SCHEDULING_MESSAGE),
    }
}

/// A decided outcome, with what the result reports about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// What the rules need besides the pod: the worker's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the pod has existed (or the worker has waited for it).
    pub pending_for: Duration,
    /// How long the container has been waiting on an image error, if it is.
    pub image_error_for: Option<Duration>,
    pub pending_timeout: Duration,
    pub image_pull_grace: Duration,
}

/// The outcome of a pod, if it has one yet. Pure: the same observation and timing
/// always give the same answer.
pub fn decide(obs: &PodObservation, timing: &Timing) -> Option<Decision> {
    let exit_code = obs.terminated.as_ref().map(|t| t.exit_code);
    let container_reason = obs.terminated.as_ref().and_then(|t| t.reason.clone());
    match obs.phase {
        PodPhase::Succeeded => {
            return Some(Decision {
                outcome: Outcome::Succeeded,
                exit_code: exit_code.or(Some(0)),
                reason: container_reason,
            });
        }
        PodPhase::Failed if obs.pod_reason.as_deref() == Some("DeadlineExceeded") => {
            return Some(Decision {
                outcome: Outcome::TimedOut,
                exit_code,
                reason: Some("DeadlineExceeded".into()),
            });
        }
        PodPhase::Failed => {
            return Some(Decision {
                outcome: Outcome::Failed,
                exit_code,
                reason: container_reason.or_else(|| obs.pod_reason.clone()),
            });
        }
        PodPhase::Pending | PodPhase::Running | PodPhase::Unknown => {}
    }
    if let (Some(reason), Some(waited)) = (&obs.waiting_reason, timing.image_error_for)
        && IMAGE_ERRORS.contains(&reason.as_str())
        && waited >= timing.image_pull_grace
    {
        return Some(Decision {
            outcome: Outcome::TimedOut,
            exit_code: None,
            reason: Some(format!(
                "container waited {} with {reason}",
                humantime::format_duration(round_secs(waited))
            )),
        });
    }
    if obs.phase == PodPhase::Pending && timing.pending_for >= timing.pending_timeout {
        let why = obs
            .waiting_reason
            .clone()
            .or_else(|| obs.unschedulable.clone())
            .unwrap_or_else(|| "not scheduled or not started".into());
        return Some(Decision {
            outcome: Outcome::TimedOut,
            exit_code: None,
            reason: Some(format!(
                "pending longer than {} ({why})",
                humantime::format_duration(timing.pending_timeout)
            )),
        });
    }
    None
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64 / 100 * 100)
}

/// Is the container waiting on an image error (the start of its grace period)?
pub fn has_image_error(obs: &PodObservation) -> bool {
    obs.waiting_reason
        .as_deref()
        .is_some_and(|r| IMAGE_ERRORS.contains(&r))
}

/// A live worker a scale_down may cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelCandidate {
    pub pod: String,
    /// Not yet Running (or never seen by the watch).
    pub pending: bool,
    /// When the pod started running, if it did.
    pub started_at: Option<Timestamp>,
}

/// Which workers a scale_down of `count` (all when `None`) cancels: Pending ones first,
/// then the most recently started. Ties break by name so the choice is deterministic.
pub fn select_for_scale_down(
    mut candidates: Vec<CancelCandidate>,
    count: Option<u32>,
) -> Vec<String> {
    candidates.sort_by(|a, b| {
        b.pending
            .cmp(&a.pending)
            .then_with(|| b.started_at.cmp(&a.started_at))
            .then_with(|| a.pod.cmp(&b.pod))
    });
    let n = count.map_or(candidates.len(), |c| c as usize);
    candidates.into_iter().take(n).map(|c| c.pod).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    fn obs(phase: PodPhase) -> PodObservation {
        PodObservation {
            phase,
            ..PodObservation::pending("p")
        }
    }

    fn timing() -> Timing {
        Timing {
            pending_for: Duration::from_secs(1),
            image_error_for: None,
            pending_timeout: Duration::from_secs(300),
            image_pull_grace: Duration::from_secs(60),
        }
    }

    #[test]
    fn succeeded_and_failed_phases() {
        let d = decide(&obs(PodPhase::Succeeded), &timing()).expect("decided");
        assert_eq!((d.outcome, d.exit_code), (Outcome::Succeeded, Some(0)));

        let mut failed = obs(PodPhase::Failed);
        failed.terminated = Some(Terminated {
            exit_code: 3,
            reason: Some("Error".into()),
        });
        let d = decide(&failed, &timing()).expect("decided");
        assert_eq!(d.outcome, Outcome::Failed);
        assert_eq!(d.exit_code, Some(3));
        assert_eq!(d.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn deadline_exceeded_is_timed_out() {
        let mut p = obs(PodPhase::Failed);
        p.pod_reason = Some("DeadlineExceeded".into());
        let d = decide(&p, &timing()).expect("decided");
        assert_eq!(d.outcome, Outcome::TimedOut);
        assert_eq!(d.reason.as_deref(), Some("DeadlineExceeded"));
    }

    #[test]
    fn running_and_young_pending_pods_have_no_outcome() {
        assert_eq!(decide(&obs(PodPhase::Running), &timing()), None);
        assert_eq!(decide(&obs(PodPhase::Pending), &timing()), None);
    }

    #[test]
    fn pending_too_long_is_timed_out() {
        let t = Timing {
            pending_for: Duration::from_secs(300),
            ..timing()
        };
        let d = decide(&obs(PodPhase::Pending), &t).expect("decided");
        assert_eq!(d.outcome, Outcome::TimedOut);
        assert!(
            d.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("pending longer than 5m")),
            "{d:?}"
        );
        // Running pods do not time out on the pending timer.
        assert_eq!(decide(&obs(PodPhase::Running), &t), None);
    }

    #[test]
    fn a_pod_the_scheduler_cannot_place_times_out_with_the_schedulers_reason() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."
            }]}
        }))
        .expect("a pod");
        let o = observe(&pod);
        assert_eq!(
            o.unschedulable.as_deref(),
            Some("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
        );
        let t = Timing {
            pending_for: Duration::from_secs(300),
            ..timing()
        };
        let d = decide(&o, &t).expect("decided");
        assert_eq!(
            d.reason.as_deref(),
            Some(
                "pending longer than 5m (Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.)"
            )
        );
        // Scheduled pods carry no scheduling reason; a container's wait comes first.
        let scheduled: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}
            ]}
        }))
        .expect("a pod");
        assert_eq!(observe(&scheduled).unschedulable, None);
    }

    #[test]
    fn a_long_scheduler_message_is_clipped_on_a_character_boundary() {
        let long = "é".repeat(400);
        let clipped = clip(&long, MAX_SCHEDULING_MESSAGE);
        assert!(clipped.len() <= MAX_SCHEDULING_MESSAGE + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short", 10), "short");
    }

    #[test]
    fn image_errors_time_out_after_the_grace_only() {
        let mut p = obs(PodPhase::Pending);
        p.waiting_reason = Some("ImagePullBackOff".into());
        assert!(has_image_error(&p));
        let within = Timing {
            image_error_for: Some(Duration::from_secs(59)),
            ..timing()
        };
        assert_eq!(decide(&p, &within), None);
        let past = Timing {
            image_error_for: Some(Duration::from_secs(60)),
            ..timing()
        };
        let d = decide(&p, &past).expect("decided");
        assert_eq!(d.outcome, Outcome::TimedOut);
        assert!(
            d.reason
                .as_deref()
                .is_some_and(|r| r.contains("ImagePullBackOff")),
            "{d:?}"
        );

        p.waiting_reason = Some("ContainerCreating".into());
        assert!(!has_image_error(&p));
        assert_eq!(decide(&p, &past), None);
    }

    #[test]
    fn observe_reads_the_worker_container() {
        let pod = Pod {
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![
                    ContainerStatus {
                        name: "sidecar".into(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some("Other".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ContainerStatus {
                        name: "worker".into(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: 3,
                                reason: Some("Error".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let o = observe(&pod);
        assert_eq!(o.phase, PodPhase::Failed);
        assert_eq!(o.terminated.map(|t| t.exit_code), Some(3));
        assert_eq!(o.waiting_reason, None);
        assert!(!o.deleting);
    }

    #[test]
    fn observe_reads_the_start_up_timestamps_and_the_template() {
        use k8s_openapi::api::core::v1::{ContainerStateRunning, PodCondition};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let t = |s: i64| Time(Timestamp::from_second(s).expect("ts"));
        let condition = |kind: &str, status: &str, at: i64| PodCondition {
            type_: kind.into(),
            status: status.into(),
            last_transition_time: Some(t(at)),
            ..Default::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                annotations: Some([(ANNOTATION_TEMPLATE.to_string(), "gpu".to_string())].into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![
                    condition("Initialized", "True", 5),
                    condition("PodScheduled", "True", 10),
                    condition("ContainersReady", "True", 14),
                ]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "worker".into(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(t(13)),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let o = observe(&pod);
        assert_eq!(o.template.as_deref(), Some("gpu"));
        assert_eq!(o.scheduled_at, Some(t(10).0));
        assert_eq!(o.container_started_at, Some(t(13).0), "startedAt first");

        // Without a startedAt: the ContainersReady transition.
        let status = pod.status.as_mut().expect("status");
        status.container_statuses = None;
        assert_eq!(observe(&pod).container_started_at, Some(t(14).0));

        // Not scheduled yet: no scheduled time (a False condition has a time too).
        let status = pod.status.as_mut().expect("status");
        status.conditions = Some(vec![condition("PodScheduled", "False", 3)]);
        let o = observe(&pod);
        assert_eq!((o.scheduled_at, o.container_started_at), (None, None));
        assert!(o.unschedulable.is_some());
    }

    #[test]
    fn scale_down_takes_pending_first_then_most_recently_started() {
        let at = |s: i64| Some(Timestamp::from_second(s).expect("ts"));
        let c = |pod: &str, pending: bool, started_at| CancelCandidate {
            pod: pod.into(),
            pending,
            started_at,
        };
        let candidates = vec![
            c("old", false, at(100)),
            c("new", false, at(300)),
            c("pending-b", true, None),
            c("mid", false, at(200)),
            c("pending-a", true, None),
        ];
        assert_eq!(
            select_for_scale_down(candidates.clone(), Some(2)),
            vec!["pending-a", "pending-b"]
        );
        assert_eq!(
            select_for_scale_down(candidates.clone(), Some(4)),
            vec!["pending-a", "pending-b", "new", "mid"]
        );
        assert_eq!(select_for_scale_down(candidates.clone(), None).len(), 5);
        assert_eq!(select_for_scale_down(candidates, Some(10)).len(), 5);
        assert!(select_for_scale_down(vec![], Some(1)).is_empty());
    }

    fn with_status(status: PodStatus) -> Pod {
        Pod {
            status: Some(status),
            ..Pod::default()
        }
    }

    fn disruption_target(reason: &str, message: &str) -> k8s_openapi::api::core::v1::PodCondition {
        k8s_openapi::api::core::v1::PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn disruptions_are_read_from_the_condition_or_the_eviction_reason() {
        let preempted = with_status(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![disruption_target(
                "PreemptionByScheduler",
                "Preempted by pod 1234 on node node-1",
            )]),
            ..Default::default()
        });
        assert_eq!(
            disruption_reason(&preempted).as_deref(),
            Some("DisruptionTarget: PreemptionByScheduler: Preempted by pod 1234 on node node-1")
        );
        let evicted = with_status(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("Evicted".into()),
            message: Some("The node was low on resource: memory.".into()),
            ..Default::default()
        });
        assert_eq!(
            disruption_reason(&evicted).as_deref(),
            Some("Evicted: The node was low on resource: memory.")
        );
        // Not disruptions: a failure of the build, a False condition, a success.
        let failed = with_status(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("DeadlineExceeded".into()),
            ..Default::default()
        });
        assert_eq!(disruption_reason(&failed), None);
        let mut not_true = disruption_target("EvictionByEvictionAPI", "");
        not_true.status = "False".into();
        let running = with_status(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![not_true]),
            ..Default::default()
        });
        assert_eq!(disruption_reason(&running), None);
        let succeeded = with_status(PodStatus {
            phase: Some("Succeeded".into()),
            conditions: Some(vec![disruption_target("DeletionByTaintManager", "")]),
            ..Default::default()
        });
        assert_eq!(disruption_reason(&succeeded), None);
        assert_eq!(disruption_reason(&Pod::default()), None);
    }

    #[test]
    fn observe_reads_the_attempt_and_the_disruption_with_its_recipe() {
        let mut pod = with_status(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![disruption_target("DeletionByTaintManager", "")]),
            ..Default::default()
        });
        pod.metadata.annotations = Some(
            [
                (ANNOTATION_ATTEMPT.to_string(), "2".to_string()),
                (ANNOTATION_TEMPLATE.to_string(), "default".to_string()),
            ]
            .into(),
        );
        let obs = observe(&pod);
        assert_eq!(obs.attempt, 2);
        let disruption = obs.disruption.expect("disrupted");
        assert_eq!(
            disruption.reason,
            "DisruptionTarget: DeletionByTaintManager"
        );
        assert_eq!(
            disruption.recipe.map(|r| r.template).as_deref(),
            Some("default")
        );
        // Without the annotation: the first attempt; a nonsense value counts as 1.
        pod.metadata.annotations = Some([(ANNOTATION_ATTEMPT.to_string(), "0".to_string())].into());
        assert_eq!(observe(&pod).attempt, 1);
        assert_eq!(observe(&Pod::default()).attempt, 1);
        assert_eq!(observe(&Pod::default()).disruption, None);
    }
}
