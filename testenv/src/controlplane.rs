//! A real control plane on loopback: etcd, kube-apiserver, kube-scheduler and
//! kube-controller-manager, like a one-machine cluster without kubelets.
//!
//! The scheduler and controller-manager authenticate with client certificates signed
//! by the test CA (CN `system:kube-scheduler`, `system:kube-controller-manager`), so the
//! default RBAC bootstrap roles apply as in a real cluster. The controller-manager runs
//! its default controllers (garbage collector, namespace, node lifecycle with
//! taint-based eviction, ServiceAccount, ...) with test-speed settings: nodes whose
//! heartbeats stop are NotReady after [`NODE_MONITOR_GRACE`], and pods tolerate
//! `not-ready`/`unreachable` for [`DEFAULT_TOLERATION_SECONDS`] only. The
//! ServiceAccount admission plugin is on, as in a real cluster: pods get the projected
//! `kube-api-access-*` volume (token, `kube-root-ca.crt` published by the
//! controller-manager's `--root-ca-file`, namespace), and a pod whose ServiceAccount
//! does not exist is refused. Kubelet behaviour comes from [`crate::kubesim`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::binaries;
use crate::certs;
use crate::kubeconfig;
use crate::ports::free_port;
use crate::process::ManagedChild;
use crate::workdir::WorkDir;

/// How a [`ControlPlane`] is started.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Directory for data, certificates, logs and the kubeconfig; a temporary one
    /// (removed on drop) when `None`. etcd's data in it is wiped on start.
    pub dir: Option<PathBuf>,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// Directory with the binaries; located via [`binaries::binaries_dir`] if `None`.
    pub binaries_dir: Option<PathBuf>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            dir: None,
            ready_timeout: Duration::from_secs(90),
            binaries_dir: None,
        }
    }
}

/// A running etcd + kube-apiserver. Dropping it kills both (SIGKILL); [`stop`]
/// shuts them down gracefully. Both also die with the process (PDEATHSIG).
///
/// [`stop`]: ControlPlane::stop
#[derive(Debug)]
pub struct ControlPlane {
    // Field order matters: the servers are killed before the directory is removed.
    loops: ControlLoops,
    apiserver: ManagedChild,
    etcd: ManagedChild,
    /// How the apiserver was started, so it can be started again alone.
    apiserver_cmd: ApiserverCommand,
    server_url: String,
    token: String,
    kubeconfig: PathBuf,
    binaries: PathBuf,
    config: kube::Config,
    startup: Duration,
    dir: WorkDir,
}

/// The certificates' directory inside the control plane's directory.
const CERTS_DIR: &str = "certs";

/// How long a node may go without a heartbeat before the node lifecycle controller
/// marks it NotReady (`--node-monitor-grace-period`; 50 s in a real cluster).
pub const NODE_MONITOR_GRACE: Duration = Duration::from_secs(15);

/// How long pods tolerate the `not-ready`/`unreachable` NoExecute taints by default
/// before the taint manager evicts them (300 s in a real cluster).
pub const DEFAULT_TOLERATION_SECONDS: u32 = 3;

/// kube-scheduler and kube-controller-manager.
#[derive(Debug)]
struct ControlLoops {
    scheduler: ManagedChild,
    controller_manager: ManagedChild,
    /// Secure ports of (scheduler, controller-manager).
    ports: (u16, u16),
}

/// Attempts before giving up; a retry uses new ports (a port picked as free may be
/// taken by someone else before the server binds it).
const ATTEMPTS: usize = 3;

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready.
    pub async fn start(opts: ControlPlaneOptions) -> Result<ControlPlane> {
        let binaries = match &opts.binaries_dir {
            Some(dir) => dir.clone(),
            None => tokio::task::spawn_blocking(binaries::binaries_dir)
                .await
                .context("binaries lookup panicked")??,
        };
        let dir = match &opts.dir {
            Some(dir) => WorkDir::existing(dir)?,
            None => WorkDir::temp("controlplane")?,
        };
        let mut last_err = None;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start(&binaries, dir.path(), opts.ready_timeout).await {
                Ok((parts, loops)) => return Ok(parts.assemble(loops, binaries, dir)),
                Err(StartError::Fatal(err)) => return Err(err),
                Err(StartError::Retry(err)) => {
                    eprintln!("testenv: control plane start attempt {attempt} failed: {err:#}");
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("control plane did not start")))
    }

    async fn try_start(
        bin: &Path,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(Parts, ControlLoops), StartError> {
        let started = Instant::now();
        let certs_dir = dir.join(CERTS_DIR);
        let logs = dir.join("logs");
        let etcd_data = dir.join("etcd-data");
        let setup = || -> Result<_> {
            std::fs::create_dir_all(&logs).context("cannot create logs dir")?;
            if etcd_data.exists() {
                std::fs::remove_dir_all(&etcd_data).context("cannot wipe old etcd data")?;
            }
            let certs = certs::generate(&certs_dir)?;
            let token = format!("{:032x}", rand::random::<u128>());
            let tokens = dir.join("tokens.csv");
            std::fs::write(&tokens, format!("{token},admin,admin,\"system:masters\"\n"))
                .context("cannot write token file")?;
            Ok((certs, token, tokens))
        };
        let (certs, token, tokens) = setup().map_err(StartError::Fatal)?;

        let (etcd_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(bin.join("etcd"));
        etcd_cmd.args([
            "--name=testenv".to_string(),
            format!("--data-dir={}", etcd_data.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            // Test data is disposable: skipping fsync makes etcd much faster on CI disks.
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ]);
        let etcd = ManagedChild::start("etcd", etcd_cmd, &logs.join("etcd.log"))?;

        let server_url = format!("https://127.0.0.1:{secure_port}");
        let mut api_cmd = Command::new(bin.join("kube-apiserver"));
        api_cmd.args([
            format!("--etcd-servers={client_url}"),
            format!("--cert-dir={}", certs_dir.display()),
            format!("--tls-cert-file={}", certs.serving_cert.display()),
            format!("--tls-private-key-file={}", certs.serving_key.display()),
            format!("--secure-port={secure_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!(
                "--service-account-key-file={}",
                certs.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                certs.service_account_key.display()
            ),
            format!("--token-auth-file={}", tokens.display()),
            format!("--client-ca-file={}", certs.ca_cert.display()),
            "--authorization-mode=RBAC".to_string(),
            format!("--default-not-ready-toleration-seconds={DEFAULT_TOLERATION_SECONDS}"),
            format!("--default-unreachable-toleration-seconds={DEFAULT_TOLERATION_SECONDS}"),
            "--allow-privileged=true".to_string(),
            // The endpoints of the `kubernetes` Service may not be a loopback address,
            // so the reconciler would log an error every few seconds.
            "--endpoint-reconciler-type=none".to_string(),
            "--profiling=false".to_string(),
        ]);
        // For a diagnosis (a verbose log, pprof): extra flags, appended last so they win.
        api_cmd.args(extra_apiserver_flags());
        let apiserver_cmd = ApiserverCommand {
            program: bin.join("kube-apiserver"),
            args: api_cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            log: logs.join("kube-apiserver.log"),
        };
        let apiserver = ManagedChild::start("kube-apiserver", api_cmd, &apiserver_cmd.log)?;

        // The kubeconfig gets its final name only once the apiserver is ready, so
        // whoever waits for the file (a script around `testenv up`) can use it at once.
        let kubeconfig_path = dir.join("kubeconfig");
        let partial = dir.join(".kubeconfig.partial");
        kubeconfig::write(&partial, &server_url, &certs.ca_cert, &token, "default")
            .map_err(StartError::Fatal)?;
        let config = kubeconfig::load(&partial)
            .await
            .map_err(StartError::Fatal)?;
        let mut parts = Parts {
            loops: None,
            apiserver,
            etcd,
            apiserver_cmd,
            server_url,
            token,
            kubeconfig: kubeconfig_path,
            config,
            startup: Duration::ZERO,
        };
        parts.wait_ready(started, timeout).await?;
        let loops = start_control_loops(bin, dir, &certs, &parts.server_url, &logs)?;
        let loops = parts.loops.insert(loops);
        wait_healthy(&parts.config, loops, started, timeout).await?;
        parts.startup = started.elapsed();
        std::fs::rename(&partial, &parts.kubeconfig)
            .with_context(|| format!("cannot write {}", parts.kubeconfig.display()))
            .map_err(StartError::Fatal)?;
        let loops = parts
            .loops
            .take()
            .context("control loops missing")
            .map_err(StartError::Fatal)?;
        Ok((parts, loops))
    }

    /// Stops the scheduler and controller-manager, then kube-apiserver, then etcd, each
    /// with SIGTERM and a grace period.
    pub fn stop(&mut self) {
        self.loops.scheduler.stop(Duration::from_secs(10));
        self.loops.controller_manager.stop(Duration::from_secs(10));
        self.apiserver.stop(Duration::from_secs(15));
        self.etcd.stop(Duration::from_secs(10));
    }

    /// SIGKILLs both servers and removes the working directory if it is temporary;
    /// for a process that is about to exit (the shared instance is never dropped).
    pub(crate) fn kill_at_exit(&self) {
        self.loops.scheduler.kill_now();
        self.loops.controller_manager.kill_now();
        self.apiserver.kill_now();
        self.etcd.kill_now();
        self.dir.remove_now();
    }

    /// `https://127.0.0.1:PORT` of the apiserver.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Bearer token of a user in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The kubeconfig file (CA-verified TLS, admin token).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig for this API server (CA-verified TLS) that authenticates with
    /// `token` (a ServiceAccount's, say) and defaults to `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        let ca_cert = self.dir.path().join(CERTS_DIR).join(certs::CA_CERT_FILE);
        kubeconfig::write(path, &self.server_url, &ca_cert, token, namespace)
    }

    /// Directory with etcd, kube-apiserver, kube-scheduler, kube-controller-manager
    /// and kubectl.
    pub fn binaries_dir(&self) -> &Path {
        &self.binaries
    }

    /// The working directory (certs/, logs/, etcd-data/, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// kube-rs configuration for the admin user.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A new client. Create one per tokio runtime: a client must not outlive the
    /// runtime it first ran on.
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config.clone()).context("cannot build kube client")
    }

    /// Time from spawning etcd to a ready apiserver with a healthy scheduler and
    /// controller-manager.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Pids of (etcd, kube-apiserver).
    pub fn pids(&self) -> (u32, u32) {
        (self.etcd.pid(), self.apiserver.pid())
    }

    /// Pids of (kube-scheduler, kube-controller-manager).
    pub fn control_loop_pids(&self) -> (u32, u32) {
        (
            self.loops.scheduler.pid(),
            self.loops.controller_manager.pid(),
        )
    }

    /// Stops only kube-apiserver: SIGKILL (a crash) with `graceful == false`, else
    /// SIGTERM and up to 15 s to drain (it stops listening at once, but with watches
    /// open it takes the whole 15 s before it exits). etcd keeps running with all the
    /// data. Blocks until the process is gone.
    pub fn stop_apiserver(&mut self, graceful: bool) {
        if graceful {
            self.apiserver.stop(Duration::from_secs(15));
        } else {
            self.apiserver.kill();
        }
    }

    /// Starts kube-apiserver again with the same flags, so on the same port with the
    /// same certificates, token and etcd, and waits for `/readyz`. Returns how long it
    /// took to be ready. Does nothing but wait if it is running already.
    pub async fn start_apiserver(&mut self) -> Result<Duration> {
        let started = Instant::now();
        if self.apiserver.try_exited().is_some() {
            let ApiserverCommand { program, args, log } = &self.apiserver_cmd;
            let mut command = Command::new(program);
            command.args(args);
            self.apiserver = ManagedChild::start("kube-apiserver", command, log)?;
        }
        let timeout = Duration::from_secs(90);
        match wait_ready(
            &self.config,
            &mut self.etcd,
            &mut self.apiserver,
            started,
            timeout,
        )
        .await
        {
            Ok(()) => Ok(started.elapsed()),
            Err(StartError::Retry(err) | StartError::Fatal(err)) => {
                Err(err.context("kube-apiserver did not come back"))
            }
        }
    }

    /// [`stop_apiserver`](ControlPlane::stop_apiserver), then
    /// [`start_apiserver`](ControlPlane::start_apiserver): an apiserver restart on the
    /// same port and etcd, as in a control-plane upgrade or crash.
    pub async fn restart_apiserver(&mut self, graceful: bool) -> Result<Duration> {
        self.stop_apiserver(graceful);
        self.start_apiserver().await
    }
}

/// Program, flags and log file of kube-apiserver (a `Command` cannot be cloned).
#[derive(Debug, Clone)]
struct ApiserverCommand {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// Why one start attempt failed: a retry with new ports may help, or not.
enum StartError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(err: anyhow::Error) -> Self {
        StartError::Retry(err)
    }
}

/// The servers of one successful attempt, before they get their directory.
struct Parts {
    loops: Option<ControlLoops>,
    apiserver: ManagedChild,
    etcd: ManagedChild,
    apiserver_cmd: ApiserverCommand,
    server_url: String,
    token: String,
    kubeconfig: PathBuf,
    config: kube::Config,
    startup: Duration,
}

impl Parts {
    fn assemble(self, loops: ControlLoops, binaries: PathBuf, dir: WorkDir) -> ControlPlane {
        ControlPlane {
            loops,
            apiserver: self.apiserver,
            etcd: self.etcd,
            apiserver_cmd: self.apiserver_cmd,
            server_url: self.server_url,
            token: self.token,
            kubeconfig: self.kubeconfig,
            binaries,
            config: self.config,
            startup: self.startup,
            dir,
        }
    }

    async fn wait_ready(&mut self, started: Instant, timeout: Duration) -> Result<(), StartError> {
        wait_ready(
            &self.config,
            &mut self.etcd,
            &mut self.apiserver,
            started,
            timeout,
        )
        .await
    }
}

/// Polls `/readyz` every 200 ms until it answers `ok`, a server exits, or the timeout
/// passes; errors quote the tail of the server logs.
async fn wait_ready(
    config: &kube::Config,
    etcd: &mut ManagedChild,
    apiserver: &mut ManagedChild,
    started: Instant,
    timeout: Duration,
) -> Result<(), StartError> {
    let client = kube::Client::try_from(config.clone())
        .context("cannot build kube client")
        .map_err(StartError::Fatal)?;
    let mut last_report = Instant::now();
    let mut last_answer;
    loop {
        if let Some(status) = etcd.try_exited() {
            return Err(StartError::Retry(anyhow::anyhow!(
                "etcd exited ({status}) before the apiserver was ready; etcd log tail:\n{}",
                etcd.log_tail(4000)
            )));
        }
        if let Some(status) = apiserver.try_exited() {
            return Err(StartError::Retry(anyhow::anyhow!(
                "kube-apiserver exited ({status}) before it was ready; log tail:\n{}",
                apiserver.log_tail(6000)
            )));
        }
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("cannot build /readyz request")
            .map_err(StartError::Fatal)?;
        match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
            Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
            Ok(Ok(body)) => last_answer = body,
            Ok(Err(err)) => last_answer = err.to_string(),
            Err(_) => last_answer = "timed out after 5s".to_string(),
        }
        let waited = started.elapsed();
        if waited > timeout {
            return Err(StartError::Fatal(anyhow::anyhow!(
                "kube-apiserver not ready after {waited:.0?} (last /readyz answer: {}); \
                 apiserver log tail:\n{}\netcd log tail:\n{}",
                last_answer.trim(),
                apiserver.log_tail(6000),
                etcd.log_tail(2000)
            )));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("testenv: waiting for kube-apiserver /readyz ({waited:.0?})...");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts kube-scheduler and kube-controller-manager against the apiserver at
/// `server_url`, each with its own kubeconfig (client certificate) and a secure port
/// of its own on 127.0.0.1.
fn start_control_loops(
    bin: &Path,
    dir: &Path,
    certs: &certs::CertFiles,
    server_url: &str,
    logs: &Path,
) -> Result<ControlLoops, StartError> {
    let (serving_cert, serving_key) = &certs.component_serving;
    let common = |kubeconfig: &Path, port: u16| {
        vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", certs.ca_cert.display()),
        ]
    };

    let scheduler_kubeconfig = dir.join("kube-scheduler.kubeconfig");
    let (cert, key) = &certs.scheduler_client;
    kubeconfig::write_client_cert(
        &scheduler_kubeconfig,
        server_url,
        &certs.ca_cert,
        (cert, key),
    )
    .map_err(StartError::Fatal)?;
    // The client rate limits of the defaults (50 QPS) would make binding thousands
    // of pods take a minute; a config file is the only way to raise them.
    let scheduler_config = dir.join("kube-scheduler.yaml");
    std::fs::write(
        &scheduler_config,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {:?}
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
",
            scheduler_kubeconfig.display().to_string()
        ),
    )
    .context("cannot write the kube-scheduler config")
    .map_err(StartError::Fatal)?;
    let scheduler_port = free_port()?;
    let mut scheduler_cmd = Command::new(bin.join("kube-scheduler"));
    let mut args = common(&scheduler_kubeconfig, scheduler_port);
    args.retain(|a| !a.starts_with("--kubeconfig="));
    args.push(format!("--config={}", scheduler_config.display()));
    scheduler_cmd.args(args);
    let scheduler = ManagedChild::start(
        "kube-scheduler",
        scheduler_cmd,
        &logs.join("kube-scheduler.log"),
    )?;

    let cm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
    let (cert, key) = &certs.controller_manager_client;
    kubeconfig::write_client_cert(&cm_kubeconfig, server_url, &certs.ca_cert, (cert, key))
        .map_err(StartError::Fatal)?;
    let cm_port = free_port()?;
    let mut cm_cmd = Command::new(bin.join("kube-controller-manager"));
    cm_cmd.args(common(&cm_kubeconfig, cm_port));
    cm_cmd.args([
        "--leader-elect=false".to_string(),
        "--use-service-account-credentials=true".to_string(),
        format!(
            "--service-account-private-key-file={}",
            certs.service_account_key.display()
        ),
        format!("--root-ca-file={}", certs.ca_cert.display()),
        format!(
            "--node-monitor-grace-period={}s",
            NODE_MONITOR_GRACE.as_secs()
        ),
        "--node-monitor-period=1s".to_string(),
        "--kube-api-qps=200".to_string(),
        "--kube-api-burst=400".to_string(),
        "--profiling=false".to_string(),
    ]);
    let controller_manager = ManagedChild::start(
        "kube-controller-manager",
        cm_cmd,
        &logs.join("kube-controller-manager.log"),
    )?;
    Ok(ControlLoops {
        scheduler,
        controller_manager,
        ports: (scheduler_port, cm_port),
    })
}

/// Polls `/healthz` of the scheduler and controller-manager (TLS verified against the
/// test CA) until both answer `ok`, one exits, or the timeout passes.
async fn wait_healthy(
    admin: &kube::Config,
    loops: &mut ControlLoops,
    started: Instant,
    timeout: Duration,
) -> Result<(), StartError> {
    let client_for = |port: u16| -> Result<kube::Client, StartError> {
        let mut config = admin.clone();
        config.cluster_url = format!("https://127.0.0.1:{port}")
            .parse()
            .context("component URL")
            .map_err(StartError::Fatal)?;
        kube::Client::try_from(config)
            .context("cannot build a client for /healthz")
            .map_err(StartError::Fatal)
    };
    let (scheduler_port, cm_port) = loops.ports;
    let checks = [
        ("kube-scheduler", client_for(scheduler_port)?),
        ("kube-controller-manager", client_for(cm_port)?),
    ];
    let mut healthy = [false, false];
    let mut last_answer = [String::new(), String::new()];
    loop {
        for (i, (name, client)) in checks.iter().enumerate() {
            let child = if i == 0 {
                &mut loops.scheduler
            } else {
                &mut loops.controller_manager
            };
            if let Some(status) = child.try_exited() {
                return Err(StartError::Retry(anyhow::anyhow!(
                    "{name} exited ({status}) before it was healthy; log tail:\n{}",
                    child.log_tail(6000)
                )));
            }
            if healthy[i] {
                continue;
            }
            let request = http::Request::get("/healthz")
                .body(Vec::new())
                .context("cannot build /healthz request")
                .map_err(StartError::Fatal)?;
            match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
                Ok(Ok(body)) if body.trim() == "ok" => healthy[i] = true,
                Ok(Ok(body)) => last_answer[i] = body,
                Ok(Err(err)) => last_answer[i] = err.to_string(),
                Err(_) => last_answer[i] = "timed out after 5s".to_string(),
            }
        }
        if healthy.iter().all(|h| *h) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(StartError::Fatal(anyhow::anyhow!(
                "kube-scheduler/kube-controller-manager not healthy after {:.0?} \
                 (last answers: {:?}); scheduler log tail:\n{}\ncontroller-manager log tail:\n{}",
                started.elapsed(),
                last_answer,
                loops.scheduler.log_tail(3000),
                loops.controller_manager.log_tail(3000)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Extra kube-apiserver flags for a diagnosis, whitespace-separated, e.g.
/// `OTTOSCALER_TESTENV_APISERVER_FLAGS="--v=3 --profiling=true"`.
pub const APISERVER_FLAGS_ENV: &str = "OTTOSCALER_TESTENV_APISERVER_FLAGS";

fn extra_apiserver_flags() -> Vec<String> {
    std::env::var(APISERVER_FLAGS_ENV)
        .map(|flags| flags.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}
