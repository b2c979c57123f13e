//! Locating the control-plane binaries (etcd, kube-apiserver, kubectl).
//!
//! They are built from pinned Go modules by `testenv/controlplane/build.sh`, which
//! caches them outside the clone; a developer with prebuilt binaries can point
//! `OTTOSCALER_TESTENV_BIN` at their directory instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// Environment variable naming a directory that already holds the binaries.
pub const BIN_ENV: &str = "OTTOSCALER_TESTENV_BIN";

/// The binaries every control plane needs.
const REQUIRED: [&str; 3] = ["etcd", "kube-apiserver", "kubectl"];

/// Path of the build script, fixed at compile time so tests find it from any cwd.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

/// The directory holding etcd, kube-apiserver and kubectl: `$OTTOSCALER_TESTENV_BIN`
/// if set, else the output of `build.sh` (instant when cached, minutes on a cold
/// cache). Resolved once per process.
pub fn binaries_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow::anyhow!(err))
}

fn locate() -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => run_build_script()?,
    };
    for name in REQUIRED {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing (binaries dir {})",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Runs build.sh with its progress on our stderr and returns its last stdout line.
fn run_build_script() -> Result<PathBuf> {
    run_cached_build(&build_script(), "ottoscaler-testenv-build.lock")
}

/// Runs the build script `script` (one of the repository's cached Go builds) with its
/// progress on our stderr and returns its last stdout line: the directory it built
/// into.
///
/// Serialised across processes with the file lock `lock_name` in the temp dir: test
/// binaries of the workspace may start in parallel and two concurrent `go build`s into
/// the same cache would clash.
pub(crate) fn run_cached_build(script: &Path, lock_name: &str) -> Result<PathBuf> {
    let lock_path = std::env::temp_dir().join(lock_name);
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let output = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    drop(lock);
    if !output.status.success() {
        bail!(
            "{} failed ({}); see its messages above",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .with_context(|| format!("{} printed no directory", script.display()))?;
    Ok(PathBuf::from(last))
}
