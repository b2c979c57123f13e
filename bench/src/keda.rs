//! KEDA, the peer of the K1 lane: its operator built from the Go module pinned in
//! `testenv/keda/` (by `testenv/keda/build.sh`, cached outside the clone), its CRDs
//! applied with the control plane's kubectl, and the operator run as a process of its
//! own against the test API server, with a kubeconfig, like ottoscaler. Webhooks, the
//! metrics API server and certificate rotation are not used (a ScaledJob needs none).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use testenv::process::ManagedChild;

use crate::bench_env::{BenchEnv, Lane};
use crate::otto::free_port;

/// A cold build of the operator (all of KEDA's scalers) takes many minutes on 2 cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// One kubectl call.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
/// Time the operator gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// What the operator logs once it (re)started a ScaledJob's scale loop.
const SCALE_LOOP_STARTED: &str = "Initializing Scaling logic according to ScaledJob Specification";

/// The built operator: the directory `build.sh` printed.
#[derive(Debug, Clone)]
pub struct KedaBuild {
    pub dir: PathBuf,
    /// The module version the binary was built from (e.g. `v2.21.0`).
    pub version: String,
}

/// Runs `testenv/keda/build.sh` (cached after the first time) and returns its output.
pub async fn build() -> Result<KedaBuild> {
    let script = crate::args::workspace_root().join("testenv/keda/build.sh");
    let mut cmd = tokio::process::Command::new(&script);
    cmd.stderr(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BUILD_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{} took over {BUILD_TIMEOUT:?}", script.display()))?
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed with {}", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(
        stdout
            .lines()
            .last()
            .context("keda build.sh printed no directory")?
            .trim(),
    );
    let version = std::fs::read_to_string(dir.join("VERSION"))
        .with_context(|| format!("no VERSION in {}", dir.display()))?
        .trim()
        .to_string();
    Ok(KedaBuild { dir, version })
}

/// `kubectl --kubeconfig ... ARGS`, with `stdin` fed in; fails with kubectl's stderr.
async fn kubectl(env: &BenchEnv, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = tokio::process::Command::new(env.env.binaries_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(env.env.kubeconfig_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("cannot start kubectl")?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await.context("kubectl stdin")?;
    }
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("kubectl {args:?} took over {KUBECTL_TIMEOUT:?}"))?
        .context("kubectl failed")?;
    if !output.status.success() {
        bail!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Applies KEDA's CRDs (all of them: the operator's controllers watch each kind) and
/// waits until the API server serves them.
pub async fn install_crds(env: &BenchEnv, build: &KedaBuild) -> Result<()> {
    let crds = build.dir.join("crds");
    let crds = crds.to_string_lossy();
    kubectl(env, &["apply", "--server-side", "-f", &crds], None)
        .await
        .context("applying KEDA's CRDs")?;
    kubectl(
        env,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "-f",
            &crds,
        ],
        None,
    )
    .await
    .context("waiting for KEDA's CRDs")?;
    Ok(())
}

/// Waits until the ScaledJob `name` in `namespace` reports Ready (the operator has
/// reconciled it and its scaler connects to Redis).
pub async fn wait_ready(env: &BenchEnv, namespace: &str, name: &str) -> Result<()> {
    let target = format!("scaledjob/{name}");
    kubectl(
        env,
        &[
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            "--timeout=90s",
            &target,
        ],
        None,
    )
    .await
    .with_context(|| format!("waiting for {target} to be Ready"))?;
    Ok(())
}

/// Creates (or replaces) an object from its JSON with `kubectl apply`.
pub async fn apply(env: &BenchEnv, object: &Value) -> Result<()> {
    let data = serde_json::to_vec(object)?;
    kubectl(env, &["apply", "-f", "-"], Some(&data)).await?;
    Ok(())
}

/// The operator's settings that the report names.
#[derive(Debug, Clone, Copy)]
pub struct OperatorConfig {
    /// `--kube-api-qps` / `--kube-api-burst`.
    pub qps: u32,
    pub burst: u32,
}

/// A running KEDA operator watching one namespace. Killed when dropped.
pub struct Operator {
    child: ManagedChild,
    /// Its Prometheus endpoint (controller-runtime's, with client-go's request counter).
    metrics: std::net::SocketAddr,
}

impl Operator {
    /// Starts the operator on `lane`'s namespace: WATCH_NAMESPACE, POD_NAMESPACE and
    /// KEDA_CLUSTER_OBJECT_NAMESPACE all point there; every port on loopback.
    pub fn start(
        env: &BenchEnv,
        build: &KedaBuild,
        lane: &Lane,
        config: OperatorConfig,
    ) -> Result<Operator> {
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let certs = grpc_certs(env)?;
        let metrics_port = free_port()?;
        let mut cmd = Command::new(build.dir.join("keda-operator"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", env.env.kubeconfig_path())
            .env("WATCH_NAMESPACE", &lane.namespace)
            .env("POD_NAMESPACE", &lane.namespace)
            .env("KEDA_CLUSTER_OBJECT_NAMESPACE", &lane.namespace)
            .env("OPERATOR_NAME", "keda-operator")
            .arg(format!("--metrics-bind-address={}", addr(metrics_port)))
            .arg(format!(
                "--health-probe-bind-address={}",
                addr(free_port()?)
            ))
            .arg(format!(
                "--metrics-service-bind-address={}",
                addr(free_port()?)
            ))
            .arg(format!("--cert-dir={}", certs.display()))
            .arg("--enable-cert-rotation=false")
            .arg("--enable-webhook-patching=false")
            .arg("--enable-apiservice-patching=false")
            .arg(format!("--kube-api-qps={}", config.qps))
            .arg(format!("--kube-api-burst={}", config.burst))
            .arg("--zap-log-level=info");
        let log = env.log_dir().join(format!("keda-{}.log", lane.name));
        let child = ManagedChild::start("keda-operator", cmd, &log)?;
        Ok(Operator {
            child,
            metrics: std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        })
    }

    /// Requests the operator sent to the API server so far (client-go's
    /// `rest_client_requests_total`, every code and method, watches included).
    pub async fn requests_sent(&self) -> Result<f64> {
        let (status, body) = crate::http::get(self.metrics, "/metrics")
            .await
            .context("keda-operator /metrics")?;
        anyhow::ensure!(status == 200, "keda-operator /metrics answered {status}");
        Ok(crate::otto::Metrics::parse(&body).sum("rest_client_requests_total", &[]))
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Fails with the log's tail if the operator has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_exited() {
            bail!(
                "keda-operator exited with {status}: {}",
                self.child.log_tail(3000)
            );
        }
        Ok(())
    }

    /// How many scale loops the operator started so far, by its log (`Initializing
    /// Scaling logic`, once per reconcile of a new or changed ScaledJob; the log is
    /// shared by a restarted operator).
    pub fn scale_loops_started(&self) -> usize {
        std::fs::read_to_string(self.child.log_path())
            .map(|log| log.matches(SCALE_LOOP_STARTED).count())
            .unwrap_or(0)
    }

    /// Waits until the operator started more than `before` scale loops (see
    /// [`Operator::scale_loops_started`]): a changed ScaledJob is in effect.
    pub async fn wait_scale_loop(&mut self, before: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.scale_loops_started() <= before {
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                bail!("keda-operator started no new scale loop within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// SIGKILL, as a crash ends it (jobs and the ScaledJob stay), and reap it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM, then wait (SIGKILL after a grace period).
    pub async fn stop(mut self) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            self.child.stop(STOP_GRACE);
        })
        .await
        .context("stopping keda-operator panicked")
    }
}

/// The operator's gRPC metrics service (for KEDA's metrics API server, unused here)
/// will not start without a CA and a serving pair in its `--cert-dir`, and the operator
/// stops when it fails: the test CA and the control plane components' serving pair
/// (127.0.0.1) go there.
fn grpc_certs(env: &BenchEnv) -> Result<PathBuf> {
    let from = env.env.control_plane().dir().join("certs");
    let dir = env.log_dir().join("keda-certs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (src, dst) in [
        ("ca.crt", "ca.crt"),
        ("components.crt", "tls.crt"),
        ("components.key", "tls.key"),
    ] {
        std::fs::copy(from.join(src), dir.join(dst)).with_context(|| {
            format!(
                "cannot copy {} to {}",
                from.join(src).display(),
                dir.display()
            )
        })?;
    }
    Ok(dir)
}

/// The name of K1's ScaledJob.
pub const SCALED_JOB: &str = "bench-agent";

/// The ScaledJob of the lane: one Job per stream entry not yet read by `group`
/// (redis-streams scaler, `lagCount` 1), each running `template`'s pod spec; KEDA's
/// defaults except the polling interval.
pub fn scaled_job(
    lane: &Lane,
    redis_address: &str,
    group: &str,
    polling_seconds: u32,
    run_seconds: f64,
) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": { "name": SCALED_JOB, "namespace": lane.namespace },
        "spec": {
            "pollingInterval": polling_seconds,
            "maxReplicaCount": 1000,
            "jobTargetRef": {
                "parallelism": 1,
                "completions": 1,
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "labels": { "app": "bench-keda-agent" },
                        "annotations": {
                            "kubesim.ottoscaler.dev/run-seconds": run_seconds.to_string(),
                        },
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{ "name": "agent", "image": "busybox:latest" }],
                    },
                },
            },
            "triggers": [{
                "type": "redis-streams",
                "metadata": {
                    "address": redis_address,
                    "stream": lane.stream,
                    "consumerGroup": group,
                    "lagCount": "1",
                },
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaled_job_reads_the_lane_stream_one_job_per_entry() {
        let lane = Lane {
            name: "k1".into(),
            namespace: "bench-k1-1".into(),
            stream: "bench:k1:events".into(),
            results: "bench:k1:results".into(),
        };
        let job = scaled_job(&lane, "127.0.0.1:6390", "keda", 1, 1.0);
        assert_eq!(job["metadata"]["namespace"], "bench-k1-1");
        assert_eq!(job["spec"]["pollingInterval"], 1);
        let trigger = &job["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "redis-streams");
        assert_eq!(trigger["metadata"]["stream"], "bench:k1:events");
        assert_eq!(trigger["metadata"]["lagCount"], "1");
        assert_eq!(
            job["spec"]["jobTargetRef"]["template"]["spec"]["restartPolicy"],
            "Never"
        );
    }
}
