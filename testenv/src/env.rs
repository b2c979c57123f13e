//! [`TestEnv`]: a control plane plus kubesim, and the per-test-binary shared one.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use kube::core::ObjectMeta;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::controlplane::{ControlPlane, ControlPlaneOptions};
use crate::kubesim;

/// How a [`TestEnv`] is started.
#[derive(Debug, Clone, Default)]
pub struct TestEnvOptions {
    /// etcd + kube-apiserver.
    pub control_plane: ControlPlaneOptions,
    /// The simulator.
    pub kubesim: kubesim::Options,
    /// Images whose pods kubesim runs as real processes (added to
    /// `kubesim.images`); the runtime's pod directories go to `pods/` in the control
    /// plane's directory, and pods reach the API server at 127.0.0.1.
    pub images: kubesim::runtime::ImageMap,
}

/// A real control plane (etcd, kube-apiserver, kube-scheduler,
/// kube-controller-manager) with kubesim as the kubelet of its nodes.
///
/// Most tests want [`shared`]. A `TestEnv` of your own from [`TestEnv::start`] runs
/// kubesim on the runtime that started it and is torn down on drop (servers killed)
/// or, gracefully, by [`TestEnv::stop`].
#[derive(Debug)]
pub struct TestEnv {
    control_plane: ControlPlane,
    kubesim: KubesimTask,
    kubesim_handle: kubesim::Handle,
}

/// The kubesim task; stopped when dropped.
#[derive(Debug)]
struct KubesimTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Drop for KubesimTask {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

impl TestEnv {
    /// Starts a control plane and kubesim (on the current tokio runtime) and waits
    /// until the apiserver is ready, the scheduler and controller-manager are healthy,
    /// and kubesim's nodes are Ready without taints (so pods can be scheduled).
    pub async fn start(opts: TestEnvOptions) -> Result<TestEnv> {
        let control_plane = ControlPlane::start(opts.control_plane).await?;
        let client = control_plane.client()?;
        let mut sim_opts = opts.kubesim;
        sim_opts.images.extend(opts.images);
        if !sim_opts.images.is_empty() {
            sim_opts
                .runtime_dir
                .get_or_insert_with(|| control_plane.dir().join("pods"));
            let port = control_plane
                .server_url()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .context("the apiserver URL has no port")?;
            sim_opts
                .api_server
                .get_or_insert_with(|| ("127.0.0.1".to_string(), port));
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let (kubesim_handle, commands) = kubesim::Handle::new();
        let handle = tokio::spawn(kubesim::run_notify(
            client.clone(),
            sim_opts,
            shutdown,
            Some(ready_tx),
            commands,
        ));
        let mut kubesim = KubesimTask {
            stop: Some(stop_tx),
            handle: Some(handle),
        };
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // kubesim ended before it was ready: report why.
                let err = match kubesim.handle.take() {
                    Some(handle) => match handle.await {
                        Ok(Err(err)) => err,
                        Ok(Ok(())) => anyhow!("kubesim stopped before it was ready"),
                        Err(join) => anyhow!("kubesim panicked: {join}"),
                    },
                    None => anyhow!("kubesim is gone"),
                };
                return Err(err.context("kubesim did not start"));
            }
            Err(_) => return Err(anyhow!("kubesim did not register its nodes within 30s")),
        }
        let names = kubesim_handle.node_names().await?;
        // Pods in `default` (scripts/demo.sh, `testenv up`) need its ServiceAccount.
        ensure_default_account(client.clone(), "default").await?;
        wait_nodes_schedulable(&client, &names, Duration::from_secs(60)).await?;
        Ok(TestEnv {
            control_plane,
            kubesim,
            kubesim_handle,
        })
    }

    /// Stops kubesim, then kube-apiserver and etcd (SIGTERM, then SIGKILL after a
    /// grace period).
    pub async fn stop(self) -> Result<()> {
        let TestEnv {
            mut control_plane,
            mut kubesim,
            kubesim_handle: _,
        } = self;
        if let Some(stop) = kubesim.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = kubesim.handle.take() {
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Ok(Ok(result)) => result.context("kubesim failed")?,
                Ok(Err(join)) => return Err(anyhow!("kubesim panicked: {join}")),
                Err(_) => tracing::warn!("kubesim did not stop within 10s"),
            }
        }
        tokio::task::spawn_blocking(move || control_plane.stop())
            .await
            .context("stopping the control plane panicked")
    }

    /// A NEW kube client for the admin user. Call it inside the runtime that uses the
    /// client (each test has its own runtime and a client must not outlive the one it
    /// was made in). Panics only if the generated configuration cannot make a client.
    pub fn client(&self) -> kube::Client {
        match self.control_plane.client() {
            Ok(client) => client,
            Err(err) => panic!("testenv: {err:#}"),
        }
    }

    /// The kube-rs configuration behind [`TestEnv::client`].
    pub fn config(&self) -> kube::Config {
        self.control_plane.config().clone()
    }

    /// Path of a kubeconfig for the admin user (for kubectl or a child process).
    pub fn kubeconfig_path(&self) -> &Path {
        self.control_plane.kubeconfig_path()
    }

    /// Writes a kubeconfig for this API server that authenticates with `token` (a
    /// ServiceAccount's, say) and defaults to `namespace`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        token: &str,
        namespace: &str,
    ) -> anyhow::Result<()> {
        self.control_plane.write_kubeconfig(path, token, namespace)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        self.control_plane.server_url()
    }

    /// Bearer token of the admin user (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        self.control_plane.admin_token()
    }

    /// Directory with etcd, kube-apiserver and kubectl.
    pub fn binaries_dir(&self) -> &Path {
        self.control_plane.binaries_dir()
    }

    /// Controls kubesim: stop or resume a node's heartbeats, add or label nodes.
    pub fn kubesim(&self) -> &kubesim::Handle {
        &self.kubesim_handle
    }

    /// The control plane itself (pids, log directory, startup time).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The control plane, to restart its apiserver
    /// ([`ControlPlane::restart_apiserver`]); only for an environment of your own.
    pub fn control_plane_mut(&mut self) -> &mut ControlPlane {
        &mut self.control_plane
    }

    /// Creates a fresh namespace `<prefix>-<random>` (with a `default`
    /// ServiceAccount, created here rather than waiting for the controller-manager) and
    /// returns its name. Namespaces are never deleted; everything goes away with the
    /// control plane. Panics if the apiserver refuses.
    pub async fn namespace(&self, prefix: &str) -> String {
        match self.try_namespace(prefix).await {
            Ok(name) => name,
            Err(err) => panic!("testenv: cannot create a namespace for {prefix:?}: {err:#}"),
        }
    }

    /// [`TestEnv::namespace`] returning errors instead of panicking.
    pub async fn try_namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client();
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("cannot create namespace {name}"))?;
        ensure_default_account(client, &name).await?;
        Ok(name)
    }

    /// [`crate::pods_summary`] of `namespace`, with a fresh client.
    pub async fn pods_summary(&self, namespace: &str) -> String {
        crate::pods::pods_summary(self.client(), namespace).await
    }
}

/// Creates the `default` ServiceAccount of `namespace` unless it exists, rather than
/// waiting for the controller-manager: the ServiceAccount admission plugin refuses pods
/// without it.
async fn ensure_default_account(client: kube::Client, namespace: &str) -> Result<()> {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match Api::<ServiceAccount>::namespaced(client, namespace)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create {namespace}/default SA")),
    }
}

/// Waits until every node in `names` is Ready and has no taints: the apiserver taints
/// new nodes `not-ready:NoSchedule` and the node lifecycle controller removes the
/// taint once it sees them Ready.
pub async fn wait_nodes_schedulable(
    client: &kube::Client,
    names: &[String],
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for name in names {
            let node = api
                .get(name)
                .await
                .with_context(|| format!("get node {name}"))?;
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if !ready || !taints.is_empty() {
                let taints: Vec<String> = taints.iter().map(|t| t.key.clone()).collect();
                waiting.push(format!("{name} (ready: {ready}, taints: {taints:?})"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(anyhow!(
                "nodes not schedulable after {timeout:?}: {}",
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `<prefix>-<8 hex>`, with the prefix reduced to a valid DNS label.
fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(50);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}-{:08x}", rand::random::<u32>())
}

/// The test environment shared by all tests of one test binary, started on first use.
///
/// It lives on its own thread with its own tokio runtime (where kubesim runs), so it
/// works from `#[tokio::test]`, `#[actix_rt::test]` and plain `#[test]` alike. Its
/// servers die with the test binary (PDEATHSIG), also when a test panics or the
/// binary is killed. Panics if the environment cannot start; every test that calls
/// it then fails with the same message (the start is not retried).
pub fn shared() -> &'static TestEnv {
    match SHARED.get_or_init(|| start_static(TestEnvOptions::default())) {
        Ok(env) => env,
        Err(err) => panic!("testenv: cannot start the shared test environment: {err}"),
    }
}

static SHARED: OnceLock<Result<&'static TestEnv, String>> = OnceLock::new();

/// Every environment of [`start_static`], killed at exit.
static STATIC_ENVS: std::sync::Mutex<Vec<&'static TestEnv>> = std::sync::Mutex::new(Vec::new());

/// Runs at normal process exit (the test harness ends with `exit`): kills the servers
/// of every [`start_static`] environment and removes their directories (etcd
/// preallocates ~100 MB of WAL). Abnormal exits are covered by PDEATHSIG and the
/// sweep of stale directories.
extern "C" fn clean_up_static() {
    if let Ok(envs) = STATIC_ENVS.lock() {
        for env in envs.iter() {
            env.control_plane.kill_at_exit();
        }
    }
}

/// A [`TestEnv`] with `opts` that lives as long as the process, started like
/// [`shared`] on a thread of its own with its own tokio runtime, and cleaned up at
/// exit like it. For a test binary that needs options of its own (image mappings,
/// say): call it once and keep the result in a `OnceLock`.
pub fn start_static(opts: TestEnvOptions) -> Result<&'static TestEnv, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("testenv-shared".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = tx.send(Err(format!("cannot build a tokio runtime: {err}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = Instant::now();
                match TestEnv::start(opts).await {
                    Ok(env) => {
                        eprintln!(
                            "testenv: shared control plane at {} ready in {:.1?} (kubesim up after {:.1?})",
                            env.server_url(),
                            env.control_plane.startup_time(),
                            started.elapsed()
                        );
                        let env: &'static TestEnv = Box::leak(Box::new(env));
                        let _ = tx.send(Ok(env));
                        // Keep the runtime, and with it kubesim, alive until exit.
                        std::future::pending::<()>().await;
                    }
                    Err(err) => {
                        let _ = tx.send(Err(format!("{err:#}")));
                    }
                }
            });
        });
    if let Err(err) = thread {
        return Err(format!("cannot start the testenv thread: {err}"));
    }
    let env = rx
        .recv()
        .map_err(|_| "the testenv thread ended without starting".to_string())??;
    let mut envs = STATIC_ENVS
        .lock()
        .map_err(|_| "the testenv registry is poisoned".to_string())?;
    if envs.is_empty() {
        // SAFETY: registers a plain function; it only reads a static.
        unsafe {
            libc::atexit(clean_up_static);
        }
    }
    envs.push(env);
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn namespace_names_are_valid_dns_labels() {
        let name = unique_name("My_Test::Case");
        assert!(name.starts_with("my-test--case-"), "{name}");
        assert!(name.len() <= 63);
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert!(unique_name("--").starts_with("test-"));
    }
}
