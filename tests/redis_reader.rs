//! The RedisReader and the ResultsPublisher against a real redis-server (one per test).
//!
//! The Supervisor is replaced by [`Recorder`], a small actor that records every event
//! and acknowledgement and answers as the test tells it (accept, refuse, hold), so each
//! test asserts exactly what reached the Supervisor and what Redis holds afterwards.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ottoscaler::actors::redis_reader::{ReaderConfig, RedisReader};
use ottoscaler::actors::results_publisher::{PublisherConfig, ResultsPublisher};
use ottoscaler::http::Health;
use ottoscaler::messages::reader::IsEventPending;
use ottoscaler::messages::reader::StopReading;
use ottoscaler::messages::supervisor::{
    EventAccepted, EventAcknowledged, EventRefused, GetStatus, SupervisorStatus,
};
use ottoscaler::messages::{EventLimits, Outcome, ScaleEvent, ScaleKind, WorkerFinished};
use ottoscaler::metrics::Metrics;
use ottoscaler::settings::RedisSettings;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use testenv::RedisServer;

const STREAM: &str = "otto:scale:events";
const GROUP: &str = "ottoscaler";
const DEAD: &str = "otto:scale:events:dead";
const RESULTS: &str = "otto:scale:results";
/// Generous: the machine running the tests may be busy compiling.
const WAIT: Duration = Duration::from_secs(20);

// ---- the recording Supervisor ---------------------------------------------------

/// What the recorder saw and how it answers; shared with the test.
#[derive(Debug, Default)]
struct Record {
    /// Every ScaleEvent received, in order (redeliveries included).
    received: Vec<ScaleEvent>,
    /// Every EventAcknowledged, in order.
    acked: Vec<String>,
    /// Refuse every event.
    refuse_all: bool,
    /// Never answer events of these task ids (as if the pods were still being created).
    hold_tasks: HashSet<String>,
    /// Answer only after this long.
    answer_delay: Duration,
    /// What GetStatus reports.
    free_slots: usize,
    status_requests: usize,
}

impl Record {
    fn times_received(&self, event_id: &str) -> usize {
        self.received
            .iter()
            .filter(|e| e.event_id == event_id)
            .count()
    }
    fn received_ids(&self) -> Vec<String> {
        self.received.iter().map(|e| e.event_id.clone()).collect()
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Record>>);

impl Shared {
    fn accepting() -> Shared {
        let s = Shared::default();
        s.lock().free_slots = 200;
        s
    }
    fn lock(&self) -> MutexGuard<'_, Record> {
        // A test thread that panicked while holding the lock already failed the test.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Recorder(Shared);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<ScaleEvent> for Recorder {
    type Result = ResponseFuture<Result<EventAccepted, EventRefused>>;

    fn handle(&mut self, event: ScaleEvent, _ctx: &mut Self::Context) -> Self::Result {
        let mut r = self.0.lock();
        r.received.push(event.clone());
        let hold = r.hold_tasks.contains(&event.task_id);
        let refuse = r.refuse_all;
        let delay = r.answer_delay;
        Box::pin(async move {
            if hold {
                futures::future::pending::<()>().await;
            }
            tokio::time::sleep(delay).await;
            if refuse {
                Err(EventRefused::Kubernetes {
                    reason: "simulated refusal: quota exceeded".into(),
                    pods_ok: 0,
                    pods_total: 1,
                })
            } else {
                Ok(EventAccepted {
                    event_id: event.event_id,
                    pods: vec![],
                })
            }
        })
    }
}

impl Handler<EventAcknowledged> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: EventAcknowledged, _ctx: &mut Self::Context) {
        self.0.lock().acked.push(msg.event_id);
    }
}

impl Handler<GetStatus> for Recorder {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        let mut r = self.0.lock();
        r.status_requests += 1;
        MessageResult(SupervisorStatus {
            ready: true,
            free_slots: r.free_slots,
            room: r.free_slots,
            ..SupervisorStatus::default()
        })
    }
}

// ---- helpers ----------------------------------------------------------------------

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ottoscaler=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(
    redis: &RedisServer,
    consumer: &str,
    claim_idle: Duration,
    max_deliveries: u64,
) -> ReaderConfig {
    let settings = RedisSettings {
        url: redis.url(),
        claim_idle,
        max_deliveries,
        ..RedisSettings::default()
    };
    ReaderConfig::from_settings(&settings, consumer.to_string())
}

fn limits() -> EventLimits {
    EventLimits {
        max_pods_per_event: 50,
        templates: vec!["default".into()],
        ..EventLimits::default()
    }
}

/// A reader feeding a new recorder; returns the reader, the recorder's record and health.
fn start_reader(config: ReaderConfig, shared: &Shared) -> (Addr<RedisReader>, Arc<Health>) {
    let recorder = Recorder(shared.clone()).start();
    let health = Arc::new(Health::new());
    let reader = RedisReader::new(
        config,
        recorder.clone().recipient(),
        recorder.clone().recipient(),
        recorder.recipient(),
        Arc::new(Metrics::new()),
        health.clone(),
        limits(),
    );
    (actix::Supervisor::start(|_| reader), health)
}

async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("test connection to redis")
}

/// XADD with byte-exact fields; returns the entry id.
async fn xadd(con: &mut MultiplexedConnection, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(con).await.expect("XADD")
}

async fn add_event(con: &mut MultiplexedConnection, task_id: &str, pod_count: &str) -> String {
    xadd(
        con,
        &[
            (b"type", b"scale_up"),
            (b"pod_count", pod_count.as_bytes()),
            (b"task_id", task_id.as_bytes()),
        ],
    )
    .await
}

/// Entries pending in the group, on any consumer.
async fn pending_count(con: &mut MultiplexedConnection) -> i64 {
    let summary: Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .query_async(con)
        .await
        .expect("XPENDING");
    match summary {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n,
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        other => panic!("unexpected XPENDING summary {other:?}"),
    }
}

/// The fields of one stream entry, byte for byte.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A dead letter as stored: its fields byte for byte.
#[derive(Debug)]
struct Letter(Fields);

impl Letter {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

async fn dead_letters(con: &mut MultiplexedConnection) -> Vec<Letter> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(DEAD)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE dead letters");
    stream_fields(reply).into_iter().map(Letter).collect()
}

/// The fields of every entry of an XRANGE reply.
fn stream_fields(reply: Value) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let Value::Array(entries) = reply else {
        panic!("unexpected XRANGE reply {reply:?}");
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(mut parts) = entry else {
                panic!("unexpected entry {entry:?}");
            };
            let Some(Value::Array(flat)) = parts.pop() else {
                panic!("entry without fields");
            };
            flat.chunks(2)
                .map(|kv| match kv {
                    [Value::BulkString(k), Value::BulkString(v)] => (k.clone(), v.clone()),
                    other => panic!("unexpected field {other:?}"),
                })
                .collect()
        })
        .collect()
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `within`.
async fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_until`] for a check that needs Redis.
async fn wait_for_pending(con: &mut MultiplexedConnection, expected: i64, within: Duration) {
    let start = Instant::now();
    loop {
        let n = pending_count(con).await;
        if n == expected {
            return;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?}: {n} entries pending, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_dead_letters(con: &mut MultiplexedConnection, n: usize) -> Vec<Letter> {
    let start = Instant::now();
    loop {
        let letters = dead_letters(con).await;
        if letters.len() >= n {
            return letters;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out: {} dead letters, expected {n}: {letters:?}",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops or restarts the server off the async thread (it waits for the process).
async fn blocking<F: FnOnce(&mut RedisServer) + Send + 'static>(
    mut redis: RedisServer,
    f: F,
) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        f(&mut redis);
        redis
    })
    .await
    .expect("redis control thread")
}

// ---- the reader ---------------------------------------------------------------------

#[actix_rt::test]
async fn the_seeds_event_added_with_redis_cli_reaches_the_supervisor_and_is_acked_after_acceptance()
{
    init_logs();
    let redis = RedisServer::start();
    let shared = Shared::accepting();
    let (_reader, health) = start_reader(config(&redis, "c1", Duration::from_secs(60), 5), &shared);
    health.set_kube(true);
    wait_until(WAIT, "redis readiness", || health.is_ready()).await;

    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args([
                "XADD",
                STREAM,
                "*",
                "type",
                "scale_up",
                "pod_count",
                "3",
                "task_id",
                "task-123",
            ])
            .output(),
    )
    .await
    .expect("redis-cli in time")
    .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli failed: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    wait_until(WAIT, "the acknowledgement", || {
        shared.lock().acked.contains(&id)
    })
    .await;
    let received = shared.lock().received.clone();
    assert_eq!(received.len(), 1);
    let event = &received[0];
    assert_eq!(event.event_id, id);
    assert_eq!(event.kind, ScaleKind::Up { pod_count: 3 });
    assert_eq!(event.task_id, "task-123");
    assert_eq!(event.template, "default");
    assert!(event.metadata.is_empty());
    let mut con = connect(&redis).await;
    assert_eq!(pending_count(&mut con).await, 0, "acked after acceptance");
    assert!(dead_letters(&mut con).await.is_empty());
}

#[actix_rt::test]
async fn events_added_before_the_consumer_starts_are_processed() {
    init_logs();
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(add_event(&mut con, &format!("early-{i}"), "1").await);
    }

    let shared = Shared::accepting();
    let (_reader, _) = start_reader(config(&redis, "c1", Duration::from_secs(60), 5), &shared);
    wait_until(WAIT, "three acknowledgements", || {
        shared.lock().acked.len() == 3
    })
    .await;
    assert_eq!(
        shared.lock().received_ids(),
        ids,
        "dispatched in stream order"
    );
    let mut acked = shared.lock().acked.clone();
    acked.sort();
    assert_eq!(
        acked, ids,
        "each acked once (answers complete in any order)"
    );
    wait_for_pending(&mut con, 0, WAIT).await;
}

#[actix_rt::test]
async fn a_refused_entry_stays_pending_is_retried_by_claim_and_dead_lettered_after_max_deliveries()
{
    init_logs();
    let redis = RedisServer::start();
    let shared = Shared::accepting();
    shared.lock().refuse_all = true;
    let claim_idle = Duration::from_millis(500);
    let (reader, _) = start_reader(config(&redis, "c1", claim_idle, 3), &shared);
    let mut con = connect(&redis).await;
    let id = add_event(&mut con, "stubborn", "1").await;

    wait_until(WAIT, "the first delivery", || {
        shared.lock().times_received(&id) == 1
    })
    .await;
    let first = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        pending_count(&mut con).await,
        1,
        "a refused entry is not acked"
    );
    let pending = reader
        .send(IsEventPending {
            event_id: id.clone(),
        })
        .await
        .expect("reader answers");
    assert_eq!(pending, Ok(true));

    let letters = wait_for_dead_letters(&mut con, 1).await;
    // Deliveries 1..=3 were refused; the 4th exceeds max_deliveries = 3.
    assert_eq!(shared.lock().times_received(&id), 3);
    assert!(
        first.elapsed() >= claim_idle * 2,
        "redeliveries come via claim after claim_idle, not at once ({:?})",
        first.elapsed()
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].get("original_id").as_deref(), Some(id.as_str()));
    assert_eq!(letters[0].get("task_id").as_deref(), Some("stubborn"));
    let error = letters[0].get("error").unwrap_or_default();
    assert!(
        error.contains("delivered 4 times") && error.contains("simulated refusal: quota exceeded"),
        "{error}"
    );
    wait_for_pending(&mut con, 0, WAIT).await;
    wait_until(WAIT, "the acknowledgement of the dead letter", || {
        shared.lock().acked.contains(&id)
    })
    .await;
    let pending = reader
        .send(IsEventPending { event_id: id })
        .await
        .expect("reader answers");
    assert_eq!(pending, Ok(false));
}

#[actix_rt::test]
async fn entries_pending_on_a_dead_consumer_are_claimed_by_a_second_consumer_after_claim_idle() {
    init_logs();
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .expect("XGROUP CREATE");
    let ids = [
        add_event(&mut con, "orphan-a", "1").await,
        add_event(&mut con, "orphan-b", "2").await,
    ];
    // The dead replica read them and never acked.
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead-replica")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("XREADGROUP as the dead replica");
    let read_at = Instant::now();
    assert_eq!(pending_count(&mut con).await, 2);

    let claim_idle = Duration::from_millis(500);
    let shared = Shared::accepting();
    let (_reader, _) = start_reader(config(&redis, "alive", claim_idle, 5), &shared);
    wait_until(WAIT, "both claimed events acked", || {
        shared.lock().acked.len() == 2
    })
    .await;
    assert!(
        read_at.elapsed() >= claim_idle,
        "claimed only after claim_idle"
    );
    let mut got = shared.lock().received_ids();
    got.sort();
    assert_eq!(got, ids.to_vec(), "each claimed entry dispatched once");
    wait_for_pending(&mut con, 0, WAIT).await;
}

#[actix_rt::test]
async fn a_restarted_reader_re_reads_its_own_pending_entries_first() {
    init_logs();
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    // Long claim_idle: only the pending-first read can bring the entries back.
    let long_idle = Duration::from_secs(60);

    // First incarnation: refuses one event, never answers the other, then dies.
    let first = Shared::accepting();
    first.lock().refuse_all = true;
    first.lock().hold_tasks.insert("held".into());
    let refused = add_event(&mut con, "refused", "1").await;
    let held = add_event(&mut con, "held", "1").await;
    let arbiter = Arbiter::new();
    let recorder = Recorder(first.clone()).start();
    let reader = RedisReader::new(
        config(&redis, "same-pod", long_idle, 5),
        recorder.clone().recipient(),
        recorder.clone().recipient(),
        recorder.recipient(),
        Arc::new(Metrics::new()),
        Arc::new(Health::new()),
        limits(),
    );
    let _old = RedisReader::start_in_arbiter(&arbiter.handle(), move |_| reader);
    wait_until(WAIT, "both events dispatched", || {
        first.lock().received.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A crash: the arbiter's thread and everything on it goes away, no stop sequence.
    assert!(arbiter.stop());
    tokio::task::spawn_blocking(move || arbiter.join())
        .await
        .expect("join")
        .expect("arbiter thread");
    assert_eq!(pending_count(&mut con).await, 2, "nothing was acked");
    assert!(first.lock().acked.is_empty());

    let newer = add_event(&mut con, "newer", "1").await;
    let second = Shared::accepting();
    let (_reader, _) = start_reader(config(&redis, "same-pod", long_idle, 5), &second);
    wait_until(WAIT, "three acknowledgements", || {
        second.lock().acked.len() == 3
    })
    .await;
    assert_eq!(
        second.lock().received_ids(),
        vec![refused, held, newer],
        "own pending entries first, then new ones"
    );
    wait_for_pending(&mut con, 0, WAIT).await;
}

#[actix_rt::test]
async fn malformed_entries_are_dead_lettered_with_a_reason_and_the_next_valid_event_still_runs() {
    init_logs();
    let redis = RedisServer::start();
    let shared = Shared::accepting();
    let (_reader, _) = start_reader(config(&redis, "c1", Duration::from_secs(60), 5), &shared);
    let mut con = connect(&redis).await;

    let long_id = "t".repeat(64);
    let blob = "x".repeat(2048);
    let mut many: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"type".to_vec(), b"scale_up".to_vec()),
        (b"pod_count".to_vec(), b"1".to_vec()),
        (b"task_id".to_vec(), b"meta".to_vec()),
    ];
    many.extend((0..33).map(|i| (format!("k{i}").into_bytes(), b"v".to_vec())));
    let up = |count: &'static str, task: Vec<u8>| -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"type".to_vec(), b"scale_up".to_vec()),
            (b"pod_count".to_vec(), count.as_bytes().to_vec()),
            (b"task_id".to_vec(), task),
        ]
    };
    let cases: Vec<(&str, Fields, &str)> = vec![
        (
            "missing type",
            vec![
                (b"pod_count".to_vec(), b"1".to_vec()),
                (b"task_id".to_vec(), b"t".to_vec()),
            ],
            "field `type` is missing",
        ),
        (
            "unknown type",
            vec![
                (b"type".to_vec(), b"scale_sideways".to_vec()),
                (b"pod_count".to_vec(), b"1".to_vec()),
                (b"task_id".to_vec(), b"t".to_vec()),
            ],
            "field `type` is \"scale_sideways\"",
        ),
        (
            "pod_count abc",
            up("abc", b"t".to_vec()),
            "field `pod_count` is \"abc\"",
        ),
        (
            "pod_count 0",
            up("0", b"t".to_vec()),
            "field `pod_count` is \"0\"",
        ),
        (
            "pod_count -1",
            up("-1", b"t".to_vec()),
            "field `pod_count` is \"-1\"",
        ),
        (
            "pod_count 10^12",
            up("1000000000000", b"t".to_vec()),
            "field `pod_count` is \"1000000000000\"",
        ),
        (
            "task_id with spaces",
            up("1", b"has spaces".to_vec()),
            "field `task_id` is \"has spaces\"",
        ),
        (
            "task_id of 64 chars",
            up("1", long_id.clone().into_bytes()),
            "field `task_id`",
        ),
        (
            "33 metadata fields",
            many,
            "the event has 33 metadata fields; at most 32 are allowed",
        ),
        (
            "a 2 KB value",
            {
                let mut f = up("1", b"t".to_vec());
                f.push((b"blob".to_vec(), blob.into_bytes()));
                f
            },
            "metadata field `blob` is 2048 bytes long; at most 1024 are allowed",
        ),
        (
            "non-UTF-8 bytes",
            up("1", vec![b'a', 0xff, 0xfe, b'z']),
            "field `task_id` is not valid UTF-8",
        ),
    ];
    let mut ids = Vec::new();
    for (_, fields, _) in &cases {
        let refs: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        ids.push(xadd(&mut con, &refs).await);
    }
    let valid = add_event(&mut con, "still-works", "2").await;

    wait_until(WAIT, "the valid event after the malformed ones", || {
        shared.lock().acked.contains(&valid)
    })
    .await;
    let letters = wait_for_dead_letters(&mut con, cases.len()).await;
    assert_eq!(letters.len(), cases.len());
    for ((name, fields, expected), (id, letter)) in cases.iter().zip(ids.iter().zip(&letters)) {
        assert_eq!(
            letter.get("original_id").as_deref(),
            Some(id.as_str()),
            "{name}"
        );
        let error = letter.get("error").unwrap_or_default();
        assert!(
            error.contains(expected),
            "{name}: {error:?} lacks {expected:?}"
        );
        // The original fields come first, byte for byte.
        assert_eq!(&letter.0[..fields.len()], fields.as_slice(), "{name}");
    }
    assert_eq!(
        shared.lock().received_ids(),
        vec![valid],
        "no malformed event reached the Supervisor"
    );
    wait_for_pending(&mut con, 0, WAIT).await;
}

#[actix_rt::test]
async fn entries_deleted_while_pending_are_dead_lettered_as_trimmed() {
    init_logs();
    let redis = RedisServer::start();
    let mut con = connect(&redis).await;
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .expect("XGROUP CREATE");
    let own = add_event(&mut con, "own", "1").await;
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("c1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("read as c1");
    let orphan = add_event(&mut con, "orphan", "1").await;
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("read as dead");
    for id in [&own, &orphan] {
        let _: i64 = redis::cmd("XDEL")
            .arg(STREAM)
            .arg(id)
            .query_async(&mut con)
            .await
            .expect("XDEL");
    }
    let valid = add_event(&mut con, "after", "1").await;
    assert_eq!(pending_count(&mut con).await, 2);

    // c1's own deleted entry comes back in the pending-first read, the dead consumer's
    // one through XAUTOCLAIM's deleted-ids list.
    let shared = Shared::accepting();
    let (_reader, _) = start_reader(config(&redis, "c1", Duration::from_millis(300), 5), &shared);
    let letters = wait_for_dead_letters(&mut con, 2).await;
    let mut seen: Vec<String> = letters
        .iter()
        .filter_map(|l| l.get("original_id"))
        .collect();
    seen.sort();
    let mut expected = vec![own.clone(), orphan.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    for letter in &letters {
        assert_eq!(
            letter.get("error").as_deref(),
            Some("the entry was trimmed or deleted from the stream before it was processed")
        );
        assert_eq!(
            letter.0.len(),
            2,
            "only original_id and error: the payload is gone"
        );
    }
    wait_until(WAIT, "the valid event", || {
        shared.lock().acked.contains(&valid)
    })
    .await;
    assert_eq!(shared.lock().received_ids(), vec![valid]);
    wait_for_pending(&mut con, 0, WAIT).await;
}

#[actix_rt::test]
async fn redis_restarting_in_the_middle_of_fifty_events_loses_and_repeats_nothing() {
    init_logs();
    let redis = RedisServer::start_with_aof();
    let shared = Shared::accepting();
    // Answers take a moment, so events are in flight when Redis goes away and their
    // XACKs fail: they must be acked after the reconnect, not dispatched again.
    shared.lock().answer_delay = Duration::from_millis(300);
    let (_reader, health) = start_reader(config(&redis, "c1", Duration::from_secs(60), 5), &shared);
    health.set_kube(true);
    wait_until(WAIT, "readiness", || health.is_ready()).await;

    let mut ids = Vec::new();
    let mut con = connect(&redis).await;
    for i in 0..25 {
        ids.push(add_event(&mut con, &format!("first-{i}"), "1").await);
    }
    wait_until(WAIT, "the first 25 dispatched", || {
        shared.lock().received.len() == 25
    })
    .await;
    assert!(
        shared.lock().acked.is_empty(),
        "still in flight when Redis stops"
    );
    let started = Instant::now();
    let redis = blocking(redis, |r| r.stop()).await;
    wait_until(WAIT, "readiness to drop", || !health.is_ready()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redis = blocking(redis, |r| r.start_again()).await;
    let mut con = connect(&redis).await;
    for i in 0..25 {
        ids.push(add_event(&mut con, &format!("second-{i}"), "1").await);
    }
    wait_until(WAIT, "readiness to return", || health.is_ready()).await;
    wait_until(WAIT, "all 50 acknowledged", || {
        let acked: HashSet<String> = shared.lock().acked.iter().cloned().collect();
        ids.iter().all(|id| acked.contains(id))
    })
    .await;
    eprintln!(
        "recovered from the Redis restart in {:?}",
        started.elapsed()
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in shared.lock().received_ids() {
        *counts.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "events dispatched more than once: {repeated:?}"
    );
    assert_eq!(counts.len(), 50, "every event dispatched");
    wait_for_pending(&mut con, 0, WAIT).await;
    assert!(dead_letters(&mut con).await.is_empty());
}

#[actix_rt::test]
async fn with_no_free_slots_the_reader_reads_nothing_until_slots_free_up() {
    init_logs();
    let redis = RedisServer::start();
    let shared = Shared::accepting();
    shared.lock().free_slots = 0;
    let (_reader, _) = start_reader(config(&redis, "c1", Duration::from_millis(500), 5), &shared);
    let mut con = connect(&redis).await;
    let id = add_event(&mut con, "waits", "1").await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        shared.lock().received.is_empty(),
        "nothing dispatched without free slots"
    );
    assert_eq!(
        pending_count(&mut con).await,
        0,
        "the entry was not even read"
    );
    let asked = shared.lock().status_requests;
    assert!(
        (3..=60).contains(&asked),
        "the reader re-checks the status periodically, without spinning ({asked} requests in 1.5 s)"
    );

    shared.lock().free_slots = 1;
    wait_until(WAIT, "the event once a slot is free", || {
        shared.lock().acked.contains(&id)
    })
    .await;
    assert_eq!(shared.lock().received_ids(), vec![id]);
}

#[actix_rt::test]
async fn stop_reading_waits_for_in_flight_events_then_reads_no_more() {
    init_logs();
    let redis = RedisServer::start();
    let shared = Shared::accepting();
    shared.lock().answer_delay = Duration::from_millis(600);
    let (reader, _) = start_reader(config(&redis, "c1", Duration::from_millis(500), 5), &shared);
    let mut con = connect(&redis).await;
    let first = add_event(&mut con, "in-flight", "1").await;
    wait_until(WAIT, "the event dispatched", || {
        shared.lock().received.len() == 1
    })
    .await;

    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        reader.send(StopReading {
            timeout: Duration::from_secs(5),
        }),
    )
    .await
    .expect("the stop answers within its timeout")
    .expect("reader answers");
    assert_eq!(stopped.unfinished, 0);
    assert_eq!(
        shared.lock().acked,
        vec![first],
        "the in-flight event was answered and acked"
    );

    let _later = add_event(&mut con, "after-stop", "1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        shared.lock().received.len(),
        1,
        "nothing read after the stop"
    );
}

// ---- the results publisher ------------------------------------------------------------

#[actix_rt::test]
async fn publishing_the_same_result_twice_writes_one_entry_with_the_contract_fields() {
    init_logs();
    let redis = RedisServer::start();
    let settings = RedisSettings {
        url: redis.url(),
        ..RedisSettings::default()
    };
    let metrics = Arc::new(Metrics::new());
    let publisher =
        ResultsPublisher::new(PublisherConfig::from_settings(&settings), metrics.clone()).start();
    let result = WorkerFinished {
        task_id: "task-123".into(),
        event_id: "1718000000000-0".into(),
        pod: "otto-agent-task-123-0a1b2c3d-0".into(),
        worker_index: 0,
        outcome: Outcome::Failed,
        exit_code: Some(2),
        reason: Some("Error".into()),
        duration_ms: 12_345,
        finished_at: "2024-06-10T06:13:20Z".into(),
        trace_id: None,
        attempts: 1,
    };
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(15), publisher.send(result.clone()))
            .await
            .expect("published in time")
            .expect("publisher answers");
        assert_eq!(answer, Ok(()));
    }
    let other = WorkerFinished {
        worker_index: 1,
        pod: "otto-agent-task-123-0a1b2c3d-1".into(),
        outcome: Outcome::Succeeded,
        exit_code: None,
        reason: None,
        ..result.clone()
    };
    assert_eq!(
        publisher.send(other).await.expect("publisher answers"),
        Ok(())
    );

    let mut con = connect(&redis).await;
    let reply: Value = redis::cmd("XRANGE")
        .arg(RESULTS)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE results");
    let entries = stream_fields(reply);
    assert_eq!(entries.len(), 2, "one entry per (event, worker index)");
    let text = |fields: &[(Vec<u8>, Vec<u8>)]| -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        text(&entries[0]),
        pairs(&[
            ("task_id", "task-123"),
            ("event_id", "1718000000000-0"),
            ("pod", "otto-agent-task-123-0a1b2c3d-0"),
            ("worker_index", "0"),
            ("outcome", "failed"),
            ("exit_code", "2"),
            ("reason", "Error"),
            ("duration_ms", "12345"),
            ("finished_at", "2024-06-10T06:13:20Z"),
            ("attempts", "1"),
        ])
    );
    assert_eq!(
        text(&entries[1]),
        pairs(&[
            ("task_id", "task-123"),
            ("event_id", "1718000000000-0"),
            ("pod", "otto-agent-task-123-0a1b2c3d-1"),
            ("worker_index", "1"),
            ("outcome", "succeeded"),
            ("duration_ms", "12345"),
            ("finished_at", "2024-06-10T06:13:20Z"),
            ("attempts", "1"),
        ]),
        "exit_code and reason only when known"
    );
    // A restarted process (a new publisher) asked again: still nothing new.
    let restarted =
        ResultsPublisher::new(PublisherConfig::from_settings(&settings), metrics.clone()).start();
    assert_eq!(
        restarted
            .send(result.clone())
            .await
            .expect("publisher answers"),
        Ok(())
    );
    let len: i64 = redis::cmd("XLEN")
        .arg(RESULTS)
        .query_async(&mut con)
        .await
        .expect("XLEN");
    assert_eq!(len, 2, "a restarted publisher writes no duplicate");

    let ttl: i64 = redis::cmd("TTL")
        .arg("ottoscaler:published:otto:scale:results:1718000000000-0:0")
        .query_async(&mut con)
        .await
        .expect("TTL");
    assert!(ttl > 600_000, "the marker lives about a week ({ttl} s)");
    assert!(
        metrics
            .encode()
            .contains("ottoscaler_results_published_total 2"),
        "{}",
        metrics.encode()
    );
}

#[actix_rt::test]
async fn a_result_published_while_redis_restarts_is_retried_until_it_is_written() {
    init_logs();
    let redis = RedisServer::start_with_aof();
    let settings = RedisSettings {
        url: redis.url(),
        ..RedisSettings::default()
    };
    let metrics = Arc::new(Metrics::new());
    let publisher =
        ResultsPublisher::new(PublisherConfig::from_settings(&settings), metrics.clone()).start();
    let mut redis = blocking(redis, |r| r.stop()).await;
    let result = WorkerFinished {
        task_id: "t".into(),
        event_id: "1-0".into(),
        pod: "otto-agent-t-00000000-0".into(),
        worker_index: 0,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        reason: None,
        duration_ms: 1,
        finished_at: "2024-06-10T06:13:20Z".into(),
        trace_id: None,
        attempts: 1,
    };
    let answer = publisher.send(result);
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(1500));
        redis.start_again();
        redis
    });
    let answer = tokio::time::timeout(Duration::from_secs(15), answer)
        .await
        .expect("answered within the publish deadline")
        .expect("publisher answers");
    let redis = restart.await.expect("restart thread");
    assert_eq!(answer, Ok(()), "written once Redis was back");
    let mut con = connect(&redis).await;
    let len: i64 = redis::cmd("XLEN")
        .arg(RESULTS)
        .query_async(&mut con)
        .await
        .expect("XLEN");
    assert_eq!(len, 1);
}
