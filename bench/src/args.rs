//! The command line, and how big each scenario is in a full and in a `--quick` run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::scenarios::ha::Lease;

pub const USAGE: &str = "\
usage: ottoscaler-bench [--quick] [--out DIR] [--ottoscaler PATH] [--only B1,H1,...] [--peers]
                        [--rates 50,100] [--rounds N]

  --quick            tiny counts (seconds instead of minutes); for smoke tests
  --out DIR          write results.json, benchmarks.md and benchmarks.png into DIR
                     (default: target/bench/results.json, docs/benchmarks.md and
                     docs/benchmarks.png of the workspace)
  --ottoscaler PATH  the ottoscaler binary to measure (default: target/release/ottoscaler
                     of the workspace)
  --only LIST        run only these scenarios (B1 includes B6, B4 includes B5; also H1,
                     H2, F1); for diagnosis: the report then lacks the others; K1 is the
                     KEDA lane
  --rates LIST       B1's rates in events/s, in this order (default 10,25,50,100); a
                     rate not in the default list sends for 10 s; for diagnosis
  --rounds N         B1's rounds per rate, each a run of ottoscaler and one of the bare
                     client, who goes first alternating (default 3; --quick 1)
  --peers            also run K1: ottoscaler next to KEDA's ScaledJob (builds the KEDA
                     operator with testenv/keda/build.sh, cached; what make bench-peers
                     runs)

environment: OTTOSCALER_BENCH_ENV_X=v is passed to ottoscaler as X=v (e.g. RUST_LOG)";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Args {
    pub quick: bool,
    pub out: Option<PathBuf>,
    pub ottoscaler: PathBuf,
    /// Scenario ids to run (B1, B2, B3, B4, H1, H2, F1, K1); empty: all but K1.
    pub only: Vec<String>,
    /// Whether K1 (the KEDA lane) runs beside the others.
    pub peers: bool,
    /// B1's rates (events/s) when given; empty: the plan's.
    pub rates: Vec<u32>,
    /// B1's rounds per rate when given.
    pub rounds: Option<u32>,
    /// The command as typed, for the report.
    pub command: String,
}

/// The scenarios `--only` can name; B6 comes with B1 and B5 with B4; H1 (hand-over) and
/// H2 (fail-over) run apart, each with its own pair of replicas; K1 (KEDA) runs only
/// when named or with `--peers`.
const SCENARIOS: [&str; 8] = ["B1", "B2", "B3", "B4", "H1", "H2", "F1", "K1"];

/// The workspace root (this crate's parent directory), fixed at compile time so the
/// defaults work from any working directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Args {
    /// Parses `argv` (without the program name). `Ok(None)` means `--help`.
    pub fn parse(program: &str, argv: &[String]) -> Result<Option<Args>> {
        let mut quick = false;
        let mut out = None;
        let mut ottoscaler = None;
        let mut only = Vec::new();
        let mut peers = false;
        let mut rates = Vec::new();
        let mut rounds = None;
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--peers" => peers = true,
                "--out" => out = Some(PathBuf::from(value(&mut it, "--out")?)),
                "--ottoscaler" => ottoscaler = Some(PathBuf::from(value(&mut it, "--ottoscaler")?)),
                "--only" => {
                    only = value(&mut it, "--only")?
                        .split(',')
                        .map(|s| s.trim().to_ascii_uppercase())
                        .collect();
                    if let Some(bad) = only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                        bail!("--only: unknown scenario {bad:?} (one of {SCENARIOS:?})");
                    }
                }
                "--rates" => rates = parse_rates(value(&mut it, "--rates")?)?,
                "--rounds" => rounds = Some(parse_rounds(value(&mut it, "--rounds")?)?),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        let ottoscaler =
            ottoscaler.unwrap_or_else(|| workspace_root().join("target/release/ottoscaler"));
        let command = std::iter::once(program.to_string())
            .chain(argv.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Some(Args {
            quick,
            out,
            ottoscaler,
            only,
            peers,
            rates,
            rounds,
            command,
        }))
    }

    /// Whether scenario `id` (one of [`SCENARIOS`]) is to run.
    pub fn runs(&self, id: &str) -> bool {
        let named = self.only.iter().any(|s| s == id);
        if id == "K1" {
            return named || (self.peers && self.only.is_empty());
        }
        self.only.is_empty() || named
    }

    pub fn plan(&self) -> Plan {
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if !self.rates.is_empty() {
            let seconds = |rate: u32| {
                plan.latency_rates
                    .iter()
                    .find(|(r, _)| *r == rate)
                    .map_or(10, |(_, s)| *s)
            };
            plan.latency_rates = self.rates.iter().map(|&r| (r, seconds(r))).collect();
        }
        if let Some(rounds) = self.rounds {
            plan.latency_rounds = rounds;
        }
        plan
    }

    /// Where results.json goes.
    pub fn results_path(&self) -> PathBuf {
        match &self.out {
            Some(dir) => dir.join("results.json"),
            None => workspace_root().join("target/bench/results.json"),
        }
    }

    /// The directory of benchmarks.md and benchmarks.png.
    pub fn docs_dir(&self) -> PathBuf {
        match &self.out {
            Some(dir) => dir.clone(),
            None => workspace_root().join("docs"),
        }
    }
}

/// `--rates`: events per second, each in 1..=1000.
fn parse_rates(list: &str) -> Result<Vec<u32>> {
    list.split(',')
        .map(|r| match r.trim().parse::<u32>() {
            Ok(rate @ 1..=1000) => Ok(rate),
            _ => bail!("--rates: {r:?} is not a rate in events/s from 1 to 1000"),
        })
        .collect()
}

/// `--rounds`: 1 to 10.
fn parse_rounds(n: &str) -> Result<u32> {
    match n.trim().parse::<u32>() {
        Ok(rounds @ 1..=10) => Ok(rounds),
        _ => bail!("--rounds: {n:?} is not a number of rounds from 1 to 10"),
    }
}

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a str> {
    match it.next() {
        Some(v) => Ok(v),
        None => bail!("{flag} needs a value\n{USAGE}"),
    }
}

/// Entries sent at a steady rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paced {
    /// Entries per second.
    pub rate: u32,
    /// Seconds of sending.
    pub seconds: u32,
}

impl Paced {
    pub fn count(&self) -> u32 {
        self.rate * self.seconds
    }
}

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// B1: (events per second, seconds of sending) per row.
    pub latency_rates: Vec<(u32, u32)>,
    /// B1: rounds per rate; a round is one run of each contender, who goes first
    /// alternating from round to round.
    pub latency_rounds: u32,
    /// B2: one-pod events, and the concurrency (max_workers) of both contenders.
    pub throughput_events: u32,
    pub throughput_concurrency: u32,
    /// B3: workers per run, and the run times (seconds) compared.
    pub cost_workers: u32,
    pub cost_run_seconds: Vec<u32>,
    /// K1: (events per second, seconds of sending) per rate, for both systems.
    pub peer_rates: Vec<(u32, u32)>,
    /// K1 restart: each system gets `rate` entries/s for `seconds` and is SIGKILLed
    /// (and started again) half-way through.
    pub peer_restart: Paced,
    /// K1 with KEDA's default pollingInterval: the seconds of the interval, and the
    /// entries (its rate is one of `peer_rates`, whose ottoscaler run it is shown with).
    pub peer_slow_polling: (u32, Paced),
    /// B4: worker counts at which the peak RSS is read (ascending).
    pub memory_steps: Vec<u32>,
    /// B5: live pods a fresh instance adopts (one of `memory_steps`).
    pub restart_pods: u32,
    /// H1: SIGTERMs of the leader, one every `handover_phase` of load.
    pub handovers: u32,
    pub handover_phase: Duration,
    /// H2: kill -9s of the leader, one every `kill_phase` of load, on a Lease with
    /// these timings.
    pub kills: u32,
    pub kill_phase: Duration,
    pub failover_lease: Lease,
    /// F1: tenant A's events at once, tenant B's at 1/s, and `limits.max_workers`.
    pub fairness_flood: u32,
    pub fairness_latecomers: u32,
    pub fairness_max_workers: u32,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            latency_rates: vec![(10, 20), (25, 10), (50, 10), (100, 10)],
            // Odd, so the median of the rounds' ratios is one round's.
            latency_rounds: 3,
            throughput_events: 2000,
            throughput_concurrency: 200,
            cost_workers: 50,
            cost_run_seconds: vec![1, 60],
            peer_rates: vec![(10, 20), (25, 10)],
            peer_restart: Paced {
                rate: 10,
                seconds: 30,
            },
            peer_slow_polling: (
                30,
                Paced {
                    rate: 10,
                    seconds: 90,
                },
            ),
            memory_steps: vec![1000, 5000, 10_000],
            restart_pods: 5000,
            handovers: 6,
            handover_phase: Duration::from_secs(3),
            kills: 4,
            kill_phase: Duration::from_secs(6),
            failover_lease: Lease::SHORT,
            fairness_flood: 300,
            fairness_latecomers: 20,
            fairness_max_workers: 10,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            latency_rates: vec![(10, 2), (100, 1)],
            latency_rounds: 1,
            throughput_events: 40,
            throughput_concurrency: 20,
            cost_workers: 5,
            cost_run_seconds: vec![1, 2],
            peer_rates: vec![(10, 2), (25, 1)],
            peer_restart: Paced {
                rate: 10,
                seconds: 4,
            },
            peer_slow_polling: (
                5,
                Paced {
                    rate: 10,
                    seconds: 6,
                },
            ),
            memory_steps: vec![50, 100],
            restart_pods: 100,
            handovers: 1,
            handover_phase: Duration::from_secs(2),
            kills: 1,
            kill_phase: Duration::from_secs(4),
            failover_lease: Lease::QUICK,
            fairness_flood: 12,
            fairness_latecomers: 2,
            fairness_max_workers: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_point_into_the_workspace() {
        let a = Args::parse("bench", &[]).expect("parse").expect("args");
        assert!(!a.quick);
        assert!(a.ottoscaler.ends_with("target/release/ottoscaler"));
        assert!(a.results_path().ends_with("target/bench/results.json"));
        assert!(a.docs_dir().ends_with("docs"));
    }

    #[test]
    fn out_puts_every_file_in_one_directory() {
        let a = Args::parse("bench", &args(&["--quick", "--out", "/tmp/x"]))
            .expect("parse")
            .expect("args");
        assert!(a.quick);
        assert_eq!(a.results_path(), PathBuf::from("/tmp/x/results.json"));
        assert_eq!(a.docs_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(a.command, "bench --quick --out /tmp/x");
    }

    #[test]
    fn unknown_and_incomplete_arguments_are_refused() {
        assert!(Args::parse("bench", &args(&["--fast"])).is_err());
        assert!(Args::parse("bench", &args(&["--out"])).is_err());
        assert!(
            Args::parse("bench", &args(&["--help"]))
                .expect("parse")
                .is_none()
        );
        assert!(Args::parse("bench", &args(&["--only", "B7"])).is_err());
        let a = Args::parse("bench", &args(&["--only", "b2,B4"]))
            .expect("parse")
            .expect("args");
        assert!(a.runs("B2") && a.runs("B4") && !a.runs("B1"));
        let a = Args::parse("bench", &args(&["--only", "H1,h2,F1"]))
            .expect("parse")
            .expect("args");
        assert!(a.runs("H1") && a.runs("H2") && a.runs("F1") && !a.runs("B1"));
        let all = Args::parse("bench", &[]).expect("parse").expect("args");
        assert!(all.runs("H1") && all.runs("H2") && all.runs("F1"));
    }

    #[test]
    fn rates_pick_b1s_rates_and_keep_their_durations() {
        let a = Args::parse("bench", &args(&["--rates", "100, 50,30"]))
            .expect("parse")
            .expect("args");
        assert_eq!(a.plan().latency_rates, vec![(100, 10), (50, 10), (30, 10)]);
        let a = Args::parse("bench", &args(&["--rates", "10"]))
            .expect("parse")
            .expect("args");
        assert_eq!(a.plan().latency_rates, vec![(10, 20)]);
        assert_eq!(
            Args::parse("bench", &[])
                .expect("parse")
                .expect("args")
                .plan()
                .latency_rates,
            Plan::full().latency_rates
        );
        for bad in ["0", "fast", "10,,20", "1001"] {
            let err = Args::parse("bench", &args(&["--rates", bad])).expect_err(bad);
            assert!(err.to_string().starts_with("--rates: "), "{err}");
        }
    }

    #[test]
    fn rounds_set_b1s_rounds_per_rate() {
        let plan = |list: &[&str]| {
            Args::parse("bench", &args(list))
                .expect("parse")
                .expect("args")
                .plan()
        };
        assert_eq!(plan(&[]).latency_rounds, 3);
        assert_eq!(plan(&["--quick"]).latency_rounds, 1);
        assert_eq!(plan(&["--rounds", "4"]).latency_rounds, 4);
        assert_eq!(plan(&["--quick", "--rounds", "2"]).latency_rounds, 2);
        for bad in ["0", "11", "two"] {
            let err = Args::parse("bench", &args(&["--rounds", bad])).expect_err(bad);
            assert!(err.to_string().starts_with("--rounds: "), "{err}");
        }
    }

    #[test]
    fn the_keda_lane_runs_only_when_asked_for() {
        let all = Args::parse("bench", &[]).expect("parse").expect("args");
        assert!(all.runs("B1") && !all.runs("K1"));
        let peers = Args::parse("bench", &args(&["--peers"]))
            .expect("parse")
            .expect("args");
        assert!(peers.runs("B1") && peers.runs("K1"));
        let only = Args::parse("bench", &args(&["--only", "K1"]))
            .expect("parse")
            .expect("args");
        assert!(only.runs("K1") && !only.runs("B1"));
    }

    #[test]
    fn the_slow_polling_rate_has_an_ottoscaler_run() {
        for plan in [Plan::full(), Plan::quick()] {
            let (_, paced) = plan.peer_slow_polling;
            assert!(plan.peer_rates.iter().any(|(rate, _)| *rate == paced.rate));
        }
    }

    #[test]
    fn the_restart_size_is_one_of_the_memory_steps() {
        for plan in [Plan::full(), Plan::quick()] {
            assert!(plan.memory_steps.contains(&plan.restart_pods));
        }
    }
}
