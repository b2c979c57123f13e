//! The ottoscaler under test: the release binary as a separate process, configured the
//! way the Deployment does it (environment variables plus a config file), with its
//! `/readyz`, `/metrics` and `/proc` as the only windows into it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testenv::process::ManagedChild;

use crate::bench_env::{BenchEnv, Lane};
use crate::http;
use crate::procfs::{self, Memory};

/// Pause between two looks at `/readyz` or `/metrics` while waiting for a state (a
/// timer on loopback, bounded by the wait's timeout).
const POLL: Duration = Duration::from_millis(50);
/// Time ottoscaler gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Variables with this prefix are passed to ottoscaler without it.
pub const ENV_PREFIX: &str = "OTTOSCALER_BENCH_ENV_";

/// The `OTTOSCALER_BENCH_ENV_*` variables of `vars`, without the prefix.
fn passed_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, std::ffi::OsString)> {
    vars.filter_map(|(k, v)| {
        let key = k.to_str()?.strip_prefix(ENV_PREFIX)?;
        (!key.is_empty()).then(|| (key.to_string(), v))
    })
    .collect()
}

/// ottoscaler's default `kubernetes.max_concurrent_creates`.
pub const DEFAULT_MAX_CONCURRENT_CREATES: u32 = 64;

/// The settings a scenario changes; everything else is ottoscaler's default.
#[derive(Debug, Clone)]
pub struct OttoConfig {
    /// `kubernetes.qps` / `kubernetes.burst`.
    pub qps: u32,
    pub burst: u32,
    /// `kubernetes.max_concurrent_creates`.
    pub max_concurrent_creates: u32,
    /// `kubernetes.http2`.
    pub http2: bool,
    /// `limits.max_workers` / `limits.max_pods_per_event`.
    pub max_workers: u32,
    pub max_pods_per_event: u32,
    /// kubesim's `run-seconds` annotation on the default template.
    pub run_seconds: f64,
}

impl Default for OttoConfig {
    /// ottoscaler's own defaults, with pods that run one second.
    fn default() -> Self {
        OttoConfig {
            qps: 50,
            burst: 100,
            max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
            http2: true,
            max_workers: 200,
            max_pods_per_event: 50,
            run_seconds: 1.0,
        }
    }
}

impl OttoConfig {
    fn toml(&self) -> String {
        let OttoConfig {
            qps,
            burst,
            max_concurrent_creates,
            http2,
            max_workers,
            max_pods_per_event,
            run_seconds,
        } = self;
        format!(
            r#"[kubernetes]
qps = {qps}
burst = {burst}
max_concurrent_creates = {max_concurrent_creates}
http2 = {http2}

[limits]
max_workers = {max_workers}
max_pods_per_event = {max_pods_per_event}

[templates.default]
image = "busybox:latest"
annotations = {{ "kubesim.ottoscaler.dev/run-seconds" = "{run_seconds}" }}
"#
        )
    }
}

/// A running ottoscaler. Killed when dropped (and with the harness: PDEATHSIG).
pub struct Otto {
    child: ManagedChild,
    addr: SocketAddr,
    pub started: Instant,
}

/// ottoscaler's `/metrics`, parsed: one (series, value) per sample line.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<(String, f64)>,
}

impl Otto {
    /// Starts ottoscaler on `lane` with `config`; `instance` names its log and config
    /// files. Returns once the process is spawned (see [`Otto::wait_ready`]).
    pub fn start(env: &BenchEnv, lane: &Lane, config: &OttoConfig, instance: &str) -> Result<Otto> {
        Otto::start_with(env, lane, config, instance, &[])
    }

    /// [`Otto::start`] with further environment variables (`extra`), set after the
    /// lane's, so they win: a replica's own `REDIS_CONSUMER`, Lease timings, a
    /// scheduling policy, `RUST_LOG`.
    pub fn start_with(
        env: &BenchEnv,
        lane: &Lane,
        config: &OttoConfig,
        instance: &str,
        extra: &[(&str, String)],
    ) -> Result<Otto> {
        let port = free_port()?;
        let config_path = env.log_dir().join(format!("{instance}.toml"));
        std::fs::write(&config_path, config.toml())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut cmd = Command::new(&env.ottoscaler);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", env.env.kubeconfig_path())
            .env("OTTOSCALER_CONFIG", &config_path)
            .env("REDIS_URL", env.redis.url())
            .env("REDIS_STREAM", &lane.stream)
            .env("REDIS_CONSUMER", format!("bench-{}", lane.name))
            .env("OTTOSCALER_REDIS__RESULTS_STREAM", &lane.results)
            .env("OTTOSCALER_KUBERNETES__NAMESPACE", &lane.namespace)
            // Leader election as shipped, on a Lease of the lane's own: an instance of
            // one lane never waits for another lane's Lease to expire.
            .env("OTTOSCALER_HA__LEASE_NAMESPACE", &lane.namespace)
            .env("OTTOSCALER_HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("OTTOSCALER_SHUTDOWN_TIMEOUT", "10s");
        for (key, value) in extra {
            cmd.env(key, value);
        }
        // For a diagnosis: OTTOSCALER_BENCH_ENV_X=v reaches ottoscaler as X=v (RUST_LOG,
        // MALLOC_ARENA_MAX, LD_PRELOAD, an OTTOSCALER_* override...).
        for (key, value) in passed_env(std::env::vars_os()) {
            cmd.env(key, value);
        }
        let log = env.log_dir().join(format!("{instance}.log"));
        let started = Instant::now();
        let child = ManagedChild::start("ottoscaler", cmd, &log)?;
        Ok(Otto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `Some(status)` once the process has exited (by itself, or killed).
    pub fn try_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_exited()
    }

    /// Waits until `/readyz` answers 200 and the instance leads (`ottoscaler_leader 1`:
    /// a standby is ready too, but reads nothing); returns the time since the process
    /// started.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        self.wait_for("/readyz 200 and leading", timeout, |addr| async move {
            let ready = matches!(http::get(addr, "/readyz").await, Ok((200, _)));
            Ok(ready && metrics_at(addr).await?.value("ottoscaler_leader") == Some(1.0))
        })
        .await?;
        Ok(self.started.elapsed())
    }

    /// Waits until `/readyz` answers 200 and the instance stands by
    /// (`ottoscaler_leader 0`): ready to take over, reading nothing.
    pub async fn wait_standby(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for("/readyz 200 and standing by", timeout, |addr| async move {
            let ready = matches!(http::get(addr, "/readyz").await, Ok((200, _)));
            Ok(ready && metrics_at(addr).await?.value("ottoscaler_leader") == Some(0.0))
        })
        .await
    }

    /// Waits until `ottoscaler_workers_active` is `n`.
    pub async fn wait_active(&mut self, n: u64, timeout: Duration) -> Result<()> {
        self.wait_for(&format!("{n} active workers"), timeout, |addr| async move {
            Ok(metrics_at(addr).await?.value("ottoscaler_workers_active") == Some(n as f64))
        })
        .await
    }

    /// Polls `check` every [`POLL`] until it says yes; fails early if the process
    /// exits, and with its log tail after `timeout`.
    async fn wait_for<F, Fut>(&mut self, what: &str, timeout: Duration, check: F) -> Result<()>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_exited() {
                bail!(
                    "ottoscaler exited ({status}) while waiting for {what}:\n{}",
                    self.log_tail()
                );
            }
            if check(self.addr).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {what} within {timeout:?}; ottoscaler's log ends:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Result<Metrics> {
        metrics_at(self.addr).await
    }

    /// Peak and current resident memory.
    pub fn memory(&self) -> Result<Memory> {
        procfs::memory(self.pid())
    }

    pub fn log_tail(&self) -> String {
        self.child.log_tail(4000)
    }

    /// SIGKILL, as a crash ends it (no shutdown: the Lease, pending entries and pods
    /// stay as they are), and reap it, from synchronous code (a restart closure).
    pub fn kill_now(&mut self) {
        self.child.kill();
    }

    /// The file that receives the process' output (kept after it exits).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.child.log_path().to_path_buf()
    }

    /// `kill -9`: no shutdown code runs, as when a node dies; waits for the exit.
    pub async fn kill(mut self) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            self.child.kill();
        })
        .await
        .context("killing ottoscaler panicked")
    }

    /// SIGTERM, then wait for the exit (SIGKILL after a grace period); the exit status.
    pub async fn stop(mut self) -> Result<Option<i32>> {
        tokio::task::spawn_blocking(move || {
            self.child.stop(STOP_GRACE).and_then(|status| status.code())
        })
        .await
        .context("stopping ottoscaler panicked")
    }
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.trim().to_string(), value.parse().ok()?))
            })
            .collect();
        Metrics { samples }
    }

    /// The value of one exact series, e.g. `ottoscaler_workers_active`.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
    }

    /// The sum over every series of metric `name` whose labels include each of `labels`
    /// (given as `key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| {
                let (metric, rest) = s.split_once('{').unwrap_or((s.as_str(), ""));
                metric == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// `ottoscaler_kube_requests_total` per `verb code`.
    pub fn kube_requests_by_code(&self) -> std::collections::BTreeMap<String, f64> {
        let mut by_code = std::collections::BTreeMap::new();
        for (series, value) in &self.samples {
            let Some(labels) = series.strip_prefix("ottoscaler_kube_requests_total{") else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim_end_matches(['"', '}']).to_string())
                    .unwrap_or_default()
            };
            let key = format!("{} {}", label("verb=\""), label("code=\""));
            *by_code.entry(key).or_insert(0.0) += value;
        }
        by_code
    }

    /// `ottoscaler_kube_requests_total` per verb.
    pub fn kube_requests_by_verb(&self) -> std::collections::BTreeMap<String, f64> {
        let mut by_verb = std::collections::BTreeMap::new();
        for (series, value) in &self.samples {
            let Some(labels) = series.strip_prefix("ottoscaler_kube_requests_total{") else {
                continue;
            };
            let verb = labels
                .split(',')
                .find_map(|l| l.strip_prefix("verb=\""))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
                .unwrap_or_default();
            *by_verb.entry(verb).or_insert(0.0) += value;
        }
        by_verb
    }
}

async fn metrics_at(addr: SocketAddr) -> Result<Metrics> {
    let (status, body) = http::get(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(Metrics::parse(&body))
}

/// A port free on loopback right now (for a child process to bind).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP ottoscaler_workers_active Workers alive.
# TYPE ottoscaler_workers_active gauge
ottoscaler_workers_active 12
ottoscaler_kube_requests_total{verb="create",code="201"} 10
ottoscaler_kube_requests_total{verb="create",code="409"} 1
ottoscaler_kube_requests_total{verb="delete",code="200"} 9
ottoscaler_kube_requests_total{verb="watch",code="200"} 1
# EOF
"#;

    #[test]
    fn metrics_are_found_by_series_and_summed_by_label() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.value("ottoscaler_workers_active"), Some(12.0));
        assert_eq!(
            m.sum("ottoscaler_kube_requests_total", &[r#"verb="create""#]),
            11.0
        );
        assert_eq!(m.sum("ottoscaler_kube_requests_total", &[]), 21.0);
        let by_verb = m.kube_requests_by_verb();
        assert_eq!(by_verb["create"], 11.0);
        assert_eq!(by_verb["watch"], 1.0);
        assert_eq!(m.kube_requests_by_code()["create 409"], 1.0);
    }

    #[test]
    fn prefixed_variables_are_passed_without_the_prefix() {
        let vars = [
            ("OTTOSCALER_BENCH_ENV_RUST_LOG", "debug"),
            ("OTTOSCALER_BENCH_ENV_", "empty key"),
            ("RUST_LOG", "not passed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()));
        let passed = passed_env(vars);
        assert_eq!(passed, vec![("RUST_LOG".to_string(), "debug".into())]);
    }

    #[test]
    fn the_config_file_sets_what_the_scenario_changes() {
        let toml = OttoConfig {
            qps: 500,
            run_seconds: 0.0,
            ..OttoConfig::default()
        }
        .toml();
        assert!(toml.contains("qps = 500"));
        assert!(toml.contains("max_concurrent_creates = 64"));
        assert!(toml.contains("http2 = true"));
        assert!(toml.contains(r#""kubesim.ottoscaler.dev/run-seconds" = "0""#));
    }
}
