//! The bare kube-rs client program (once called "the ceiling"; it is none: it uses the
//! stock kube client, HTTP/1.1 with Nagle on, where ottoscaler has its tuned HTTP/2
//! client, so ottoscaler can beat it). It does the least any pod runner must do:
//! create a pod, wait on one shared watch until kubesim finishes it, delete it, wait
//! until it is gone. No Redis, no actors, no results, no rate limit. B2 runs it with
//! ottoscaler's concurrency ([`run`]), B1 at ottoscaler's event rate ([`paced`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::client::ClientBuilder;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use ottoscaler::kube_client::layers::is_watch;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tower::util::MapRequestLayer;

/// How long one pod may take from create to gone.
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts of one create or delete on 429/5xx/connection errors.
const ATTEMPTS: u32 = 6;

/// What the bare client run did.
#[derive(Debug, Clone)]
pub struct CeilingRun {
    pub pods: u32,
    /// First create sent -> last pod gone.
    pub elapsed: Duration,
    /// Creates and deletes sent, retries included.
    pub requests: u64,
}

#[derive(Default)]
struct Waiters {
    finished: HashMap<String, oneshot::Sender<()>>,
    gone: HashMap<String, oneshot::Sender<()>>,
}

/// Cycles `count` copies of `template` through `namespace`, `concurrency` at a time.
pub async fn run(
    client: Client,
    namespace: &str,
    template: &Pod,
    count: u32,
    concurrency: u32,
) -> Result<CeilingRun> {
    let (api, waiters, watch_task) = watch(client, namespace).await?;
    let template = blank(template);
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let api = api.clone();
        let waiters = Arc::clone(&waiters);
        let permits = Arc::clone(&permits);
        let mut pod = template.clone();
        let name = format!("bare-client-{i}");
        pod.metadata.name = Some(name.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            cycle(&api, &waiters, pod, &name).await
        });
    }
    let mut requests = 0;
    while let Some(done) = tasks.join_next().await {
        requests += done.map_err(|e| anyhow!("bare client task panicked: {e}"))??;
    }
    let elapsed = started.elapsed();
    watch_task.abort();
    Ok(CeilingRun {
        pods: count,
        elapsed,
        requests,
    })
}

/// Starts `count` pod cycles at `rate` per second, each at its own scheduled time, with
/// no bound on how many run at once; returns (pod name, create sent, µs since the
/// epoch) per pod once every pod is gone.
pub async fn paced(
    client: Client,
    namespace: &str,
    template: &Pod,
    rate: u32,
    count: u32,
) -> Result<Vec<(String, i64)>> {
    let (api, waiters, watch_task) = watch(client, namespace).await?;
    let template = blank(template);
    let period = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(count as usize);
    let mut tasks = JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + period * i).await;
        let api = api.clone();
        let waiters = Arc::clone(&waiters);
        let mut pod = template.clone();
        let name = format!("paced-{rate}-{i}");
        pod.metadata.name = Some(name.clone());
        sent.push((name.clone(), crate::recorder::now_us()));
        tasks.spawn(async move { cycle(&api, &waiters, pod, &name).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| anyhow!("bare client task panicked: {e}"))??;
    }
    watch_task.abort();
    Ok(sent)
}

/// The subcommand of this binary that runs [`paced`] as a process of its own.
pub const PACED_COMMAND: &str = "bare-client-paced";

/// What the [`PACED_COMMAND`] process reports: each pod's create-sent time, the CPU
/// seconds it used, and how many times its pod watch was opened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PacedRun {
    pub sent: Vec<(String, i64)>,
    pub cpu_seconds: Option<f64>,
    /// WATCH requests sent: the first, then one each time the watch was re-opened (the
    /// API server closed it, or it failed and was listed anew).
    pub watch_requests: u64,
}

/// [`paced`] in a child process (this binary's [`PACED_COMMAND`]), for B1: ottoscaler
/// runs as a process of its own, so on a saturated machine the bare client must contend
/// for the CPU the same way, not from inside the harness next to kubesim.
pub async fn paced_process(
    kubeconfig: &Path,
    log_dir: &Path,
    namespace: &str,
    template: &Pod,
    rate: u32,
    count: u32,
    timeout: Duration,
) -> Result<PacedRun> {
    // Per namespace and rate: the warm-up and the measured run keep their own files.
    let name = format!("bare-client-{namespace}-{rate}");
    let template_path = log_dir.join(format!("{name}-template.json"));
    std::fs::write(&template_path, serde_json::to_vec(template)?)
        .with_context(|| format!("cannot write {}", template_path.display()))?;
    let log_path = log_dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the harness binary")?;
    let child = tokio::process::Command::new(exe)
        .arg(PACED_COMMAND)
        .arg(kubeconfig)
        .arg(namespace)
        .arg(&template_path)
        .arg(rate.to_string())
        .arg(count.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the bare kube-rs client process")?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .context("the bare kube-rs client process timed out")?
        .context("the bare kube-rs client process failed")?;
    if !output.status.success() {
        bail!(
            "the bare kube-rs client process exited with {} (log: {})",
            output.status,
            log_path.display()
        );
    }
    serde_json::from_slice(&output.stdout).context("the bare kube-rs client process' report")
}

/// The [`PACED_COMMAND`] process: `KUBECONFIG NAMESPACE TEMPLATE_JSON RATE COUNT`;
/// prints a [`PacedRun`] as JSON.
pub async fn paced_main(args: &[String]) -> Result<()> {
    let [kubeconfig, namespace, template, rate, count] = args else {
        bail!("usage: {PACED_COMMAND} KUBECONFIG NAMESPACE TEMPLATE_JSON RATE COUNT");
    };
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("kubeconfig {kubeconfig}"))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("kubeconfig {kubeconfig}"))?;
    // Counts the watch requests on the way out, as ottoscaler's own request counter does.
    let watches = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&watches);
    let count_watches = MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        if is_watch(request.uri()) {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        request
    });
    let client = ClientBuilder::try_from(config)
        .context("kube client")?
        .with_layer(&count_watches)
        .build();
    let template: Pod = serde_json::from_slice(
        &std::fs::read(template).with_context(|| format!("cannot read {template}"))?,
    )
    .with_context(|| format!("{template} is not a pod"))?;
    let rate = rate.parse().with_context(|| format!("rate {rate:?}"))?;
    let count = count.parse().with_context(|| format!("count {count:?}"))?;
    let sent = paced(client, namespace, &template, rate, count).await?;
    let run = PacedRun {
        sent,
        cpu_seconds: crate::procfs::cpu_seconds(std::process::id()),
        watch_requests: watches.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

type Watch = (Api<Pod>, Arc<Mutex<Waiters>>, tokio::task::JoinHandle<()>);

/// The shared watch on `namespace`, listed and running.
async fn watch(client: Client, namespace: &str) -> Result<Watch> {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let waiters = Arc::new(Mutex::new(Waiters::default()));
    let (synced_tx, synced_rx) = oneshot::channel();
    let handle = tokio::spawn(dispatch(api.clone(), Arc::clone(&waiters), synced_tx));
    tokio::time::timeout(Duration::from_secs(30), synced_rx)
        .await
        .context("the bare client's watch did not list within 30 s")?
        .context("the bare client's watch ended")?;
    Ok((api, waiters, handle))
}

/// One pod's life; returns the requests it took.
async fn cycle(api: &Api<Pod>, waiters: &Mutex<Waiters>, pod: Pod, name: &str) -> Result<u64> {
    let (finished_tx, finished) = oneshot::channel();
    let (gone_tx, gone) = oneshot::channel();
    {
        let mut w = waiters.lock().unwrap_or_else(PoisonError::into_inner);
        w.finished.insert(name.to_string(), finished_tx);
        w.gone.insert(name.to_string(), gone_tx);
    }
    let (create, delete) = (PostParams::default(), DeleteParams::default());
    let mut requests = 0;
    requests += retry(|| api.create(&create, &pod)).await?;
    tokio::time::timeout(POD_TIMEOUT, finished)
        .await
        .with_context(|| format!("{name} did not finish within {POD_TIMEOUT:?}"))??;
    requests += retry(|| api.delete(name, &delete)).await?;
    tokio::time::timeout(POD_TIMEOUT, gone)
        .await
        .with_context(|| format!("{name} was not gone within {POD_TIMEOUT:?}"))??;
    Ok(requests)
}

/// Runs `op` until it succeeds, retrying transient errors with a short backoff;
/// returns how many attempts it took.
async fn retry<T, F, Fut>(mut op: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(Duration::from_secs(30), op()).await {
            Ok(Ok(_)) => return Ok(u64::from(attempt)),
            Ok(Err(kube::Error::Api(s))) if s.code != 429 && s.code < 500 => {
                bail!("API error: {}", s.message)
            }
            Ok(Err(_)) | Err(_) if attempt < ATTEMPTS => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("no answer within 30 s"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    bail!("gave up after {ATTEMPTS} attempts")
}

/// The one shared watch: wakes a pod's waiter when it finishes and when it is gone.
async fn dispatch(api: Api<Pod>, waiters: Arc<Mutex<Waiters>>, synced: oneshot::Sender<()>) {
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut synced = Some(synced);
    while let Some(event) = stream.next().await {
        let mut w = waiters.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed"))
                    && let Some(name) = &pod.metadata.name
                    && let Some(tx) = w.finished.remove(name)
                {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(name) = &pod.metadata.name
                    && let Some(tx) = w.gone.remove(name)
                {
                    let _ = tx.send(());
                }
            }
            Ok(Event::InitDone) => {
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Init) => {}
            Err(err) => eprintln!("bench: bare client watch error (retrying): {err}"),
        }
    }
}

/// `pod` as it was before the API server and kubesim touched it: same labels,
/// annotations and spec, no identity, node or status.
fn blank(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    let m = &mut pod.metadata;
    m.name = None;
    m.namespace = None;
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.generation = None;
    m.managed_fields = None;
    if let Some(spec) = &mut pod.spec {
        spec.node_name = None;
    }
    pod.status = None;
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::core::ObjectMeta;

    #[test]
    fn a_blank_copy_keeps_labels_and_spec_but_no_identity_node_or_status() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("otto-agent-x".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                resource_version: Some("7".into()),
                labels: Some([("app".to_string(), "otto-agent".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("kubesim-node-0".into()),
                restart_policy: Some("Never".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus::default()),
        };
        let copy = blank(&pod);
        assert_eq!(copy.metadata.name, None);
        assert_eq!(copy.metadata.uid, None);
        assert_eq!(copy.metadata.labels, pod.metadata.labels);
        let spec = copy.spec.expect("spec");
        assert_eq!(spec.node_name, None);
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert!(copy.status.is_none());
    }
}
