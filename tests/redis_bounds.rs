//! What ottoscaler leaves in Redis stays bounded, on a real redis-server:
//! - the dead-letter stream is capped at about `redis.dead_letter_maxlen`, so a flood of
//!   malformed events cannot fill Redis (through the compiled binary, as deployed);
//! - each worker's result marker expires after `redis.result_marker_ttl`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ottoscaler::actors::results_publisher::{PublisherConfig, ResultsPublisher, marker_key};
use ottoscaler::messages::{Outcome, WorkerFinished};
use ottoscaler::metrics::Metrics;
use ottoscaler::settings::RedisSettings;
use testenv::RedisServer;

mod common;

use common::ottoscaler::{Launch, Ottoscaler, temp_dir};
use common::redis::{pending, redis_cli, xadd};
use common::wait_until;

const STREAM: &str = "otto:scale:events";
const DEAD: &str = "otto:scale:events:dead";
const RESULTS: &str = "otto:scale:results";

fn xlen(port: u16, stream: &str) -> u64 {
    let reply = redis_cli(port, &["XLEN", stream]);
    reply
        .parse()
        .unwrap_or_else(|_| panic!("XLEN {stream} answered {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_malformed_events_leave_about_dead_letter_maxlen_dead_letters() {
    const MAXLEN: u64 = 10;
    const EVENTS: u64 = 200;
    let ns = testenv::shared().namespace("dead-letter-maxlen").await;
    let redis = RedisServer::start();
    let port = redis.port();
    // `MAXLEN ~` trims whole stream nodes only; nodes of 10 entries make the cap tight
    // enough to see (with the default of 100 a stream of 200 could keep 109).
    assert_eq!(
        redis_cli(port, &["CONFIG", "SET", "stream-node-max-entries", "10"]),
        "OK"
    );
    let dir = temp_dir("dead-letter-maxlen");
    let mut ottoscaler = Ottoscaler::start(
        Launch::new(port, &ns, &dir)
            .consumer("ottoscaler-dead-letter-maxlen")
            .rust_log("info")
            .env("OTTOSCALER_REDIS__DEAD_LETTER_MAXLEN", &MAXLEN.to_string()),
    );
    tokio::task::block_in_place(|| ottoscaler.wait_ready(Duration::from_secs(60)));

    for i in 0..EVENTS {
        xadd(
            port,
            STREAM,
            &[
                ("type", "scale_sideways"),
                ("pod_count", "1"),
                ("task_id", &format!("t{i}")),
            ],
        );
    }
    let dead_letters = "ottoscaler_dead_letters_total";
    wait_until(
        "every malformed event dead-lettered",
        Duration::from_secs(60),
        || ottoscaler.metric(dead_letters) == Some(EVENTS as f64),
    )
    .await;
    assert_eq!(pending(port, STREAM, "ottoscaler"), 0, "all acknowledged");

    let kept = xlen(port, DEAD);
    assert!(
        (MAXLEN..MAXLEN + 10).contains(&kept),
        "{kept} dead letters kept after {EVENTS}, with dead_letter_maxlen {MAXLEN}"
    );
    // The oldest are the ones trimmed.
    let kept = redis_cli(port, &["--raw", "XRANGE", DEAD, "-", "+"]);
    assert!(!kept.lines().any(|l| l == "t0"), "{kept}");
}

#[actix_rt::test]
async fn a_result_marker_lives_for_result_marker_ttl() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(3600);
    let settings = RedisSettings {
        url: redis.url(),
        result_marker_ttl: ttl,
        ..RedisSettings::default()
    };
    let publisher = ResultsPublisher::new(
        PublisherConfig::from_settings(&settings),
        Arc::new(Metrics::new()),
    )
    .start();
    let result = WorkerFinished {
        task_id: "task-ttl".into(),
        event_id: "1718000000000-0".into(),
        pod: "otto-agent-task-ttl-0a1b2c3d-0".into(),
        worker_index: 0,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        reason: None,
        duration_ms: 1_000,
        finished_at: "2024-06-10T06:13:20Z".into(),
        trace_id: None,
        attempts: 1,
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), publisher.send(result))
        .await
        .expect("published in time")
        .expect("publisher answers");
    assert_eq!(answer, Ok(()));
    assert_eq!(xlen(redis.port(), RESULTS), 1);

    let key = marker_key(RESULTS, "1718000000000-0", 0);
    let pttl: u64 = redis_cli(redis.port(), &["PTTL", &key])
        .parse()
        .expect("the marker exists and has a TTL");
    let ttl_ms = u64::try_from(ttl.as_millis()).expect("ms");
    // Set moments ago: at most the TTL, and not a minute less.
    assert!(
        pttl <= ttl_ms && pttl > ttl_ms - 60_000,
        "PTTL {pttl} ms, configured {ttl_ms} ms"
    );
}
