//! One file per benchmark: each `run` returns its [`Section`](crate::report::Section)
//! and never fails the whole run (a failed scenario's rows carry the error).
//!
//! - [`b1_latency`]: B1 event latency at each rate, and from the same pods B6
//!   ([`b6_completion`]) completion latency.
//! - [`b2_throughput`]: B2 pods cycled per second against the bare kube-rs client
//!   ([`crate::ceiling`]).
//! - [`b3_api_cost`]: B3 API requests per worker lifecycle.
//! - [`b4_memory`]: B4 peak RSS per worker count, with B5 ([`b5_restart`]) in the
//!   middle: a fresh instance adopts the live pods.
//! - [`h1_handover`]: H1 graceful hand-over (SIGTERM of the leader) between two
//!   replicas, the intake gap; [`h2_failover`]: H2 crash fail-over (kill -9 of the
//!   leader), kill to the new leader's first read; both on [`ha`]'s replicas and load.
//! - [`f1_fairness`]: F1 a latecomer tenant's queue wait behind a flood, fair queueing
//!   against FIFO.
//! - [`k1_keda`]: K1 ottoscaler next to KEDA's ScaledJob (only with `--peers` or
//!   `--only K1`).

pub mod b1_latency;
pub mod b2_throughput;
pub mod b3_api_cost;
pub mod b4_memory;
pub mod b5_restart;
pub mod b6_completion;
pub mod f1_fairness;
pub mod h1_handover;
pub mod h2_failover;
pub mod ha;
pub mod k1_keda;

use std::time::Instant;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::bench_env::BenchEnv;
use crate::procfs;
use crate::report::json::round;
use crate::report::{Row, Section};

/// A scenario's section from its rows, or, when it failed, rows of `labels` (under `id`)
/// that carry the error.
pub fn section_of(id: &'static str, labels: &[String], measured: Result<Vec<Row>>) -> Section {
    match measured {
        Ok(rows) => Section {
            rows,
            ..Section::default()
        },
        Err(err) => {
            let ids: Vec<(&'static str, &str)> = labels.iter().map(|l| (id, l.as_str())).collect();
            Section::failed(&ids, &err)
        }
    }
}

/// CPU seconds each process of the setup used during a scenario: tells whether
/// ottoscaler or the control plane was busy.
pub struct CpuMeter {
    start: Instant,
    procs: Vec<(&'static str, u32, Option<f64>)>,
}

impl CpuMeter {
    pub fn start(env: &BenchEnv, ottoscaler: Option<u32>) -> CpuMeter {
        let (etcd, apiserver) = env.env.control_plane().pids();
        let mut pids = vec![
            ("kube-apiserver", apiserver),
            ("etcd", etcd),
            (
                "harness (kubesim, watches, bare client)",
                std::process::id(),
            ),
        ];
        if let Some(pid) = env.redis.pid() {
            pids.push(("redis-server", pid));
        }
        if let Some(pid) = ottoscaler {
            pids.push(("ottoscaler", pid));
        }
        CpuMeter {
            start: Instant::now(),
            procs: pids
                .into_iter()
                .map(|(name, pid)| (name, pid, procfs::cpu_seconds(pid)))
                .collect(),
        }
    }

    /// `{"wall": s, "<process>": cpu s, ...}` since [`CpuMeter::start`].
    pub fn json(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "wall".into(),
            round(self.start.elapsed().as_secs_f64(), 2).into(),
        );
        for (name, pid, before) in &self.procs {
            if let (Some(before), Some(now)) = (before, procfs::cpu_seconds(*pid)) {
                map.insert((*name).into(), round(now - before, 2).into());
            }
        }
        Value::Object(map)
    }
}

/// From a [`CpuMeter::json`]: the mean cores `process` used, and those of every process
/// measured together, over the wall time.
pub fn cores(cpu: &Value, process: &str) -> (Option<f64>, Option<f64>) {
    let Some(wall) = cpu["wall"].as_f64().filter(|w| *w > 0.0) else {
        return (None, None);
    };
    let total: f64 = cpu
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.as_str() != "wall")
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    let one = cpu[process].as_f64().map(|s| round(s / wall, 2));
    (one, Some(round(total / wall, 2)))
}

/// MiB, for memory figures.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_cpu_seconds_per_wall_second() {
        let cpu = serde_json::json!({
            "wall": 10.0,
            "kube-apiserver": 14.0,
            "etcd": 2.0,
            "ottoscaler": 1.5,
        });
        assert_eq!(cores(&cpu, "kube-apiserver"), (Some(1.4), Some(1.75)));
        assert_eq!(cores(&cpu, "redis-server"), (None, Some(1.75)));
        assert_eq!(
            cores(&serde_json::json!({"etcd": 1.0}), "etcd"),
            (None, None)
        );
    }
}
