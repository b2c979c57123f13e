//! What a new user hits first, tried as one would: `check-config` on a template file
//! that is not a PodSpec, a mistyped `OTTOSCALER_*` variable, a bad `LOG_FORMAT`, and
//! the Deployment's log filter. The compiled binary runs with a clean environment; none
//! of these needs Redis or a cluster, because each is refused before either is used.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `check-config` and a `run` that fails at start finish in well under a second.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ottoscaler-new-user-{label}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The binary with `args` and only `env` (plus `PATH`); waits at most [`CLI_TIMEOUT`].
fn ottoscaler(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ottoscaler"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ottoscaler starts");
    let deadline = Instant::now() + CLI_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ottoscaler {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file whose template `gpu` points at `spec` (written next to it).
fn config_with_pod_spec(dir: &Path, spec: &str) -> (PathBuf, PathBuf) {
    let spec_path = dir.join("gpu.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let config = dir.join("ottoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "[templates.gpu]\npod_spec_file = {:?}\n",
            spec_path.display().to_string()
        ),
    )
    .expect("write config");
    (config, spec_path)
}

#[test]
fn check_config_refuses_a_pod_spec_file_that_is_no_pod_spec_as_run_does() {
    let dir = temp_dir("pod-spec");
    // A whole Pod manifest where the PodSpec belongs: the usual first mistake.
    let (config, spec) = config_with_pod_spec(
        &dir,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: agent\n      image: agent:gpu\n",
    );
    let config = config.display().to_string();
    let expected = format!(
        "error: templates.gpu.pod_spec_file: {} is not a valid PodSpec: ",
        spec.display()
    );

    let check = ottoscaler(&["check-config", "--config", &config], &[]);
    let (stdout, stderr) = text(&check);
    assert_eq!(check.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.contains("unknown field(s) `apiVersion`, `kind`, `spec` (a whole Pod manifest?"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "nothing printed as valid: {stdout}");

    // `run` refuses it with the same line, before it connects to anything.
    let run = ottoscaler(
        &["run", "--config", &config, "--kubeconfig", "/nonexistent"],
        &[],
    );
    let (_, run_stderr) = text(&run);
    assert_eq!(run.status.code(), Some(1), "{run_stderr}");
    assert_eq!(
        run_stderr.lines().next(),
        stderr.lines().next(),
        "check-config and run agree"
    );

    // A PodSpec without a container is refused too, naming the file.
    std::fs::write(&spec, "containers: []\n").expect("write");
    let check = ottoscaler(&["check-config", "--config", &config], &[]);
    let (_, stderr) = text(&check);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: templates.gpu.pod_spec_file: the PodSpec in {} has no container",
            spec.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mistyped_variable_fails_check_config_and_is_a_warning_in_run() {
    let typo = [("OTTOSCALER_LIMIT__MAX_WORKERS", "20")];
    let check = ottoscaler(&["check-config"], &typo);
    let (stdout, stderr) = text(&check);
    assert_eq!(check.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: OTTOSCALER_LIMIT__MAX_WORKERS is not a setting and is ignored; did you mean OTTOSCALER_LIMITS__MAX_WORKERS?"
    );

    // `run` warns and goes on (here to fail at the missing kubeconfig, after the warning).
    let run = ottoscaler(
        &["run", "--kubeconfig", "/nonexistent/kubeconfig"],
        &[typo[0], ("LOG_FORMAT", "json")],
    );
    let (stdout, stderr) = text(&run);
    let warning = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["variable"] == "OTTOSCALER_LIMIT__MAX_WORKERS")
        .unwrap_or_else(|| panic!("no warning naming the variable:\n{stdout}\n{stderr}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(
        warning["closest"], "OTTOSCALER_LIMITS__MAX_WORKERS",
        "{warning}"
    );
    assert!(
        stderr.contains("connecting to Kubernetes"),
        "run went on past the warning: {stderr}"
    );

    // Service links for a Service named `ottoscaler` are not typos.
    let links = ottoscaler(
        &["check-config"],
        &[
            ("OTTOSCALER_SERVICE_HOST", "10.0.0.1"),
            ("OTTOSCALER_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
        ],
    );
    assert!(links.status.success(), "{:?}", text(&links));
}

#[test]
fn a_bad_log_format_is_an_error_naming_the_accepted_values() {
    let expected = "error: LOG_FORMAT: \"jsonl\" is not a log format, use text or json";
    for args in [
        &["check-config"][..],
        &["run", "--kubeconfig", "/nonexistent"][..],
    ] {
        let out = ottoscaler(args, &[("LOG_FORMAT", "jsonl")]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
        assert_eq!(stderr.trim_end(), expected, "{args:?}");
    }
    for good in ["json", "text", "JSON"] {
        let out = ottoscaler(&["check-config"], &[("LOG_FORMAT", good)]);
        assert!(out.status.success(), "{good}: {:?}", text(&out));
    }
}

/// The Deployment leaves `RUST_LOG` unset, so the built-in filter
/// (`info,kube=warn,hyper=warn`) applies; `RUST_LOG=info` would turn the kube and
/// hyper info lines back on.
#[test]
fn the_deployment_uses_the_built_in_log_filter() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/deployment.yaml");
    let text = std::fs::read_to_string(&path).expect("read deployment");
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_yaml_ng::from_str(&text).expect("a Deployment");
    let containers = deployment
        .spec
        .template
        .spec
        .map(|s| s.containers)
        .expect("containers");
    let ottoscaler = containers
        .iter()
        .find(|c| c.name == "ottoscaler")
        .expect("the ottoscaler container");
    let env: Vec<&str> = ottoscaler
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(!env.contains(&"RUST_LOG"), "{env:?}");
    assert_eq!(
        ottoscaler::telemetry::DEFAULT_FILTER,
        "info,kube=warn,hyper=warn"
    );
}
