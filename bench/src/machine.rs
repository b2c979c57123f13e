//! What the numbers were measured on: cores, memory, kernel, and the control plane's
//! versions (`kube-apiserver --version`, `etcd --version` from testenv's binaries).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench_env::BenchEnv;

pub async fn describe(env: &BenchEnv) -> Value {
    let bin = env.env.binaries_dir();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    json!({
        "cores": cores,
        "cpu": cpu_model(),
        "memory_bytes": mem_total(),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        // Other work on the machine skews every number: the load when the run began.
        "load_average_at_start": load_average(),
        // testenv builds from Go modules without version stamping, so `--version` says
        // v0.0.0-master; the module version in the binary's build info is the real one.
        "kubernetes": module_version(&bin.join("kube-apiserver"), "k8s.io/kubernetes").await,
        "kube_apiserver_version_output": version(&bin.join("kube-apiserver")).await,
        "etcd": version(&bin.join("etcd")).await,
        "redis": version(Path::new("redis-server")).await,
        "ottoscaler": version(&env.ottoscaler).await,
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The 1, 5 and 15 minute load averages, e.g. `0.52 0.61 0.70`.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
}

fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The version of Go module `module` built into `binary` (`go version -m`).
async fn module_version(binary: &Path, module: &str) -> Option<String> {
    let mut command = tokio::process::Command::new("go");
    command.arg("version").arg("-m").arg(binary);
    stdout(command).await?.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let kind = fields.next()?;
        let (name, version) = (fields.next()?, fields.next()?);
        (matches!(kind, "mod" | "dep") && name == module).then(|| format!("Kubernetes {version}"))
    })
}

/// The first line `PROGRAM --version` prints, if it answers within 10 s.
async fn version(program: &Path) -> Option<String> {
    let mut command = tokio::process::Command::new(program);
    command.arg("--version");
    stdout(command)
        .await?
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// What `command` prints on stdout, if it runs and ends within 10 s.
async fn stdout(mut command: tokio::process::Command) -> Option<String> {
    let run = command.kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
