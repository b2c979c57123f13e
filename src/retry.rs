//! Retries: capped exponential backoff with full jitter, and which Kubernetes errors are
//! worth retrying. Every retry loop in ottoscaler uses these.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff: attempt `n` waits a random time in `[base*2^n/2, base*2^n]`,
/// never more than `cap` (the "equal jitter" of the AWS architecture blog: spreads retries
/// of many workers apart, yet always waits at least half the step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Kubernetes API calls: 100 ms, 200 ms, ... up to 10 s.
    pub const KUBE: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
    };
    /// Redis reconnects: 100 ms ... 5 s, so a Redis restart is noticed quickly.
    pub const REDIS: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
    };
    /// Worker restarts by the Supervisor: 200 ms ... 30 s.
    pub const RESTART: Backoff = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(30),
    };

    /// The upper bound of attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }
}

/// How a failed Kubernetes call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, server errors, timeouts, connection trouble: retry with backoff.
    Transient,
    /// The request itself is wrong or forbidden: retrying cannot help.
    Permanent,
}

/// Classifies a kube error: 429 and 5xx and transport failures are transient, and so is
/// a 403 from an admission step that could not reach what it depends on (see
/// [`admission_unreachable`]); other API statuses (400, 403, 404, 409, 422, ...) are
/// permanent for the request made.
pub fn classify(err: &kube::Error) -> ErrorClass {
    match err {
        kube::Error::Api(status)
            if status.code == 403 && admission_unreachable(&status.message) =>
        {
            ErrorClass::Transient
        }
        kube::Error::Api(status) => classify_status(status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Permanent,
    }
}

/// Classifies an HTTP status code of the API server.
pub fn classify_status(code: u16) -> ErrorClass {
    match code {
        429 | 500..=599 | 408 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Network failures an admission plugin reports inside a 403 when it cannot reach what it
/// needs: an API server that is still starting cannot list LimitRanges through its own
/// loopback client (`pods "p" is forbidden: Get "https://127.0.0.1:6443/...":
/// dial tcp ...: connect: connection refused`). An RBAC denial never carries them.
const UNREACHABLE: [&str; 7] = [
    "connection refused",
    "connection reset by peer",
    "dial tcp",
    "i/o timeout",
    "TLS handshake timeout",
    "context deadline exceeded",
    "no route to host",
];

/// Whether a 403's message is an admission step that failed to reach a dependency, a
/// transient condition, rather than a refusal of the request.
fn admission_unreachable(message: &str) -> bool {
    UNREACHABLE.iter().any(|m| message.contains(m))
}

/// The HTTP status of an API error (404, 409, ...), if the error is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A create refused because a ResourceQuota is used up (403 `exceeded quota`): a
/// matter of capacity, not a failure; the worker waits and tries again.
pub fn is_quota_exceeded(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => quota_message(s.code, &s.message),
        _ => false,
    }
}

/// Whether an API status is the ResourceQuota admission's refusal: the quota is used up,
/// or the quota controller has not counted the namespace yet (`status unknown for quota`).
fn quota_message(code: u16, message: &str) -> bool {
    code == 403
        && (message.contains("exceeded quota") || message.contains("status unknown for quota"))
}

/// Short text of a kube error for results and logs: `409 AlreadyExists: ...`.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delay_stays_between_half_and_the_ceiling() {
        let b = Backoff::KUBE;
        for attempt in 0..30 {
            for _ in 0..20 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_403_naming_exceeded_quota_is_a_quota_refusal() {
        let quota = "pods \"p\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2";
        assert!(quota_message(403, quota));
        assert!(!quota_message(
            403,
            "pods is forbidden: User \"x\" cannot create resource \"pods\""
        ));
        assert!(!quota_message(422, quota));
        assert!(quota_message(
            403,
            "pods \"p\" is forbidden: status unknown for quota: q, resource: pods"
        ));
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_403_from_an_admission_step_that_could_not_reach_the_api_is_transient() {
        // Seen while the API server restarted: LimitRanger's own list failed.
        let starting = "pods \"p\" is forbidden: Get \"https://127.0.0.1:41965/api/v1/namespaces/n/limitranges\": dial tcp 127.0.0.1:41965: connect: connection refused";
        assert_eq!(classify(&api_error(403, starting)), ErrorClass::Transient);
        let rbac = "pods \"p\" is forbidden: User \"system:serviceaccount:o:o\" cannot create resource \"pods\" in API group \"\" in the namespace \"n\"";
        assert_eq!(classify(&api_error(403, rbac)), ErrorClass::Permanent);
        assert_eq!(classify(&api_error(422, starting)), ErrorClass::Permanent);
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for code in [429, 500, 502, 503, 504, 408] {
            assert_eq!(classify_status(code), ErrorClass::Transient, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(classify_status(code), ErrorClass::Permanent, "{code}");
        }
    }
}
