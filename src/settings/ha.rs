//! `[ha]`: leader election on a `coordination.k8s.io/v1` Lease, so that several replicas
//! can run and exactly one acts (docs/contract.md, "High availability").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaSettings {
    /// Elect a leader on the Lease; only the leader reads, creates, deletes and
    /// publishes. `false`: this replica acts at once and alone (one replica only).
    /// Default `true`.
    pub enabled: bool,
    /// Name of the Lease. Default `ottoscaler`.
    pub lease_name: String,
    /// Namespace of the Lease; empty means ottoscaler's own (the pod's namespace
    /// in-cluster, the kubeconfig context's outside). Default empty.
    pub lease_namespace: String,
    /// How long a standby waits, after the last renewal it saw, before it takes over an
    /// unrenewed Lease. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How long the leader acts after its last successful renewal: past it, it stops
    /// reading, creating, deleting and publishing, and exits. Shorter than
    /// `lease_duration`, so it stops before anyone may take over. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// How often the Lease is renewed (leader) or tried (standby). Shorter than
    /// `renew_deadline`. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: "ottoscaler".into(),
            lease_namespace: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl HaSettings {
    /// retry_period < renew_deadline < lease_duration, the Lease's duration in whole
    /// seconds (at least 1s), and a valid Lease name.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !is_dns_subdomain(&self.lease_name) {
            return Err(ConfigError::invalid(
                "ha.lease_name",
                format!(
                    "({:?}) must be a DNS subdomain name (lowercase letters, digits, '-', '.')",
                    self.lease_name
                ),
            ));
        }
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return Err(ConfigError::invalid(
                "ha.lease_duration",
                format!(
                    "({}) must be whole seconds, at least 1s (it becomes leaseDurationSeconds)",
                    humantime::format_duration(self.lease_duration)
                ),
            ));
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::invalid(
                "ha.retry_period",
                "must be longer than 0s",
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::invalid(
                "ha.renew_deadline",
                format!(
                    "({}) must be shorter than ha.lease_duration ({}): the leader must stop before another replica may take over",
                    humantime::format_duration(self.renew_deadline),
                    humantime::format_duration(self.lease_duration)
                ),
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::invalid(
                "ha.retry_period",
                format!(
                    "({}) must be shorter than ha.renew_deadline ({}): the leader must get to retry a failed renewal",
                    humantime::format_duration(self.retry_period),
                    humantime::format_duration(self.renew_deadline)
                ),
            ));
        }
        Ok(())
    }
}

/// RFC 1123 subdomain, what Kubernetes requires of most object names.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(change: impl FnOnce(&mut HaSettings)) -> String {
        let mut ha = HaSettings::default();
        change(&mut ha);
        ha.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        HaSettings::default().validate().expect("valid defaults");
    }

    #[test]
    fn the_deadlines_must_nest() {
        assert!(
            error_of(|h| h.renew_deadline = Duration::from_secs(15)).starts_with(
                "ha.renew_deadline: (15s) must be shorter than ha.lease_duration (15s)"
            )
        );
        assert!(
            error_of(|h| h.retry_period = Duration::from_secs(10))
                .starts_with("ha.retry_period: (10s) must be shorter than ha.renew_deadline (10s)")
        );
        assert_eq!(
            error_of(|h| h.retry_period = Duration::ZERO),
            "ha.retry_period: must be longer than 0s"
        );
    }

    #[test]
    fn the_lease_duration_is_whole_seconds() {
        assert!(
            error_of(|h| h.lease_duration = Duration::from_millis(1500))
                .starts_with("ha.lease_duration: (1s 500ms) must be whole seconds")
        );
        let short = HaSettings {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(200),
            ..HaSettings::default()
        };
        short
            .validate()
            .expect("short settings for tests are valid");
    }

    #[test]
    fn the_lease_name_must_be_a_kubernetes_name() {
        assert!(error_of(|h| h.lease_name = "Otto".into()).starts_with("ha.lease_name:"));
        assert!(error_of(|h| h.lease_name = String::new()).starts_with("ha.lease_name:"));
        let dotted = HaSettings {
            lease_name: "ottoscaler.ci-1".into(),
            ..HaSettings::default()
        };
        dotted.validate().expect("a dotted name is valid");
    }
}
