//! ResultsPublisher: owns the results stream (docs/contract.md section 5) and writes exactly
//! one entry per finished worker, also across crashes and redeliveries.
//!
//! Exactly once: one Lua script sets the marker
//! `ottoscaler:published:<results_stream>:<event_id>:<worker_index>` (SET NX, kept
//! `redis.result_marker_ttl`, a week by default) and only if it was new does the XADD, atomically. A retry after a lost reply,
//! a restarted worker or a second instance adopting the same pod finds the marker and
//! writes nothing. Transient failures are retried with backoff within
//! [`PUBLISH_DEADLINE`]; after that the worker gets a [`PublishError`] and retries later.
//!
//! A failed attempt replaces the connection: redis-rs' `ConnectionManager` reconnects by
//! itself only after I/O errors, and one whose reconnect was refused (authentication
//! failing during a password rotation, `-LOADING` after a restart) keeps answering with
//! that refusal. A fresh lazy manager connects again on the next attempt.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tracing::{debug, info, warn};

use crate::lease::Fence;
use crate::messages::{PublishError, WorkerFinished};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::settings::RedisSettings;

/// How long one publication may take, retries included, before the worker is told to
/// retry later: long enough to ride out a Redis restart, short enough that a worker
/// is not stuck.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// One attempt (connect + EVALSHA) at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The prefix of every marker key.
pub const MARKER_PREFIX: &str = "ottoscaler:published";

/// KEYS[1] marker, KEYS[2] results stream; ARGV[1] marker TTL milliseconds, ARGV[2]
/// MAXLEN, ARGV[3..] field, value, ... Returns the new entry id, or nil when already
/// published.
const PUBLISH_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
  for i = 3, #ARGV do
    args[#args + 1] = ARGV[i]
  end
  return redis.call(unpack(args))
end
return false
";

/// What the publisher needs; no `Debug`: the URL may carry a password.
#[derive(Clone)]
pub struct PublisherConfig {
    pub url: String,
    /// `redis.results_stream`.
    pub results_stream: String,
    /// `redis.results_maxlen`: the approximate cap of the stream.
    pub results_maxlen: u64,
    /// `redis.result_marker_ttl`: how long each worker's marker is kept. Far longer than
    /// any redelivery or adoption can come late (validated against `claim_idle` x
    /// `max_deliveries`), short enough that markers do not pile up forever.
    pub marker_ttl: Duration,
}

impl PublisherConfig {
    pub fn from_settings(redis: &RedisSettings) -> PublisherConfig {
        PublisherConfig {
            url: redis.url.clone(),
            results_stream: redis.results_stream.clone(),
            results_maxlen: redis.results_maxlen,
            marker_ttl: redis.result_marker_ttl,
        }
    }
}

/// The marker key of one worker's result.
pub fn marker_key(results_stream: &str, event_id: &str, worker_index: u32) -> String {
    format!("{MARKER_PREFIX}:{results_stream}:{event_id}:{worker_index}")
}

pub struct ResultsPublisher {
    config: Arc<PublisherConfig>,
    /// Open while this replica leads: nothing is published while it is closed.
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    script: Arc<Script>,
    /// Created in `started` (a manager needs the runtime); shared by every
    /// publication's future.
    connection: Option<Arc<SharedConnection>>,
}

impl ResultsPublisher {
    pub fn new(config: PublisherConfig, metrics: Arc<Metrics>) -> ResultsPublisher {
        ResultsPublisher {
            config: Arc::new(config),
            fence: Arc::new(Fence::always_open()),
            metrics,
            script: Arc::new(Script::new(PUBLISH_SCRIPT)),
            connection: None,
        }
    }

    /// Publishes only while `fence` is open (leader election).
    pub fn with_fence(mut self, fence: Arc<Fence>) -> ResultsPublisher {
        self.fence = fence;
        self
    }
}

/// The publications' connection, replaced after a failed attempt. Each manager has a
/// generation, so that many publications failing on the same manager replace it once.
struct SharedConnection {
    client: Client,
    current: Mutex<(u64, ConnectionManager)>,
}

impl SharedConnection {
    fn open(url: &str) -> Result<SharedConnection, redis::RedisError> {
        let client = Client::open(url)?;
        let manager = Self::manager(&client)?;
        Ok(SharedConnection {
            client,
            current: Mutex::new((0, manager)),
        })
    }

    /// A lazily connecting manager: its own reconnect retries are few and short,
    /// because [`publish`] retries with [`Backoff::REDIS`] within the deadline.
    fn manager(client: &Client) -> Result<ConnectionManager, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(ATTEMPT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        client.get_connection_manager_lazy(config)
    }

    /// The current manager and its generation.
    fn get(&self) -> (u64, ConnectionManager) {
        // A std mutex: nothing awaits while it is held.
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// Replaces the manager of `generation` with a fresh one, unless another failed
    /// publication already did.
    fn replace(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return;
        }
        match Self::manager(&self.client) {
            Ok(manager) => *current = (generation + 1, manager),
            // Creating a lazy manager does no I/O; keep the old one if it ever fails.
            Err(e) => warn!(error = %e, "cannot create a new Redis connection for results"),
        }
    }
}

/// Publishes `result` once, retrying transient failures until [`PUBLISH_DEADLINE`].
/// `Ok(true)` when this call wrote the entry, `Ok(false)` when it already existed.
async fn publish(
    connection: &SharedConnection,
    script: &Script,
    config: &PublisherConfig,
    result: &WorkerFinished,
) -> Result<bool, PublishError> {
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    let mut attempt = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (generation, manager) = connection.get();
        let outcome = tokio::time::timeout(
            left.min(ATTEMPT_TIMEOUT),
            invoke(manager, script, config, result),
        )
        .await;
        let error = match outcome {
            Ok(Ok(written)) => return Ok(written),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        connection.replace(generation);
        let delay = Backoff::REDIS.delay(attempt);
        if Instant::now() + delay >= deadline {
            return Err(PublishError(format!(
                "results stream {:?} not written after {} attempts: {error}",
                config.results_stream,
                attempt + 1
            )));
        }
        debug!(pod = %result.pod, %error, attempt, "publishing a result failed; retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// One EVALSHA (EVAL if the script is not cached) of the publish script.
async fn invoke(
    mut connection: ConnectionManager,
    script: &Script,
    config: &PublisherConfig,
    result: &WorkerFinished,
) -> Result<bool, redis::RedisError> {
    let mut call = script.key(marker_key(
        &config.results_stream,
        &result.event_id,
        result.worker_index,
    ));
    call.key(&config.results_stream)
        .arg(marker_ttl_millis(config.marker_ttl))
        .arg(config.results_maxlen);
    for (field, value) in result.fields() {
        call.arg(field).arg(value);
    }
    let id: Option<String> = call.invoke_async(&mut connection).await?;
    Ok(id.is_some())
}

/// The longest `PX` this sends: Redis refuses an expiry past `i64::MAX` ms from now, and
/// half of that is still millions of years.
const MAX_MARKER_TTL_MS: u64 = i64::MAX as u64 / 2;

/// The marker TTL for `SET ... PX`: whole milliseconds, at least 1 (PX 0 is an error;
/// settings validation keeps the TTL at 1s or more anyway), at most [`MAX_MARKER_TTL_MS`].
fn marker_ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MARKER_TTL_MS)
}

impl Actor for ResultsPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every finished worker reports here; none may be turned away by a full mailbox.
        ctx.set_mailbox_capacity(usize::MAX);
        match SharedConnection::open(&self.config.url) {
            Ok(connection) => self.connection = Some(Arc::new(connection)),
            // Only an unparseable URL gets here, and settings validation rejects those.
            Err(e) => warn!(error = %e, "results publisher cannot use the Redis URL"),
        }
        info!(stream = %self.config.results_stream, "results publisher started");
    }
}

impl Handler<WorkerFinished> for ResultsPublisher {
    type Result = ResponseFuture<Result<(), PublishError>>;

    /// Publications run concurrently (a `ResponseFuture`, not a blocking `wait`): a
    /// slow one must not delay the others.
    fn handle(&mut self, msg: WorkerFinished, _ctx: &mut Self::Context) -> Self::Result {
        let Some(connection) = self.connection.clone() else {
            return Box::pin(async {
                Err(PublishError("the Redis URL cannot be used".to_string()))
            });
        };
        let script = self.script.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let fence = self.fence.clone();
        Box::pin(async move {
            // Checked last thing before the write: the worker retries, and the next
            // leader publishes (once, by the marker) if this replica never does.
            if !fence.is_open() {
                return Err(PublishError(
                    "not the leader: the result was not published".to_string(),
                ));
            }
            let written = publish(&connection, &script, &config, &msg).await.inspect_err(|e| {
                metrics.redis_error();
                warn!(pod = %msg.pod, error = %e, "result not published; the worker retries later");
            })?;
            if written {
                metrics.result_published();
                debug!(pod = %msg.pod, task_id = %msg.task_id, outcome = %msg.outcome, "result published");
            } else {
                debug!(pod = %msg.pod, "result was already published");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_stream_the_event_and_the_worker() {
        assert_eq!(
            marker_key("otto:scale:results", "1718000000000-0", 3),
            "ottoscaler:published:otto:scale:results:1718000000000-0:3"
        );
    }

    #[test]
    fn the_script_only_adds_when_the_marker_was_new() {
        let set = PUBLISH_SCRIPT.find("'SET'").expect("sets the marker");
        let add = PUBLISH_SCRIPT.find("'XADD'").expect("adds the entry");
        assert!(set < add);
        assert!(PUBLISH_SCRIPT.contains("'NX'") && PUBLISH_SCRIPT.contains("'MAXLEN', '~'"));
    }

    #[test]
    fn the_marker_ttl_is_given_in_whole_milliseconds() {
        assert_eq!(
            marker_ttl_millis(Duration::from_secs(7 * 24 * 3600)),
            604_800_000
        );
        assert_eq!(marker_ttl_millis(Duration::from_micros(10)), 1);
        assert_eq!(marker_ttl_millis(Duration::MAX), MAX_MARKER_TTL_MS);
    }
}
