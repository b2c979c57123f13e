//! kubesim: a kubelet simulator for a real control plane.
//!
//! It registers a few Ready nodes, keeps them alive with node lease heartbeats, and
//! drives the pods that the real kube-scheduler binds to them through the phases a
//! kubelet reports (Pending/ContainerCreating, Running, Succeeded/Failed), including
//! image pull failures, `activeDeadlineSeconds` and graceful deletion. What a pod does
//! is set by annotations, see [`behaviour`]; `schedule=never` works through an
//! admission policy that kubesim installs (see [`policy`]).
//!
//! A [`Handle`] stops and resumes a node's heartbeats (its kubelet is then down: the
//! node lifecycle controller marks the node NotReady and the taint manager evicts its
//! pods), adds nodes and labels them.
//!
//! It is built to handle thousands of pods from one task: one cluster-wide watch, one
//! timer queue ([`DelayQueue`]) instead of a sleeping task per pod, at most
//! [`Options::max_concurrent_writes`] API writes in flight, and retries with backoff.
//!
//! Pods of the images in [`Options::images`] are not simulated: [`runtime`] runs
//! their container as a real process in a bubblewrap sandbox, with probes, volumes,
//! the ServiceAccount token and a pod IP of its own. For all other pods nothing runs:
//! probes, volumes, images and the pod network are not simulated.

pub mod behaviour;
pub mod nodes;
mod plan;
mod pod;
pub mod policy;
pub mod runtime;
pub mod status;
mod writer;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Semaphore, mpsc, oneshot};
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
    /// How often each node's lease is renewed (a kubelet's default is 10 s).
    pub heartbeat_interval: Duration,
    /// How often each node's status is posted again (Ready, with a fresh
    /// `lastHeartbeatTime`).
    pub node_status_interval: Duration,
    /// Images whose pods run for real ([`runtime`]); empty: everything is simulated.
    pub images: runtime::ImageMap,
    /// Directory of the real pods (volumes, hosts files, container logs); needed when
    /// `images` is not empty.
    pub runtime_dir: Option<PathBuf>,
    /// The API server as real pods reach it (`KUBERNETES_SERVICE_HOST`, `_PORT`);
    /// needed when `images` is not empty.
    pub api_server: Option<(String, u16)>,
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
            heartbeat_interval: Duration::from_secs(2),
            node_status_interval: Duration::from_secs(10),
            images: runtime::ImageMap::new(),
            runtime_dir: None,
            api_server: None,
        }
    }
}

/// Pause before a failed write (already retried with backoff) is tried again.
const RETRY_LATER: Duration = Duration::from_secs(2);

/// Runs the simulator until `shutdown` completes. Fails only if the nodes cannot be
/// registered or the `schedule=never` policy cannot be installed; watch errors are
/// retried with backoff.
pub async fn run(client: Client, opts: Options, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (_handle, commands) = Handle::new();
    run_notify(client, opts, shutdown, None, commands).await
}

/// Controls a running kubesim: node heartbeats, nodes, labels. Cheap to clone; works
/// from any tokio runtime.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

/// A request to the simulator's event loop.
#[derive(Debug)]
pub(crate) enum Command {
    NodeNames(oneshot::Sender<Vec<String>>),
    Heartbeats {
        node: String,
        on: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    AddNode {
        labels: Vec<(String, String)>,
        reply: oneshot::Sender<Result<String>>,
    },
    Label {
        node: String,
        key: String,
        value: String,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Handle {
    /// A handle and the receiver that [`run_notify`] takes.
    pub(crate) fn new() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        (Handle { commands }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| anyhow::anyhow!("kubesim is not running"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("kubesim stopped before it answered"))
    }

    /// Names of the simulated nodes, in the order they were registered.
    pub async fn node_names(&self) -> Result<Vec<String>> {
        self.ask(Command::NodeNames).await
    }

    /// Stops the node's kubelet: no more lease renewals or node status, and no pod
    /// status either (its pods stay as they are). A pod deleted meanwhile (by the
    /// taint manager, say) is force-deleted (grace period 0) without a status write,
    /// standing in for whoever would clean up after a dead kubelet.
    pub async fn stop_heartbeats(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.ask(|reply| Command::Heartbeats {
            node,
            on: false,
            reply,
        })
        .await?
    }

    /// Brings the node's kubelet back: its status is posted Ready at once, the lease
    /// renewed, and its pods move on from where they were.
    pub async fn resume_heartbeats(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.ask(|reply| Command::Heartbeats {
            node,
            on: true,
            reply,
        })
        .await?
    }

    /// Registers one more node (Ready, with a lease) with these labels on top of the
    /// usual ones, and returns its name once it is registered. The node controller
    /// removes the `not-ready` taint the apiserver puts on new nodes shortly after;
    /// wait for that before expecting pods on it.
    pub async fn add_node(&self, labels: &[(&str, &str)]) -> Result<String> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.ask(|reply| Command::AddNode { labels, reply }).await?
    }

    /// Sets a label on a node.
    pub async fn label_node(&self, node: &str, key: &str, value: &str) -> Result<()> {
        let (node, key, value) = (node.to_string(), key.to_string(), value.to_string());
        self.ask(|reply| Command::Label {
            node,
            key,
            value,
            reply,
        })
        .await?
    }
}

/// [`run`], signalling `ready` once the nodes are registered and the admission
/// policy is in effect, and obeying `commands`.
pub(crate) async fn run_notify(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()>,
    ready: Option<oneshot::Sender<()>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<()> {
    let nodes: Vec<SimNode> = (0..opts.nodes.max(1))
        .map(|i| SimNode::new(&opts.node_prefix, i))
        .collect();
    let (registered, installed, real) = tokio::join!(
        nodes::register(&client, &nodes),
        policy::install(&client),
        start_runtime(&client, &opts)
    );
    registered.context("kubesim cannot register its nodes")?;
    installed.context("kubesim cannot install its schedule=never admission policy")?;
    let real = real.context("kubesim cannot start its process runtime")?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut heartbeat = tokio::time::interval(opts.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sim = Sim::new(client.clone(), opts, nodes);
    sim.runtime = real;
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
            Some(done) = sim.node_tasks.join_next() => {
                if let Err(err) = done {
                    tracing::error!(%err, "kubesim node task failed");
                }
            }
            Some(command) = commands.recv() => sim.command(command),
            _ = heartbeat.tick() => sim.heartbeat(),
            event = watch.next() => match event {
                Some(Ok(event)) => sim.event(event),
                Some(Err(err)) => tracing::warn!(%err, "kubesim pod watch error (retrying)"),
                None => break,
            },
            Some(expired) = sim.timers.next() => sim.timer(expired.into_inner()),
        }
    }
    sim.tasks.shutdown().await;
    sim.node_tasks.shutdown().await;
    Ok(())
}

/// The process runtime, if any images are mapped.
async fn start_runtime(client: &Client, opts: &Options) -> Result<Option<runtime::Runtime>> {
    if opts.images.is_empty() {
        return Ok(None);
    }
    let dir = opts
        .runtime_dir
        .clone()
        .context("Options::runtime_dir is needed to run mapped images")?;
    let (api_host, api_port) = opts
        .api_server
        .clone()
        .context("Options::api_server is needed to run mapped images")?;
    let config = runtime::Config {
        images: opts.images.clone(),
        dir,
        api_host,
        api_port,
        crash_backoff: opts.crash_backoff,
    };
    runtime::Runtime::start(client.clone(), config)
        .await
        .map(Some)
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
    /// Heartbeats, node registrations and labels.
    node_tasks: JoinSet<()>,
    writes: Arc<Semaphore>,
    ips_handed_out: Vec<u32>,
    /// Indices of nodes whose kubelet is down (heartbeats stopped).
    down: HashSet<usize>,
    /// Set while a round of lease renewals is in flight, so slow rounds never pile up.
    heartbeat_busy: Arc<std::sync::atomic::AtomicBool>,
    /// Heartbeat rounds so far, to post node status every few rounds.
    heartbeats: u64,
    /// Keys seen since the watch (re)started listing, to drop pods deleted meanwhile.
    relisted: Option<HashSet<String>>,
    /// Runs the pods of mapped images for real.
    runtime: Option<runtime::Runtime>,
}

/// The keys of `map` that are not in `seen` (pods gone while the watch relisted).
fn keys_not_in<V>(map: &HashMap<String, V>, seen: &HashSet<String>) -> Vec<String> {
    map.keys().filter(|k| !seen.contains(*k)).cloned().collect()
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
            node_tasks: JoinSet::new(),
            writes,
            ips_handed_out,
            down: HashSet::new(),
            heartbeat_busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            heartbeats: 0,
            relisted: None,
            runtime: None,
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
                    if let Some(real) = self.runtime.as_mut() {
                        real.retain(&seen);
                    }
                    for key in keys_not_in(&self.pods, &seen) {
                        self.forget(&key);
                    }
                }
            }
            Event::Apply(pod) => self.apply(&pod),
            Event::Delete(pod) => {
                let key = key_of(&pod);
                if let Some(real) = self.runtime.as_mut()
                    && real.handles(&pod)
                {
                    real.delete(&key);
                    return;
                }
                if self.pods.get(&key).map(|p| p.uid.as_str()) == pod.metadata.uid.as_deref() {
                    self.forget(&key);
                }
            }
        }
    }

    fn apply(&mut self, pod: &Pod) {
        let key = key_of(pod);
        if let Some(real) = self.runtime.as_mut()
            && real.handles(pod)
        {
            let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let node = node_name.and_then(|n| self.nodes.iter().find(|node| node.name == n));
            let observed = runtime::Observed {
                pod: pod.clone(),
                node: node.cloned(),
                foreign: node_name.is_some_and(|n| !n.is_empty()) && node.is_none(),
            };
            real.apply(&key, observed);
            return;
        }
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
        let node_down = pod.progress.node.is_some_and(|n| self.down.contains(&n));
        match pod.next(Instant::now(), node_down) {
            Next::Nothing => self.disarm(key),
            Next::WaitUntil(at) => self.arm(key, at),
            Next::Act(action) => {
                if let Some((timer, _)) = self.timer_keys.remove(key) {
                    self.timers.remove(&timer);
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

    fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("{name} is not a kubesim node"))
    }

    /// Renews the leases of the nodes that are up; every few rounds it also posts
    /// their status again.
    fn heartbeat(&mut self) {
        use std::sync::atomic::Ordering;
        if self.heartbeat_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        self.heartbeats += 1;
        let every = (self.opts.node_status_interval.as_millis()
            / self.opts.heartbeat_interval.as_millis().max(1))
        .max(1);
        let post_status = u128::from(self.heartbeats) % every == 0;
        let up: Vec<SimNode> = self
            .nodes
            .iter()
            .filter(|n| !self.down.contains(&n.index))
            .cloned()
            .collect();
        let (client, busy) = (self.client.clone(), self.heartbeat_busy.clone());
        self.node_tasks.spawn(async move {
            for node in &up {
                if let Err(err) = nodes::renew_lease(&client, &node.name).await {
                    tracing::warn!(node = %node.name, err = %format!("{err:#}"), "kubesim heartbeat failed");
                }
                if post_status && let Err(err) = nodes::post_status(&client, node).await {
                    tracing::warn!(node = %node.name, err = %format!("{err:#}"), "kubesim node status failed");
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::NodeNames(reply) => {
                let _ = reply.send(self.nodes.iter().map(|n| n.name.clone()).collect());
            }
            Command::Heartbeats { node, on, reply } => {
                let index = match self.node_index(&node) {
                    Ok(index) => index,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                };
                if !on {
                    self.down.insert(index);
                    let _ = reply.send(Ok(()));
                    return;
                }
                if !self.down.remove(&index) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                // Back up: Ready again at once, then the pods carry on.
                let client = self.client.clone();
                let sim_node = self.nodes[index].clone();
                self.node_tasks.spawn(async move {
                    let result = async {
                        nodes::post_status(&client, &sim_node).await?;
                        nodes::renew_lease(&client, &sim_node.name).await
                    }
                    .await;
                    let _ = reply.send(result);
                });
                let keys: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(_, p)| p.progress.node == Some(index))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.advance(&key);
                }
            }
            Command::AddNode { labels, reply } => {
                let mut node = SimNode::new(&self.opts.node_prefix, self.nodes.len());
                node.labels.extend(labels);
                self.nodes.push(node.clone());
                self.ips_handed_out.push(0);
                let client = self.client.clone();
                self.node_tasks.spawn(async move {
                    let result = nodes::register(&client, std::slice::from_ref(&node))
                        .await
                        .map(|()| node.name.clone());
                    let _ = reply.send(result);
                });
            }
            Command::Label {
                node,
                key,
                value,
                reply,
            } => {
                let index = match self.node_index(&node) {
                    Ok(index) => index,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                };
                self.nodes[index].labels.insert(key.clone(), value.clone());
                let client = self.client.clone();
                self.node_tasks.spawn(async move {
                    let _ = reply.send(nodes::label(&client, &node, &key, &value).await);
                });
            }
        }
    }
}
