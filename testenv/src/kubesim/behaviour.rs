//! What a simulated pod does, read from its annotations.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Seconds the main containers run before they exit (fractions and 0 allowed).
pub const RUN_SECONDS: &str = "kubesim.ottoscaler.dev/run-seconds";
/// Exit code of the containers when they finish (default 0).
pub const EXIT_CODE: &str = "kubesim.ottoscaler.dev/exit-code";
/// `ok` (default) or `fail`: a failing pull leaves the container waiting in
/// ErrImagePull, then ImagePullBackOff, forever; the pod stays Pending.
pub const PULL: &str = "kubesim.ottoscaler.dev/pull";
/// `ok` (default) or `never`: never bound; reported PodScheduled=False/Unschedulable.
pub const SCHEDULE: &str = "kubesim.ottoscaler.dev/schedule";
/// Seconds a container takes to exit after SIGTERM when its pod is deleted
/// (default 0; capped by the deletion grace period).
pub const TERMINATION_SECONDS: &str = "kubesim.ottoscaler.dev/termination-seconds";

/// The parsed annotations of one pod. Invalid values fall back to the default with
/// a warning, so a typo shows up in the log rather than as a stuck pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// How long the containers run.
    pub run: Duration,
    /// Exit code when they finish.
    pub exit_code: i32,
    /// Whether the image pull fails.
    pub pull_fails: bool,
    /// Whether the pod may be scheduled at all.
    pub schedulable: bool,
    /// Time to exit after SIGTERM.
    pub termination: Duration,
}

impl Behaviour {
    /// Reads the annotations of `pod`; `default_run` applies when `run-seconds` is absent.
    pub fn of(pod: &Pod, default_run: Duration) -> Behaviour {
        let annotations = pod.metadata.annotations.as_ref();
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
        let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
        let seconds = |key: &str, default: Duration| match get(key) {
            None => default,
            Some(value) => match value.parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
                _ => {
                    tracing::warn!(pod = pod_name, key, value, "invalid seconds, using default");
                    default
                }
            },
        };
        let choice = |key: &str, bad: &str| match get(key) {
            None | Some("ok") => false,
            Some(value) if value == bad => true,
            Some(value) => {
                tracing::warn!(pod = pod_name, key, value, "expected `ok` or `{bad}`");
                false
            }
        };
        let exit_code = match get(EXIT_CODE) {
            None => 0,
            Some(value) => value.parse::<i32>().unwrap_or_else(|_| {
                tracing::warn!(pod = pod_name, value, "invalid exit code, using 0");
                0
            }),
        };
        Behaviour {
            run: seconds(RUN_SECONDS, default_run),
            exit_code,
            pull_fails: choice(PULL, "fail"),
            schedulable: !choice(SCHEDULE, "never"),
            termination: seconds(TERMINATION_SECONDS, Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod_with(annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        pod
    }

    #[test]
    fn annotations_override_the_defaults() {
        let pod = pod_with(&[
            (RUN_SECONDS, "0.25"),
            (EXIT_CODE, "3"),
            (PULL, "fail"),
            (SCHEDULE, "never"),
            (TERMINATION_SECONDS, "2"),
        ]);
        let b = Behaviour::of(&pod, Duration::from_secs(1));
        assert_eq!(b.run, Duration::from_millis(250));
        assert_eq!(b.exit_code, 3);
        assert!(b.pull_fails);
        assert!(!b.schedulable);
        assert_eq!(b.termination, Duration::from_secs(2));
    }

    #[test]
    fn missing_or_invalid_annotations_use_the_defaults() {
        let b = Behaviour::of(&Pod::default(), Duration::from_secs(1));
        assert_eq!(b.run, Duration::from_secs(1));
        assert_eq!(b.exit_code, 0);
        assert!(!b.pull_fails && b.schedulable);
        let pod = pod_with(&[(RUN_SECONDS, "-1"), (EXIT_CODE, "x"), (PULL, "maybe")]);
        let b = Behaviour::of(&pod, Duration::from_secs(1));
        assert_eq!(b.run, Duration::from_secs(1));
        assert_eq!(b.exit_code, 0);
        assert!(!b.pull_fails);
        let zero = Behaviour::of(&pod_with(&[(RUN_SECONDS, "0")]), Duration::from_secs(1));
        assert_eq!(zero.run, Duration::ZERO);
    }
}
