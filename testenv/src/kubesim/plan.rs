//! Turns a decided [`Action`] into the write that performs it and the progress the
//! pod has made once that write succeeds.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::Options;
use super::nodes::SimNode;
use super::pod::{Action, Progress, Restart, SimPod, Stage};
use super::status::{self, Phase, Snapshot, State};
use super::writer::Write;

/// A write and the progress it stands for.
#[derive(Debug)]
pub struct Plan {
    /// What to send.
    pub write: Write,
    /// The pod's progress after the write succeeded.
    pub progress: Progress,
}

/// Crash-loop back-off like the kubelet's: `initial`, doubling, at most 5 minutes.
pub(crate) fn crash_backoff(initial: Duration, restarts: i32) -> Duration {
    let doublings = u32::try_from(restarts.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    (initial * 2u32.pow(doublings)).min(Duration::from_secs(300))
}

/// Plans `action` for `pod`. `alloc_ip` hands out a pod IP on the given node.
pub fn plan(
    pod: &SimPod,
    action: &Action,
    nodes: &[SimNode],
    opts: &Options,
    alloc_ip: &mut dyn FnMut(usize) -> String,
) -> Plan {
    let now = Instant::now();
    let now_ts = Timestamp::now();
    let status_write = |body| Write::Status {
        body,
        uid: pod.uid.clone(),
    };
    let mut next = pod.progress.clone();
    next.due = None;
    let host_ip = next
        .node
        .and_then(|i| nodes.get(i))
        .map(|n| n.host_ip.clone())
        .unwrap_or_default();
    let started = next.started.map(|(ts, _)| ts).unwrap_or(now_ts);
    let image = pod
        .shape
        .containers
        .first()
        .map(|c| c.image.as_str())
        .unwrap_or("");

    // Builds the status patch from the planned progress.
    let body = |next: &Progress, phase: Phase, state: State, reason: Option<(&str, &str)>| {
        status_write(status::patch(&Snapshot {
            shape: &pod.shape,
            uid: &pod.uid,
            host_ip: &host_ip,
            pod_ip: next.pod_ip.as_deref(),
            phase,
            start_time: started,
            changed_at: next.changed_at.unwrap_or(started),
            state,
            last_state: next.last_state.clone(),
            restart_count: next.restart_count,
            reason,
            other_conditions: &pod.other_conditions,
            ready: true,
        }))
    };
    // The state of the containers when the pod is killed: a running container
    // exits on SIGKILL, one that never ran is reported lost.
    let killed = |p: &Progress| match (p.stage, p.run_started) {
        (Stage::Running, Some(since)) => State::Terminated {
            exit_code: 137,
            reason: "Error".into(),
            message: String::new(),
            started_at: Some(since),
            finished_at: now_ts,
        },
        _ => State::Terminated {
            exit_code: 137,
            reason: "ContainerStatusUnknown".into(),
            message: "The container could not be located when the pod was terminated".into(),
            started_at: None,
            finished_at: now_ts,
        },
    };

    let write = match action {
        Action::Accept => {
            next.stage = Stage::Creating;
            next.started = Some((now_ts, now));
            next.changed_at = Some(now_ts);
            next.due = Some(now + opts.container_create_delay);
            let started = now_ts;
            status_write(status::patch(&Snapshot {
                shape: &pod.shape,
                uid: &pod.uid,
                host_ip: &host_ip,
                pod_ip: None,
                phase: Phase::Pending,
                start_time: started,
                changed_at: started,
                state: State::waiting("ContainerCreating", ""),
                last_state: None,
                restart_count: 0,
                reason: None,
                other_conditions: &pod.other_conditions,
                ready: false,
            }))
        }
        Action::PullError => {
            next.stage = Stage::PullError;
            next.due = Some(now + opts.pull_backoff_delay);
            if next.pod_ip.is_none() {
                next.pod_ip = next.node.map(&mut *alloc_ip);
            }
            let message = format!(
                "failed to pull and unpack image \"{image}\": kubesim.ottoscaler.dev/pull=fail"
            );
            body(
                &next,
                Phase::Pending,
                State::waiting("ErrImagePull", &message),
                None,
            )
        }
        Action::PullBackOff => {
            next.stage = Stage::PullBackOff;
            let message = format!("Back-off pulling image \"{image}\"");
            body(
                &next,
                Phase::Pending,
                State::waiting("ImagePullBackOff", &message),
                None,
            )
        }
        Action::Start => {
            next.stage = Stage::Running;
            next.run_started = Some(now_ts);
            next.changed_at = Some(now_ts);
            next.due = Some(now + pod.behaviour.run);
            if next.pod_ip.is_none() {
                next.pod_ip = next.node.map(&mut *alloc_ip);
            }
            body(
                &next,
                Phase::Running,
                State::Running { started_at: now_ts },
                None,
            )
        }
        Action::Exit => {
            let code = pod.behaviour.exit_code;
            let exited = State::exited(code, next.run_started, now_ts);
            next.changed_at = Some(now_ts);
            let restart = match pod.restart {
                Restart::Never => false,
                Restart::OnFailure => code != 0,
                Restart::Always => true,
            };
            if restart {
                next.stage = Stage::CrashBackOff;
                next.restart_count += 1;
                next.last_state = Some(exited);
                let wait = crash_backoff(opts.crash_backoff, next.restart_count);
                next.due = Some(now + wait);
                let name = pod.shape.containers.first().map(|c| c.name.as_str());
                let message = format!(
                    "back-off {wait:?} restarting failed container={} pod={}",
                    name.unwrap_or(""),
                    pod.name
                );
                let waiting = State::waiting("CrashLoopBackOff", &message);
                body(&next, Phase::Running, waiting, None)
            } else {
                next.stage = Stage::Terminal;
                let phase = if code == 0 {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                body(&next, phase, exited, None)
            }
        }
        Action::DeadlineExceeded => {
            let state = killed(&next);
            next.stage = Stage::Terminal;
            next.changed_at = Some(now_ts);
            let reason = (
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            );
            body(&next, Phase::Failed, state, Some(reason))
        }
        Action::Kill => {
            let state = killed(&next);
            next.stage = Stage::Killed;
            next.changed_at = Some(now_ts);
            body(&next, Phase::Failed, state, None)
        }
        Action::Delete => {
            next.stage = Stage::Deleted;
            Write::Delete {
                uid: pod.uid.clone(),
            }
        }
    };
    Plan {
        write,
        progress: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_backoff_doubles_up_to_five_minutes() {
        let s = Duration::from_secs(10);
        assert_eq!(crash_backoff(s, 1), Duration::from_secs(10));
        assert_eq!(crash_backoff(s, 2), Duration::from_secs(20));
        assert_eq!(crash_backoff(s, 10), Duration::from_secs(300));
    }
}
