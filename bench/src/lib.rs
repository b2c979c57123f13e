//! `ottoscaler-bench`: measures the release `ottoscaler` binary, run as a separate
//! process, against its own redis-server, kube-apiserver + etcd and kubesim on loopback.
//!
//! ```text
//!  harness ──XADD──► redis-server ◄──XREADGROUP / results── ottoscaler (child process)
//!     │                                                        │ create / delete
//!     │ own pod watch (timestamps)                             ▼
//!     └──────────────────────────────────────────────► kube-apiserver + etcd
//!  kubesim (in the harness) binds and runs the pods ─────────►  (own instance)
//! ```
//!
//! # Layout
//! - [`args`]: the command line and the sizes of a full and a `--quick` run.
//! - [`bench_env`]: the control plane, kubesim and Redis of one run; one lane
//!   (namespace + streams) per scenario.
//! - [`otto`]: the ottoscaler child process: config file, readiness, metrics, memory.
//! - [`recorder`]: a watch of our own recording when each pod was seen in which state.
//! - [`events`]: writing scale events and reading results on Redis.
//! - [`apiserver`]: the API server's own request counters.
//! - [`ceiling`]: the bare kube-rs client program B1, B2 and B6 compare against (the
//!   stock kube client, not ottoscaler's tuned transport: a reference, not a ceiling).
//! - [`keda`]: the KEDA operator of K1: build, CRDs, process, ScaledJob.
//! - [`consumer_group`]: K1's view of a Redis consumer group: KEDA's job agent (read
//!   and acknowledge one entry), and which entries of a run were never acknowledged.
//! - [`procfs`]: peak RSS and CPU time of a process.
//! - [`machine`]: what the numbers were measured on.
//! - [`stats`], [`http`]: percentiles; a minimal HTTP GET for ottoscaler's endpoints.
//! - [`scenarios`]: one file per benchmark (B1..B6, H1, H2, F1, K1).
//! - [`report`]: `results.json`, the Markdown table and the plot.

pub mod apiserver;
pub mod args;
pub mod bench_env;
pub mod ceiling;
pub mod consumer_group;
pub mod events;
pub mod http;
pub mod keda;
pub mod machine;
pub mod otto;
pub mod procfs;
pub mod recorder;
pub mod report;
pub mod scenarios;
pub mod stats;

use std::time::Instant;

use anyhow::{Context, Result};

use crate::args::Args;
use crate::bench_env::BenchEnv;
use crate::report::Report;

/// Runs every scenario in order and writes the report. A scenario that fails is
/// reported as failed (its rows carry the error) and the run goes on; the result is an
/// error if any failed, after the files are written.
pub async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let plan = args.plan();
    anyhow::ensure!(
        args.ottoscaler.is_file(),
        "the ottoscaler binary {} does not exist (build it: cargo build --release --bin ottoscaler)",
        args.ottoscaler.display()
    );
    let env = BenchEnv::start(&args)
        .await
        .context("starting the benchmark environment")?;
    let machine = machine::describe(&env).await;
    eprintln!("bench: environment up in {:.1?}", started.elapsed());

    // In this order: the memory scenario leaves 10,000 pods behind (they die with the
    // control plane), which would slow every scenario after it; H1, H2 and F1 time
    // reads and queue waits, and go before it too.
    let progress = |name: &str| eprintln!("bench: {name} done after {:.1?}", started.elapsed());
    let mut sections = Vec::new();
    if args.runs("B1") {
        sections.push(scenarios::b1_latency::run(&env, &plan).await);
        progress("B1/B6");
    }
    if args.runs("B2") {
        sections.push(scenarios::b2_throughput::run(&env, &plan).await);
        progress("B2");
    }
    if args.runs("B3") {
        sections.push(scenarios::b3_api_cost::run(&env, &plan).await);
        progress("B3");
    }
    if args.runs("H1") {
        sections.push(scenarios::h1_handover::run(&env, &plan).await);
        progress("H1");
    }
    if args.runs("H2") {
        sections.push(scenarios::h2_failover::run(&env, &plan).await);
        progress("H2");
    }
    if args.runs("F1") {
        sections.push(scenarios::f1_fairness::run(&env, &plan).await);
        progress("F1");
    }
    if args.runs("K1") {
        // Before B4, which leaves 10,000 pods behind.
        sections.push(scenarios::k1_keda::run(&env, &plan).await);
        progress("K1");
    }
    if args.runs("B4") {
        sections.push(scenarios::b4_memory::run(&env, &plan).await);
        progress("B4/B5");
    }

    let report = Report::new(&args, machine, sections, started.elapsed());
    report.write(&args).context("writing the report")?;
    env.stop().await;
    eprintln!("bench: done in {:.1?}", started.elapsed());
    report.fail_if_any_failed()
}
