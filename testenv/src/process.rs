//! Child processes that cannot outlive the process that started them.
//!
//! Every server the test environment runs (etcd, kube-apiserver, redis-server) is
//! spawned here with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when its
//! parent goes away, even when the test binary panics, is SIGKILLed or calls
//! `process::exit` (where no `Drop` runs). The signal fires when the parent *thread*
//! exits, not the parent process, so all children are spawned from one dedicated
//! thread that lives as long as the process ([`spawn`]). A test thread would not do:
//! it ends with its test while a shared server must keep running.
//!
//! [`ManagedChild`] additionally stops its process on `Drop` for servers that are not
//! shared, and gives each child its own log file so a failure can quote it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The sender side of the spawner thread's queue. It lives in a static and is never
/// dropped, so the spawner thread never sees its queue close and never exits.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // Ends only when every sender is gone, which never happens (static).
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(err) = started {
            // Without the thread every spawn fails with a clear error below.
            eprintln!("testenv: cannot start the spawner thread: {err}");
        }
        Mutex::new(tx)
    })
}

/// Spawns `command` from the long-lived spawner thread with `PR_SET_PDEATHSIG =
/// SIGKILL` and in its own process group (so a terminal's Ctrl-C reaches only us and
/// we stop the servers in order).
pub fn spawn(mut command: Command) -> Result<Child> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe functions prctl, getppid and (via return) nothing else.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would
            // ever send the signal, so refuse to run at all.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    command.process_group(0);
    let program = command.get_program().to_string_lossy().into_owned();
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| anyhow!("spawner lock poisoned"))?
        .send((command, tx))
        .map_err(|_| anyhow!("the testenv spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| anyhow!("the testenv spawner thread is gone"))?
        .with_context(|| format!("cannot start {program}"))
}

/// A server process with a log file; killed (SIGKILL) on drop unless it was stopped.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl ManagedChild {
    /// Starts `command` via [`spawn`] with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<ManagedChild> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let err = out.try_clone().context("cannot clone log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = spawn(command).with_context(|| format!("cannot start {name}"))?;
        Ok(ManagedChild {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the file that receives the process' stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited (reaps it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The last `max_bytes` of the log, for error messages.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        log_tail(&self.log, max_bytes)
    }

    /// Sends SIGTERM, waits up to `grace` for the process to exit, then SIGKILLs it.
    /// Always reaps the process, so no zombie is left behind.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_exited().is_some() {
            return self.exited;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_exited().is_some() {
                return self.exited;
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, "did not exit after SIGTERM, killing it");
        self.kill()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }

    /// Sends SIGKILL without waiting (for `atexit`, where only `&self` is at hand).
    pub fn kill_now(&self) {
        if self.exited.is_none() {
            self.signal(libc::SIGKILL);
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall; the pid is our own unreaped child, so it cannot
            // have been reused by another process.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max_bytes` of a file (lossy UTF-8), or a note why it cannot be read.
pub fn log_tail(path: &Path, max_bytes: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|err| format!("<cannot read {}: {err}>", path.display()))
}
