//! The read loop and the claim loop of [`RedisReader`]: what to read when, within the
//! backpressure budget. What happens to each entry read is in [`super::entry`].

use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, error, warn};

use super::RedisReader;
use super::client::{StreamClient, StreamError};
use super::config::BACKPRESSURE_WAIT;
use super::entries::{CURSOR_DONE, StreamEntry, TRIMMED};
use super::entry::INVALID;
use crate::messages::supervisor::GetStatus;

/// Entries claimed per claim round at most (XAUTOCLAIM COUNT).
const CLAIM_COUNT: usize = 100;
/// XAUTOCLAIM pages per claim round at most, so one round stays short even when a
/// large pending list holds nothing claimable.
const MAX_CLAIM_PAGES: usize = 20;
/// How long the Supervisor may take to report its status before the reader re-checks.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait after the Supervisor failed to report its status: longer than
/// [`BACKPRESSURE_WAIT`], so a broken Supervisor costs one log line a second, not ten.
const STATUS_RETRY: Duration = Duration::from_secs(1);

/// Where the read loop is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// Re-reading this consumer's own pending entries with ids after the one given.
    Pending(String),
    /// Reading new entries (`>`).
    New,
}

/// What one read step produced.
enum ReadOutcome {
    /// Backpressure (or no status): nothing was read; try again after this long.
    Wait(Duration),
    /// Entries with their delivery count (`None` for a fresh `>` read: the first).
    Entries(Vec<(StreamEntry, Option<u64>)>),
}

/// What one claim round produced.
#[derive(Default)]
struct Claimed {
    /// Claimed entries with their delivery count (`None`: no longer pending).
    entries: Vec<(StreamEntry, Option<u64>)>,
    /// Ids Redis found deleted while pending (and dropped from the pending list).
    deleted: Vec<String>,
}

impl RedisReader {
    /// One step of the read loop: check backpressure, read one page at `cursor`, hand
    /// the entries out, and schedule the next step. Exactly one step is pending per
    /// connection; it is cancelled on stop and ignored once the connection is replaced.
    pub(super) fn read_step(&mut self, cursor: Cursor, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.stopping {
            return;
        }
        let Some(fence_left) = self.fence.remaining() else {
            warn!("the leadership fence is closed; not reading");
            return;
        };
        let generation = self.generation;
        let room = self
            .config
            .max_in_flight
            .saturating_sub(self.in_flight.len());
        let status = self.status.clone();
        let read_count = self.config.read_count;
        let page = cursor.clone();
        let fut = async move {
            let count = match read_budget(&status, read_count, room).await {
                Some(0) => return Ok(ReadOutcome::Wait(BACKPRESSURE_WAIT)),
                Some(count) => count,
                None => return Ok(ReadOutcome::Wait(STATUS_RETRY)),
            };
            match page {
                Cursor::Pending(after) => {
                    let entries = client.read_pending(&after, count).await?;
                    with_delivery_counts(&client, entries).await
                }
                Cursor::New => Ok(ReadOutcome::Entries(
                    client
                        .read_new(count, fence_left)
                        .await?
                        .into_iter()
                        .map(|e| (e, None))
                        .collect(),
                )),
            }
        };
        let handle = ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                return;
            }
            act.read_handle = None;
            match res {
                Ok(ReadOutcome::Wait(delay)) => act.read_later(cursor, delay, ctx),
                Ok(ReadOutcome::Entries(entries)) if !act.fence.is_open() => {
                    // Read just as the fence closed: left pending for the next leader.
                    warn!(
                        entries = entries.len(),
                        "the leadership fence closed during the read; entries left pending"
                    );
                }
                Ok(ReadOutcome::Entries(entries)) => {
                    act.health.set_redis(true);
                    let next = next_cursor(&cursor, &entries);
                    if next == Cursor::New && matches!(cursor, Cursor::Pending(_)) {
                        debug!("own pending entries done; reading new entries");
                    }
                    act.handle_entries(entries, ctx);
                    act.read_step(next, ctx);
                }
                Err(e) => act.on_redis_error(generation, e, ctx),
            }
        }));
        self.read_handle = Some(handle);
    }

    /// Backpressure holds: look again after `delay` (a timer, no spinning).
    pub(super) fn read_later(&mut self, cursor: Cursor, delay: Duration, ctx: &mut Context<Self>) {
        let generation = self.generation;
        let handle = ctx.run_later(delay, move |act, ctx| {
            if act.generation == generation {
                act.read_step(cursor, ctx);
            }
        });
        self.read_handle = Some(handle);
    }

    /// One claim round: touch the entries still in flight (so nobody claims them), then
    /// XAUTOCLAIM entries idle longer than `claim_idle` on any consumer, within the
    /// backpressure budget. Also retries this consumer's own refused entries.
    pub(super) fn claim_round(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.claiming || !self.fence.is_open() {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        self.claiming = true;
        let generation = self.generation;
        let touch: Vec<String> = self.in_flight.iter().cloned().collect();
        let room = self
            .config
            .max_in_flight
            .saturating_sub(self.in_flight.len());
        let status = self.status.clone();
        let min_idle = self.config.claim_idle;
        let fut = async move {
            client.touch(&touch).await?;
            let budget = read_budget(&status, CLAIM_COUNT, room).await.unwrap_or(0);
            claim_pages(&client, min_idle, budget).await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.claiming = false;
            if act.generation != generation {
                return;
            }
            match res {
                Ok(claimed) => {
                    if !claimed.entries.is_empty() || !claimed.deleted.is_empty() {
                        debug!(
                            claimed = claimed.entries.len(),
                            deleted = claimed.deleted.len(),
                            "claimed idle entries"
                        );
                    }
                    act.handle_entries(claimed.entries, ctx);
                    for id in claimed.deleted {
                        let gone = StreamEntry { id, fields: None };
                        act.dead_letter(gone, TRIMMED.to_string(), INVALID, ctx);
                    }
                }
                Err(e) => act.on_redis_error(generation, e, ctx),
            }
        }));
    }
}

/// How many entries the next read may take: `max`, limited by the Supervisor's room
/// (free slots plus its read-ahead) and the room for more events in flight. `Some(0)` is backpressure: read
/// nothing. `None`: the Supervisor did not report its status, so nothing is read either.
async fn read_budget(status: &Recipient<GetStatus>, max: usize, room: usize) -> Option<usize> {
    if room == 0 || max == 0 {
        return Some(0);
    }
    match tokio::time::timeout(STATUS_TIMEOUT, status.send(GetStatus)).await {
        Ok(Ok(s)) => Some(max.min(room).min(s.room)),
        Ok(Err(e)) => {
            error!(error = %e, "the Supervisor does not answer status requests; not reading");
            None
        }
        Err(_) => {
            warn!("the Supervisor did not report its status in time; not reading for now");
            None
        }
    }
}

/// Adds each entry's delivery count (redelivered entries: pending-first reads, claims).
async fn with_delivery_counts(
    client: &StreamClient,
    entries: Vec<StreamEntry>,
) -> Result<ReadOutcome, StreamError> {
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let counts = client.delivery_counts(&ids).await?;
    // An entry no longer pending was acked or claimed by another consumer meanwhile:
    // it is not ours to decide any more.
    Ok(ReadOutcome::Entries(
        entries
            .into_iter()
            .zip(counts)
            .filter(|(_, count)| count.is_some())
            .collect(),
    ))
}

/// XAUTOCLAIM pages from the start until the cursor wraps, `budget` entries were
/// claimed or [`MAX_CLAIM_PAGES`] pages were read.
async fn claim_pages(
    client: &StreamClient,
    min_idle: Duration,
    budget: usize,
) -> Result<Claimed, StreamError> {
    let mut claimed = Claimed::default();
    let mut cursor = CURSOR_DONE.to_string();
    for _ in 0..MAX_CLAIM_PAGES {
        let left = budget.saturating_sub(claimed.entries.len());
        if left == 0 {
            break;
        }
        let page = client.autoclaim(min_idle, &cursor, left).await?;
        let ids: Vec<&str> = page.entries.iter().map(|e| e.id.as_str()).collect();
        let counts = client.delivery_counts(&ids).await?;
        claimed.entries.extend(page.entries.into_iter().zip(counts));
        claimed.deleted.extend(page.deleted);
        cursor = page.cursor;
        if cursor == CURSOR_DONE {
            break;
        }
    }
    // Claimed entries that are no longer pending (acked between claim and XPENDING)
    // need nothing more.
    claimed.entries.retain(|(_, count)| count.is_some());
    Ok(claimed)
}

/// Where the read loop goes after a page: the pending read pages on from the last id
/// until a page comes back empty, then switches to new entries for good.
fn next_cursor(cursor: &Cursor, entries: &[(StreamEntry, Option<u64>)]) -> Cursor {
    match (cursor, entries.last()) {
        (Cursor::Pending(_), Some((last, _))) => Cursor::Pending(last.id.clone()),
        _ => Cursor::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> (StreamEntry, Option<u64>) {
        (
            StreamEntry {
                id: id.into(),
                fields: None,
            },
            Some(1),
        )
    }

    #[test]
    fn the_pending_read_pages_on_from_the_last_id_then_switches_to_new() {
        let pending = Cursor::Pending("0".into());
        assert_eq!(
            next_cursor(&pending, &[entry("1-0"), entry("5-2")]),
            Cursor::Pending("5-2".into())
        );
        assert_eq!(next_cursor(&pending, &[]), Cursor::New);
        assert_eq!(next_cursor(&Cursor::New, &[entry("9-0")]), Cursor::New);
    }
}
