//! A real `redis-server` on a free loopback port, one per test that needs it.
//!
//! Real Redis rather than a fake: ottoscaler relies on stream semantics (consumer
//! groups, pending entries, XAUTOCLAIM) that a fake would only approximate.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ports::free_port;
use crate::process::ManagedChild;
use crate::workdir::WorkDir;

/// Environment variable overriding the `redis-server` binary (default: from PATH).
pub const REDIS_SERVER_ENV: &str = "OTTOSCALER_REDIS_SERVER";

/// How long a start may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running (or stopped, restartable) redis-server. Killed on drop; also dies with
/// the process that started it (PDEATHSIG).
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the server is killed before its directory is removed.
    child: Option<ManagedChild>,
    port: u16,
    aof: bool,
    dir: WorkDir,
}

impl RedisServer {
    /// Starts redis-server without persistence (`--save "" --appendonly no`).
    /// Panics with the server's log if it does not come up.
    pub fn start() -> RedisServer {
        Self::try_start(false).unwrap_or_else(|err| panic!("testenv: {err:#}"))
    }

    /// Starts redis-server with an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`), so data survives [`stop`] +
    /// [`start_again`], even if the stop was a SIGKILL ([`kill`]).
    ///
    /// [`stop`]: RedisServer::stop
    /// [`start_again`]: RedisServer::start_again
    /// [`kill`]: RedisServer::kill
    pub fn start_with_aof() -> RedisServer {
        Self::try_start(true).unwrap_or_else(|err| panic!("testenv: {err:#}"))
    }

    /// Like [`start`](RedisServer::start) / [`start_with_aof`](RedisServer::start_with_aof)
    /// but returns errors.
    pub fn try_start(aof: bool) -> Result<RedisServer> {
        let dir = WorkDir::temp("redis")?;
        let mut last_err = None;
        // A port found free may be taken before redis binds it: retry with another.
        for _ in 0..3 {
            let mut server = RedisServer {
                child: None,
                port: free_port()?,
                aof,
                dir: WorkDir::existing(dir.path())?,
            };
            match server.launch() {
                Ok(()) => {
                    server.dir = dir;
                    return Ok(server);
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory (holds the AOF when enabled, and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop(Duration::from_secs(10));
        }
    }

    /// Kills the server with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port and directory (after [`stop`] or
    /// [`kill`]); with AOF the data is back. Panics if it does not come up.
    ///
    /// [`stop`]: RedisServer::stop
    /// [`kill`]: RedisServer::kill
    pub fn start_again(&mut self) {
        if let Err(err) = self.try_start_again() {
            panic!("testenv: {err:#}");
        }
    }

    /// [`start_again`](RedisServer::start_again) returning errors.
    pub fn try_start_again(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Whether the server is running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_exited().is_none())
    }

    /// Pid of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ManagedChild::pid)
    }

    fn launch(&mut self) -> Result<()> {
        let binary = std::env::var_os(REDIS_SERVER_ENV)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let mut command = Command::new(&binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", ""]);
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let log = self.dir.path().join("redis.log");
        let mut child = ManagedChild::start("redis-server", command, &log)
            .with_context(|| format!("cannot start {} (is Redis installed?)", binary.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_exited() {
                bail!(
                    "redis-server on port {} exited ({status}); log tail:\n{}",
                    self.port,
                    child.log_tail(3000)
                );
            }
            if ping(self.port).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    child.log_tail(3000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends an inline `PING` and expects `+PONG` (a server still loading its AOF
/// answers `-LOADING`, which counts as not ready).
fn ping(port: u16) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.trim_end() == "+PONG" {
        Ok(())
    } else {
        bail!("unexpected PING answer {line:?}")
    }
}
