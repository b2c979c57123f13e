//! B6 completion latency, from B1's pods: the time from the harness' watch seeing a pod
//! Succeeded (the status kubesim wrote) to the same watch seeing it being deleted. The
//! API server deletes a finished pod at once, so "being deleted" is the DELETED event
//! (or a deletionTimestamp, whichever comes first). In between, ottoscaler saw the
//! status on its own watch, decided the outcome, published the result to Redis and
//! sent the delete.

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::recorder::PodTimes;
use crate::report::{Row, Target};
use crate::stats::summarize;

/// The row's label: B1's pods, so ottoscaler ran with B1's settings.
pub const LABEL: &str = "completion latency p99 (qps/burst 500, HTTP/1.1)";

/// Succeeded -> deleting, in ms, of every pod that went through both.
pub fn samples(pods: &[PodTimes]) -> Vec<f64> {
    pods.iter()
        .filter_map(|t| Some((t.deleting_us? - t.finished_us?) as f64 / 1000.0))
        .collect()
}

/// The B6 row over every group of pods (one group per B1 rate), with each group's
/// percentiles in the detail; the baseline is the same time for the bare kube-rs client's pods
/// (its watch seeing a pod finished -> its delete seen), at the same rates.
pub fn row(groups: &[(String, Vec<PodTimes>)], bare_client: &[PodTimes]) -> Result<Row> {
    let mut all = Vec::new();
    let mut per_group = Map::new();
    for (label, pods) in groups {
        let s = samples(pods);
        if let Some(summary) = summarize(&s) {
            per_group.insert(label.clone(), summary.json());
        }
        all.extend(s);
    }
    let summary = summarize(&all).context("no pod was seen both finished and deleted")?;
    let mut row = Row::new("B6", LABEL, summary.p99, "ms").target(Target::at_most(50.0));
    if let Some(c) = summarize(&samples(bare_client)) {
        row = row.baseline(c.p99).detail("bare_client_ms", c.json());
    }
    Ok(row
        .method(
            "B1's pods (all rates together; ottoscaler with B1's settings, not the defaults: \
             qps/burst 500, 1000 creates in flight, HTTP/1.1): the harness' pod watch seeing phase Succeeded \
             (written by kubesim) -> the same watch seeing the pod deleted (deletionTimestamp \
             or DELETED; a finished pod is deleted at once). Includes ottoscaler's watch \
             delivery, the outcome decision, the result's Lua XADD on Redis and the delete \
             request. Baseline: the same time for the bare kube-rs client's pods at the same rates.",
        )
        .detail("all_ms", summary.json())
        .detail("by_rate_ms", Value::Object(per_group)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_runs_from_finished_to_deleting() {
        let pods = vec![
            PodTimes {
                finished_us: Some(1_000),
                deleting_us: Some(13_000),
                ..PodTimes::default()
            },
            // Never finished (e.g. cancelled): not a sample.
            PodTimes {
                deleting_us: Some(5_000),
                ..PodTimes::default()
            },
        ];
        assert_eq!(samples(&pods), vec![12.0]);
        let bare_client = vec![PodTimes {
            finished_us: Some(1_000),
            deleting_us: Some(4_000),
            ..PodTimes::default()
        }];
        let row = row(&[("10 events/s".into(), pods)], &bare_client).expect("row");
        assert_eq!(row.value, Some(12.0));
        assert_eq!(row.baseline, Some(3.0));
    }
}
