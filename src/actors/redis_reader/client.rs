//! [`StreamClient`]: the reader's Redis operations, each one command (or one MULTI) with
//! a timeout. It holds no scheduling state; the actor decides what runs when.
//!
//! Two connections: the blocking `XREADGROUP ... BLOCK` waits on its own connection,
//! because on a shared multiplexed connection it would hold up every ack behind it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use thiserror::Error;

use super::ReaderConfig;
use super::entries::{
    ClaimPage, ReplyError, StreamEntry, dead_letter_fields, parse_claim_reply,
    parse_delivery_count, parse_group_lag, parse_oldest_pending, parse_read_reply,
};

/// Connecting (TCP, TLS, AUTH, HELLO) may take this long before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A non-blocking command answers within this or the connection counts as broken.
/// Generous, so a busy Redis is not mistaken for a dead one.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed Redis operation. Every kind is handled the same way by the reader
/// (reconnect with backoff, then re-read pending entries); the kinds exist for the logs.
#[derive(Debug, Error)]
pub enum StreamError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// The reader's Redis operations on one stream and group, as one consumer.
pub struct StreamClient {
    /// Acks, dead letters, claims, XPENDING: short commands, multiplexed.
    commands: MultiplexedConnection,
    /// Only the blocking XREADGROUP on new entries.
    blocking: MultiplexedConnection,
    stream: String,
    group: String,
    consumer: String,
    dead_letter_stream: String,
    dead_letter_maxlen: u64,
    block: Duration,
}

impl StreamClient {
    /// Opens both connections. The URL may carry credentials: errors from here are
    /// logged, and redis-rs does not put the URL in its error texts.
    pub async fn connect(config: &ReaderConfig) -> Result<StreamClient, StreamError> {
        let client = Client::open(config.url.as_str())?;
        let short = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        // The blocking read answers after at most `block`, so it times out only after that.
        let long = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(config.block + COMMAND_TIMEOUT));
        let commands = client
            .get_multiplexed_async_connection_with_config(&short)
            .await?;
        let blocking = client
            .get_multiplexed_async_connection_with_config(&long)
            .await?;
        Ok(StreamClient {
            commands,
            blocking,
            stream: config.stream.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
            dead_letter_stream: config.dead_letter_stream.clone(),
            dead_letter_maxlen: config.dead_letter_maxlen,
            block: config.block,
        })
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`: at `0`, so events added before the first
    /// start are processed too. BUSYGROUP (the group exists) is success.
    pub async fn ensure_group(&self) -> Result<(), StreamError> {
        let result: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.commands.clone())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// This consumer's own pending entries with ids after `after` (`0` for the first
    /// page): entries delivered to it earlier and never acknowledged.
    pub async fn read_pending(
        &self,
        after: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let reply: Value = self
            .read_group_cmd(count, None, after)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(parse_read_reply(reply)?)
    }

    /// New entries (`>`), waiting up to `block` for the first one, and never longer than
    /// `at_most` (the fence's remaining time: a read must not deliver after the fence
    /// closed).
    pub async fn read_new(
        &self,
        count: usize,
        at_most: Duration,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let reply: Value = self
            .read_group_cmd(count, Some(self.block.min(at_most)), ">")
            .query_async(&mut self.blocking.clone())
            .await?;
        Ok(parse_read_reply(reply)?)
    }

    /// One XAUTOCLAIM page: entries idle longer than `min_idle` on any consumer of the
    /// group become this consumer's (their delivery count goes up by one).
    pub async fn autoclaim(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<ClaimPage, StreamError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(millis(min_idle))
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(parse_claim_reply(reply)?)
    }

    /// Takes over the group at the start of a leadership, in one script (atomic): every
    /// entry pending on any consumer becomes this consumer's at once (XAUTOCLAIM with
    /// min-idle 0, JUSTID so the delivery count stays: the previous holders are known to
    /// be gone, so there is no `claim_idle` to wait), and every other consumer left with
    /// no pending entry is removed (XGROUP DELCONSUMER), so the group does not grow with
    /// every pod name. The entries are then read by the pending-first read. Returns
    /// (entries claimed, consumers removed).
    pub async fn take_over(&self) -> Result<(u64, u64), StreamError> {
        let (claimed, removed): (u64, u64) = redis::Script::new(TAKE_OVER_SCRIPT)
            .key(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(TAKE_OVER_PAGE)
            .arg(TAKE_OVER_MAX_PAGES)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok((claimed, removed))
    }

    /// Resets the idle time of entries this consumer is still working on (XCLAIM to
    /// itself, JUSTID so their delivery count stays), so that neither another replica
    /// nor this one's claim loop takes an entry whose event the Supervisor still holds.
    pub async fn touch(&self, ids: &[String]) -> Result<(), StreamError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: Value = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    /// The delivery count of each id (`None`: not pending any more), one pipelined
    /// `XPENDING stream group id id 1` per id. XREADGROUP replies do not carry it.
    pub async fn delivery_counts(&self, ids: &[&str]) -> Result<Vec<Option<u64>>, StreamError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.commands.clone()).await?;
        replies
            .into_iter()
            .map(|r| parse_delivery_count(r).map_err(StreamError::from))
            .collect()
    }

    /// `XACK`: the entry is done. Acking an entry that is no longer pending is harmless.
    pub async fn ack(&self, id: &str) -> Result<(), StreamError> {
        let _: Value = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    /// Copies the entry to the dead-letter stream with `original_id` and `error`, and
    /// acknowledges it, in one MULTI/EXEC: either both happen or neither, so an entry
    /// is never acked without its dead letter (and a retry after a lost reply cannot
    /// write a second one, because the entry is then no longer pending). The stream is
    /// capped at about `dead_letter_maxlen` (`MAXLEN ~`, which trims whole nodes, so it
    /// stays cheap): a flood of malformed events cannot fill Redis.
    pub async fn dead_letter(&self, entry: &StreamEntry, error: &str) -> Result<(), StreamError> {
        let fields = dead_letter_fields(entry, error);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe
            .cmd("XADD")
            .arg(&self.dead_letter_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.dead_letter_maxlen)
            .arg("*");
        for (k, v) in &fields {
            xadd.arg(k.as_slice()).arg(v.as_slice());
        }
        xadd.ignore();
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&entry.id)
            .ignore();
        let _: () = pipe.query_async(&mut self.commands.clone()).await?;
        Ok(())
    }

    /// The group's backlog for the metrics, in one pipeline on the short-command
    /// connection (never the blocking one): `XINFO GROUPS` for its `lag` (`None`: Redis
    /// does not know it), and the `XPENDING` summary for the oldest pending id.
    pub async fn stream_stats(&self) -> Result<(Option<u64>, Option<String>), StreamError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XINFO").arg("GROUPS").arg(&self.stream);
        pipe.cmd("XPENDING").arg(&self.stream).arg(&self.group);
        let replies: Vec<Value> = pipe.query_async(&mut self.commands.clone()).await?;
        let mut it = replies.into_iter();
        let (Some(groups), Some(pending)) = (it.next(), it.next()) else {
            return Err(ReplyError("the stats pipeline answered less than asked".into()).into());
        };
        Ok((
            parse_group_lag(groups, &self.group)?,
            parse_oldest_pending(pending)?,
        ))
    }

    /// Whether `id` is pending (delivered, not acknowledged) on any consumer of the group.
    pub async fn is_pending(&self, id: &str) -> Result<bool, StreamError> {
        let counts = self.delivery_counts(&[id]).await?;
        Ok(counts.first().copied().flatten().is_some())
    }

    fn read_group_cmd(&self, count: usize, block: Option<Duration>, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block).max(1));
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        cmd
    }
}

/// Entries claimed per XAUTOCLAIM page of the take-over script.
const TAKE_OVER_PAGE: usize = 1000;
/// Pages of the take-over script at most, so it holds Redis for a bounded time; what a
/// larger pending list leaves is claimed after `claim_idle` as usual.
const TAKE_OVER_MAX_PAGES: usize = 100;

/// KEYS[1] stream; ARGV group, this consumer, page size, max pages. Returns
/// {claimed, removed}. The script sees the RESP2 form of XINFO CONSUMERS (flat
/// name/value arrays) whatever protocol the connection speaks.
const TAKE_OVER_SCRIPT: &str = r"
local claimed = 0
local cursor = '0-0'
for _ = 1, tonumber(ARGV[4]) do
  local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, cursor, 'COUNT', ARGV[3], 'JUSTID')
  cursor = reply[1]
  claimed = claimed + #reply[2]
  if cursor == '0-0' then break end
end
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name ~= ARGV[2] and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return {claimed, removed}
";

/// Milliseconds for Redis arguments, saturating (a config of years stays valid).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
