//! The reader's configuration and the defaults of what `[redis]` does not set.

use std::time::Duration;

use crate::settings::RedisSettings;

/// Entries asked for per read: large enough that a burst is read in few round trips,
/// small enough that one batch does not flood the Supervisor's mailbox.
pub const DEFAULT_READ_COUNT: usize = 100;
/// How long one read of new entries blocks: short, so a stop or a change in free slots
/// is noticed within a second.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(1);
/// Events dispatched and not yet answered at most; beyond it the reader waits.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2 * DEFAULT_READ_COUNT;
/// The re-check interval while backpressure holds: short enough to react fast, long
/// enough not to spin.
pub const BACKPRESSURE_WAIT: Duration = Duration::from_millis(100);
/// The claim loop never runs more often than this, whatever `claim_idle` says.
const MIN_CLAIM_PERIOD: Duration = Duration::from_millis(100);

/// What the reader needs to know; [`ReaderConfig::from_settings`] builds it from the
/// `[redis]` settings. No `Debug`: the URL may carry a password.
#[derive(Clone)]
pub struct ReaderConfig {
    /// `redis://` or `rediss://` URL, possibly with credentials.
    pub url: String,
    pub stream: String,
    pub group: String,
    /// This replica's consumer name (`redis.consumer`, else the hostname).
    pub consumer: String,
    pub dead_letter_stream: String,
    /// Approximate MAXLEN of the dead-letter stream (`redis.dead_letter_maxlen`).
    pub dead_letter_maxlen: u64,
    /// Entries idle longer than this on any consumer are claimed.
    pub claim_idle: Duration,
    /// Deliveries after which an entry that never succeeded is dead-lettered.
    pub max_deliveries: u64,
    /// COUNT of one read. Default [`DEFAULT_READ_COUNT`].
    pub read_count: usize,
    /// BLOCK of one read of new entries. Default [`DEFAULT_BLOCK`].
    pub block: Duration,
    /// Events awaiting the Supervisor's answer at most. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// How often the stream gauges are refreshed (`redis.stats_interval`).
    pub stats_interval: Duration,
}

impl ReaderConfig {
    /// The reader's config from the `[redis]` settings and the resolved consumer name
    /// ([`Settings::consumer_name`](crate::settings::Settings::consumer_name)).
    pub fn from_settings(redis: &RedisSettings, consumer: String) -> ReaderConfig {
        ReaderConfig {
            url: redis.url.clone(),
            stream: redis.stream.clone(),
            group: redis.group.clone(),
            consumer,
            dead_letter_stream: redis.dead_letter_stream.clone(),
            dead_letter_maxlen: redis.dead_letter_maxlen,
            claim_idle: redis.claim_idle,
            max_deliveries: redis.max_deliveries,
            read_count: DEFAULT_READ_COUNT,
            block: DEFAULT_BLOCK,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            stats_interval: redis.stats_interval,
        }
    }

    /// Room in flight for `waiting` more events read ahead of capacity
    /// (`limits.max_waiting_events`): they await the Supervisor's answer too.
    pub fn with_read_ahead(mut self, waiting: usize) -> ReaderConfig {
        self.max_in_flight = DEFAULT_MAX_IN_FLIGHT.saturating_add(waiting);
        self
    }

    /// How often the claim loop runs: half of `claim_idle`, so an abandoned entry waits
    /// at most 1.5 × `claim_idle`, and in-flight entries are touched well before they
    /// could look abandoned.
    pub(super) fn claim_period(&self) -> Duration {
        (self.claim_idle / 2).max(MIN_CLAIM_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_period_is_half_the_idle_time_but_not_a_spin() {
        let mut c = ReaderConfig::from_settings(&RedisSettings::default(), "c".into());
        assert_eq!(c.claim_period(), Duration::from_secs(30));
        c.claim_idle = Duration::from_millis(500);
        assert_eq!(c.claim_period(), Duration::from_millis(250));
        c.claim_idle = Duration::from_millis(10);
        assert_eq!(c.claim_period(), MIN_CLAIM_PERIOD);
    }
}
