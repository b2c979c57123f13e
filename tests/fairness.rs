//! Scheduling when capacity is short, end to end: the compiled binary against a real
//! redis-server, kube-apiserver + etcd and kubesim. Each test judges the ORDER in which
//! the API server saw worker pods created (a watch, in resourceVersion order), never
//! times, so a slow machine changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use testenv::RedisServer;

mod common;

use common::ottoscaler::{Launch, Ottoscaler, temp_dir};
use common::redis::{entries, pending, xadd};
use common::wait_until;

const STREAM: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";

/// Pods run 2 s in kubesim: long enough that events read while slots are full wait.
const CONFIG: &str = r#"
[templates.default]
image = "busybox:latest"
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "2" }

[priorities.low]
weight = 1

[priorities.high]
weight = 10
"#;

/// Every worker pod the API server shows, in the order it first showed it, with the
/// tenant annotation and the uid (a pod name seen with two uids was created twice).
#[derive(Default)]
struct Created {
    order: Vec<(String, String)>,
    uids: BTreeMap<String, BTreeSet<String>>,
}

fn record_created(pods: Api<Pod>) -> Arc<Mutex<Created>> {
    let created = Arc::new(Mutex::new(Created::default()));
    let sink = created.clone();
    tokio::spawn(async move {
        let config = watcher::Config::default().labels("managed-by=ottoscaler");
        let mut stream = watcher::watcher(pods, config).boxed();
        while let Some(event) = stream.next().await {
            let (Ok(Event::Apply(p) | Event::InitApply(p)), Ok(mut c)) = (event, sink.lock())
            else {
                continue;
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let tenant = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("ottoscaler.io/tenant"))
                .cloned()
                .unwrap_or_default();
            if let Some(uid) = p.metadata.uid.clone() {
                let uids = c.uids.entry(name.clone()).or_default();
                if uids.insert(uid) && uids.len() == 1 {
                    c.order.push((name, tenant));
                }
            }
        }
    });
    created
}

fn tenants_in_order(created: &Arc<Mutex<Created>>) -> Vec<String> {
    created
        .lock()
        .expect("lock")
        .order
        .iter()
        .map(|(_, t)| t.clone())
        .collect()
}

fn send(port: u16, task: &str, tenant: &str, priority: Option<&str>) -> String {
    let mut fields = vec![
        ("type", "scale_up"),
        ("pod_count", "1"),
        ("task_id", task),
        ("tenant", tenant),
    ];
    if let Some(p) = priority {
        fields.push(("priority", p));
    }
    xadd(port, STREAM, &fields)
}

struct Run {
    _redis: RedisServer,
    port: u16,
    ottoscaler: Ottoscaler,
    created: Arc<Mutex<Created>>,
}

async fn start(label: &str, env: &[(&str, &str)]) -> Run {
    let ns = testenv::shared().namespace(label).await;
    let redis = RedisServer::start();
    let port = redis.port();
    let mut launch = Launch::new(port, &ns, &temp_dir(&format!("fair-{label}")))
        .config(CONFIG)
        .consumer(&format!("ottoscaler-{label}"));
    for (k, v) in env {
        launch = launch.env(k, v);
    }
    let pods: Api<Pod> = Api::namespaced(testenv::shared().client(), &ns);
    let created = record_created(pods);
    let mut ottoscaler = Ottoscaler::start(launch);
    ottoscaler.wait_http("/readyz", 200, Duration::from_secs(30));
    Run {
        _redis: redis,
        port,
        ottoscaler,
        created,
    }
}

/// `ottoscaler_waiting_events` of one class and tenant.
fn waiting(run: &Run, priority: &str, tenant: &str) -> Option<f64> {
    run.ottoscaler.metric(&format!(
        "ottoscaler_waiting_events{{priority=\"{priority}\",tenant=\"{tenant}\"}}"
    ))
}

/// Each event has exactly one result, and no pod was created twice.
fn assert_exactly_once(run: &Run, events: &BTreeSet<String>) {
    let results = entries(run.port, RESULTS);
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        assert_eq!(r["outcome"], "succeeded", "{r:?}");
        *per_event.entry(r["event_id"].clone()).or_insert(0) += 1;
    }
    let seen: BTreeSet<String> = per_event.keys().cloned().collect();
    assert_eq!(&seen, events, "a result for every event, none for others");
    assert!(per_event.values().all(|n| *n == 1), "{per_event:?}");
    let created = run.created.lock().expect("lock");
    let twice: Vec<_> = created.uids.iter().filter(|(_, u)| u.len() > 1).collect();
    assert!(twice.is_empty(), "pods created twice: {twice:?}");
}

/// Tenant A floods 10 one-pod events at once into 2 slots; once A's first two pods
/// exist, tenant B sends 2. Returns the tenants in pod creation order.
async fn flood_then_latecomer(label: &str, policy: &str) -> Vec<String> {
    let mut run = start(
        label,
        &[
            ("OTTOSCALER_LIMITS__MAX_WORKERS", "2"),
            ("OTTOSCALER_SCHEDULING__POLICY", policy),
        ],
    )
    .await;
    let mut events: BTreeSet<String> = (0..10)
        .map(|n| send(run.port, &format!("a-{n}"), "A", None))
        .collect();
    wait_until("A's first two pods", Duration::from_secs(30), || {
        run.created.lock().expect("lock").order.len() >= 2
    })
    .await;
    // The other eight are read ahead and wait, pending.
    wait_until("A's other 8 waiting", Duration::from_secs(30), || {
        waiting(&run, "normal", "A") == Some(8.0) && pending(run.port, STREAM, "ottoscaler") == 8
    })
    .await;
    events.extend((0..2).map(|n| send(run.port, &format!("b-{n}"), "B", None)));
    wait_until("12 results", Duration::from_secs(90), || {
        entries(run.port, RESULTS).len() >= 12
    })
    .await;
    assert_exactly_once(&run, &events);
    run.ottoscaler.stop(Duration::from_secs(10));
    let order = tenants_in_order(&run.created);
    eprintln!("{policy}: pods created in the order {}", order.concat());
    order
}

#[tokio::test]
async fn under_fair_queueing_a_latecomer_does_not_wait_behind_a_flood() {
    let order = flood_then_latecomer("fair", "fair").await;
    assert_eq!(order.len(), 12, "{order:?}");
    // Two of A's started at once; B's two go within the next three slots (the fair
    // order is A A B A B ...), not after A's other eight.
    let b_at: Vec<usize> = (0..order.len()).filter(|i| order[*i] == "B").collect();
    assert!(b_at.iter().all(|i| *i < 5), "creation order: {order:?}");
}

#[tokio::test]
async fn under_fifo_the_latecomer_waits_for_the_whole_flood() {
    let order = flood_then_latecomer("fifo", "fifo").await;
    assert_eq!(order.len(), 12, "{order:?}");
    assert_eq!(&order[10..], ["B", "B"], "creation order: {order:?}");
}

#[tokio::test]
async fn a_high_priority_event_starts_before_older_low_ones() {
    let mut run = start("prio", &[("OTTOSCALER_LIMITS__MAX_WORKERS", "1")]).await;
    let mut events: BTreeSet<String> = (0..4)
        .map(|n| send(run.port, &format!("low-{n}"), "A", Some("low")))
        .collect();
    wait_until("the first low pod", Duration::from_secs(30), || {
        !run.created.lock().expect("lock").order.is_empty()
    })
    .await;
    wait_until(
        "the other 3 low events waiting",
        Duration::from_secs(30),
        || waiting(&run, "low", "A") == Some(3.0),
    )
    .await;
    events.insert(send(run.port, "high-0", "A", Some("high")));
    wait_until("5 results", Duration::from_secs(60), || {
        entries(run.port, RESULTS).len() >= 5
    })
    .await;
    assert_exactly_once(&run, &events);
    let order: Vec<String> = run
        .created
        .lock()
        .expect("lock")
        .order
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        order[1].starts_with("otto-agent-high-0-"),
        "creation order: {order:?}"
    );
    // An unknown class is dead-lettered naming the known ones, and loses nothing else.
    xadd(
        run.port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "x"),
            ("priority", "urgent"),
        ],
    );
    wait_until("the dead letter", Duration::from_secs(30), || {
        !entries(run.port, "otto:scale:events:dead").is_empty()
    })
    .await;
    let dead = entries(run.port, "otto:scale:events:dead");
    assert!(
        dead[0]["error"].contains("field `priority` is \"urgent\"")
            && dead[0]["error"].contains("high, low, normal"),
        "{dead:?}"
    );
    run.ottoscaler.stop(Duration::from_secs(10));
}

#[tokio::test]
async fn killed_while_fifty_events_wait_every_one_runs_once_in_the_fair_order() {
    let mut run = start("crash", &[("OTTOSCALER_LIMITS__MAX_WORKERS", "3")]).await;
    // A's 30 come first in the stream, then B's 10 and C's 10: stream order would run
    // every one of A's before any of B's or C's.
    let mut events = BTreeSet::new();
    for (tenant, n) in [("A", 30), ("B", 10), ("C", 10)] {
        for i in 0..n {
            events.insert(send(
                run.port,
                &format!("{tenant}-{i}").to_lowercase(),
                tenant,
                None,
            ));
        }
    }
    wait_until(
        "47 events waiting beyond capacity",
        Duration::from_secs(30),
        || {
            waiting(&run, "normal", "C") == Some(10.0)
                && pending(run.port, STREAM, "ottoscaler") == 47
        },
    )
    .await;
    run.ottoscaler.kill();
    let before = run.created.lock().expect("lock").order.len();
    run.ottoscaler.restart();
    wait_until("50 results", Duration::from_secs(120), || {
        entries(run.port, RESULTS).len() >= 50
    })
    .await;
    assert_exactly_once(&run, &events);
    // After the restart the waiting entries are read again and scheduled fairly: the
    // first 15 pods made by the new process are shared among the three tenants.
    let after: Vec<String> = tenants_in_order(&run.created)
        .into_iter()
        .skip(before)
        .take(15)
        .collect();
    eprintln!("after the restart, the first 15 pods: {}", after.concat());
    for tenant in ["A", "B", "C"] {
        let n = after.iter().filter(|t| *t == tenant).count();
        assert!(
            n >= 4,
            "{tenant} got {n} of the first 15 after the restart: {after:?}"
        );
    }
    run.ottoscaler.stop(Duration::from_secs(10));
}
