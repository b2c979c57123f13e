//! Scratch directories for servers (etcd data, certificates, logs).
//!
//! A test binary's shared control plane lives in a `static` that is never dropped, so
//! its directory cannot be removed by `Drop`. Instead every directory carries the pid
//! of the process that made it in its name, and each new one first sweeps away the
//! directories whose process is gone.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const PREFIX: &str = "ottoscaler-testenv-";

/// A directory that is removed on drop when `owned`.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    owned: bool,
}

impl WorkDir {
    /// Creates `$TMPDIR/ottoscaler-testenv-<pid>-<random>-<label>` (removed on drop)
    /// after removing leftovers of dead processes.
    pub fn temp(label: &str) -> Result<WorkDir> {
        let base = std::env::temp_dir();
        sweep_stale(&base);
        let path = base.join(format!(
            "{PREFIX}{}-{:08x}-{label}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, owned: true })
    }

    /// Uses (and creates) a caller-chosen directory, which is left in place on drop.
    pub fn existing(path: &Path) -> Result<WorkDir> {
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        let path =
            fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
        Ok(WorkDir { path, owned: false })
    }

    /// Removes the directory now if it is temporary (for exit paths without drop).
    pub fn remove_now(&self) {
        if self.owned {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.owned {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes `ottoscaler-testenv-<pid>-*` directories whose process no longer exists.
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
