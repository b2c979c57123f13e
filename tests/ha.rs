//! High availability (docs/contract.md, "High availability"): compiled ottoscaler
//! processes, two at a time, electing their leader on a real Lease of the test API
//! server, under a steady ~20 events/s.
//!
//! - graceful hand-over: SIGTERM of the leader; the intake gap (last entry the old
//!   leader read to the first the new one read, from both logs) over N hand-overs;
//! - crash fail-over: kill -9 of the leader while it holds pending entries; the time
//!   until the new leader reads again, with `redis.claim_idle` at 10 minutes, so only
//!   the take-over's immediate claim can finish the dead leader's entries;
//! - partition: the leader's API traffic cut at the fault proxy (every request reset)
//!   while Redis stays reachable: from both logs, the old leader's last read and last
//!   delete come before the new leader's acquisition;
//! - chaos: leader kills and rolling restarts mixed (`make chaos` sizes it).
//!
//! Each ends with the chaos verdict: every worker exactly one result and one pod, no
//! pod left, nothing pending. The crash, partition and chaos tests use short Lease
//! timings (3s / 2s / 500ms) to keep CI short; the hand-over test uses the defaults
//! (15s / 10s / 2s), which the hand-over does not wait for. CI-sized by default;
//! `HA_HANDOVERS`, `HA_KILLS`, `CHAOS_EVENTS`, `CHAOS_KILLS`, `CHAOS_RESTARTS` scale it.

mod common;

use std::time::Duration;

use jiff::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use redis::Value;
use testenv::{FaultProxy, Faults, RedisServer};

use common::chaos::{
    GROUP, PlannedEvent, RedisClient, Run, SHORT_TEMPLATES, STREAM, Sent, knob, plan, report, seed,
    templates_toml, verdict_figures,
};
use common::ottoscaler::{Launch, Ottoscaler, temp_dir};

/// The tests of this file run one at a time: they measure hand-over and fail-over
/// times, and four of them at once (each with two or three processes under load) on 2
/// cores would measure the machine instead.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Events per second of the steady load.
const RATE: f64 = 20.0;
/// The short Lease timings of the crash, partition and chaos tests.
const SHORT_LEASE: (&str, &str, &str) = ("3s", "2s", "500ms");
const SHORT_LEASE_DURATION: Duration = Duration::from_secs(3);

/// The log lines the timings are read from (the reader logs each entry it hands to the
/// Supervisor at debug level).
const READ_LINE: &str = "dispatching event";
const ACQUIRED_LINE: &str = "acquired the Lease";
const DELETE_LINE: &str = "pod deletion accepted";
const LOST_LINE: &str = "lost leadership";

/// The timestamp of every log line containing `needle` (the text format starts each
/// line with an RFC 3339 UTC timestamp).
fn times(log: &str, needle: &str) -> Vec<Timestamp> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn first(log: &str, needle: &str) -> Option<Timestamp> {
    times(log, needle).into_iter().min()
}

fn last(log: &str, needle: &str) -> Option<Timestamp> {
    times(log, needle).into_iter().max()
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// The median and the largest of `values`.
fn p50_max(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let p50 = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    (p50, v.last().copied().unwrap_or(f64::NAN))
}

fn leads(o: &Ottoscaler) -> bool {
    o.metric("ottoscaler_leader ") == Some(1.0)
}

/// Waits until `o` reports `ottoscaler_leader 1`; panics with its log on timeout.
fn wait_leader(o: &mut Ottoscaler, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !leads(o) {
        if let Some(exit) = o.try_exited() {
            panic!("{} exited ({exit}):\n{}", o.consumer(), o.log_tail(8000));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not lead within {timeout:?}\n{}",
            o.consumer(),
            o.log_tail(8000)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A standby: ready (`/readyz` 200) and not leading.
fn wait_standby(o: &mut Ottoscaler) {
    o.wait_ready(Duration::from_secs(60));
    assert_eq!(
        o.metric("ottoscaler_leader "),
        Some(0.0),
        "{} is ready but should stand by\n{}",
        o.consumer(),
        o.log_tail(4000)
    );
}

/// Sends `planned` at their times from its own task and connection, so the load goes
/// on while the test stops and starts processes.
fn send_in_background(
    redis_url: String,
    planned: Vec<PlannedEvent>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let mut redis = RedisClient::new(&redis_url);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(planned.len());
        for event in planned {
            tokio::time::sleep_until(start + event.at).await;
            let id = redis
                .xadd_retrying(STREAM, &event.fields(), Duration::from_secs(60))
                .await;
            sent.push(Sent { id, event });
        }
        sent
    })
}

/// The consumers of the group (XINFO CONSUMERS names).
async fn consumers(redis: &mut RedisClient) -> Vec<String> {
    let reply: Value = redis
        .query(redis::cmd("XINFO").arg("CONSUMERS").arg(STREAM).arg(GROUP))
        .await
        .expect("XINFO CONSUMERS");
    let Value::Array(list) = reply else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|c| {
            let fields: Vec<Value> = match c {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => return None,
            };
            fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"name" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            })
        })
        .collect()
}

/// Waits for the end of the run with the last two replicas (the leader and its standby)
/// alive; every earlier one was stopped or killed.
async fn wait_for_end_of_last_two(
    s: &mut Scenario,
    replicas: &mut [Ottoscaler],
) -> common::chaos::Verdict {
    let timeout = end_timeout(s.run.sent.len());
    let [.., leader, standby] = replicas else {
        panic!("fewer than two replicas");
    };
    s.run.wait_for_end(&mut [leader, standby], timeout).await
}

/// How long the end may take on a loaded 2-core machine.
fn end_timeout(events: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(300) * u32::try_from(events).unwrap_or(0)
}

/// A scenario's shared parts: namespace, Redis, run, launch settings.
struct Scenario {
    test: &'static str,
    redis: RedisServer,
    namespace: String,
    dir: std::path::PathBuf,
    run: Run,
    lease: (&'static str, &'static str, &'static str),
    extra_env: Vec<(&'static str, String)>,
}

impl Scenario {
    async fn new(test: &'static str, lease: (&'static str, &'static str, &'static str)) -> Self {
        let env = testenv::shared();
        let namespace = env.namespace(test).await;
        let redis = RedisServer::start();
        let dir = temp_dir(test);
        let run = Run::new(test, env.client(), &namespace, &redis.url()).await;
        Scenario {
            test,
            redis,
            namespace,
            dir,
            run,
            lease,
            extra_env: Vec::new(),
        }
    }

    fn launch(&self, name: &str) -> Launch {
        let (duration, deadline, retry) = self.lease;
        let mut launch = Launch::new(self.redis.port(), &self.namespace, &self.dir.join(name))
            .config(&templates_toml(&SHORT_TEMPLATES))
            .consumer(name)
            .ha(duration, deadline, retry)
            // Every take-over re-reads what was pending: more deliveries than usual.
            .env("OTTOSCALER_REDIS__MAX_DELIVERIES", "30");
        for (k, v) in &self.extra_env {
            launch = launch.env(k, v);
        }
        launch
    }

    /// `n` events at [`RATE`] over `window`.
    fn plan(&self, seed: u64, window: Duration) -> Vec<PlannedEvent> {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = (window.as_secs_f64() * RATE) as usize;
        plan(&mut rng, n, window, &SHORT_TEMPLATES, 2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_to_the_standby_and_nothing_is_lost_or_repeated() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let handovers = knob("HA_HANDOVERS", 3);
    let seed = seed("ha_handover");
    // The default Lease timings: a hand-over must not wait for any of them.
    let mut s = Scenario::new("ha-handover", ("15s", "10s", "2s")).await;
    let mut replicas = vec![Ottoscaler::start(s.launch("ha-0"))];
    tokio::task::block_in_place(|| wait_leader(&mut replicas[0], Duration::from_secs(60)));
    replicas.push(Ottoscaler::start(s.launch("ha-1")));
    tokio::task::block_in_place(|| wait_standby(&mut replicas[1]));

    let phase = Duration::from_secs(3);
    let window = phase * u32::try_from(handovers + 1).unwrap_or(1);
    let sender = send_in_background(s.redis.url(), s.plan(seed, window));
    let start = tokio::time::Instant::now();
    for k in 0..handovers {
        tokio::time::sleep_until(start + phase * u32::try_from(k + 1).unwrap_or(1)).await;
        let status = tokio::task::block_in_place(|| replicas[k].stop(Duration::from_secs(15)));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "the leader's exit after SIGTERM\n{}",
            replicas[k].log_tail(6000)
        );
        tokio::task::block_in_place(|| wait_leader(&mut replicas[k + 1], Duration::from_secs(20)));
        // The rollout's next pod: a new name, a new standby.
        replicas.push(Ottoscaler::start(s.launch(&format!("ha-{}", k + 2))));
        tokio::task::block_in_place(|| wait_standby(&mut replicas[k + 2]));
    }
    s.run.sent = sender.await.expect("sender");

    let verdict = wait_for_end_of_last_two(&mut s, &mut replicas).await;

    let mut gaps = Vec::new();
    let mut lease_gaps = Vec::new();
    for k in 0..handovers {
        let (before, after) = (replicas[k].log(), replicas[k + 1].log());
        let (Some(last_read), Some(first_read)) =
            (last(&before, READ_LINE), first(&after, READ_LINE))
        else {
            panic!(
                "hand-over {k}: no reads in a log\n{}",
                replicas[k].log_tail(4000)
            );
        };
        gaps.push(seconds(last_read, first_read));
        if let (Some(released), Some(acquired)) = (
            last(&before, "released the Lease"),
            first(&after, ACQUIRED_LINE),
        ) {
            lease_gaps.push(seconds(released, acquired));
        }
    }
    let (gap_p50, gap_max) = p50_max(&gaps);
    let (lease_p50, lease_max) = p50_max(&lease_gaps);
    let group = consumers(&mut s.run.redis).await;
    let mut figures = verdict_figures(&verdict, s.run.started.elapsed().as_secs_f64());
    figures.extend([
        ("handovers", handovers.to_string()),
        ("intake_gap_p50_s", format!("{gap_p50:.3}")),
        ("intake_gap_max_s", format!("{gap_max:.3}")),
        ("release_to_acquire_p50_s", format!("{lease_p50:.3}")),
        ("release_to_acquire_max_s", format!("{lease_max:.3}")),
        ("goal_2s_met", (gap_max <= 2.0).to_string()),
        ("consumers_left", group.len().to_string()),
        ("seed", seed.to_string()),
    ]);
    report(s.test, &figures);
    let all: Vec<&Ottoscaler> = replicas.iter().collect();
    s.run.assert_clean(&verdict, &all).await;
    assert_eq!(
        lease_gaps.len(),
        handovers,
        "every hand-over released the Lease"
    );
    // The 2 s goal is measured (H1 in make bench, this test at full size in make chaos),
    // not asserted: a loaded 2-core machine stretches every gap. What is asserted is the
    // mechanism: the standby took the released Lease at once, not after it expired (15 s).
    assert!(gap_max < 15.0, "intake gaps {gaps:?}");
    // Old consumers were removed at each take-over; the standby never read.
    assert_eq!(
        group,
        vec![replicas[handovers].consumer().to_string()],
        "group consumers"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_its_lease_and_its_entries_finish_exactly_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let kills = knob("HA_KILLS", 2);
    let seed = seed("ha_failover");
    let mut s = Scenario::new("ha-failover", SHORT_LEASE).await;
    // Only the take-over's immediate claim can finish a dead leader's entries in time.
    s.extra_env
        .push(("OTTOSCALER_REDIS__CLAIM_IDLE", "10m".into()));
    let mut replicas = vec![Ottoscaler::start(s.launch("fo-0"))];
    tokio::task::block_in_place(|| wait_leader(&mut replicas[0], Duration::from_secs(60)));
    replicas.push(Ottoscaler::start(s.launch("fo-1")));
    tokio::task::block_in_place(|| wait_standby(&mut replicas[1]));

    let phase = Duration::from_secs(6);
    let window = phase * u32::try_from(kills + 1).unwrap_or(1);
    let sender = send_in_background(s.redis.url(), s.plan(seed, window));
    let start = tokio::time::Instant::now();
    let (mut failovers, mut held_total) = (Vec::new(), 0);
    for k in 0..kills {
        tokio::time::sleep_until(start + phase * u32::try_from(k + 1).unwrap_or(1)).await;
        // Kill while it holds pending entries (read, not yet answered).
        let name = replicas[k].consumer().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let held = loop {
            let held = s
                .run
                .redis
                .pending_of(STREAM, GROUP, &name)
                .await
                .unwrap_or(0);
            if held >= 1 || tokio::time::Instant::now() > deadline {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        held_total += held;
        let killed_at = Timestamp::now();
        replicas[k].kill();
        tokio::task::block_in_place(|| {
            wait_leader(
                &mut replicas[k + 1],
                SHORT_LEASE_DURATION + Duration::from_secs(15),
            )
        });
        replicas.push(Ottoscaler::start(s.launch(&format!("fo-{}", k + 2))));
        tokio::task::block_in_place(|| wait_standby(&mut replicas[k + 2]));
        failovers.push(killed_at);
    }
    s.run.sent = sender.await.expect("sender");
    let verdict = wait_for_end_of_last_two(&mut s, &mut replicas).await;

    let mut to_read = Vec::new();
    for (k, killed_at) in failovers.iter().enumerate() {
        let log = replicas[k + 1].log();
        let first_read = times(&log, READ_LINE)
            .into_iter()
            .filter(|t| t > killed_at)
            .min()
            .unwrap_or_else(|| panic!("fail-over {k}: the new leader never read\n{log}"));
        to_read.push(seconds(*killed_at, first_read));
    }
    let (p50, max) = p50_max(&to_read);
    let goal = SHORT_LEASE_DURATION.as_secs_f64() + 2.0;
    let mut figures = verdict_figures(&verdict, s.run.started.elapsed().as_secs_f64());
    figures.extend([
        ("kills", kills.to_string()),
        ("lease", "3s/2s/500ms".to_string()),
        ("kill_to_read_p50_s", format!("{p50:.3}")),
        ("kill_to_read_max_s", format!("{max:.3}")),
        ("goal_lease_plus_2s_met", (max <= goal).to_string()),
        ("pending_on_killed", held_total.to_string()),
        ("claim_idle", "10m".to_string()),
        ("seed", seed.to_string()),
    ]);
    report(s.test, &figures);
    let all: Vec<&Ottoscaler> = replicas.iter().collect();
    s.run.assert_clean(&verdict, &all).await;
    assert!(held_total >= 1, "no kill caught pending entries");
    // The goal (lease + 2 s) is measured (H2 in make bench, make chaos), not asserted on a
    // shared machine; asserted: the standby read after the Lease expired, far sooner than
    // `claim_idle` (10m), so it claimed the dead leader's entries on the Lease's word.
    assert!(max < 30.0, "kill to first read: {to_read:?}");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let seed = seed("ha_partition");
    let mut s = Scenario::new("ha-partition", SHORT_LEASE).await;
    let env = testenv::shared();
    let proxy = FaultProxy::start(env.server_url(), Faults::none())
        .await
        .expect("fault proxy");
    std::fs::create_dir_all(s.dir.join("part-a")).expect("dir");
    let kubeconfig = s.dir.join("part-a").join("kubeconfig");
    proxy
        .write_kubeconfig(&kubeconfig, env.admin_token(), &s.namespace)
        .expect("kubeconfig");
    let mut a = Ottoscaler::start(s.launch("part-a").kubeconfig(&kubeconfig));
    tokio::task::block_in_place(|| wait_leader(&mut a, Duration::from_secs(60)));
    let mut b = Ottoscaler::start(s.launch("part-b"));
    tokio::task::block_in_place(|| wait_standby(&mut b));

    let window = Duration::from_secs(10);
    let sender = send_in_background(s.redis.url(), s.plan(seed, window));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every API request of the leader is reset from now on; Redis stays reachable.
    let cut_at = Timestamp::now();
    proxy.set_faults(Faults {
        reset: 1.0,
        ..Faults::none()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = a.try_exited() {
            break exit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut-off leader did not stop\n{}",
            a.log_tail(6000)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::task::block_in_place(|| wait_leader(&mut b, Duration::from_secs(30)));
    s.run.sent = sender.await.expect("sender");
    let verdict = s
        .run
        .wait_for_end(&mut [&mut b], end_timeout(s.run.sent.len()))
        .await;

    let (log_a, log_b) = (a.log(), b.log());
    let last_read_a = last(&log_a, READ_LINE).expect("the leader read before the cut");
    let last_delete_a = last(&log_a, DELETE_LINE);
    let stopped_a = first(&log_a, LOST_LINE).expect("the cut-off leader logs its stop");
    let acquired_b = first(&log_b, ACQUIRED_LINE).expect("the standby took over");
    let first_read_b = first(&log_b, READ_LINE).expect("the new leader read");
    let mut figures = verdict_figures(&verdict, s.run.started.elapsed().as_secs_f64());
    figures.extend([
        ("lease", "3s/2s/500ms".to_string()),
        (
            "old_last_read_after_cut_s",
            format!("{:.3}", seconds(cut_at, last_read_a)),
        ),
        (
            "old_last_delete_after_cut_s",
            last_delete_a.map_or("none".into(), |t| format!("{:.3}", seconds(cut_at, t))),
        ),
        (
            "old_stopped_after_cut_s",
            format!("{:.3}", seconds(cut_at, stopped_a)),
        ),
        (
            "new_acquired_after_cut_s",
            format!("{:.3}", seconds(cut_at, acquired_b)),
        ),
        (
            "new_first_read_after_cut_s",
            format!("{:.3}", seconds(cut_at, first_read_b)),
        ),
        ("old_exit", exit.to_string().replace(' ', "_")),
        ("seed", seed.to_string()),
    ]);
    report(s.test, &figures);
    s.run.assert_clean(&verdict, &[&a, &b]).await;
    assert_eq!(
        exit.code(),
        Some(1),
        "lost leadership exits 1\n{}",
        a.log_tail(4000)
    );
    assert!(
        last_read_a < acquired_b && stopped_a < acquired_b,
        "the old leader read until {last_read_a} and stopped at {stopped_a}, the new one took over at {acquired_b}"
    );
    if let Some(t) = last_delete_a {
        assert!(
            t < acquired_b,
            "the old leader deleted at {t}, after the take-over at {acquired_b}"
        );
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Polls until one of `live` leads; its index.
fn wait_any_leader(live: &mut [Ottoscaler], timeout: Duration) -> usize {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(i) = live.iter().position(leads) {
            return i;
        }
        for o in live.iter_mut() {
            if let Some(exit) = o.try_exited() {
                panic!("{} exited ({exit}):\n{}", o.consumer(), o.log_tail(8000));
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica leads after {timeout:?}\n{}",
            live.iter()
                .map(|o| o.log_tail(3000))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_and_rolling_restarts_of_two_replicas_lose_and_repeat_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let events = knob("CHAOS_EVENTS", 40);
    let kills = knob("HA_CHAOS_KILLS", 1);
    let rolls = knob("HA_CHAOS_ROLLS", 1);
    let seed = seed("ha_chaos");
    let mut s = Scenario::new("ha-chaos", SHORT_LEASE).await;
    let mut started = 0;
    let mut start_replica = |s: &Scenario| {
        started += 1;
        Ottoscaler::start(s.launch(&format!("chaos-{}", started - 1)))
    };
    let mut live = vec![start_replica(&s)];
    tokio::task::block_in_place(|| wait_leader(&mut live[0], Duration::from_secs(60)));
    live.push(start_replica(&s));
    tokio::task::block_in_place(|| wait_standby(&mut live[1]));
    let mut gone: Vec<Ottoscaler> = Vec::new();

    // Disruptions in a shuffled order, evenly spread over the load.
    let mut steps: Vec<bool> = (0..kills)
        .map(|_| true)
        .chain((0..rolls).map(|_| false))
        .collect();
    {
        use rand::seq::SliceRandom;
        steps.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    let window = Duration::from_secs_f64((events as f64 / RATE).max(6.0 * steps.len() as f64));
    let mut rng = StdRng::seed_from_u64(seed);
    let planned = plan(&mut rng, events, window, &SHORT_TEMPLATES, 2);
    let sender = send_in_background(s.redis.url(), planned);
    let start = tokio::time::Instant::now();
    let spacing = window / u32::try_from(steps.len() + 1).unwrap_or(1);
    for (k, kill) in steps.iter().enumerate() {
        tokio::time::sleep_until(start + spacing * u32::try_from(k + 1).unwrap_or(1)).await;
        tokio::task::block_in_place(|| {
            if *kill {
                let l = wait_any_leader(&mut live, Duration::from_secs(30));
                let mut dead = live.remove(l);
                dead.kill();
                gone.push(dead);
                wait_any_leader(&mut live, SHORT_LEASE_DURATION + Duration::from_secs(15));
                live.push(start_replica(&s));
                wait_standby(live.last_mut().expect("a replica"));
            } else {
                // A rolling restart of 2 replicas: maxSurge 1, maxUnavailable 0.
                for _ in 0..2 {
                    live.push(start_replica(&s));
                    wait_standby(live.last_mut().expect("a replica"));
                    let mut old = live.remove(0);
                    let status = old.stop(Duration::from_secs(15));
                    assert_eq!(
                        status.and_then(|s| s.code()),
                        Some(0),
                        "SIGTERM exit\n{}",
                        old.log_tail(4000)
                    );
                    gone.push(old);
                    wait_any_leader(&mut live, Duration::from_secs(20));
                }
            }
        });
    }
    s.run.sent = sender.await.expect("sender");
    let (a, b) = live.split_at_mut(1);
    let verdict = s
        .run
        .wait_for_end(&mut [&mut a[0], &mut b[0]], end_timeout(events))
        .await;
    let mut figures = verdict_figures(&verdict, s.run.started.elapsed().as_secs_f64());
    figures.extend([
        ("replicas", "2".to_string()),
        ("leader_kills", kills.to_string()),
        ("rolling_restarts", rolls.to_string()),
        ("processes", started.to_string()),
        ("lease", "3s/2s/500ms".to_string()),
        ("seed", seed.to_string()),
    ]);
    report(s.test, &figures);
    let all: Vec<&Ottoscaler> = gone.iter().chain(live.iter()).collect();
    s.run.assert_clean(&verdict, &all).await;
    let _ = std::fs::remove_dir_all(&s.dir);
}
