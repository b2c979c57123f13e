//! Messages the RedisReader receives.

use actix::Message;

/// Is this event's stream entry still pending (delivered, not acknowledged) in the group?
/// The Supervisor asks for workers it adopted after a restart: their pods may be deleted
/// only once the entry is acknowledged. Unknown or trimmed entries count as not pending.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Result<bool, String>")]
pub struct IsEventPending {
    pub event_id: String,
}
