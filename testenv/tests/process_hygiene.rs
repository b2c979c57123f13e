//! Nothing the test environment starts outlives it: not after an orderly stop, not
//! when its process is SIGKILLed, not when a control plane is dropped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Live (non-zombie) processes whose command line mentions `needle`, as (pid, cmdline).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if !cmdline.contains(needle) {
            continue;
        }
        // A zombie has exited already; it only waits for its parent to reap it.
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if state != Some('Z') {
            found.push((pid, cmdline));
        }
    }
    found
}

/// `testenv up` as a child of this test (itself with PDEATHSIG, so a failing test
/// leaves nothing behind either); killed on drop.
struct Up {
    child: Child,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Up {
    /// Starts `testenv up` and waits for its `export KUBECONFIG=` line.
    fn start() -> Up {
        // Build (or find) the binaries here, without a time limit, so the child's
        // start-up below is quick even on a cold cache.
        let bin = testenv::binaries::binaries_dir().expect("control-plane binaries");
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp
            .path()
            .canonicalize()
            .expect("canonical temp dir")
            .join("env");
        let log = fs::File::create(tmp.path().join("up.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_testenv"));
        command
            .arg("up")
            .arg("--dir")
            .arg(&dir)
            .env(testenv::binaries::BIN_ENV, &bin)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = testenv::process::spawn(command).expect("start testenv up");
        let stdout = child.stdout.take().expect("piped stdout");
        let up = Up {
            child,
            dir,
            _tmp: tmp,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = tx.send(first);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let expected = format!("export KUBECONFIG={}", up.dir.join("kubeconfig").display());
        if line.trim_end() != expected {
            let log = fs::read_to_string(up._tmp.path().join("up.log")).unwrap_or_default();
            panic!("expected {expected:?} from testenv up, got {line:?}; its stderr:\n{log}");
        }
        assert!(up.dir.join("kubeconfig").is_file(), "kubeconfig written");
        up
    }

    /// The servers of this instance (and `testenv up` itself), by command line.
    fn processes(&self) -> Vec<(u32, String)> {
        processes_mentioning(self.dir.to_str().expect("utf-8 temp dir"))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

fn assert_servers_running(processes: &[(u32, String)]) {
    for name in [
        "/etcd ",
        "/kube-apiserver ",
        "/kube-scheduler ",
        "/kube-controller-manager ",
    ] {
        assert!(
            processes.iter().any(|(_, cmd)| cmd.contains(name)),
            "no {name} process among {processes:#?}"
        );
    }
}

/// Waits (bounded) until no process mentions `dir`; returns the leftovers otherwise.
fn gone_within(dir: &Path, within: Duration) -> Vec<(u32, String)> {
    let needle = dir.to_str().expect("utf-8 temp dir");
    let deadline = Instant::now() + within;
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn testenv_up_stops_etcd_and_kube_apiserver_and_exits_0_on_sigterm() {
    let mut up = Up::start();
    assert_servers_running(&up.processes());

    up.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = up.child.try_wait().expect("wait for testenv up") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "testenv up did not exit within 40 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "testenv up exited with {status}");
    // testenv up reaps its servers before it exits: nothing may be left right away.
    let left = up.processes();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn killing_testenv_up_with_sigkill_takes_etcd_and_kube_apiserver_down_with_it() {
    let mut up = Up::start();
    assert_servers_running(&up.processes());

    up.signal("KILL");
    up.child.wait().expect("reap testenv up");
    // No Drop, no signal handler ran: only PDEATHSIG can have ended the servers.
    let left = gone_within(&up.dir, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[tokio::test]
async fn a_control_plane_of_its_own_is_killed_when_dropped() {
    let cp = testenv::ControlPlane::start(testenv::ControlPlaneOptions::default())
        .await
        .expect("control plane starts");
    let (etcd, apiserver) = cp.pids();
    let (scheduler, controller_manager) = cp.control_loop_pids();
    let dir = cp.dir().to_path_buf();
    let pids = [etcd, apiserver, scheduler, controller_manager];
    for pid in pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} runs"
        );
    }
    drop(cp);
    // Killed and reaped in drop: the pids are gone at once, and so is the directory.
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// Environment variable that turns the helper test below into a real test run.
const CHILD_ENV: &str = "TESTENV_HYGIENE_CHILD_OUT";

/// Only does something when run by the next test as a child process: it starts the
/// shared environment and writes the pids and directory of its servers to a file.
#[tokio::test]
async fn helper_child_uses_the_shared_environment_when_asked() {
    let Ok(out) = std::env::var(CHILD_ENV) else {
        return;
    };
    let env = testenv::shared();
    let ns = env.namespace("child").await;
    assert!(ns.starts_with("child-"));
    let (etcd, apiserver) = env.control_plane().pids();
    let dir = env.control_plane().dir().display().to_string();
    fs::write(out, format!("{etcd} {apiserver} {dir}")).expect("write child report");
}

fn alive(pid: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state.is_some_and(|s| s != 'Z')
}

#[test]
fn a_test_binary_that_used_the_shared_environment_leaves_no_server_or_directory_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let report = tmp.path().join("child.txt");
    let status = Command::new(std::env::current_exe().expect("own test binary"))
        .args([
            "--exact",
            "helper_child_uses_the_shared_environment_when_asked",
        ])
        .env(CHILD_ENV, &report)
        .stdout(Stdio::null())
        .status()
        .expect("run the child test binary");
    assert!(status.success(), "child test run failed: {status}");
    let text = fs::read_to_string(&report).expect("the child wrote its report");
    let parts: Vec<&str> = text.splitn(3, ' ').collect();
    let [etcd, apiserver, dir] = parts[..] else {
        panic!("bad child report {text:?}");
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(etcd) || alive(apiserver)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(etcd), "etcd {etcd} outlived the test binary");
    assert!(
        !alive(apiserver),
        "kube-apiserver {apiserver} outlived the test binary"
    );
    assert!(!Path::new(dir).exists(), "{dir} outlived the test binary");
}
