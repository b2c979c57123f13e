//! The life of one real pod, from binding to the final delete: prepare volumes and
//! environment, run the container (restarts, CrashLoopBackOff), probe it, and stop it
//! on deletion with SIGTERM, the grace period and SIGKILL.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::expand::{self, ConfigError, Sources};
use super::hosts::{self, ServiceIps};
use super::probe::{self, Check, ProbeSpec, Tracker};
use super::process::Process;
use super::sandbox::{Mount, SHIM_PATH, Sandbox};
use super::volumes::{self, VolumeSources};
use super::{Observed, Shared};
use crate::kubesim::nodes::SimNode;
use crate::kubesim::plan::crash_backoff;
use crate::kubesim::status::{self, Phase, Shape, Snapshot, State};
use crate::kubesim::writer::{self, Outcome, Write};

/// The PATH of the sandbox (the host's /usr is the image).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lifetime of requested ServiceAccount tokens (what the admission plugin asks for).
const TOKEN_SECONDS: i64 = 3607;

/// Runs the pod until it is deleted.
pub(super) async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Observed>>) {
    let Some((pod, node)) = wait_bound(&mut updates).await else {
        return;
    };
    let mut task = PodTask::new(shared, pod, node);
    task.drive(&mut updates).await;
    task.release();
}

/// Waits until the pod is bound to a kubesim node; `None` if it is deleted first or
/// bound elsewhere.
async fn wait_bound(updates: &mut watch::Receiver<Option<Observed>>) -> Option<(Pod, SimNode)> {
    loop {
        let current = updates.borrow_and_update().clone()?;
        if let Some(node) = current.node {
            return Some((current.pod, node));
        }
        if current.foreign || current.pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        updates.changed().await.ok()?;
    }
}

/// How a container run ended.
enum Ended {
    /// The process exited by itself (or after a failed liveness probe).
    Exited { code: i32, started: Timestamp },
    /// The pod is being deleted; the container was stopped.
    Deleted { code: i32, started: Timestamp },
    /// The pod is gone from the API.
    Gone,
}

/// Everything prepared for starting the container.
struct Prepared {
    sandbox: Sandbox,
    log: PathBuf,
    hosts: PathBuf,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
}

/// Why the container cannot start yet.
enum NotYet {
    /// A problem with the pod's configuration (shown as CreateContainerConfigError).
    Config(ConfigError),
    /// An API or file error: tried again.
    Other(anyhow::Error),
}

impl From<ConfigError> for NotYet {
    fn from(err: ConfigError) -> Self {
        NotYet::Config(err)
    }
}

impl From<anyhow::Error> for NotYet {
    fn from(err: anyhow::Error) -> Self {
        NotYet::Other(err)
    }
}

impl From<kube::Error> for NotYet {
    fn from(err: kube::Error) -> Self {
        NotYet::Other(err.into())
    }
}

struct PodTask {
    shared: Arc<Shared>,
    pod: Pod,
    node: SimNode,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    pod_ip: Option<String>,
    start_time: Timestamp,
    restart_count: i32,
    last_state: Option<State>,
    changed_at: Timestamp,
}

impl PodTask {
    fn new(shared: Arc<Shared>, pod: Pod, node: SimNode) -> PodTask {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = shared.config.dir.join(format!("{namespace}_{name}_{uid}"));
        let now = Timestamp::now();
        PodTask {
            shared,
            pod,
            node,
            namespace,
            name,
            uid,
            dir,
            pod_ip: None,
            start_time: now,
            restart_count: 0,
            last_state: None,
            changed_at: now,
        }
    }

    fn container(&self) -> Option<Container> {
        self.pod.spec.as_ref()?.containers.first().cloned()
    }

    fn release(&mut self) {
        if let Some(ip) = self.pod_ip.take()
            && let Ok(mut pool) = self.shared.ips.lock()
        {
            pool.give_back(&ip);
        }
    }

    fn deleting(&self) -> Option<Duration> {
        self.pod.metadata.deletion_timestamp.as_ref()?;
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30);
        Some(Duration::from_secs(grace))
    }

    /// Takes in the next update; `false` when the pod is gone from the API.
    fn take_update(&mut self, updates: &mut watch::Receiver<Option<Observed>>) -> bool {
        match updates.borrow_and_update().as_ref() {
            Some(observed) => {
                self.pod = observed.pod.clone();
                true
            }
            None => false,
        }
    }

    async fn write_status(&mut self, phase: Phase, state: State, ready: bool) -> bool {
        let shape = Shape::of(&self.pod);
        let other = status::foreign_conditions(&self.pod);
        let body = status::patch(&Snapshot {
            shape: &shape,
            uid: &self.uid,
            host_ip: &self.node.host_ip,
            pod_ip: self.pod_ip.as_deref(),
            phase,
            start_time: self.start_time,
            changed_at: self.changed_at,
            state,
            last_state: self.last_state.clone(),
            restart_count: self.restart_count,
            reason: None,
            other_conditions: &other,
            ready,
        });
        let write = Write::Status {
            body,
            uid: self.uid.clone(),
        };
        self.perform(&write).await
    }

    /// Performs a write; `false` if the pod is gone.
    async fn perform(&self, write: &Write) -> bool {
        let client = self.shared.client.clone();
        match writer::perform(client, &self.namespace, &self.name, write).await {
            Outcome::Done => true,
            Outcome::Gone => false,
            Outcome::Failed(err) => {
                tracing::warn!(pod = %self.name, %err, "kubesim runtime: write failed");
                true
            }
        }
    }

    async fn drive(&mut self, updates: &mut watch::Receiver<Option<Observed>>) {
        if !self
            .write_status(
                Phase::Pending,
                State::waiting("ContainerCreating", ""),
                false,
            )
            .await
        {
            return;
        }
        let ip = self.shared.ips.lock().ok().and_then(|mut p| p.take());
        let Some(ip) = ip else {
            tracing::error!(pod = %self.name, "kubesim runtime: no free pod IP");
            return;
        };
        self.pod_ip = Some(ip);
        let Some(prepared) = self.prepare_until_ready(updates).await else {
            return;
        };
        loop {
            let ended = match self.run_container(&prepared, updates).await {
                Ok(ended) => ended,
                Err(err) => {
                    tracing::warn!(pod = %self.name, err = %format!("{err:#}"), "kubesim runtime: cannot start the container");
                    let message = format!("{err:#}");
                    self.changed_at = Timestamp::now();
                    let state = State::waiting("RunContainerError", &message);
                    self.write_status(Phase::Pending, state, false).await;
                    Ended::Exited {
                        code: 128,
                        started: Timestamp::now(),
                    }
                }
            };
            match ended {
                Ended::Gone => return,
                Ended::Deleted { code, started } => {
                    self.finish(code, Some(started)).await;
                    return;
                }
                Ended::Exited { code, started } => {
                    let exited = State::exited(code, Some(started), Timestamp::now());
                    self.changed_at = Timestamp::now();
                    if !self.restarts(code) {
                        let phase = if code == 0 {
                            Phase::Succeeded
                        } else {
                            Phase::Failed
                        };
                        self.write_status(phase, exited, false).await;
                        self.wait_deleted_then_remove(updates).await;
                        return;
                    }
                    self.restart_count += 1;
                    self.last_state = Some(exited);
                    let wait = crash_backoff(self.shared.config.crash_backoff, self.restart_count);
                    let message = format!(
                        "back-off {wait:?} restarting failed container={} pod={}",
                        self.container().map(|c| c.name).unwrap_or_default(),
                        self.name
                    );
                    let waiting = State::waiting("CrashLoopBackOff", &message);
                    if !self.write_status(Phase::Running, waiting, false).await {
                        return;
                    }
                    if !self.pause(wait, updates).await {
                        return;
                    }
                    if self.deleting().is_some() {
                        self.finish(code, None).await;
                        return;
                    }
                }
            }
        }
    }

    fn restarts(&self, code: i32) -> bool {
        match self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
        {
            Some("Never") => false,
            Some("OnFailure") => code != 0,
            _ => true,
        }
    }

    /// Waits `wait`, or less if the pod is deleted; `false` if it is gone.
    async fn pause(
        &mut self,
        wait: Duration,
        updates: &mut watch::Receiver<Option<Observed>>,
    ) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.deleting().is_some() {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                changed = updates.changed() => {
                    if changed.is_err() || !self.take_update(updates) {
                        return false;
                    }
                }
            }
        }
    }

    async fn wait_deleted_then_remove(&mut self, updates: &mut watch::Receiver<Option<Observed>>) {
        while self.deleting().is_none() {
            if updates.changed().await.is_err() || !self.take_update(updates) {
                return;
            }
        }
        self.perform(&Write::Delete {
            uid: self.uid.clone(),
        })
        .await;
    }

    /// The final status after a deletion, then the delete with grace period 0.
    async fn finish(&mut self, code: i32, started: Option<Timestamp>) {
        self.changed_at = Timestamp::now();
        let state = match started {
            Some(started) => State::exited(code, Some(started), Timestamp::now()),
            None => self
                .last_state
                .clone()
                .unwrap_or_else(|| State::exited(code, None, Timestamp::now())),
        };
        let phase = if code == 0 {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        if self.write_status(phase, state, false).await {
            self.perform(&Write::Delete {
                uid: self.uid.clone(),
            })
            .await;
        }
    }

    /// Prepares until it works, showing CreateContainerConfigError meanwhile; `None`
    /// if the pod is deleted or gone first.
    async fn prepare_until_ready(
        &mut self,
        updates: &mut watch::Receiver<Option<Observed>>,
    ) -> Option<Prepared> {
        let mut delay = Duration::from_millis(200);
        let mut shown = String::new();
        loop {
            if self.deleting().is_some() {
                self.finish(137, None).await;
                return None;
            }
            match self.prepare().await {
                Ok(prepared) => return Some(prepared),
                Err(NotYet::Config(ConfigError(message))) => {
                    if message != shown {
                        tracing::info!(pod = %self.name, %message, "kubesim runtime: container config not ready");
                        let state = State::waiting("CreateContainerConfigError", &message);
                        if !self.write_status(Phase::Pending, state, false).await {
                            return None;
                        }
                        shown = message;
                    }
                }
                Err(NotYet::Other(err)) => {
                    tracing::warn!(pod = %self.name, err = %format!("{err:#}"), "kubesim runtime: preparing the pod failed, retrying");
                }
            }
            let jitter = rand::random_range(0.8..1.2);
            if !self.pause(delay.mul_f64(jitter), updates).await {
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn fetch_sources(&self) -> Result<Sources, NotYet> {
        let client = self.shared.client.clone();
        let (maps, secrets) = volumes::referenced_objects(&self.pod);
        let mut sources = Sources {
            pod_ip: self.pod_ip.clone().unwrap_or_default(),
            host_ip: self.node.host_ip.clone(),
            ..Sources::default()
        };
        let map_api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        for name in maps {
            if let Some(map) = map_api.get_opt(&name).await? {
                let mut data = map.data.unwrap_or_default();
                for (k, v) in map.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                sources.config_maps.insert(name, data);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client, &self.namespace);
        for name in secrets {
            if let Some(secret) = secret_api.get_opt(&name).await? {
                let mut data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                sources.secrets.insert(name, data);
            }
        }
        Ok(sources)
    }

    /// Tokens bound to this pod from the TokenRequest API, by audience.
    async fn tokens(&self) -> Result<BTreeMap<String, String>, NotYet> {
        let account = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let mut tokens = BTreeMap::new();
        for audience in volumes::token_audiences(&self.pod) {
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    }),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(self.name.clone()),
                        uid: Some(self.uid.clone()),
                    }),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            };
            let answer = api
                .create_token_request(&account, &PostParams::default(), &request)
                .await?;
            let token = answer.status.and_then(|s| s.token).unwrap_or_default();
            tokens.insert(audience, token);
        }
        Ok(tokens)
    }

    /// The variables every container gets before its own `env`: PATH, HOSTNAME, the
    /// API server, and (with `enableServiceLinks`, the default) `<SVC>_SERVICE_HOST`
    /// and `_PORT` of the namespace's Services, pointing at a ready endpoint's pod IP.
    async fn base_env(&self) -> Result<Vec<(String, String)>, NotYet> {
        let (host, port) = (&self.shared.config.api_host, self.shared.config.api_port);
        let mut env = vec![
            ("PATH".to_string(), PATH.to_string()),
            ("HOSTNAME".to_string(), self.name.clone()),
            ("KUBERNETES_SERVICE_HOST".to_string(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                port.to_string(),
            ),
            (
                "KUBERNETES_PORT".to_string(),
                format!("tcp://{host}:{port}"),
            ),
        ];
        let links = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        if links {
            let api: Api<Service> = Api::namespaced(self.shared.client.clone(), &self.namespace);
            let services = self.shared.services.borrow().clone();
            for svc in api.list(&ListParams::default()).await? {
                let Some(name) = svc.metadata.name.clone() else {
                    continue;
                };
                // The kubelet never links the API server's own Service: the
                // KUBERNETES_SERVICE_* variables above point at it.
                if self.namespace == "default" && name == "kubernetes" {
                    continue;
                }
                let spec = svc.spec.unwrap_or_default();
                let ready = services
                    .get(&(self.namespace.clone(), name.clone()))
                    .and_then(|ips| ips.first().cloned());
                let Some(host) = ready.or(spec.cluster_ip) else {
                    continue;
                };
                let prefix = name.to_ascii_uppercase().replace('-', "_");
                if let Some(port) = spec.ports.iter().flatten().next() {
                    env.push((format!("{prefix}_SERVICE_HOST"), host));
                    env.push((format!("{prefix}_SERVICE_PORT"), port.port.to_string()));
                }
            }
        }
        Ok(env)
    }

    async fn prepare(&mut self) -> Result<Prepared, NotYet> {
        let container = self
            .container()
            .ok_or_else(|| ConfigError("the pod has no container".into()))?;
        let image = container.image.clone().unwrap_or_default();
        let mapping = self
            .shared
            .config
            .images
            .get(&image)
            .cloned()
            .ok_or_else(|| ConfigError(format!("image {image} is not mapped")))?;
        let sources = self.fetch_sources().await?;
        let tokens = self.tokens().await?;
        let layout = volumes::layout(
            &self.pod,
            &VolumeSources {
                objects: Some(&sources),
                tokens,
            },
        )?;
        let volume_dir = self.dir.join("volumes");
        for (name, content) in &layout {
            volumes::write(&volume_dir.join(name), content)?;
        }
        let base = self.base_env().await?;
        let mut env = expand::environment(&self.pod, &container, &sources, &base)?;
        let argv = expand::argv(&container, &mapping, &env)?;
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        env.push(("LD_PRELOAD".into(), SHIM_PATH.into()));
        env.push(("KUBESIM_POD_IP".into(), pod_ip.clone()));
        env.push((
            "KUBESIM_HOST_PORTS".into(),
            self.shared.config.api_port.to_string(),
        ));
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            if !layout.iter().any(|(name, _)| *name == m.name) {
                return Err(ConfigError(format!("volumeMount {}: no such volume", m.name)).into());
            }
            let mut source = volume_dir.join(&m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
            }
            mounts.push(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only == Some(true),
            });
        }
        let user = self.user(&container)?;
        let sc = container.security_context.clone().unwrap_or_default();
        let ports = container.ports.clone().unwrap_or_default();
        let spec_of = |p: &Option<k8s_openapi::api::core::v1::Probe>| -> Result<Option<ProbeSpec>, ConfigError> {
            p.as_ref().map(|p| probe::spec(p, &ports)).transpose()
        };
        let readiness = spec_of(&container.readiness_probe)?;
        let liveness = spec_of(&container.liveness_probe)?;
        let hosts = self.dir.join("hosts");
        let services = self.shared.services.borrow().clone();
        write_hosts(
            &hosts,
            &hosts::render(&pod_ip, &self.name, &self.namespace, &services),
        )?;
        let sandbox = Sandbox {
            hostname: self.name.clone(),
            read_only_root: sc.read_only_root_filesystem == Some(true),
            root_entries: self.shared.root_entries.clone(),
            etc_entries: self.shared.etc_entries.clone(),
            hosts: hosts.clone(),
            shim: self.shared.shim.clone(),
            binary: mapping.binary.clone(),
            mounts,
            user,
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            workdir: container.working_dir.clone(),
            env,
            argv,
        };
        Ok(Prepared {
            sandbox,
            log: self.dir.join(format!("{}.log", container.name)),
            hosts,
            readiness,
            liveness,
        })
    }

    /// uid, gid and supplementary groups from the container's and the pod's security
    /// context (the container's win). `runAsNonRoot` with uid 0 is refused.
    fn user(&self, container: &Container) -> Result<Option<(u32, u32, Vec<u32>)>, ConfigError> {
        let pod_sc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = container.security_context.clone().unwrap_or_default();
        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let uid = to_u32(sc.run_as_user.or(pod_sc.run_as_user));
        let gid = to_u32(sc.run_as_group.or(pod_sc.run_as_group));
        let mut groups: Vec<u32> = pod_sc
            .supplemental_groups
            .iter()
            .flatten()
            .filter_map(|g| u32::try_from(*g).ok())
            .collect();
        groups.extend(to_u32(pod_sc.fs_group));
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        if non_root && uid.unwrap_or(0) == 0 {
            return Err(ConfigError(
                "container has runAsNonRoot and image will run as root".into(),
            ));
        }
        if uid.is_none() && gid.is_none() && groups.is_empty() {
            return Ok(None);
        }
        Ok(Some((uid.unwrap_or(0), gid.unwrap_or(0), groups)))
    }

    /// One run of the container, until it exits, fails its liveness probe, or the pod
    /// is deleted.
    async fn run_container(
        &mut self,
        prepared: &Prepared,
        updates: &mut watch::Receiver<Option<Observed>>,
    ) -> anyhow::Result<Ended> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&prepared.log)?;
        writeln!(
            log,
            "kubesim: {} container (restart {}): {:?}",
            Timestamp::now(),
            self.restart_count,
            prepared.sandbox.argv
        )?;
        let mut process = Process::start(&prepared.sandbox, Some(&prepared.log)).await?;
        let mut exit = process.exit_receiver();
        let started = Timestamp::now();
        self.changed_at = started;
        let mut ready = prepared.readiness.is_none();
        let running = State::Running {
            started_at: started,
        };
        if !self
            .write_status(Phase::Running, running.clone(), ready)
            .await
        {
            process.kill();
            return Ok(Ended::Gone);
        }
        let begin = Instant::now();
        let far = begin + Duration::from_secs(365 * 24 * 3600);
        let first =
            |p: &Option<ProbeSpec>| p.as_ref().map(|p| begin + p.initial_delay).unwrap_or(far);
        let (mut next_ready, mut next_live) =
            (first(&prepared.readiness), first(&prepared.liveness));
        let (mut readiness, mut liveness) = (Tracker::readiness(), Tracker::liveness());
        let mut services = self.shared.services.clone();
        loop {
            if let Some(grace) = self.deleting() {
                let code = process.terminate(grace).await?;
                return Ok(Ended::Deleted { code, started });
            }
            tokio::select! {
                code = async { exit.wait_for(Option::is_some).await.ok().and_then(|c| *c) } => {
                    let code = code.unwrap_or(255);
                    return Ok(Ended::Exited { code, started });
                }
                changed = updates.changed() => {
                    if changed.is_err() || !self.take_update(updates) {
                        process.kill();
                        let _ = tokio::time::timeout(Duration::from_secs(10), process.wait()).await;
                        return Ok(Ended::Gone);
                    }
                }
                changed = services.changed() => {
                    if changed.is_ok() {
                        let now: Arc<ServiceIps> = services.borrow_and_update().clone();
                        let ip = self.pod_ip.clone().unwrap_or_default();
                        write_hosts(&prepared.hosts, &hosts::render(&ip, &self.name, &self.namespace, &now))?;
                    }
                }
                () = tokio::time::sleep_until(next_ready) => {
                    let Some(spec) = &prepared.readiness else { next_ready = far; continue };
                    let ok = self.probe(spec, &prepared.sandbox).await;
                    next_ready = Instant::now() + spec.period;
                    if readiness.observe(ok, spec) {
                        ready = readiness.ok;
                        self.changed_at = Timestamp::now();
                        if !self.write_status(Phase::Running, running.clone(), ready).await {
                            process.kill();
                            return Ok(Ended::Gone);
                        }
                    }
                }
                () = tokio::time::sleep_until(next_live) => {
                    let Some(spec) = &prepared.liveness else { next_live = far; continue };
                    let ok = self.probe(spec, &prepared.sandbox).await;
                    next_live = Instant::now() + spec.period;
                    if liveness.observe(ok, spec) && !liveness.ok {
                        tracing::info!(pod = %self.name, "kubesim runtime: liveness probe failed, restarting the container");
                        let grace = self.termination_grace();
                        let code = process.terminate(grace).await?;
                        return Ok(Ended::Exited { code, started });
                    }
                }
            }
        }
    }

    /// `terminationGracePeriodSeconds` (30 by default).
    fn termination_grace(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30);
        Duration::from_secs(seconds)
    }

    /// One probe attempt.
    async fn probe(&self, spec: &ProbeSpec, sandbox: &Sandbox) -> bool {
        let ip = self.pod_ip.clone().unwrap_or_default();
        match &spec.check {
            Check::Http {
                port,
                path,
                headers,
            } => probe::http_get(&ip, *port, path, headers, spec.timeout).await,
            Check::Tcp { port } => probe::tcp_open(&ip, *port, spec.timeout).await,
            Check::Exec { command } => {
                let mut exec = sandbox.clone();
                exec.argv = command.clone();
                let Ok(mut process) = Process::start(&exec, None).await else {
                    return false;
                };
                match tokio::time::timeout(spec.timeout, process.wait()).await {
                    Ok(code) => code == 0,
                    Err(_) => false,
                }
            }
        }
    }
}

/// Rewrites the hosts file in place (a bind mount follows the inode, not the name):
/// the new text over the old, then the length cut.
fn write_hosts(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
