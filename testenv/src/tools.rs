//! Locating the tools the chart, manifest and monitoring tests run: `helm`,
//! `promtool`, `kube-score`, and the Prometheus Operator's CRDs.
//!
//! They are built from pinned Go modules by `testenv/tools/build.sh` (one module per
//! tool), which caches them outside the clone like the control plane; a developer with
//! a prebuilt directory of the same layout can point `OTTOSCALER_TOOLS_BIN` at it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, bail};

use crate::binaries::run_cached_build;

/// Environment variable naming a directory that already holds the tools.
pub const TOOLS_ENV: &str = "OTTOSCALER_TOOLS_BIN";

/// What the directory must hold: the binaries, and the CRDs under `crds/`.
const REQUIRED: [&str; 6] = [
    "helm",
    "promtool",
    "kube-score",
    "crds/monitoring.coreos.com_servicemonitors.yaml",
    "crds/monitoring.coreos.com_podmonitors.yaml",
    "crds/monitoring.coreos.com_prometheusrules.yaml",
];

/// Path of the build script, fixed at compile time so tests find it from any cwd.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh")
}

/// The directory holding `helm`, `promtool`, `kube-score` and `crds/`:
/// `$OTTOSCALER_TOOLS_BIN` if set, else the output of `build.sh` (instant when cached,
/// minutes on a cold cache). Resolved once per process.
pub fn tools_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow::anyhow!(err))
}

/// The path of one tool (`helm`, `promtool`, `kube-score`); panics, naming the build
/// script, when the tools cannot be built (tests want the tool, not an error).
pub fn tool(name: &str) -> PathBuf {
    match tools_dir() {
        Ok(dir) => dir.join(name),
        Err(err) => panic!("testenv: no {name}: {err}"),
    }
}

/// The Prometheus Operator's CRD of `plural` (`servicemonitors`, `podmonitors`,
/// `prometheusrules`), as the pinned module ships it.
pub fn prometheus_operator_crd(plural: &str) -> PathBuf {
    tool(&format!("crds/monitoring.coreos.com_{plural}.yaml"))
}

fn locate() -> Result<PathBuf> {
    let dir = match std::env::var_os(TOOLS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => run_cached_build(&build_script(), "ottoscaler-tools-build.lock")?,
    };
    for name in REQUIRED {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing (tools dir {}; built by {})",
                path.display(),
                dir.display(),
                build_script().display()
            );
        }
    }
    Ok(dir)
}
