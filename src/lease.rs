//! Leader election on a `coordination.k8s.io/v1` Lease: the pure part.
//!
//! The [`LeaderElector`](crate::actors::leader::LeaderElector) actor reads the Lease,
//! asks [`decide`] what to do with it, and writes it back with the resourceVersion it
//! read (optimistic concurrency: of two replicas writing at once, one gets a conflict).
//! Expiry is judged as client-go does, by this replica's own clock: a Lease whose
//! resourceVersion has not changed for its `leaseDurationSeconds` since this replica first
//! saw it is expired, whatever its `renewTime` says, so clock skew between nodes does not
//! matter.
//!
//! [`Fence`] is what the acting paths (reading, creating, deleting, publishing) check
//! just before they act. It is open until the last successful renewal's start plus
//! `ha.renew_deadline`, shorter than `ha.lease_duration`: a leader that cannot renew
//! closes by itself, on time, before any standby may take the Lease over, even if the
//! elector actor is stuck.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the elector knows of the Lease object it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` or empty: released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` (the holder's promise to renew within it).
    pub duration: Duration,
    /// `metadata.resourceVersion`: changes with every write, so a renewal is seen as a
    /// change even when clocks disagree.
    pub resource_version: String,
}

impl LeaseRecord {
    /// The holder, if the Lease is held (a cleared or empty holder is a released Lease).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// What to do with the Lease, from [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by this replica.
    Create,
    /// This replica holds it: renew it.
    Renew,
    /// It is released, or its holder stopped renewing: take it over.
    /// `previous` is the holder it had (`None`: released).
    Acquire { previous: Option<String> },
    /// Another replica holds it and renews it: wait. `expires_in` is how long it stays
    /// valid if it is not renewed again.
    HoldOff {
        holder: String,
        expires_in: Duration,
    },
}

/// The decision for one look at the Lease. `unchanged_for` is how long this replica has
/// seen this same resourceVersion ([`Observation::unchanged_for`]).
pub fn decide(record: Option<&LeaseRecord>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(record) = record else {
        return Decision::Create;
    };
    match record.holder() {
        Some(holder) if holder == me => Decision::Renew,
        None => Decision::Acquire { previous: None },
        Some(holder) if unchanged_for >= record.duration => Decision::Acquire {
            previous: Some(holder.to_string()),
        },
        Some(holder) => Decision::HoldOff {
            holder: holder.to_string(),
            expires_in: record.duration - unchanged_for,
        },
    }
}

/// When this replica first saw a Lease's current resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    resource_version: String,
    since: Instant,
}

impl Observation {
    /// How long the Lease has been seen unchanged at `now`, and the observation to keep:
    /// a new resourceVersion restarts the count at 0.
    pub fn unchanged_for(
        previous: Option<&Observation>,
        resource_version: &str,
        now: Instant,
    ) -> (Observation, Duration) {
        match previous {
            Some(prev) if prev.resource_version == resource_version => {
                (prev.clone(), now.saturating_duration_since(prev.since))
            }
            _ => (
                Observation {
                    resource_version: resource_version.to_string(),
                    since: now,
                },
                Duration::ZERO,
            ),
        }
    }
}

/// Whether this replica may act now. Shared (an `Arc`) by every actor that acts, and
/// checked synchronously just before each action: a message would arrive too late.
#[derive(Debug)]
pub struct Fence {
    state: Mutex<FenceState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FenceState {
    /// Without leader election (`ha.enabled = false`): always open.
    Always,
    /// Open until this instant (closed once it passed); `None`: closed.
    Until(Option<Instant>),
}

impl Fence {
    /// Always open: one replica, no election.
    pub fn always_open() -> Fence {
        Fence {
            state: Mutex::new(FenceState::Always),
        }
    }

    /// Closed until the elector opens it.
    pub fn closed() -> Fence {
        Fence {
            state: Mutex::new(FenceState::Until(None)),
        }
    }

    /// A renewal that started at `renewed_at` succeeded: open until `renewed_at +
    /// renew_deadline`. Never moves an open fence's end backwards.
    pub fn open_until(&self, until: Instant) {
        let mut state = self.lock();
        if let FenceState::Until(current) = *state {
            *state = FenceState::Until(Some(current.map_or(until, |c| c.max(until))));
        }
    }

    /// Closes now (the Lease is being released, or was lost). An always-open fence stays
    /// open.
    pub fn close(&self) {
        let mut state = self.lock();
        if let FenceState::Until(_) = *state {
            *state = FenceState::Until(None);
        }
    }

    /// May this replica act now?
    pub fn is_open(&self) -> bool {
        self.remaining().is_some_and(|left| !left.is_zero())
    }

    /// How long the fence stays open without another renewal: `None` when closed,
    /// [`Duration::MAX`] without election.
    pub fn remaining(&self) -> Option<Duration> {
        match *self.lock() {
            FenceState::Always => Some(Duration::MAX),
            FenceState::Until(None) => None,
            FenceState::Until(Some(until)) => until
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero()),
        }
    }

    /// Without election (`ha.enabled = false`).
    pub fn is_always_open(&self) -> bool {
        *self.lock() == FenceState::Always
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        // The state is a plain value, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, secs: u64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            duration: Duration::from_secs(secs),
            resource_version: "7".into(),
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", Duration::ZERO), Decision::Create);
    }

    #[test]
    fn an_own_lease_is_renewed_whatever_its_age() {
        let lease = held_by("a", 15);
        assert_eq!(decide(Some(&lease), "a", Duration::ZERO), Decision::Renew);
        assert_eq!(
            decide(Some(&lease), "a", Duration::from_secs(60)),
            Decision::Renew
        );
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        for holder in [None, Some(String::new())] {
            let lease = LeaseRecord {
                holder,
                duration: Duration::from_secs(1),
                resource_version: "9".into(),
            };
            assert_eq!(
                decide(Some(&lease), "b", Duration::ZERO),
                Decision::Acquire { previous: None }
            );
        }
    }

    #[test]
    fn another_holders_lease_is_left_alone_until_it_stays_unrenewed_for_its_duration() {
        let lease = held_by("a", 15);
        assert_eq!(
            decide(Some(&lease), "b", Duration::from_secs(4)),
            Decision::HoldOff {
                holder: "a".into(),
                expires_in: Duration::from_secs(11)
            }
        );
        assert_eq!(
            decide(Some(&lease), "b", Duration::from_secs(15)),
            Decision::Acquire {
                previous: Some("a".into())
            }
        );
    }

    #[test]
    fn expiry_counts_from_when_this_replica_saw_the_version_change() {
        let t0 = Instant::now();
        let (obs, age) = Observation::unchanged_for(None, "1", t0);
        assert_eq!(age, Duration::ZERO);
        let (obs, age) = Observation::unchanged_for(Some(&obs), "1", t0 + Duration::from_secs(3));
        assert_eq!(age, Duration::from_secs(3));
        // A renewal (new version) restarts the count.
        let (obs, age) = Observation::unchanged_for(Some(&obs), "2", t0 + Duration::from_secs(5));
        assert_eq!(age, Duration::ZERO);
        let (_, age) = Observation::unchanged_for(Some(&obs), "2", t0 + Duration::from_secs(6));
        assert_eq!(age, Duration::from_secs(1));
    }

    #[test]
    fn the_fence_opens_for_the_renew_deadline_and_closes_by_itself() {
        let fence = Fence::closed();
        assert!(!fence.is_open());
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.is_open());
        assert!(fence.remaining().expect("open") > Duration::from_secs(59));
        // An older renewal's answer arriving late does not shorten it.
        fence.open_until(Instant::now());
        assert!(fence.is_open());
        fence.close();
        assert!(!fence.is_open());
        // Past its end it is closed without anyone closing it.
        fence.open_until(Instant::now());
        assert!(!fence.is_open());
        assert_eq!(fence.remaining(), None);
    }

    #[test]
    fn without_election_the_fence_never_closes() {
        let fence = Fence::always_open();
        fence.close();
        assert!(fence.is_open());
        assert!(fence.is_always_open());
        assert_eq!(fence.remaining(), Some(Duration::MAX));
    }
}
