//! Messages of leader election: what the [`LeaderElector`](crate::actors::leader::LeaderElector)
//! announces, and what it is asked.

use std::time::Duration;

use actix::Message;

/// This replica became the leader: the Supervisor adopts the pods it kept in memory
/// while standing by, and the reader claims the previous holders' pending entries at
/// once and starts reading. Sent to both.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct LeadershipAcquired {
    /// Who held the Lease before (`None`: it was released or new).
    pub previous: Option<String>,
}

/// Release the Lease (graceful shutdown): close the fence, clear the holder and set the
/// duration to 1 s, as client-go's ReleaseOnCancel does, so a standby takes over at its
/// next look instead of after `ha.lease_duration`. Answers once written, or after
/// `timeout`; `Ok(false)`: this replica did not hold the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<bool, String>")]
pub struct ReleaseLease {
    pub timeout: Duration,
}
