//! The results: one [`Row`] per measured number, gathered from each scenario's
//! [`Section`], written as `results.json` ([`json`]), a Markdown table ([`markdown`])
//! and a plot ([`plot`]).

pub mod json;
pub mod markdown;
pub mod plot;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::args::Args;

/// The K1 plot, next to benchmarks.md.
pub const KEDA_PLOT: &str = "benchmarks-keda.png";

/// Which way a target points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// A row's goal: on its value, or on its ratio to the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub bound: Bound,
    pub limit: f64,
    pub on_ratio: bool,
}

impl Target {
    pub fn at_most(limit: f64) -> Target {
        Target {
            bound: Bound::AtMost,
            limit,
            on_ratio: false,
        }
    }

    pub fn ratio_at_least(limit: f64) -> Target {
        Target {
            bound: Bound::AtLeast,
            limit,
            on_ratio: true,
        }
    }

    /// e.g. `<= 50 ms` or `>= 0.8 x baseline`.
    pub fn text(&self, unit: &str) -> String {
        let op = match self.bound {
            Bound::AtMost => "<=",
            Bound::AtLeast => ">=",
        };
        if self.on_ratio {
            format!("{op} {} x baseline", self.limit)
        } else {
            format!("{op} {} {unit}", self.limit)
        }
    }
}

/// One measured number.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: &'static str,
    pub label: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    pub target: Option<Target>,
    /// The measured baseline (the bare kube-rs client's run) or the model the value is
    /// compared with; [`Row::model`] tells which.
    pub baseline: Option<f64>,
    /// Whether the baseline is a formula, not a measurement (B3's polling design).
    pub model: bool,
    /// Why the target is missed whatever the value (B1: pods the harness never saw).
    pub shortfall: Option<String>,
    /// How it was measured, in a sentence or two.
    pub method: String,
    /// Supporting numbers (percentiles, per-verb counts, CPU seconds...).
    pub detail: Map<String, Value>,
    pub error: Option<String>,
}

impl Row {
    pub fn new(id: &'static str, label: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row {
            id,
            label: label.into(),
            value: Some(value),
            unit,
            target: None,
            baseline: None,
            model: false,
            shortfall: None,
            method: String::new(),
            detail: Map::new(),
            error: None,
        }
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    pub fn baseline(mut self, baseline: f64) -> Row {
        self.baseline = Some(baseline);
        self
    }

    /// A baseline that is a formula, not a measurement: labelled "model" in the report.
    pub fn model_baseline(mut self, model: f64) -> Row {
        self.baseline = Some(model);
        self.model = true;
        self
    }

    /// Marks the target missed whatever the value, saying why (`None`: no shortfall).
    pub fn shortfall(mut self, shortfall: Option<String>) -> Row {
        self.shortfall = shortfall;
        self
    }

    pub fn method(mut self, method: impl Into<String>) -> Row {
        self.method = method.into();
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Row {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if b != 0.0 => Some(v / b),
            _ => None,
        }
    }

    /// Whether the target is met (None: no target or no value); never with a
    /// [`Row::shortfall`].
    pub fn met(&self) -> Option<bool> {
        let target = self.target?;
        if self.shortfall.is_some() && self.value.is_some() {
            return Some(false);
        }
        let v = if target.on_ratio {
            self.ratio()?
        } else {
            self.value?
        };
        Some(match target.bound {
            Bound::AtMost => v <= target.limit,
            Bound::AtLeast => v >= target.limit,
        })
    }
}

/// What one scenario produced: its rows, and the samples the plot shows.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub rows: Vec<Row>,
    /// B1: (label, latency samples in ms).
    pub latencies: Vec<(String, Vec<f64>)>,
    /// B4: (workers, peak RSS in MiB).
    pub memory: Vec<(u32, f64)>,
    /// B1 and B6 rate by rate, ottoscaler's run next to the bare kube-rs client's.
    pub rates: Vec<RateLine>,
    /// K1: each system's XADD -> pod created samples by rate (`benchmarks-keda.png`).
    pub peers: Vec<PeerLatency>,
}

/// K1: one system's XADD -> pod created samples (ms) at one rate.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerLatency {
    /// `ottoscaler`, or `KEDA, pollingInterval N s`.
    pub system: String,
    pub rate: u32,
    pub samples: Vec<f64>,
}

/// B1 and B6 at one event rate: ottoscaler's run and the bare kube-rs client's (the
/// [`crate::ceiling`] program), with how busy the
/// machine was in each, to show where the control plane saturates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLine {
    pub rate: u32,
    /// B1 p99 (ms) over every run of the rate: ottoscaler, the bare client.
    pub latency_p99: (f64, f64),
    /// B1 p99 (ms) of each round: ottoscaler's run, the bare client's.
    pub round_p99: Vec<(Option<f64>, Option<f64>)>,
    /// The median over rounds of each round's ottoscaler p99 / bare client p99.
    pub median_round_ratio: Option<f64>,
    /// B6 p99 (ms): ottoscaler, the bare client.
    pub completion_p99: (Option<f64>, Option<f64>),
    /// Mean CPU cores kube-apiserver used over each contender's runs.
    pub apiserver_cores: (Option<f64>, Option<f64>),
    /// Mean CPU cores of every process measured (control plane, harness with kubesim,
    /// Redis, ottoscaler or the bare client program) over each run.
    pub busy_cores: (Option<f64>, Option<f64>),
    /// How many times each contender re-opened its own pod watch over its runs (the API
    /// server closed it because it fell behind, or it failed and was listed anew).
    pub watch_reopens: (f64, f64),
    /// The A/A pair: the bare client's second run in each round, against its first.
    pub aa: Option<AaLine>,
}

/// B1 at one rate: the bare client program's second run in each round, whose p99 over
/// its first run's (both the same program) shows how far two runs differ by chance on
/// this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct AaLine {
    /// B1 p99 (ms) over every second run of the rate.
    pub latency_p99: f64,
    /// The median over rounds of each round's second-run p99 / first-run p99.
    pub median_round_ratio: Option<f64>,
    /// B1 p99 (ms) of each round's second run.
    pub round_p99: Vec<Option<f64>>,
}

impl Section {
    /// The rows of a scenario that failed: no value, the error instead.
    pub fn failed(ids: &[(&'static str, &str)], err: &anyhow::Error) -> Section {
        let error = format!("{err:#}");
        eprintln!("bench: scenario {} failed: {error}", ids[0].0);
        Section {
            rows: ids
                .iter()
                .map(|(id, label)| Row {
                    value: None,
                    error: Some(error.clone()),
                    ..Row::new(id, *label, 0.0, "")
                })
                .collect(),
            ..Section::default()
        }
    }
}

/// The whole run.
pub struct Report {
    pub command: String,
    pub date: String,
    pub quick: bool,
    pub duration: Duration,
    pub machine: Value,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn new(
        args: &Args,
        mut machine: Value,
        sections: Vec<Section>,
        duration: Duration,
    ) -> Report {
        if let Some(m) = machine.as_object_mut() {
            m.insert(
                "load_average_at_end".into(),
                crate::machine::load_average().into(),
            );
        }
        Report {
            command: args.command.clone(),
            date: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            quick: args.quick,
            duration,
            machine,
            sections,
        }
    }

    /// Whether K1 measured any latency (then `benchmarks-keda.png` is drawn).
    pub fn has_peers(&self) -> bool {
        self.sections.iter().any(|s| !s.peers.is_empty())
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.sections.iter().flat_map(|s| s.rows.iter())
    }

    /// Writes results.json, benchmarks.md and benchmarks.png (and benchmarks-keda.png
    /// when K1 ran).
    pub fn write(&self, args: &Args) -> Result<()> {
        let results = args.results_path();
        let docs = args.docs_dir();
        for dir in [results.parent(), Some(docs.as_path())]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&json::to_json(self))?;
        std::fs::write(&results, text + "\n")
            .with_context(|| format!("cannot write {}", results.display()))?;
        let md = docs.join("benchmarks.md");
        std::fs::write(&md, markdown::render(self))
            .with_context(|| format!("cannot write {}", md.display()))?;
        let png = docs.join("benchmarks.png");
        if let Err(err) = plot::render(self, &png) {
            eprintln!("bench: no plot ({err:#})");
        }
        eprintln!(
            "bench: wrote {}, {} and {}",
            results.display(),
            md.display(),
            png.display()
        );
        if self.has_peers() {
            let png = docs.join(KEDA_PLOT);
            match plot::render_keda(self, &png) {
                Ok(()) => eprintln!("bench: wrote {}", png.display()),
                Err(err) => eprintln!("bench: no K1 plot ({err:#})"),
            }
        }
        Ok(())
    }

    /// An error naming the scenarios that failed, if any did.
    pub fn fail_if_any_failed(&self) -> Result<()> {
        let failed: Vec<String> = self
            .rows()
            .filter(|r| r.error.is_some())
            .map(|r| format!("{} {}", r.id, r.label))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("not measured: {}", failed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_checked_on_the_value_or_on_the_ratio() {
        let latency = Row::new("B1", "100/s", 42.0, "ms").target(Target::at_most(50.0));
        assert_eq!(latency.met(), Some(true));
        assert_eq!(latency.ratio(), None);
        let throughput = Row::new("B2", "", 70.0, "pods/s")
            .baseline(100.0)
            .target(Target::ratio_at_least(0.8));
        assert_eq!(throughput.ratio(), Some(0.7));
        assert_eq!(throughput.met(), Some(false));
        assert_eq!(
            throughput.target.map(|t| t.text("pods/s")).as_deref(),
            Some(">= 0.8 x baseline")
        );
    }

    #[test]
    fn a_shortfall_misses_the_target_whatever_the_value() {
        let fast = Row::new("B1", "10/s", 8.0, "ms").target(Target::at_most(50.0));
        assert_eq!(fast.clone().shortfall(None).met(), Some(true));
        let missing = fast.shortfall(Some("198 of 200 pods seen".into()));
        assert_eq!(missing.met(), Some(false));
    }
}
