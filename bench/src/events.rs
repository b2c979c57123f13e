//! Scale events in and results out, on Redis, the way the Otto platform does it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

/// Pause between two looks at the results stream's length while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Commands per pipeline when many events are sent at once.
const PIPELINE: usize = 500;
/// Every Redis command of the harness gets this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection whose commands the harness bounds itself (each with a timeout of its
/// own): the client's default 500 ms response timeout is raised to theirs, as a loaded 2-core
/// machine exceeds it now and then.
pub async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).context("redis url")?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    tokio::time::timeout(
        COMMAND_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .context("connecting to redis-server timed out")?
    .context("cannot connect to redis-server")
}

fn scale_up_cmd(stream: &str, task_id: &str, pod_count: u32) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("*")
        .arg("type")
        .arg("scale_up")
        .arg("pod_count")
        .arg(pod_count)
        .arg("task_id")
        .arg(task_id);
    cmd
}

/// `XADD stream * type scale_up pod_count N task_id T`; the new entry id.
pub async fn scale_up(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_id: &str,
    pod_count: u32,
) -> Result<String> {
    let cmd = scale_up_cmd(stream, task_id, pod_count);
    tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async(con))
        .await
        .context("XADD timed out")?
        .context("XADD failed")
}

/// `count` scale_up events of `pod_count` pods each (tasks `<prefix>-<i>`), pipelined.
pub async fn scale_up_many(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_prefix: &str,
    count: u32,
    pod_count: u32,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count as usize);
    let tasks: Vec<String> = (0..count).map(|i| format!("{task_prefix}-{i}")).collect();
    for chunk in tasks.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for task in chunk {
            pipe.add_command(scale_up_cmd(stream, task, pod_count));
        }
        let chunk_ids: Vec<String> = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(con))
            .await
            .context("XADD pipeline timed out")?
            .context("XADD pipeline failed")?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

pub async fn len(con: &mut MultiplexedConnection, stream: &str) -> Result<u64> {
    tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XLEN").arg(stream).query_async(con),
    )
    .await
    .context("XLEN timed out")?
    .context("XLEN failed")
}

/// Waits until `stream` holds at least `n` entries.
pub async fn wait_len(
    con: &mut MultiplexedConnection,
    stream: &str,
    n: u64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let have = len(con, stream).await?;
        if have >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{stream} has {have} entries, not {n}, after {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One published result: its entry id, the event it answers and the outcome.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub event_id: String,
    pub outcome: String,
}

/// Every entry of a results stream.
pub async fn results(con: &mut MultiplexedConnection, stream: &str) -> Result<Vec<Published>> {
    let reply: StreamRangeReply = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(con),
    )
    .await
    .context("XRANGE timed out")?
    .context("XRANGE failed")?;
    Ok(reply
        .ids
        .into_iter()
        .map(|entry| Published {
            outcome: entry.get::<String>("outcome").unwrap_or_default(),
            event_id: entry.get::<String>("event_id").unwrap_or_default(),
            id: entry.id,
        })
        .collect())
}

/// The millisecond timestamp in a stream entry id (`<ms>-<seq>`): when Redis added it.
pub fn id_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::id_ms;

    #[test]
    fn an_entry_id_carries_its_time_in_ms() {
        assert_eq!(id_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(id_ms("garbage"), None);
    }
}
