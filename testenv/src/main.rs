//! `testenv`: run the test environment by hand (or from scripts and tests).
//!
//! - `testenv up --dir DIR`: control plane + kubesim until SIGINT/SIGTERM.
//! - `testenv kubesim --kubeconfig PATH`: only the simulator, against any cluster.
//! - `testenv build`: build (or find cached) control-plane binaries, print their dir.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use testenv::{ControlPlaneOptions, TestEnv, TestEnvOptions, kubesim};

#[derive(Parser)]
#[command(name = "testenv", about = "ottoscaler's test environment")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd, kube-apiserver and kubesim; write DIR/kubeconfig; run until
    /// SIGINT/SIGTERM, then stop everything.
    Up {
        /// Directory for data, certificates, logs and the kubeconfig.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
        /// Seconds to wait for the apiserver to become ready.
        #[arg(long, default_value_t = 90)]
        ready_timeout: u64,
        /// Run pods of IMAGE as real processes: `IMAGE=PATH` uses the host binary PATH
        /// as the image's entrypoint, `IMAGE=` runs the pod's command/args as given
        /// (resolved on the host's /usr). Repeatable. Logs go to DIR/pods/.
        #[arg(long = "map-image", value_name = "IMAGE=PATH")]
        map_image: Vec<String>,
        /// Once everything is ready, `kubectl apply -k` these directories (in order).
        #[arg(long = "apply-k", value_name = "DIR")]
        apply_k: Vec<PathBuf>,
    },
    /// Run only kubesim against an existing cluster until SIGINT/SIGTERM.
    Kubesim {
        /// Kubeconfig of the cluster (its current context is used).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Build or locate the control-plane binaries and print their directory.
    Build,
}

#[derive(clap::Args)]
struct SimArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Run time of pods without the run-seconds annotation.
    #[arg(long, default_value_t = 1.0)]
    default_run_seconds: f64,
}

impl SimArgs {
    fn options(&self) -> Result<kubesim::Options> {
        let default_run = Duration::try_from_secs_f64(self.default_run_seconds)
            .context("--default-run-seconds must be a non-negative number")?;
        Ok(kubesim::Options {
            nodes: self.nodes,
            default_run,
            ..kubesim::Options::default()
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("testenv: cannot start tokio: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("testenv: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build => {
            let dir = tokio::task::spawn_blocking(testenv::binaries::binaries_dir).await??;
            println!("{}", dir.display());
            Ok(())
        }
        Cmd::Up {
            dir,
            sim,
            ready_timeout,
            map_image,
            apply_k,
        } => {
            let images = map_image
                .iter()
                .map(|m| kubesim::runtime::parse_mapping(m))
                .collect::<Result<_>>()?;
            let opts = TestEnvOptions {
                control_plane: ControlPlaneOptions {
                    dir: Some(dir),
                    ready_timeout: Duration::from_secs(ready_timeout),
                    binaries_dir: None,
                },
                kubesim: sim.options()?,
                images,
            };
            up(opts, &apply_k).await
        }
        Cmd::Kubesim { kubeconfig, sim } => {
            let stop = stop_signal()?;
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig)
                    .with_context(|| format!("cannot read {}", kubeconfig.display()))?,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .context("invalid kubeconfig")?;
            let client = kube::Client::try_from(config).context("cannot build kube client")?;
            eprintln!("testenv: kubesim running; stop with Ctrl-C");
            kubesim::run(client, sim.options()?, stop).await
        }
    }
}

/// How long one `kubectl apply -k` may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

async fn up(opts: TestEnvOptions, apply: &[PathBuf]) -> Result<()> {
    // Handlers first: a SIGTERM during start-up must still stop the servers in order.
    let stop = stop_signal()?;
    let real_pods = !opts.images.is_empty();
    let mut stop = std::pin::pin!(stop);
    let env = tokio::select! {
        env = TestEnv::start(opts) => env?,
        () = &mut stop => {
            eprintln!("testenv: interrupted during start-up");
            // Dropping the half-started TestEnv future kills what it spawned.
            return Ok(());
        }
    };
    let cp = env.control_plane();
    eprintln!(
        "testenv: kube-apiserver {} ready in {:.1?}; logs in {}",
        env.server_url(),
        cp.startup_time(),
        cp.dir().join("logs").display()
    );
    for dir in apply {
        let mut kubectl = tokio::process::Command::new(env.binaries_dir().join("kubectl"));
        kubectl
            .arg("--kubeconfig")
            .arg(env.kubeconfig_path())
            .args(["apply", "-k"])
            .arg(dir)
            .kill_on_drop(true);
        let status = tokio::time::timeout(APPLY_TIMEOUT, kubectl.status())
            .await
            .with_context(|| format!("kubectl apply -k {} timed out", dir.display()))?
            .context("cannot run kubectl")?;
        if !status.success() {
            anyhow::bail!("kubectl apply -k {} failed ({status})", dir.display());
        }
    }
    if real_pods {
        eprintln!(
            "testenv: real pods log to {}/<namespace>_<pod>_<uid>/<container>.log",
            cp.dir().join("pods").display()
        );
    }
    println!("export KUBECONFIG={}", env.kubeconfig_path().display());
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    stop.await;
    eprintln!("testenv: stopping");
    env.stop().await
}

/// Completes on the first SIGINT or SIGTERM. Registered when called, so signals
/// that arrive later are never lost.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
