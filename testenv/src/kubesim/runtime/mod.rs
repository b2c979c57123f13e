//! kubesim's process runtime: pods of mapped images run for real.
//!
//! A pod whose one container uses an image of [`ImageMap`] is not simulated: its
//! container runs as a host process in a bubblewrap sandbox ([`sandbox`]) with the
//! pod's environment ([`expand`]), volumes ([`volumes`], including the projected
//! ServiceAccount token from the TokenRequest API), user, read-only root, a pod IP of
//! its own in 127.99.0.0/16 (binds and loopback connects moved there by an
//! LD_PRELOAD shim, `kubesim-net.c`), Service names in its hosts file ([`hosts`]) and
//! its probes ([`probe`]). Its status is what a kubelet would write: Running, ready
//! when the readiness probe says so, the real exit code, restarts with
//! CrashLoopBackOff, and on deletion SIGTERM, the grace period, SIGKILL.
//!
//! Logs: `<dir>/<namespace>_<pod>_<uid>/<container>.log`, where `<dir>` is
//! [`super::Options::runtime_dir`] (`pods/` in the control plane's directory).

pub mod expand;
mod hosts;
pub mod image;
mod pod;
pub mod probe;
mod process;
pub mod sandbox;
pub mod volumes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use image::{ImageMap, ImageMapping, parse_mapping};

use super::nodes::SimNode;
use hosts::ServiceIps;
use sandbox::HostEntry;

/// The shim's C source, compiled with the host's `cc` when the runtime starts.
const SHIM_SOURCE: &str = include_str!("kubesim-net.c");

/// Where and how the runtime runs, besides the image map.
#[derive(Debug, Clone)]
pub struct Config {
    /// Images run for real.
    pub images: ImageMap,
    /// Pod directories (volumes, hosts file, logs).
    pub dir: PathBuf,
    /// The API server as pods reach it: `KUBERNETES_SERVICE_HOST`/`_PORT`.
    pub api_host: String,
    /// Its port.
    pub api_port: u16,
    /// First crash-loop back-off.
    pub crash_backoff: Duration,
}

/// What every pod task shares.
pub(crate) struct Shared {
    client: Client,
    config: Config,
    shim: PathBuf,
    root_entries: Vec<(String, HostEntry)>,
    etc_entries: Vec<(String, HostEntry)>,
    ips: Mutex<IpPool>,
    services: watch::Receiver<Arc<ServiceIps>>,
}

/// Pod IPs of real pods: 127.99.x.y, the lowest free one first, unique among running
/// pods (simulated pods get 127.101+ addresses, nodes 127.100.0.x).
#[derive(Debug, Default)]
pub struct IpPool {
    used: BTreeSet<u32>,
}

impl IpPool {
    /// Number of addresses (127.99.0.1 - 127.99.255.254 without .0 and .255).
    const SIZE: u32 = 254 * 256;

    /// A free address, or `None` when all are taken.
    pub fn take(&mut self) -> Option<String> {
        let n = (0..Self::SIZE).find(|n| !self.used.contains(n))?;
        self.used.insert(n);
        Some(format!("127.99.{}.{}", n / 254, n % 254 + 1))
    }

    /// Returns an address.
    pub fn give_back(&mut self, ip: &str) {
        let parts: Vec<u32> = ip.split('.').filter_map(|p| p.parse().ok()).collect();
        if let [127, 99, hi, lo] = parts[..]
            && (1..=254).contains(&lo)
        {
            self.used.remove(&(hi * 254 + lo - 1));
        }
    }
}

/// A pod as the event loop last saw it, with the kubesim node it is bound to.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub pod: Pod,
    pub node: Option<SimNode>,
    /// The pod is bound to a node that is not kubesim's.
    pub foreign: bool,
}

/// One real pod: the channel its task reads updates from (`None`: deleted).
struct Entry {
    uid: String,
    updates: watch::Sender<Option<Observed>>,
    task: JoinHandle<()>,
}

/// The runtime inside kubesim's event loop.
pub(crate) struct Runtime {
    shared: Arc<Shared>,
    pods: HashMap<String, Entry>,
    hosts_task: JoinHandle<()>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("pods", &self.pods.len())
            .finish()
    }
}

/// Compiles the shim into `dir` and returns its path.
fn build_shim(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let source = dir.join("kubesim-net.c");
    let shim = dir.join("kubesim-net.so");
    std::fs::write(&source, SHIM_SOURCE).context("cannot write the shim source")?;
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .output()
        .context("cannot run cc (needed to build kubesim's network shim)")?;
    if !out.status.success() {
        bail!(
            "cc failed to build the network shim: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(shim)
}

/// Checks that bwrap and setpriv are there, so a missing tool fails at start.
fn check_tools() -> Result<()> {
    for (tool, package) in [("bwrap", "bubblewrap"), ("setpriv", "util-linux")] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!(
                "kubesim's runtime needs {tool} (Debian package {package}; scripts/install-deps.sh)"
            );
        }
    }
    Ok(())
}

impl Runtime {
    /// Builds the shim and starts the EndpointSlice watch. Blocking work (cc) runs on
    /// the blocking pool.
    pub async fn start(client: Client, config: Config) -> Result<Runtime> {
        let dir = config.dir.clone();
        let shim = tokio::task::spawn_blocking(move || {
            check_tools()?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            build_shim(&dir.join(".kubesim"))
        })
        .await
        .context("building the shim panicked")??;
        let (publish, services) = watch::channel(Arc::new(ServiceIps::new()));
        let hosts_task = tokio::spawn(hosts::watch_services(client.clone(), publish));
        let shared = Arc::new(Shared {
            client,
            config,
            shim,
            root_entries: sandbox::host_entries(Path::new("/"), Some(&sandbox::ROOT_NAMES)),
            etc_entries: sandbox::host_entries(Path::new("/etc"), None),
            ips: Mutex::new(IpPool::default()),
            services,
        });
        Ok(Runtime {
            shared,
            pods: HashMap::new(),
            hosts_task,
        })
    }

    /// Whether `pod` is run for real: exactly one container, no init containers, and
    /// its image mapped.
    pub fn handles(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return false;
        };
        let init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        match spec.containers.as_slice() {
            [only] if !init => only
                .image
                .as_deref()
                .is_some_and(|image| self.shared.config.images.contains_key(image)),
            _ => false,
        }
    }

    /// A new or changed pod.
    pub fn apply(&mut self, key: &str, observed: Observed) {
        let uid = observed.pod.metadata.uid.clone().unwrap_or_default();
        if let Some(entry) = self.pods.get(key) {
            if entry.uid == uid {
                let _ = entry.updates.send(Some(observed));
                return;
            }
            self.delete(key);
        }
        let (updates, rx) = watch::channel(Some(observed));
        let task = tokio::spawn(pod::run(self.shared.clone(), rx));
        self.pods
            .insert(key.to_string(), Entry { uid, updates, task });
    }

    /// The pod is gone from the API: its task kills the processes and ends.
    pub fn delete(&mut self, key: &str) {
        if let Some(entry) = self.pods.remove(key) {
            let _ = entry.updates.send(None);
            // The task ends by itself; it is not aborted so it can reap its sandbox.
            drop(entry.task);
        }
    }

    /// After a relist: forgets the pods not in `seen`.
    pub fn retain(&mut self, seen: &HashSet<String>) {
        for key in super::keys_not_in(&self.pods, seen) {
            self.delete(&key);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.hosts_task.abort();
        for entry in self.pods.values() {
            // Dropping the task's future drops its Process, which SIGKILLs the sandbox.
            entry.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_unique_while_in_use_and_reused_after() {
        let mut pool = IpPool::default();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("127.99.0.1", "127.99.0.2"));
        pool.give_back(&a);
        assert_eq!(pool.take().unwrap(), "127.99.0.1");
        for _ in 0..300 {
            pool.take().unwrap();
        }
        let ip = pool.take().unwrap();
        let parts: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts[..2], [127, 99]);
        assert!((1..=254).contains(&parts[3]), "{ip}");
    }
}
