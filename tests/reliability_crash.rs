//! Reliability under crashes (docs/contract.md sections 2, 5 and 6): the compiled ottoscaler,
//! a separate process, is killed with SIGKILL at random moments while events stream in
//! and restarted, under the same consumer name or a new one (as a new pod of a
//! Deployment gets a new name); and two replicas run side by side until one dies
//! holding pending entries. Each time, at the end: exactly one result per (event,
//! worker), exactly one pod ever created per (event, worker) as the API server saw it,
//! no pod left, nothing pending.
//!
//! CI size by default; `CHAOS_EVENTS`, `CHAOS_KILLS` scale it (`make chaos`),
//! `CHAOS_SEED` replays a run.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::PostParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use testenv::RedisServer;

use ::ottoscaler::pods::{WorkerIdentity, build_pod, resolve_templates};
use ::ottoscaler::settings::Settings;
use common::chaos::{
    DEAD, GROUP, PlannedEvent, RESULTS, Run, SHORT_TEMPLATES, STREAM, Step, Template, knob,
    moments, plan, report, seed, templates_toml, timeline, verdict_figures,
};
use common::ottoscaler::{Launch, Ottoscaler, temp_dir};
use common::{RUN_SECONDS, sim_template};

/// How a killed ottoscaler comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// The same `REDIS_CONSUMER`: it re-reads its own pending entries first.
    Same,
    /// A new name each time: the dead name's entries are claimed after `claim_idle`.
    New,
}

/// How long the end may take: generous, so a loaded 2-core machine does not fail it.
fn end_timeout(events: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(500) * u32::try_from(events).unwrap_or(0)
}

async fn crash_chaos(test: &'static str, naming: Naming) {
    let events = knob("CHAOS_EVENTS", 40);
    let kills = knob("CHAOS_KILLS", 2);
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let env = testenv::shared();
    let ns = env.namespace("chaos").await;
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;

    // Every restart re-reads (or claims) the pending entries, which counts as a
    // delivery: with K kills an entry may be delivered K + 1 times legitimately.
    // Fewer slots than the workload needs: scale_ups wait, pending, so kills catch
    // entries between "read" and "acknowledged".
    let mut launch = Launch::new(redis.port(), &ns, &dir)
        .config(&templates_toml(&SHORT_TEMPLATES))
        .consumer("chaos-0")
        .env("OTTOSCALER_REDIS__MAX_DELIVERIES", &(kills + 5).to_string())
        .env("OTTOSCALER_LIMITS__MAX_WORKERS", "12");
    if naming == Naming::New {
        launch = launch.env("OTTOSCALER_REDIS__CLAIM_IDLE", "2s");
    }
    let mut otto = Ottoscaler::start(launch);
    tokio::task::block_in_place(|| otto.wait_ready(Duration::from_secs(60)));

    let window = Duration::from_secs_f64((events as f64 / 8.0).max(5.0));
    let planned = plan(&mut rng, events, window, &SHORT_TEMPLATES, 3);
    let kill_at = moments(
        &mut rng,
        kills,
        Duration::from_millis(500),
        window + Duration::from_secs(3),
    );
    let (mut pending_at_kills, mut pods_at_kills) = (0, 0);
    let start = tokio::time::Instant::now();
    for (at, step) in timeline(&planned, &kill_at) {
        tokio::time::sleep_until(start + at).await;
        match step {
            Step::Send(i) => {
                run.send(&planned[i]).await;
            }
            Step::Disrupt(k) => {
                otto.kill();
                pending_at_kills += run.redis.pending(STREAM, GROUP).await.unwrap_or(0);
                pods_at_kills += common::chaos::pods_now(&run.pods)
                    .await
                    .map_or(0, |p| p.len());
                // Down for a moment while events keep coming.
                let down = Duration::from_millis(rng.random_range(0..1000));
                tokio::time::sleep(down).await;
                match naming {
                    Naming::Same => otto.restart(),
                    Naming::New => otto.restart_as(&format!("chaos-{}", k + 1)),
                }
            }
        }
    }
    let verdict = run
        .wait_for_end(&mut [&mut otto], end_timeout(events))
        .await;
    let mut figures = verdict_figures(&verdict, run.started.elapsed().as_secs_f64());
    figures.extend([
        ("kills", kills.to_string()),
        ("restarts", (otto.starts() - 1).to_string()),
        ("pending_at_kills", pending_at_kills.to_string()),
        ("pods_at_kills", pods_at_kills.to_string()),
        ("seed", seed.to_string()),
    ]);
    report(test, &figures);
    run.assert_clean(&verdict, &[&otto]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_under_the_same_name_every_worker_runs_and_reports_once() {
    crash_chaos("crash_same_name", Naming::Same).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_under_a_new_name_every_worker_runs_and_reports_once() {
    crash_chaos("crash_new_name", Naming::New).await;
}

/// Pods of 1 to 2 s: long enough that scale_ups wait for free slots, so the replica
/// that is killed holds pending entries.
const SLOT_TEMPLATES: [Template; 2] = [Template::new("t1", "1", 0), Template::new("t2", "2", 0)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_holding_pending_entries_leaves_them_to_the_other() {
    let test = "two_consumers";
    let events = knob("CHAOS_EVENTS", 40) / 2;
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let env = testenv::shared();
    let ns = env.namespace("two-consumers").await;
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;
    let launch = |name: &str| {
        Launch::new(redis.port(), &ns, &dir.join(name))
            .config(&templates_toml(&SLOT_TEMPLATES))
            .consumer(name)
            .env("OTTOSCALER_REDIS__CLAIM_IDLE", "2s")
            .env("OTTOSCALER_LIMITS__MAX_WORKERS", "6")
    };
    let mut a = Ottoscaler::start(launch("replica-a"));
    let mut b = Ottoscaler::start(launch("replica-b"));
    tokio::task::block_in_place(|| {
        a.wait_ready(Duration::from_secs(60));
        b.wait_ready(Duration::from_secs(60));
    });

    // A burst: more than both replicas' slots, so entries wait, pending.
    let planned = plan(&mut rng, events, Duration::from_secs(2), &SLOT_TEMPLATES, 3);
    let start = tokio::time::Instant::now();
    for event in &planned {
        tokio::time::sleep_until(start + event.at).await;
        run.send(event).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held = run
            .redis
            .pending_of(STREAM, GROUP, "replica-a")
            .await
            .unwrap_or(0);
        // One is enough to prove the claim path; on a loaded machine replica-a may
        // finish a larger share before the test looks.
        if held >= 1 {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica-a never held a pending entry (holds {held})\n{}",
            a.log_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    a.kill();
    let pods_at_kill = common::chaos::pods_now(&run.pods)
        .await
        .map_or(0, |p| p.len());

    let verdict = run.wait_for_end(&mut [&mut b], end_timeout(events)).await;
    let mut figures = verdict_figures(&verdict, run.started.elapsed().as_secs_f64());
    figures.extend([
        ("kills", "1".to_string()),
        ("pending_on_killed", held.to_string()),
        ("pods_at_kill", pods_at_kill.to_string()),
        ("seed", seed.to_string()),
    ]);
    report(test, &figures);
    run.assert_clean(&verdict, &[&a, &b]).await;
    let left_on_a = run
        .redis
        .pending_of(STREAM, GROUP, "replica-a")
        .await
        .unwrap_or(u64::MAX);
    assert_eq!(left_on_a, 0, "replica-a's entries were all taken over");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pods that finish half a second after they start.
const QUICK: Template = Template::new("quick", "0.5", 0);

/// Plays a replica that read `event` as `consumer`, created its pods and died before
/// it deleted them: the entry is pending on `consumer` and the pods exist, exactly as
/// ottoscaler builds them. Returns the entry id.
async fn plant(run: &mut Run, event: &PlannedEvent, consumer: &str) -> String {
    let id = run.send(event).await;
    let _: redis::RedisResult<Value> = run
        .redis
        .query(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(STREAM)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM"),
        )
        .await;
    let _: Value = run
        .redis
        .query(
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(">"),
        )
        .await
        .expect("read as the other replica");
    let mut settings = Settings::default();
    sim_template(
        &mut settings,
        event.template.name,
        &[(RUN_SECONDS, event.template.run_seconds)],
    );
    let templates = resolve_templates(&settings).expect("templates");
    for index in 0..event.pod_count {
        let identity = WorkerIdentity {
            task_id: event.task_id.clone(),
            event_id: id.clone(),
            index,
        };
        let pod = build_pod(
            &templates[event.template.name],
            &identity,
            &BTreeMap::new(),
            jiff::Timestamp::now(),
        );
        run.pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created as the other replica did");
    }
    id
}

/// Waits until the results stream has `n` entries.
async fn wait_for_results(run: &mut Run, n: usize, otto: &Ottoscaler) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = run.redis.entries(RESULTS).await.map_or(0, |e| e.len());
        if got >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} of {n} results after 30 s\n{}",
            otto.log_tail(6000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The deterministic form of a race the two-replica chaos test hits now and then:
/// replica B adopts replica A's pods while A still holds their event (pending), A
/// acknowledges the event and dies before deleting the finished pods. The event is
/// acknowledged, so B must delete them (docs/contract.md sections 2 and 6: a crash leaves
/// no pod behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_adopted_while_another_replica_held_their_event_go_once_it_acknowledges() {
    let test = "adopted_then_acked_elsewhere";
    let env = testenv::shared();
    let ns = env.namespace("acked-elsewhere").await;
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;
    let event = PlannedEvent {
        task_id: "adopted-elsewhere".into(),
        pod_count: 2,
        template: QUICK,
        at: Duration::ZERO,
    };
    let id = plant(&mut run, &event, "replica-a").await;
    // Replica B: it adopts the pods at start, while the entry is pending on A. Its
    // claim_idle stays at the default 60 s, so it does not take the entry over.
    let mut b = Ottoscaler::start(
        Launch::new(redis.port(), &ns, &dir)
            .config(&templates_toml(&[QUICK]))
            .consumer("replica-b"),
    );
    tokio::task::block_in_place(|| b.wait_ready(Duration::from_secs(60)));
    // B watched the pods to their end and reported them.
    wait_for_results(&mut run, 2, &b).await;
    // Replica A acknowledges the entry and dies without deleting its pods.
    let acked: i64 = run
        .redis
        .query(redis::cmd("XACK").arg(STREAM).arg(GROUP).arg(&id))
        .await
        .expect("XACK");
    assert_eq!(acked, 1);
    let verdict = run
        .wait_for_end(&mut [&mut b], Duration::from_secs(30))
        .await;
    report(
        test,
        &verdict_figures(&verdict, run.started.elapsed().as_secs_f64()),
    );
    run.assert_clean(&verdict, &[&b]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replica died after creating the pods of an event and before acknowledging it; the
/// entry was then trimmed from the stream (MAXLEN, XDEL) while still pending. The
/// restarted ottoscaler (a new consumer name) adopts the pods, and claiming the gone
/// entry dead-letters it, which acknowledges it (docs/contract.md section 1): so the finished
/// pods must be reported and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_adopted_for_an_entry_trimmed_while_pending_go_once_it_is_dead_lettered() {
    let test = "adopted_entry_trimmed";
    let env = testenv::shared();
    let ns = env.namespace("trimmed").await;
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;
    let event = PlannedEvent {
        task_id: "trimmed-while-pending".into(),
        pod_count: 2,
        template: QUICK,
        at: Duration::ZERO,
    };
    let id = plant(&mut run, &event, "crashed-0").await;
    let deleted: i64 = run
        .redis
        .query(redis::cmd("XDEL").arg(STREAM).arg(&id))
        .await
        .expect("XDEL");
    assert_eq!(deleted, 1);
    let mut otto = Ottoscaler::start(
        Launch::new(redis.port(), &ns, &dir)
            .config(&templates_toml(&[QUICK]))
            .consumer("restarted-1")
            .env("OTTOSCALER_REDIS__CLAIM_IDLE", "2s"),
    );
    tokio::task::block_in_place(|| otto.wait_ready(Duration::from_secs(60)));
    let verdict = run
        .wait_for_end(&mut [&mut otto], Duration::from_secs(30))
        .await;
    report(
        test,
        &verdict_figures(&verdict, run.started.elapsed().as_secs_f64()),
    );
    // The one dead letter is the trimmed entry; everything else must be clean.
    let dead = run.redis.entries(DEAD).await.expect("dead letters");
    let dead_ids: Vec<String> = dead
        .iter()
        .filter_map(|e| e.map().get("original_id").cloned())
        .collect();
    assert_eq!(dead_ids, [id], "the trimmed entry is dead-lettered");
    let clean_but_dead_letter = common::chaos::Verdict {
        dead_letters: Vec::new(),
        ..verdict.clone()
    };
    run.assert_clean(&clean_but_dead_letter, &[&otto]).await;
    let _ = std::fs::remove_dir_all(&dir);
}
