//! The compiled `ottoscaler` binary as a separate process, configured the way the
//! Deployment configures it: environment variables and a config file. Used by the
//! end-to-end and reliability tests, which kill, restart and probe it from outside.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use testenv::process::ManagedChild;

/// The binary under test, built by cargo for the integration tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_ottoscaler");

/// Templates as the Deployment's ConfigMap would carry them: `default`, whose pods run
/// 1 s, and `long`, whose pods run 600 s (until a scale_down).
pub const SHORT_AND_LONG_TEMPLATES: &str = r#"
[templates.default]
image = "busybox:latest"
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "1" }

[templates.long]
image = "busybox:latest"
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "600" }
"#;

/// How one ottoscaler is started; kept so it can be restarted the same way.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Holds the config file and the log (shared by every incarnation).
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    /// `REDIS_HOST=127.0.0.1` + `REDIS_PORT`, as the seed configures it.
    pub redis_port: u16,
    /// `REDIS_CONSUMER`.
    pub consumer: String,
    /// The config file's TOML (templates mostly).
    pub config: String,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// Further variables; they win over the ones above.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// Against the shared control plane, with an empty config file.
    pub fn new(redis_port: u16, namespace: &str, dir: &Path) -> Launch {
        Launch {
            dir: dir.to_path_buf(),
            kubeconfig: testenv::shared().kubeconfig_path().to_path_buf(),
            namespace: namespace.to_string(),
            redis_port,
            consumer: "ottoscaler-test-0".into(),
            config: String::new(),
            rust_log: "info,ottoscaler=debug".into(),
            env: Vec::new(),
        }
    }

    pub fn config(mut self, toml: &str) -> Launch {
        self.config = toml.to_string();
        self
    }

    pub fn consumer(mut self, name: &str) -> Launch {
        self.consumer = name.to_string();
        self
    }

    pub fn kubeconfig(mut self, path: &Path) -> Launch {
        self.kubeconfig = path.to_path_buf();
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Launch {
        self.rust_log = filter.to_string();
        self
    }

    /// Leader election on, with these Lease timings (short ones in tests; say so).
    pub fn ha(self, lease_duration: &str, renew_deadline: &str, retry_period: &str) -> Launch {
        self.env("OTTOSCALER_HA__ENABLED", "true")
            .env("OTTOSCALER_HA__LEASE_DURATION", lease_duration)
            .env("OTTOSCALER_HA__RENEW_DEADLINE", renew_deadline)
            .env("OTTOSCALER_HA__RETRY_PERIOD", retry_period)
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("ottoscaler.toml")
    }

    /// The command with a clean environment: only what is set here reaches ottoscaler.
    fn command(&self, args: &[&str], http_port: u16) -> Command {
        let mut cmd = Command::new(BINARY);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("OTTOSCALER_CONFIG", self.config_path())
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("REDIS_CONSUMER", &self.consumer)
            .env("OTTOSCALER_KUBERNETES__NAMESPACE", &self.namespace)
            .env("OTTOSCALER_HTTP__ADDR", format!("127.0.0.1:{http_port}"))
            .env("OTTOSCALER_SHUTDOWN_TIMEOUT", "5s")
            // One process per test acts alone unless the test turns election on
            // (`Launch::ha`); the Lease, if any, lives in the test's namespace.
            .env("OTTOSCALER_HA__ENABLED", "false")
            .env("OTTOSCALER_HA__LEASE_NAMESPACE", &self.namespace)
            .env("RUST_LOG", &self.rust_log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a short-lived subcommand (`check-config`, `send-event ...`) with this
    /// launch's environment; waits at most 60 s.
    pub fn run_cli(&self, args: &[&str]) -> Output {
        self.write_config();
        let mut child = self
            .command(args, free_port())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ottoscaler runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ottoscaler {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("ottoscaler output")
    }

    fn write_config(&self) {
        std::fs::create_dir_all(&self.dir).expect("ottoscaler dir");
        std::fs::write(self.config_path(), &self.config).expect("write ottoscaler config");
    }
}

/// A running `ottoscaler run`. Killed when dropped (and with the test binary).
pub struct Ottoscaler {
    child: ManagedChild,
    launch: Launch,
    http: String,
    log: PathBuf,
    starts: u32,
}

impl Ottoscaler {
    /// Writes the config file and starts the process; its output goes to
    /// `<dir>/ottoscaler.log`.
    pub fn start(launch: Launch) -> Ottoscaler {
        launch.write_config();
        let log = launch.dir.join("ottoscaler.log");
        let (child, http) = Self::spawn(&launch, &log);
        Ottoscaler {
            child,
            launch,
            http,
            log,
            starts: 1,
        }
    }

    fn spawn(launch: &Launch, log: &Path) -> (ManagedChild, String) {
        let port = free_port();
        let child = ManagedChild::start("ottoscaler", launch.command(&["run"], port), log)
            .expect("ottoscaler starts");
        (child, format!("http://127.0.0.1:{port}"))
    }

    /// `kill -9`: no shutdown code runs, as when a node dies or the OOM killer strikes.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.stop(grace)
    }

    /// Starts a new process with the same launch (killing the old one if it still
    /// runs), as a restarted container keeps its configuration.
    pub fn restart(&mut self) {
        self.child.kill();
        self.starts += 1;
        self.note(&format!(
            "restart {} as consumer {}",
            self.starts, self.launch.consumer
        ));
        let (child, http) = Self::spawn(&self.launch, &self.log);
        self.child = child;
        self.http = http;
    }

    /// Like [`restart`](Self::restart), under a new consumer name, as a Deployment's
    /// new pod gets a new name.
    pub fn restart_as(&mut self, consumer: &str) {
        self.launch.consumer = consumer.to_string();
        self.restart();
    }

    /// Writes a marker line into the log, so a failure's log tail shows the restarts.
    fn note(&self, text: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "===== test: {text} =====");
        }
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    pub fn consumer(&self) -> &str {
        &self.launch.consumer
    }

    /// How many processes were started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_exited()
    }

    /// `GET` on the HTTP port: (status, body); status 0 when nobody answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("{}{path}", self.http))
    }

    /// Waits until `path` answers `status`; panics with the log tail on timeout or if
    /// the process exits.
    pub fn wait_http(&mut self, path: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get(path);
            if code == status {
                return;
            }
            if let Some(exit) = self.child.try_exited() {
                panic!("ottoscaler exited ({exit}):\n{}", self.log_tail(8000));
            }
            assert!(
                Instant::now() < deadline,
                "{path} is {code} {body:?}, not {status}, after {timeout:?}\n{}",
                self.log_tail(8000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `/readyz` 200 (Redis answers and the pod watch is up).
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.wait_http("/readyz", 200, timeout);
    }

    /// The `/metrics` text (empty when nobody answers).
    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// The value of the first metric line starting with `line_prefix`.
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        metric_value(&self.metrics(), line_prefix)
    }

    /// The last `max_bytes` of the log of every incarnation.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        testenv::process::log_tail(&self.log, max_bytes)
    }

    /// The whole log (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The value of the first line of `metrics` starting with `line_prefix`.
pub fn metric_value(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of metric `name` whose labels contain all of `labels`
/// (`code="429"`...).
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        // An empty float sum is -0.0; + 0.0 makes it print as 0.
        + 0.0
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP/1.0 GET (the tests need no HTTP client crate): (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A fresh directory under the system temp dir, named after the test.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ottoscaler-{label}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The established TCP connections of process `pid` to `127.0.0.1:port`: its socket
/// inodes (from /proc/PID/fd) matched against the IPv4 table of its network namespace.
pub fn connections_to(pid: u32, port: u16) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read the process's fds");
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("read net/tcp");
    // `sl local_address rem_address st ... inode`; 0100007F:PORT is 127.0.0.1, 01 is
    // ESTABLISHED.
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[2] == remote && f[3] == "01" && inodes.contains(f[9]))
        .count()
}
