//! kubesim: a scheduler and kubelet simulator for a real kube-apiserver.
//!
//! It registers a few Ready nodes, binds unscheduled pods to them through the
//! `pods/binding` subresource, and drives bound pods through the phases a kubelet
//! reports (Pending/ContainerCreating, Running, Succeeded/Failed), including image
//! pull failures, `activeDeadlineSeconds` and graceful deletion. What a pod does is
//! set by annotations, see [`behaviour`].
//!
//! It is built to handle thousands of pods from one task: one cluster-wide watch, one
//! timer queue ([`DelayQueue`]) instead of a sleeping task per pod, at most
//! [`Options::max_concurrent_writes`] API writes in flight, and retries with backoff.
//!
//! Not simulated: resource requests, taints, affinity (only `nodeSelector`), probes,
//! volumes, node heartbeats and the garbage collector.

pub mod behaviour;
pub mod nodes;
mod plan;
mod pod;
pub mod status;
mod writer;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;

use nodes::SimNode;
use pod::{Next, Progress, SimPod};
use writer::{Outcome, Write};

/// How kubesim behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes to register.
    pub nodes: usize,
    /// Node names are this prefix plus an index.
    pub node_prefix: String,
    /// How long containers run when a pod has no `run-seconds` annotation.
    pub default_run: Duration,
    /// How long ContainerCreating is shown before the containers start.
    pub container_create_delay: Duration,
    /// How long ErrImagePull is shown before ImagePullBackOff.
    pub pull_backoff_delay: Duration,
    /// First crash-loop back-off of a restarting container (doubles up to 5 min).
    pub crash_backoff: Duration,
    /// Upper bound of API writes in flight.
    pub max_concurrent_writes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            node_prefix: "kubesim-node-".into(),
            default_run: Duration::from_secs(1),
            container_create_delay: Duration::from_millis(100),
            pull_backoff_delay: Duration::from_secs(1),
            crash_backoff: Duration::from_secs(10),
            max_concurrent_writes: 32,
        }
    }
}

/// Pause before a failed write (already retried with backoff) is tried again.
const RETRY_LATER: Duration = Duration::from_secs(2);

/// Runs the simulator until `shutdown` completes. Fails only if the nodes cannot be
/// registered; watch errors are retried with backoff.
pub async fn run(client: Client, opts: Options, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_notify(client, opts, shutdown, None).await
}

/// [`run`], signalling `ready` once the nodes are registered.
pub(crate) async fn run_notify(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()>,
    ready: Option<oneshot::Sender<()>>,
) -> Result<()> {
    let nodes: Vec<SimNode> = (0..opts.nodes.max(1))
        .map(|i| SimNode::new(&opts.node_prefix, i))
        .collect();
    nodes::register(&client, &nodes)
        .await
        .context("kubesim cannot register its nodes")?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut sim = Sim::new(client.clone(), opts, nodes);
    let watch =
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    let mut watch = std::pin::pin!(watch);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Unbiased: a flood of watch events must not starve the timers.
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = sim.tasks.join_next() => match done {
                Ok(done) => sim.finished(done),
                Err(err) => tracing::error!(%err, "kubesim write task failed"),
            },
            event = watch.next() => match event {
                Some(Ok(event)) => sim.event(event),
                Some(Err(err)) => tracing::warn!(%err, "kubesim pod watch error (retrying)"),
                None => break,
            },
            Some(expired) = sim.timers.next() => sim.timer(expired.into_inner()),
        }
    }
    sim.tasks.shutdown().await;
    Ok(())
}

/// A finished write.
struct Done {
    key: String,
    uid: String,
    outcome: Outcome,
    progress: Progress,
}

/// The event loop's state; all of it is touched from one task only.
struct Sim {
    client: Client,
    opts: Options,
    nodes: Vec<SimNode>,
    pods: HashMap<String, SimPod>,
    /// Timer per pod key, with the instant it fires.
    timer_keys: HashMap<String, (delay_queue::Key, Instant)>,
    timers: DelayQueue<String>,
    tasks: JoinSet<Done>,
    writes: Arc<Semaphore>,
    next_node: usize,
    ips_handed_out: Vec<u32>,
    /// Keys seen since the watch (re)started listing, to drop pods deleted meanwhile.
    relisted: Option<HashSet<String>>,
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl Sim {
    fn new(client: Client, opts: Options, nodes: Vec<SimNode>) -> Sim {
        let writes = Arc::new(Semaphore::new(opts.max_concurrent_writes.max(1)));
        let ips_handed_out = vec![0; nodes.len()];
        Sim {
            client,
            opts,
            nodes,
            pods: HashMap::new(),
            timer_keys: HashMap::new(),
            timers: DelayQueue::new(),
            tasks: JoinSet::new(),
            writes,
            next_node: 0,
            ips_handed_out,
            relisted: None,
        }
    }

    fn event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.relisted.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.apply(&pod);
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.forget(&key);
                    }
                }
            }
            Event::Apply(pod) => self.apply(&pod),
            Event::Delete(pod) => {
                let key = key_of(&pod);
                if self.pods.get(&key).map(|p| p.uid.as_str()) == pod.metadata.uid.as_deref() {
                    self.forget(&key);
                }
            }
        }
    }

    fn apply(&mut self, pod: &Pod) {
        let key = key_of(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        match self.pods.get_mut(&key) {
            Some(known) if known.uid == uid => known.refresh_spec(pod, &self.nodes),
            _ => {
                // New pod, or a new pod under the name of a deleted one.
                self.forget(&key);
                let sim = SimPod::observe_new(pod, &self.nodes, self.opts.default_run);
                self.pods.insert(key.clone(), sim);
            }
        }
        self.advance(&key);
    }

    fn forget(&mut self, key: &str) {
        self.pods.remove(key);
        if let Some((timer, _)) = self.timer_keys.remove(key) {
            self.timers.remove(&timer);
        }
    }

    fn timer(&mut self, key: String) {
        self.timer_keys.remove(&key);
        self.advance(&key);
    }

    fn finished(&mut self, done: Done) {
        let Some(pod) = self.pods.get_mut(&done.key).filter(|p| p.uid == done.uid) else {
            return;
        };
        pod.busy = false;
        match done.outcome {
            Outcome::Done => {
                pod.progress = done.progress;
                pod.retry_at = None;
            }
            Outcome::Gone => {
                self.forget(&done.key);
                return;
            }
            Outcome::Failed(err) => {
                tracing::warn!(pod = %done.key, %err, "kubesim write failed, trying again later");
                pod.retry_at = Some(Instant::now() + RETRY_LATER);
            }
        }
        self.advance(&done.key);
    }

    /// Decides and starts the next step of one pod.
    fn advance(&mut self, key: &str) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        let (nodes, start) = (&self.nodes, self.next_node);
        let pick = |p: &SimPod| {
            (0..nodes.len())
                .map(|i| (start + i) % nodes.len())
                .find(|&i| nodes[i].matches(p.node_selector.as_ref()))
        };
        match pod.next(Instant::now(), nodes.len(), pick) {
            Next::Nothing => self.disarm(key),
            Next::WaitUntil(at) => self.arm(key, at),
            Next::Act(action) => {
                if let Some((timer, _)) = self.timer_keys.remove(key) {
                    self.timers.remove(&timer);
                }
                if let pod::Action::Bind(node) = action {
                    self.next_node = (node + 1) % self.nodes.len();
                }
                let ips = &mut self.ips_handed_out;
                let nodes = &self.nodes;
                let mut alloc_ip = |node: usize| {
                    let n = ips.get_mut(node).map(|c| {
                        *c = c.wrapping_add(1);
                        *c
                    });
                    nodes
                        .get(node)
                        .map(|sim_node| sim_node.pod_ip(n.unwrap_or(0)))
                        .unwrap_or_default()
                };
                let plan = plan::plan(pod, &action, nodes, &self.opts, &mut alloc_ip);
                self.dispatch(key, plan);
            }
        }
    }

    fn dispatch(&mut self, key: &str, plan: plan::Plan) {
        let Some(pod) = self.pods.get_mut(key) else {
            return;
        };
        pod.busy = true;
        let client = self.client.clone();
        let writes = self.writes.clone();
        let (namespace, name, uid) = (pod.namespace.clone(), pod.name.clone(), pod.uid.clone());
        let key = key.to_string();
        let write: Write = plan.write;
        let progress = plan.progress;
        self.tasks.spawn(async move {
            // The semaphore is never closed, so acquiring can only fail if it were.
            let _permit = writes.acquire_owned().await;
            let outcome = writer::perform(client, &namespace, &name, &write).await;
            Done {
                key,
                uid,
                outcome,
                progress,
            }
        });
    }

    fn arm(&mut self, key: &str, at: Instant) {
        match self.timer_keys.get_mut(key) {
            Some((_, when)) if *when == at => {}
            Some((timer, when)) => {
                self.timers.reset_at(timer, at);
                *when = at;
            }
            None => {
                let timer = self.timers.insert_at(key.to_string(), at);
                self.timer_keys.insert(key.to_string(), (timer, at));
            }
        }
    }

    fn disarm(&mut self, key: &str) {
        if let Some((timer, _)) = self.timer_keys.remove(key) {
            self.timers.remove(&timer);
        }
    }
}
