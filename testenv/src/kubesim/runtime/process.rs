//! One sandboxed process: started through bwrap from testenv's spawner thread (so it
//! dies with the test binary), signalled, waited for with a bound.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::sync::watch;

use super::sandbox::Sandbox;

/// The descriptor bwrap writes its info JSON to, in the child.
const INFO_FD: i32 = 3;

/// A running sandbox. Dropping it SIGKILLs the sandbox (bwrap's process group, and
/// with bwrap's PID 1 the whole PID namespace).
#[derive(Debug)]
pub struct Process {
    /// bwrap's pid, also its process group.
    group: libc::pid_t,
    /// The container's main process (PID 2 in the sandbox), when found.
    main: Option<libc::pid_t>,
    /// The exit code once bwrap was reaped (128 + signal for a signal).
    exit: watch::Receiver<Option<i32>>,
    reaped: Arc<AtomicBool>,
}

/// The exit code Kubernetes reports: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints; pipe2 fills it on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads bwrap's `child-pid` (its PID 1) from the info pipe.
fn read_info(read: OwnedFd) -> Option<libc::pid_t> {
    let mut text = String::new();
    File::from(read).read_to_string(&mut text).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    libc::pid_t::try_from(value.get("child-pid")?.as_i64()?).ok()
}

/// The single child of `pid` (bwrap's PID 1 forks the container's process).
fn only_child(pid: libc::pid_t) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl Process {
    /// Starts `sandbox` with stdout and stderr appended to `log` (`None`: discarded).
    pub async fn start(sandbox: &Sandbox, log: Option<&Path>) -> Result<Process> {
        let (read, write) = pipe()?;
        let mut cmd = Command::new("bwrap");
        cmd.args(sandbox.bwrap_args(Some(INFO_FD)));
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let out = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                cmd.stderr(Stdio::from(out.try_clone()?));
                cmd.stdout(Stdio::from(out));
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let raw = write.as_raw_fd();
        // SAFETY: between fork and exec only dup2/fcntl, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if raw == INFO_FD {
                    if libc::fcntl(raw, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, INFO_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = crate::process::spawn(cmd).context("cannot start bwrap")?;
        drop(write);
        let group = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        let (tx, exit) = watch::channel(None);
        let reaped = Arc::new(AtomicBool::new(false));
        let flag = reaped.clone();
        std::thread::Builder::new()
            .name(format!("kubesim-wait-{group}"))
            .spawn(move || {
                let code = child.wait().map(exit_code).unwrap_or(255);
                flag.store(true, Ordering::Release);
                let _ = tx.send(Some(code));
            })
            .context("cannot start a wait thread")?;
        let init = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || read_info(read)),
        )
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
        let mut process = Process {
            group,
            main: None,
            exit,
            reaped,
        };
        if let Some(init) = init {
            // bwrap's PID 1 forks the command right after it wrote the info.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while process.main.is_none() && tokio::time::Instant::now() < deadline {
                if process.exited().is_some() {
                    break;
                }
                process.main = only_child(init);
                if process.main.is_none() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(process)
    }

    /// A receiver of the exit code (`None` while running), for `select!`.
    pub fn exit_receiver(&self) -> watch::Receiver<Option<i32>> {
        self.exit.clone()
    }

    /// The exit code, once the sandbox is gone.
    pub fn exited(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits until the sandbox exits; returns the exit code.
    pub async fn wait(&mut self) -> i32 {
        match self.exit.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(255),
            Err(_) => 255,
        }
    }

    /// SIGTERM to the container's process, up to `grace` for it to exit, then SIGKILL
    /// to the whole sandbox. Returns the exit code.
    pub async fn terminate(&mut self, grace: Duration) -> Result<i32> {
        match self.main {
            Some(main) => self.signal(main, libc::SIGTERM),
            None => self.signal(-self.group, libc::SIGTERM),
        }
        if let Ok(code) = tokio::time::timeout(grace, self.wait()).await {
            return Ok(code);
        }
        self.kill();
        tokio::time::timeout(Duration::from_secs(10), self.wait())
            .await
            .map_err(|_| anyhow!("the sandbox did not exit 10s after SIGKILL"))
    }

    /// SIGKILL to the sandbox's process group (bwrap and, with its PID 1, everything
    /// in the sandbox).
    pub fn kill(&self) {
        self.signal(-self.group, libc::SIGKILL);
    }

    fn signal(&self, pid: libc::pid_t, signal: libc::c_int) {
        if self.reaped.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: plain syscall. The group leader is our unreaped child, so neither its
        // pid nor its group id can have been reused.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
