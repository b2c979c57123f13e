//! The command-line tools the deployment tests run, each with a timeout: kubectl (the
//! test control plane's), and helm, promtool and kube-score (built from pinned Go
//! modules by testenv/tools/build.sh); plus rendering the chart and the kustomize
//! manifests into objects.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A kubectl call against the loopback API server answers in about a second; this is
/// generous for a loaded 2-core machine.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// `helm template`/`lint` render locally in a second; `helm install` makes a few
/// dozen API requests.
pub const HELM_TIMEOUT: Duration = Duration::from_secs(120);
/// promtool and kube-score read a few files.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The `--set`s that turn every monitoring object of the chart on.
pub const MONITORING_ON: [&str; 8] = [
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.podMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.dashboard.enabled=true",
];

/// The release name and namespace the chart is compared under: the kustomize
/// manifests' names.
pub const RELEASE: &str = "ottoscaler";
pub const NAMESPACE: &str = "ottoscaler";

/// `relative` in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_path("charts/ottoscaler")
}

/// What a finished child process left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// stdout, after asserting that the command succeeded.
    pub fn ok(self, what: &str) -> String {
        assert!(self.status.success(), "{what}: {}", self.describe());
        self.stdout
    }
}

/// Runs `cmd` to its end, killing it (and failing the test) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Finished {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Readers on their own threads, so a chatty child never blocks on a full pipe.
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The control plane's kubectl, without starting a control plane.
fn kubectl_binary() -> PathBuf {
    testenv::binaries::binaries_dir()
        .expect("the control plane's binaries (testenv/controlplane/build.sh)")
        .join("kubectl")
}

/// `kubectl --kubeconfig <admin of the shared test cluster> ARGS...`.
pub fn kubectl(args: &[&str]) -> Finished {
    let env = testenv::shared();
    let mut cmd = Command::new(env.binaries_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(args)
        .env_remove("KUBECONFIG");
    run_with_timeout(cmd, KUBECTL_TIMEOUT)
}

/// `kubectl apply --dry-run=server --validate=strict -o name -f <objects>`: every
/// object checked as the API server would check it for real, unknown fields refused.
pub fn server_dry_run(objects: &str) -> Finished {
    let dir = std::env::temp_dir().join(format!(
        "ottoscaler-dry-run-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = write_file(&dir, "objects.yaml", objects);
    let out = kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "name",
        "-f",
        file.to_str().expect("UTF-8"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// The sorted `kind/name` lines of `kubectl ... -o name`.
pub fn sorted_names(out: &str) -> Vec<String> {
    let mut names: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    names.sort_unstable();
    names
}

/// `kubectl kustomize <dir>` (no cluster needed): the rendered YAML.
pub fn kustomize(dir: &Path) -> String {
    let mut cmd = Command::new(kubectl_binary());
    cmd.arg("kustomize").arg(dir);
    run_with_timeout(cmd, KUBECTL_TIMEOUT).ok(&format!("kubectl kustomize {}", dir.display()))
}

/// `helm ARGS...` with its cache, config and data in a directory of its own, so no
/// repository or plugin of the machine can change what it does.
pub fn helm(args: &[&str]) -> Finished {
    let home = std::env::temp_dir().join(format!("ottoscaler-helm-home-{}", std::process::id()));
    let mut cmd = Command::new(testenv::tools::tool("helm"));
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .env_remove("HELM_NAMESPACE");
    run_with_timeout(cmd, HELM_TIMEOUT)
}

/// `helm template` of the chart as release `ottoscaler` in namespace `namespace`, with
/// `--set`/`--set-string`/`-f` style `extra` arguments: the rendered YAML.
pub fn helm_template(namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let mut args = vec!["template", RELEASE, chart, "--namespace", namespace];
    args.extend_from_slice(extra);
    helm(&args).ok(&format!("helm template {extra:?}"))
}

/// `promtool ARGS...`.
pub fn promtool(args: &[&str]) -> Finished {
    let mut cmd = Command::new(testenv::tools::tool("promtool"));
    cmd.args(args);
    run_with_timeout(cmd, CHECK_TIMEOUT)
}

/// `kube-score score -o ci <file>`.
pub fn kube_score(file: &Path) -> Finished {
    let mut cmd = Command::new(testenv::tools::tool("kube-score"));
    cmd.args(["score", "-o", "ci"]).arg(file);
    run_with_timeout(cmd, CHECK_TIMEOUT)
}

/// The YAML documents of `text`, as JSON values (empty documents left out).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("not valid YAML: {e}\n{text}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The objects of `kind` among `objects`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` among `objects`.
pub fn one_of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} among {objects:#?}");
    found[0]
}

/// The one object of `kind` named `name` among `objects`.
pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = of_kind(objects, kind)
        .into_iter()
        .filter(|o| o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name} among {objects:#?}");
    found[0]
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
