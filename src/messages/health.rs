//! Liveness: messages every long-lived actor answers, so `/healthz` can tell a running
//! process from one whose actors are stuck.

use actix::Message;

/// Answered as soon as the actor handles its next message: an answer within a bound
/// shows its mailbox is being served. Sent by `/healthz` (docs/contract.md section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Fault injection for liveness tests: the actor stops handling messages for `for_`, as
/// a deadlocked or stuck actor would. Test builds only (the `test-hooks` feature).
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Wedge {
    pub for_: std::time::Duration,
}
