//! The harness runs end to end in `--quick` mode against the debug ottoscaler binary and
//! writes a valid results.json with every benchmark id. Only that: no timing is
//! asserted, since a debug build on a shared CI machine says nothing about speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A quick run takes well under a minute; a cold control-plane build (testenv) takes
/// about 6 minutes on 2 cores.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// `ottoscaler` next to the harness binary (`<workspace>/target/debug/ottoscaler` in
/// a plain `cargo test`), built first if missing.
fn ottoscaler_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_ottoscaler-bench"));
    let profile_dir = bench.parent().expect("binary directory");
    let binary = profile_dir.join("ottoscaler");
    if !binary.is_file() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--bin", "ottoscaler"])
            .current_dir(workspace());
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = wait(cmd.spawn().expect("cargo build starts"), BUILD_TIMEOUT);
        assert!(status.success(), "cargo build --bin ottoscaler: {status}");
    }
    assert!(
        binary.is_file(),
        "{} missing after the build",
        binary.display()
    );
    binary
}

/// Waits for `child` (checking every 200 ms); kills it after `timeout`.
fn wait(mut child: Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {timeout:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_quick_run_writes_every_benchmark_with_a_number() {
    let ottoscaler = ottoscaler_binary();
    let out = std::env::temp_dir().join(format!("ottoscaler-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new(env!("CARGO_BIN_EXE_ottoscaler-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .arg("--ottoscaler")
        .arg(&ottoscaler)
        .spawn()
        .expect("the harness starts");
    let status = wait(child, RUN_TIMEOUT);
    let results = std::fs::read_to_string(out.join("results.json"));
    assert!(
        status.success(),
        "the harness failed ({status}); results: {results:?}; logs in {}",
        out.join("logs").display()
    );
    let results: serde_json::Value =
        serde_json::from_str(&results.expect("results.json written")).expect("valid JSON");
    assert!(results["machine"]["cores"].is_u64(), "{results}");
    let rows = results["results"].as_array().expect("a results array");
    for id in ["B1", "B2", "B3", "B4", "B5", "B6", "H1", "H2", "F1"] {
        let mine: Vec<_> = rows.iter().filter(|r| r["id"] == id).collect();
        assert!(!mine.is_empty(), "{id} missing in {results}");
        for row in mine {
            assert!(row["value"].is_number(), "{id} has no number: {row}");
            for key in ["unit", "target", "baseline", "ratio", "label"] {
                assert!(row.get(key).is_some(), "{id} lacks {key}: {row}");
            }
        }
    }
    assert!(out.join("benchmarks.md").is_file());
    assert!(out.join("benchmarks.png").is_file());
    let _ = std::fs::remove_dir_all(&out);
}
