//! Pod status bodies shaped like the ones a real kubelet writes.
//!
//! Every patch is a JSON merge patch of `status`. Merge patches replace arrays whole,
//! so each body carries the complete `conditions` and `containerStatuses` lists and no
//! stale entry (say an old `waiting` state) can survive.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Name and image of one container from the pod spec.
#[derive(Debug, Clone)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
}

/// The parts of a pod spec that shape its status.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Main containers.
    pub containers: Vec<Container>,
    /// Init containers (shown as completed as soon as the pod is accepted).
    pub init_containers: Vec<Container>,
}

impl Shape {
    /// Reads the containers of `pod`.
    pub fn of(pod: &Pod) -> Shape {
        let convert = |list: &[k8s_openapi::api::core::v1::Container]| {
            list.iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                })
                .collect()
        };
        let spec = pod.spec.as_ref();
        Shape {
            containers: spec.map(|s| convert(&s.containers)).unwrap_or_default(),
            init_containers: spec
                .and_then(|s| s.init_containers.as_deref())
                .map(convert)
                .unwrap_or_default(),
        }
    }
}

/// State of the main containers (all containers of a pod behave alike).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running yet, with a kubelet reason such as `ContainerCreating`.
    Waiting { reason: String, message: String },
    /// Running since `started_at`.
    Running { started_at: Timestamp },
    /// Exited.
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl State {
    /// A waiting state.
    pub fn waiting(reason: &str, message: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A terminated state with the usual reason for its exit code.
    pub fn exited(exit_code: i32, started_at: Option<Timestamp>, finished_at: Timestamp) -> State {
        State::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at,
            finished_at,
        }
    }
}

/// Pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, containers not (all) running.
    Pending,
    /// Containers running (or restarting).
    Running,
    /// All containers exited 0 and will not restart.
    Succeeded,
    /// A container failed and will not restart, or the pod was killed.
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Whether the pod is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Everything a status body is built from.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    /// Containers of the pod.
    pub shape: &'a Shape,
    /// Pod uid (seeds the fake container and image ids).
    pub uid: &'a str,
    /// IP of the node the pod is bound to.
    pub host_ip: &'a str,
    /// IP of the pod, once its sandbox exists.
    pub pod_ip: Option<&'a str>,
    /// Phase to report.
    pub phase: Phase,
    /// When the kubelet accepted the pod (`status.startTime`).
    pub start_time: Timestamp,
    /// When the containers last changed readiness (condition transition time).
    pub changed_at: Timestamp,
    /// State of every main container.
    pub state: State,
    /// Previous run of a restarted container.
    pub last_state: Option<State>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Pod-level `reason` and `message` (e.g. DeadlineExceeded).
    pub reason: Option<(&'a str, &'a str)>,
    /// Conditions that others own (DisruptionTarget from the taint manager, say),
    /// carried along because a merge patch replaces the whole list.
    pub other_conditions: &'a [Value],
    /// Whether the containers are ready (running, and their readiness probe passed).
    pub ready: bool,
}

/// Condition types a kubelet owns and writes itself.
pub const KUBELET_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// The conditions of `pod` that a kubelet does not own (DisruptionTarget from the
/// taint manager, say), to be carried along in every status written.
pub fn foreign_conditions(pod: &Pod) -> Vec<Value> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect()
}

/// Formats a timestamp the way Kubernetes serialises `metav1.Time`.
pub fn time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn condition(kind: &str, ok: bool, at: Timestamp, reason: Option<&str>, message: &str) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": time(at),
    });
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
        if !message.is_empty() {
            c["message"] = json!(message);
        }
    }
    c
}

fn state_json(state: &State, container_id: &str) -> Value {
    match state {
        State::Waiting { reason, message } => {
            let mut w = json!({ "reason": reason });
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({ "waiting": w })
        }
        State::Running { started_at } => json!({ "running": { "startedAt": time(*started_at) } }),
        State::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => {
            let mut t = json!({
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started_at.map(time),
                "finishedAt": time(*finished_at),
            });
            if !message.is_empty() {
                t["message"] = json!(message);
            }
            if started_at.is_some() {
                t["containerID"] = json!(container_id);
            }
            json!({ "terminated": t })
        }
    }
}

/// A deterministic fake id of 64 hex digits derived from `seed`.
fn fake_id(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u8)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The `{"status": ...}` merge patch for `s`.
pub fn patch(s: &Snapshot<'_>) -> Value {
    let running = matches!(s.state, State::Running { .. });
    let ready = running && s.ready;
    let names: Vec<&str> = s.shape.containers.iter().map(|c| c.name.as_str()).collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    let ready_reason = if ready {
        None
    } else if s.phase == Phase::Succeeded {
        Some("PodCompleted")
    } else {
        Some("ContainersNotReady")
    };
    let ready_message = if ready || s.phase == Phase::Succeeded {
        ""
    } else {
        unready.as_str()
    };
    let sandbox = s.pod_ip.is_some() && !s.phase.is_terminal();
    let mut conditions = json!([
        condition("PodReadyToStartContainers", sandbox, s.changed_at, None, ""),
        condition("Initialized", true, s.start_time, None, ""),
        condition("Ready", ready, s.changed_at, ready_reason, ready_message),
        condition(
            "ContainersReady",
            ready,
            s.changed_at,
            ready_reason,
            ready_message
        ),
        condition("PodScheduled", true, s.start_time, None, ""),
    ]);
    if let Some(list) = conditions.as_array_mut() {
        list.extend(s.other_conditions.iter().cloned());
    }
    // A container that ran before (and now waits to restart) keeps its image and
    // container ids, as with a real runtime.
    let started = !matches!(s.state, State::Waiting { .. }) || s.last_state.is_some();
    let container_statuses: Vec<Value> = s
        .shape
        .containers
        .iter()
        .map(|c| {
            let id = fake_id(&format!("{}/{}/{}", s.uid, c.name, s.restart_count));
            let mut status = json!({
                "name": c.name,
                "image": c.image,
                "imageID": if started { format!("{}@sha256:{}", c.image, fake_id(&c.image)) } else { String::new() },
                "ready": ready,
                "started": running,
                "restartCount": s.restart_count,
                "state": state_json(&s.state, &format!("containerd://{id}")),
                "lastState": s.last_state.as_ref().map(|l| state_json(l, "")).unwrap_or(json!({})),
            });
            if started {
                status["containerID"] = json!(format!("containerd://{id}"));
            }
            status
        })
        .collect();
    let init_statuses: Vec<Value> = s
        .shape
        .init_containers
        .iter()
        .map(|c| {
            let id = fake_id(&format!("{}/init/{}", s.uid, c.name));
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("{}@sha256:{}", c.image, fake_id(&c.image)),
                "containerID": format!("containerd://{id}"),
                "ready": true,
                "started": false,
                "restartCount": 0,
                "state": state_json(&State::exited(0, Some(s.start_time), s.start_time), &format!("containerd://{id}")),
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": s.phase.as_str(),
        "conditions": conditions,
        "hostIP": s.host_ip,
        "hostIPs": [{ "ip": s.host_ip }],
        "startTime": time(s.start_time),
        "containerStatuses": container_statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = s.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    if let Some((reason, message)) = s.reason {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            containers: vec![Container {
                name: "agent".into(),
                image: "busybox:1".into(),
            }],
            init_containers: vec![],
        }
    }

    #[test]
    fn a_finished_container_reports_exit_code_reason_and_times() {
        let shape = shape();
        let now = Timestamp::from_second(1_700_000_000).expect("valid timestamp");
        let body = patch(&Snapshot {
            shape: &shape,
            uid: "u",
            host_ip: "127.0.100.1",
            pod_ip: Some("127.101.0.1"),
            phase: Phase::Failed,
            start_time: now,
            changed_at: now,
            state: State::exited(3, Some(now), now),
            last_state: None,
            restart_count: 0,
            reason: None,
            other_conditions: &[],
            ready: false,
        });
        let cs = &body["status"]["containerStatuses"][0];
        assert_eq!(body["status"]["phase"], "Failed");
        assert_eq!(cs["state"]["terminated"]["exitCode"], 3);
        assert_eq!(cs["state"]["terminated"]["reason"], "Error");
        assert_eq!(
            cs["state"]["terminated"]["finishedAt"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(cs["ready"], false);
        assert_eq!(body["status"]["conditions"][2]["type"], "Ready");
        assert_eq!(body["status"]["conditions"][2]["status"], "False");
    }
}
