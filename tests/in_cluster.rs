//! ottoscaler as users run it: `manifests/dev` applied to the test cluster, with the
//! dev image mapped to the built binary and the Redis image to the host's
//! `redis-server`, so kubesim runs both as real processes in sandboxes while the real
//! ReplicaSet controller, scheduler and ServiceAccount machinery do their part.
//!
//! The worker pods use the config's default template (`busybox:latest`), which is not
//! mapped: kubesim simulates them (run time [`WORKER_SECONDS`]).
//!
//! The only change to the shipped manifests is `OTTOSCALER_REDIS__CLAIM_IDLE=3s` on the
//! Deployment (a kustomize overlay made by the test), so a replaced pod's pending
//! entries are claimed within the test's time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::chaos::{PodRecorder, RedisClient};
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
const SCALER: &str = "app.kubernetes.io/name=ottoscaler,app.kubernetes.io/component=scaler";
const EVENTS: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";
/// How long kubesim runs a simulated worker.
const WORKER_SECONDS: u64 = 8;
const WAIT: Duration = Duration::from_secs(40);

/// `to` relative to `from` (both absolute): kustomize refuses absolute resources.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// A kustomize overlay of manifests/dev with a short `redis.claim_idle`.
fn overlay() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("in-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("overlay dir");
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/dev");
    let base = relative(&dir, &dev);
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {}
patches:
  - target: {{kind: Deployment, name: ottoscaler}}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {{name: OTTOSCALER_REDIS__CLAIM_IDLE, value: 3s}}
",
            base.display()
        ),
    )
    .expect("write the overlay");
    dir
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_manifests_run_ottoscaler_in_the_cluster_and_a_replaced_pod_finishes_the_work_once()
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

    let overlay = overlay();
    kubectl(
        &env,
        &["apply", "-k", overlay.to_str().expect("utf-8 path")],
    );
    let redis_pod = ready_pod(&env, &pods, "app.kubernetes.io/name=redis", |_| true).await;
    let first = ready_pod(&env, &pods, SCALER, |_| true).await;
    let first_name = first.metadata.name.clone().expect("name");
    // Ready through its own readiness probe (/readyz: Redis answers, the pod watch is
    // up), so it reached Redis by its Service name and the API server with its token.
    let log = container_log(&env, &first, "ottoscaler");
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
    let recorder = PodRecorder::start(pods.clone()).await;

    // The seed's event: 3 succeeded results.
    redis
        .xadd_retrying(EVENTS, &scale_up("task-123"), WAIT)
        .await;
    let done = results(&mut redis, "task-123", 3).await;
    assert_eq!(done.len(), 3, "{done:#?}");
    assert!(
        done.iter().all(|r| r["outcome"] == "succeeded"),
        "{done:#?}"
    );

    // A second event; its pod is replaced while the workers run.
    redis
        .xadd_retrying(EVENTS, &scale_up("task-456"), WAIT)
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let running = pods
            .list(&ListParams::default().labels("ottoscaler.io/task-id=task-456"))
            .await
            .expect("list workers")
            .items
            .len();
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 workers of task-456 not created: {running}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replaced_at = Instant::now();
    pods.delete(&first_name, &DeleteParams::default())
        .await
        .expect("delete the ottoscaler pod");
    let second = ready_pod(&env, &pods, SCALER, |p| {
        p.metadata.name.as_deref() != Some(first_name.as_str())
    })
    .await;
    let second_name = second.metadata.name.clone().expect("name");
    assert!(
        replaced_at.elapsed() < Duration::from_secs(WORKER_SECONDS),
        "the new pod was Ready before the workers ended ({:?})",
        replaced_at.elapsed()
    );
    let done = results(&mut redis, "task-456", 3).await;

    // Exactly once: one result per worker index, one pod (uid) per worker.
    assert_eq!(done.len(), 3, "{done:#?}");
    assert!(
        done.iter().all(|r| r["outcome"] == "succeeded"),
        "{done:#?}"
    );
    let indexes: BTreeSet<&str> = done.iter().map(|r| r["worker_index"].as_str()).collect();
    assert_eq!(indexes.len(), 3, "{done:#?}");
    let workers = workers_of(&recorder, "task-456");
    assert_eq!(workers.len(), 3, "{workers:#?}");
    assert!(workers.values().all(|uids| uids.len() == 1), "{workers:#?}");
    let reported: BTreeSet<&str> = done.iter().map(|r| r["pod"].as_str()).collect();
    let names: BTreeSet<&str> = workers.keys().map(String::as_str).collect();
    assert_eq!(reported, names);
    // The replacement is a new consumer of the group.
    let groups: redis::Value = redis
        .query(redis::cmd("XINFO").arg("GROUPS").arg(EVENTS))
        .await
        .expect("XINFO GROUPS");
    let group = format!("{groups:?}");
    let consumers: redis::Value = redis
        .query(
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(EVENTS)
                .arg("ottoscaler"),
        )
        .await
        .unwrap_or_else(|e| panic!("XINFO CONSUMERS (groups: {group}): {e}"));
    let consumers = format!("{consumers:?}");
    assert!(
        consumers.contains(&second_name),
        "{second_name} not in {consumers}"
    );
    let old_log = container_log(&env, &first, "ottoscaler");
    assert!(
        old_log.contains("ottoscaler stopped"),
        "the old pod shut down cleanly:\n{old_log}"
    );
    eprintln!("in_cluster: done in {:.1?}", started.elapsed());
    drop(recorder);
    env.stop().await.expect("stop the environment");
}
