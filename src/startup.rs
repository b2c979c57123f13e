//! Queue and start-up timings, as plain functions: how long a build waited from its
//! event's XADD to its pod running, and how a pod's start-up splits into scheduling and
//! starting. The worker records them (`ottoscaler_queue_wait_seconds`,
//! `ottoscaler_pod_scheduling_seconds`, `ottoscaler_pod_starting_seconds`); the reader
//! uses [`entry_time`] for `ottoscaler_oldest_pending_age_seconds`.
//!
//! Every duration here is never negative: clocks of different machines (Redis, the API
//! server, the kubelet, ottoscaler) and timestamps of different precision (Kubernetes
//! keeps whole seconds) can make a later moment look earlier; such a pair counts as 0.

use std::time::Duration;

use jiff::Timestamp;

use crate::messages::PodObservation;

/// When a stream entry was added: the milliseconds part of its id `<ms>-<seq>` (Redis
/// sets it from its clock on XADD `*`). `None` for anything that is not such an id.
pub fn entry_time(id: &str) -> Option<Timestamp> {
    let (ms, seq) = id.split_once('-')?;
    if ms.is_empty() || seq.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse::<u64>().ok()?;
    let ms: i64 = ms.parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

/// `later - earlier`, or 0 when `later` is not after `earlier`.
pub fn non_negative(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// The wait a build saw: from its entry's XADD to `running_seen`, when its pod was first
/// seen Running. `None` when the id does not parse, or its time is after `running_seen`
/// (an id set by hand, or a Redis clock ahead of ours: not a wait worth recording).
pub fn queue_wait(entry_id: &str, running_seen: Timestamp) -> Option<Duration> {
    let added = entry_time(entry_id)?;
    if added > running_seen {
        return None;
    }
    Some(non_negative(added, running_seen))
}

/// How long the oldest pending entry has waited at `now`: 0 when nothing is pending (or
/// the id does not parse, or lies in the future).
pub fn pending_age(oldest_pending: Option<&str>, now: Timestamp) -> Duration {
    oldest_pending
        .and_then(entry_time)
        .map_or(Duration::ZERO, |added| non_negative(added, now))
}

/// A pod's start-up, split where the scheduler hands over to the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupSplit {
    /// Pod created (built) -> `PodScheduled=True`.
    pub scheduling: Option<Duration>,
    /// `PodScheduled=True` -> the worker container running.
    pub starting: Option<Duration>,
}

/// The start-up split of a pod from its own timestamps; a part is `None` when one of its
/// ends is unknown.
pub fn startup_split(obs: &PodObservation) -> StartupSplit {
    let scheduling = match (obs.created_at, obs.scheduled_at) {
        (Some(created), Some(scheduled)) => Some(non_negative(created, scheduled)),
        _ => None,
    };
    let starting = match (obs.scheduled_at, obs.container_started_at) {
        (Some(scheduled), Some(started)) => Some(non_negative(scheduled, started)),
        _ => None,
    };
    StartupSplit {
        scheduling,
        starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn an_entry_id_gives_its_xadd_time() {
        let t = entry_time("1700000000123-7").expect("parses");
        assert_eq!(t.as_millisecond(), 1_700_000_000_123);
        assert_eq!(
            entry_time("0-1").map(|t| t.as_millisecond()),
            Some(0),
            "the smallest id"
        );
    }

    #[test]
    fn ids_that_are_not_stream_ids_give_nothing() {
        for id in [
            "",
            "-",
            "123",
            "123-",
            "-5",
            "abc-1",
            "12a-1",
            "+12-1",
            "1-x",
            "1-2-3",
            "99999999999999999999999-0",
            "9223372036854775807-0",
        ] {
            assert_eq!(entry_time(id), None, "{id:?}");
        }
    }

    #[test]
    fn the_queue_wait_is_from_xadd_to_running() {
        let running = ts("2026-01-01T00:00:10.500Z");
        let added = ts("2026-01-01T00:00:08Z").as_millisecond();
        assert_eq!(
            queue_wait(&format!("{added}-0"), running),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            queue_wait(&format!("{}-3", running.as_millisecond()), running),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_queue_wait_from_the_future_or_a_bad_id_is_not_recorded() {
        let running = ts("2026-01-01T00:00:10Z");
        let later = running.as_millisecond() + 1;
        assert_eq!(queue_wait(&format!("{later}-0"), running), None);
        assert_eq!(queue_wait("not-an-id", running), None);
    }

    #[test]
    fn the_pending_age_is_zero_without_a_pending_entry() {
        let now = ts("2026-01-01T00:01:00Z");
        assert_eq!(pending_age(None, now), Duration::ZERO);
        assert_eq!(pending_age(Some("garbage"), now), Duration::ZERO);
        let future = now.as_millisecond() + 5000;
        assert_eq!(
            pending_age(Some(&format!("{future}-0")), now),
            Duration::ZERO
        );
        let minute_ago = ts("2026-01-01T00:00:00Z").as_millisecond();
        assert_eq!(
            pending_age(Some(&format!("{minute_ago}-0")), now),
            Duration::from_secs(60)
        );
    }

    fn observation(
        created: Option<&str>,
        scheduled: Option<&str>,
        started: Option<&str>,
    ) -> PodObservation {
        PodObservation {
            created_at: created.map(ts),
            scheduled_at: scheduled.map(ts),
            container_started_at: started.map(ts),
            ..PodObservation::pending("p")
        }
    }

    #[test]
    fn start_up_splits_at_scheduling() {
        let obs = observation(
            Some("2026-01-01T00:00:00.250Z"),
            Some("2026-01-01T00:00:01Z"),
            Some("2026-01-01T00:00:04Z"),
        );
        assert_eq!(
            startup_split(&obs),
            StartupSplit {
                scheduling: Some(Duration::from_millis(750)),
                starting: Some(Duration::from_secs(3)),
            }
        );
    }

    #[test]
    fn start_up_parts_are_never_negative() {
        // Our annotation has milliseconds, the condition whole seconds: the pod created at
        // .600 and scheduled in the same second shows a scheduled time before it.
        let obs = observation(
            Some("2026-01-01T00:00:00.600Z"),
            Some("2026-01-01T00:00:00Z"),
            Some("2025-12-31T23:59:59Z"),
        );
        assert_eq!(
            startup_split(&obs),
            StartupSplit {
                scheduling: Some(Duration::ZERO),
                starting: Some(Duration::ZERO),
            }
        );
    }

    #[test]
    fn an_unknown_end_leaves_its_part_unknown() {
        let obs = observation(
            Some("2026-01-01T00:00:00Z"),
            None,
            Some("2026-01-01T00:00:02Z"),
        );
        assert_eq!(
            startup_split(&obs),
            StartupSplit {
                scheduling: None,
                starting: None,
            }
        );
        let obs = observation(None, Some("2026-01-01T00:00:01Z"), None);
        assert_eq!(
            startup_split(&obs),
            StartupSplit {
                scheduling: None,
                starting: None,
            }
        );
    }
}
