//! Scale events in and results out, on Redis, the way the Otto platform does it.

use std::collections::HashMap;
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

/// A connection whose commands may take [`COMMAND_TIMEOUT`], like every wait of the
/// harness on Redis: not redis-rs' default of 500 ms, which a loaded 2-core machine
/// exceeds now and then (an XADD of B1 at 100/s timed out so in a smoke run).
pub async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).context("redis url")?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    tokio::time::timeout(COMMAND_TIMEOUT, connecting)
        .await
        .context("connecting to redis-server timed out")?
        .context("cannot connect to redis-server")
}

/// Metadata fields of an event (`tenant`...), `(field, value)`.
pub type Metadata<'a> = &'a [(&'a str, &'a str)];

fn scale_up_cmd(stream: &str, task_id: &str, pod_count: u32, metadata: Metadata) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("*")
        .arg("type")
        .arg("scale_up")
        .arg("pod_count")
        .arg(pod_count)
        .arg("task_id")
        .arg(task_id);
    for (field, value) in metadata {
        cmd.arg(*field).arg(*value);
    }
    cmd
}

/// `XADD stream * type scale_up pod_count N task_id T`; the new entry id.
pub async fn scale_up(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_id: &str,
    pod_count: u32,
) -> Result<String> {
    scale_up_with(con, stream, task_id, pod_count, &[]).await
}

/// [`scale_up`] with metadata fields (`tenant`...).
pub async fn scale_up_with(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_id: &str,
    pod_count: u32,
    metadata: Metadata<'_>,
) -> Result<String> {
    let cmd = scale_up_cmd(stream, task_id, pod_count, metadata);
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
    scale_up_many_with(con, stream, task_prefix, count, pod_count, &[]).await
}

/// [`scale_up_many`] with the same metadata fields on every event.
pub async fn scale_up_many_with(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_prefix: &str,
    count: u32,
    pod_count: u32,
    metadata: Metadata<'_>,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count as usize);
    let tasks: Vec<String> = (0..count).map(|i| format!("{task_prefix}-{i}")).collect();
    for chunk in tasks.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for task in chunk {
            pipe.add_command(scale_up_cmd(stream, task, pod_count, metadata));
        }
        let chunk_ids: Vec<String> = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async(con))
            .await
            .context("XADD pipeline timed out")?
            .context("XADD pipeline failed")?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// XADDs `count` one-pod events (tasks `<prefix>-<i>`) at `rate` per second, each at its
/// own scheduled time (late ones go at once, without bunching the rest); returns their
/// entry ids.
pub async fn send_paced(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_prefix: &str,
    rate: u32,
    count: u32,
    metadata: Metadata<'_>,
) -> Result<Vec<String>> {
    let never = std::future::pending::<()>();
    send_paced_until(con, stream, task_prefix, (rate, count), metadata, never).await
}

/// [`send_paced`] that ends early, with the ids sent so far, once `stop` completes.
pub async fn send_paced_until(
    con: &mut MultiplexedConnection,
    stream: &str,
    task_prefix: &str,
    (rate, count): (u32, u32),
    metadata: Metadata<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Vec<String>> {
    let period = Duration::from_secs(1) / rate.max(1);
    let start = tokio::time::Instant::now();
    let mut stop = std::pin::pin!(stop);
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(start + period * i) => {}
        }
        let task = format!("{task_prefix}-{i}");
        ids.push(scale_up_with(con, stream, &task, 1, metadata).await?);
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

/// One published result: its entry id, outcome and worker.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub outcome: String,
    /// The scale_up's entry id.
    pub event_id: String,
    pub worker_index: Option<u32>,
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
            worker_index: entry.get::<u32>("worker_index"),
            id: entry.id,
        })
        .collect())
}

/// ottoscaler's consumer group (`redis.group`, default).
pub const GROUP: &str = "ottoscaler";

/// Entries of `stream` pending in ottoscaler's group (read, not yet acknowledged).
pub async fn pending(con: &mut MultiplexedConnection, stream: &str) -> Result<u64> {
    let reply: redis::Value = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .query_async(con),
    )
    .await
    .context("XPENDING timed out")?
    .context("XPENDING failed")?;
    Ok(match reply {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    })
}

/// The ids of the entries pending on one consumer of ottoscaler's group.
pub async fn pending_of(
    con: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
) -> Result<Vec<String>> {
    let reply: redis::streams::StreamPendingCountReply = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(consumer)
            .query_async(con),
    )
    .await
    .context("XPENDING of a consumer timed out")?
    .context("XPENDING of a consumer failed")?;
    Ok(reply.ids.into_iter().map(|p| p.id).collect())
}

/// The results of a run against what was sent: every worker exactly one result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub workers: usize,
    pub results: usize,
    /// Workers without a result.
    pub lost: usize,
    /// Workers with more than one result.
    pub duplicated: usize,
    /// Results of no worker that was sent.
    pub unexpected: usize,
    /// Results whose outcome is not `succeeded`.
    pub not_succeeded: usize,
}

impl Tally {
    /// Counts `results` per worker of `sent` (entry id, pods).
    pub fn of(sent: &[(String, u32)], results: &[Published]) -> Tally {
        let mut per_worker: HashMap<(&str, u32), usize> = HashMap::new();
        for r in results {
            let key = (r.event_id.as_str(), r.worker_index.unwrap_or(u32::MAX));
            *per_worker.entry(key).or_insert(0) += 1;
        }
        let mut tally = Tally {
            results: results.len(),
            not_succeeded: results.iter().filter(|r| r.outcome != "succeeded").count(),
            ..Tally::default()
        };
        let mut expected = 0;
        for (id, pods) in sent {
            for i in 0..*pods {
                tally.workers += 1;
                match per_worker.get(&(id.as_str(), i)) {
                    None => tally.lost += 1,
                    Some(1) => expected += 1,
                    Some(n) => {
                        tally.duplicated += 1;
                        expected += n;
                    }
                }
            }
        }
        tally.unexpected = tally.results - expected;
        tally
    }

    /// Exactly one successful result per worker, nothing else.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0 && self.not_succeeded == 0
    }

    /// `None` when clean, else what is wrong, for a row's shortfall.
    pub fn shortfall(&self) -> Option<String> {
        (!self.clean()).then(|| {
            format!(
                "{} lost, {} duplicated, {} unexpected, {} not succeeded of {} workers",
                self.lost, self.duplicated, self.unexpected, self.not_succeeded, self.workers
            )
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "workers": self.workers,
            "results": self.results,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "not_succeeded": self.not_succeeded,
        })
    }
}

/// Waits until every worker of `sent` has a result on `results` and nothing is pending on
/// `stream` (nothing more can be published then), or `timeout`; the tally either way
/// (a timeout shows as lost workers).
pub async fn wait_for_results(
    con: &mut MultiplexedConnection,
    stream: &str,
    results_stream: &str,
    sent: &[(String, u32)],
    timeout: Duration,
) -> Result<Tally> {
    let deadline = Instant::now() + timeout;
    loop {
        let tally = Tally::of(sent, &results(con, results_stream).await?);
        if tally.lost == 0 && pending(con, stream).await? == 0 {
            return Ok(tally);
        }
        if Instant::now() >= deadline {
            eprintln!("bench: {results_stream}: not every worker's result within {timeout:?}");
            return Ok(tally);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The millisecond timestamp in a stream entry id (`<ms>-<seq>`): when Redis added it.
pub fn id_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(event_id: &str, worker: u32) -> Published {
        Published {
            id: String::new(),
            outcome: "succeeded".into(),
            event_id: event_id.into(),
            worker_index: Some(worker),
        }
    }

    #[test]
    fn the_tally_counts_results_per_worker() {
        let sent = vec![("1-0".to_string(), 2), ("2-0".to_string(), 1)];
        let clean = Tally::of(
            &sent,
            &[result("1-0", 0), result("1-0", 1), result("2-0", 0)],
        );
        assert!(clean.clean(), "{clean:?}");
        assert_eq!(clean.shortfall(), None);
        let bad = Tally::of(
            &sent,
            &[
                result("1-0", 0),
                result("1-0", 0),
                result("9-0", 0),
                result("2-0", 0),
            ],
        );
        assert_eq!((bad.lost, bad.duplicated, bad.unexpected), (1, 1, 1));
        assert_eq!(
            bad.shortfall().as_deref(),
            Some("1 lost, 1 duplicated, 1 unexpected, 0 not succeeded of 3 workers")
        );
    }

    #[test]
    fn an_entry_id_carries_its_time_in_ms() {
        assert_eq!(id_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(id_ms("garbage"), None);
    }
}
