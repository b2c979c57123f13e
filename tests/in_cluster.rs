//! ottoscaler as users run it: `manifests/dev` applied to the test cluster, with the
//! dev image mapped to the built binary and the Redis image to the host's
//! `redis-server`, so kubesim runs both as real processes in sandboxes while the real
//! ReplicaSet controller, scheduler and ServiceAccount machinery do their part.
//!
//! The worker pods use the config's default template (`busybox:latest`), which is not
//! mapped: kubesim simulates them (run time [`WORKER_SECONDS`]).
//!
//! The shipped manifests are applied unchanged: two replicas elect a leader on the
//! Lease `ottoscaler`; worker pods go to `ottoscaler-workers`. A deleted leader and a
//! `kubectl rollout restart` hand the Lease over, and the new leader claims the old
//! one's pending entries at once (no `redis.claim_idle` wait).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::chaos::{PodRecorder, RedisClient};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use testenv::kubesim::runtime::ImageMapping;
use testenv::{TestEnv, TestEnvOptions};

/// The image of the Deployment in manifests/base.
const DEV_IMAGE: &str = "ghcr.io/otto-ci/ottoscaler:0.1.0";
/// The image of manifests/dev/redis.yaml.
const REDIS_IMAGE: &str = "redis:7-alpine";
const NAMESPACE: &str = "ottoscaler";
/// The worker pods' namespace of manifests/base.
const WORKERS: &str = "ottoscaler-workers";
/// The Deployment's replicas: a leader and a standby.
const REPLICAS: usize = 2;
const SCALER: &str = "app.kubernetes.io/name=ottoscaler,app.kubernetes.io/component=scaler";
const EVENTS: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";
/// How long kubesim runs a simulated worker.
const WORKER_SECONDS: u64 = 8;
const WAIT: Duration = Duration::from_secs(40);

fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let mut cmd = Command::new(env.binaries_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(args)
        .env_remove("KUBECONFIG");
    let out = cmd.output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls until a Ready pod matches `selector` (and `accept`); panics after [`WAIT`].
async fn ready_pod(
    env: &TestEnv,
    api: &Api<Pod>,
    selector: &str,
    accept: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + WAIT;
    loop {
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods");
        let found = pods
            .items
            .iter()
            .find(|p| ready(p) && p.metadata.deletion_timestamp.is_none() && accept(p));
        if let Some(pod) = found {
            return pod.clone();
        }
        let states: Vec<String> = pods
            .items
            .iter()
            .map(|p| {
                let container = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let log = container_log(env, p, &container);
                let tail = &log[log.len().saturating_sub(3000)..];
                format!(
                    "{:?}: {:?}\nlog tail:\n{tail}",
                    p.metadata.name,
                    p.status.as_ref().map(|s| &s.container_statuses)
                )
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "no Ready pod for {selector} after {WAIT:?}: {states:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The log file kubesim writes for a real pod's container.
fn container_log(env: &TestEnv, pod: &Pod, container: &str) -> String {
    let dir = env.control_plane().dir().join("pods").join(format!(
        "{NAMESPACE}_{}_{}",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    ));
    std::fs::read_to_string(dir.join(format!("{container}.log"))).unwrap_or_default()
}

/// Results of `task`, polled until there are `n` (or more); panics after [`WAIT`].
async fn results(redis: &mut RedisClient, task: &str, n: usize) -> Vec<BTreeMap<String, String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all: Vec<BTreeMap<String, String>> = redis
            .entries(RESULTS)
            .await
            .unwrap_or_default()
            .iter()
            .map(|e| e.map())
            .filter(|m| m.get("task_id").map(String::as_str) == Some(task))
            .collect();
        if all.len() >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{task}: {} of {n} results after {WAIT:?}: {all:#?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn scale_up(task: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [("type", "scale_up"), ("pod_count", "3"), ("task_id", task)]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Workers of `task` as the recorder saw them: pod name -> uids.
fn workers_of(recorder: &PodRecorder, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    recorder
        .uids()
        .into_iter()
        .filter(|(name, _)| name.contains(prefix))
        .collect()
}

/// Polls until `n` Ready pods match `selector`; panics after [`WAIT`].
async fn ready_pods(env: &TestEnv, api: &Api<Pod>, selector: &str, n: usize) -> Vec<Pod> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ready: Vec<Pod> = api
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if ready.len() >= n {
            return ready;
        }
        if Instant::now() >= deadline {
            // Panics with the pods' states and log tails.
            ready_pod(env, api, selector, |_| false).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls the Lease `ottoscaler` until one of `candidates` holds it; panics after [`WAIT`].
async fn holder_among(leases: &Api<Lease>, candidates: &BTreeSet<String>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let holder = leases
            .get_opt("ottoscaler")
            .await
            .expect("get the Lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if let Some(holder) = holder.as_ref().filter(|h| candidates.contains(*h)) {
            return holder.clone();
        }
        assert!(
            Instant::now() < deadline,
            "none of {candidates:?} holds the Lease after {WAIT:?} (holder: {holder:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `n` worker pods of `task` exist; panics after [`WAIT`].
async fn wait_workers(workers: &Api<Pod>, task: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = workers
            .list(&ListParams::default().labels(&format!("ottoscaler.io/task-id={task}")))
            .await
            .expect("list workers")
            .items
            .len();
        if found == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} workers of {task} not created: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `succeeded` result per worker index, one pod (uid) per worker, and the results
/// name exactly the pods the recorder saw.
fn assert_exactly_once(done: &[BTreeMap<String, String>], recorder: &PodRecorder, task: &str) {
    assert_eq!(done.len(), 3, "{task}: {done:#?}");
    assert!(
        done.iter().all(|r| r["outcome"] == "succeeded"),
        "{task}: {done:#?}"
    );
    let indexes: BTreeSet<&str> = done.iter().map(|r| r["worker_index"].as_str()).collect();
    assert_eq!(indexes.len(), 3, "{task}: {done:#?}");
    let workers = workers_of(recorder, task);
    assert_eq!(workers.len(), 3, "{task}: {workers:#?}");
    assert!(
        workers.values().all(|uids| uids.len() == 1),
        "{task}: {workers:#?}"
    );
    let reported: BTreeSet<&str> = done.iter().map(|r| r["pod"].as_str()).collect();
    let names: BTreeSet<&str> = workers.keys().map(String::as_str).collect();
    assert_eq!(reported, names, "{task}");
}

/// The consumers of the group `ottoscaler`.
async fn consumers(redis: &mut RedisClient) -> Vec<String> {
    let reply: Vec<BTreeMap<String, redis::Value>> = redis
        .query(
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(EVENTS)
                .arg("ottoscaler"),
        )
        .await
        .expect("XINFO CONSUMERS");
    reply
        .iter()
        .filter_map(|c| match c.get("name") {
            Some(redis::Value::BulkString(name)) => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            Some(redis::Value::SimpleString(name)) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_manifests_run_two_replicas_in_the_cluster_and_a_deleted_leader_or_a_rollout_finishes_the_work_once()
 {
    let started = Instant::now();
    let images = [
        (
            DEV_IMAGE.to_string(),
            ImageMapping::binary(env!("CARGO_BIN_EXE_ottoscaler")),
        ),
        (REDIS_IMAGE.to_string(), ImageMapping::passthrough()),
    ]
    .into();
    let mut opts = TestEnvOptions {
        images,
        ..TestEnvOptions::default()
    };
    opts.kubesim.default_run = Duration::from_secs(WORKER_SECONDS);
    let env = TestEnv::start(opts).await.expect("test environment");
    let client: Client = env.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let workers: Api<Pod> = Api::namespaced(client.clone(), WORKERS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);

    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/dev");
    kubectl(&env, &["apply", "-k", dev.to_str().expect("utf-8 path")]);
    let redis_pod = ready_pod(&env, &pods, "app.kubernetes.io/name=redis", |_| true).await;
    // Both replicas Ready through their own readiness probe (/readyz: Redis answers, the
    // pod watch is up; a standby is ready too), so each reached Redis by its Service name
    // and the API server with its token.
    let replicas = ready_pods(&env, &pods, SCALER, REPLICAS).await;
    let names: BTreeSet<String> = replicas
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let leader = holder_among(&leases, &names).await;
    let leader_pod = replicas
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(leader.as_str()))
        .expect("the leader is one of the replicas")
        .clone();
    let log = container_log(&env, &leader_pod, "ottoscaler");
    assert!(
        log.contains("\"level\":\"INFO\""),
        "JSON logs of the real process:\n{log}"
    );
    let redis_ip = redis_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("redis pod IP");
    let mut redis = RedisClient::new(&format!("redis://{redis_ip}:6379"));
    let recorder = PodRecorder::start(workers.clone()).await;

    // The seed's event: 3 succeeded results, worker pods in the worker namespace.
    redis
        .xadd_retrying(EVENTS, &scale_up("task-123"), WAIT)
        .await;
    let done = results(&mut redis, "task-123", 3).await;
    assert_exactly_once(&done, &recorder, "task-123");

    // A second event; the leader's pod is deleted while its workers run. The standby
    // takes the Lease over and finishes them; the ReplicaSet starts a new pod (a new
    // name, a new consumer) as the next standby.
    redis
        .xadd_retrying(EVENTS, &scale_up("task-456"), WAIT)
        .await;
    wait_workers(&workers, "task-456", 3).await;
    let deleted_at = Instant::now();
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader's pod");
    let others: BTreeSet<String> = names.iter().filter(|n| **n != leader).cloned().collect();
    let successor = holder_among(&leases, &others).await;
    eprintln!(
        "in_cluster: {leader} deleted, {successor} leads {:.1?} later",
        deleted_at.elapsed()
    );
    let replacement = ready_pod(&env, &pods, SCALER, |p| {
        p.metadata.name.as_ref().is_some_and(|n| !names.contains(n))
    })
    .await;
    let replacement_name = replacement.metadata.name.clone().expect("name");
    let done = results(&mut redis, "task-456", 3).await;
    assert_exactly_once(&done, &recorder, "task-456");
    let old_log = container_log(&env, &leader_pod, "ottoscaler");
    assert!(
        old_log.contains("released the Lease") && old_log.contains("ottoscaler stopped"),
        "the old leader handed over and shut down cleanly:\n{old_log}"
    );
    // The group lost the old leader's consumer at the take-over; the new pod joins it
    // when it leads.
    let consumers = consumers(&mut redis).await;
    assert!(
        consumers.contains(&successor) && !consumers.contains(&leader),
        "consumers {consumers:?}: {successor} leads, {leader} was removed"
    );

    // A rollout of the real Deployment while a third event's workers run: every old pod
    // is replaced (maxSurge 1, maxUnavailable 0), the Lease is handed over on each
    // leader's SIGTERM, and the work is still done exactly once.
    redis
        .xadd_retrying(EVENTS, &scale_up("task-789"), WAIT)
        .await;
    wait_workers(&workers, "task-789", 3).await;
    let before: BTreeSet<String> = [successor.clone(), replacement_name.clone()].into();
    let rollout = Instant::now();
    kubectl(
        &env,
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "restart",
            "deployment/ottoscaler",
        ],
    );
    kubectl(
        &env,
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/ottoscaler",
            "--timeout=120s",
        ],
    );
    eprintln!(
        "in_cluster: rollout restart done in {:.1?}",
        rollout.elapsed()
    );
    let done = results(&mut redis, "task-789", 3).await;
    assert_exactly_once(&done, &recorder, "task-789");
    let after = ready_pods(&env, &pods, SCALER, REPLICAS).await;
    let after: BTreeSet<String> = after
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        after.is_disjoint(&before),
        "every pod replaced: {before:?} -> {after:?}"
    );
    let leader_now = holder_among(&leases, &after).await;
    eprintln!("in_cluster: {leader_now} leads after the rollout");
    eprintln!("in_cluster: done in {:.1?}", started.elapsed());
    drop(recorder);
    env.stop().await.expect("stop the environment");
}
