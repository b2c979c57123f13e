//! Messages the Redis-facing actors receive besides their main traffic: the graceful
//! stop of the RedisReader.

use std::time::Duration;

use actix::Message;

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
