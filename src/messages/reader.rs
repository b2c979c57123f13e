//! Messages the RedisReader receives besides its main traffic: whether an event is
//! still pending (asked by the Supervisor for adopted pods), and the graceful stop.

use std::time::Duration;

use actix::Message;

/// Is this event's stream entry still pending (delivered, not acknowledged) in the group?
/// The Supervisor asks for workers it adopted after a restart: their pods may be deleted
/// only once the entry is acknowledged. Unknown or trimmed entries count as not pending.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<bool, String>")]
pub struct IsEventPending {
    pub event_id: String,
}

/// Stop reading new entries (and claiming others' entries), then wait up to `timeout`
/// for the events already dispatched to the Supervisor to be answered and acknowledged.
/// Answers when they all are, or when the timeout passes. Entries still unanswered stay
/// pending in the group: the next instance (or another replica's claim) retries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "ReadingStopped")]
pub struct StopReading {
    pub timeout: Duration,
}

/// The reader stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingStopped {
    /// Entries still dispatched or waiting for their XACK when the timeout passed
    /// (0 after a clean stop); they stay pending and are redelivered later.
    pub unfinished: usize,
}
