//! `benchmarks.md`: the table, the command and date that produced it, the machine, and
//! how each number was measured.

use std::fmt::Write as _;

use serde_json::Value;

use super::{KEDA_PLOT, RateLine, Report, Row};

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let s = |v: &Value| v.as_str().unwrap_or("unknown").to_string();
    let gib = m["memory_bytes"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30);
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `{}` on {} in {:.0} s{}.\n",
        report.command,
        report.date,
        report.duration.as_secs_f64(),
        if report.quick {
            " (**--quick**: tiny counts, not comparable with the targets)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), {gib:.0} GiB, Linux {}. Control plane: {} and {} on \
         loopback with kubesim (3 simulated nodes, 32 writes in flight) inside the harness; \
         {}; ottoscaler: {}, a separate process.\n",
        m["cores"],
        s(&m["cpu"]),
        s(&m["kernel"]),
        s(&m["kubernetes"]),
        s(&m["etcd"]),
        s(&m["redis"]),
        s(&m["ottoscaler"]),
    );
    let _ = writeln!(
        md,
        "Load average (1, 5, 15 min) at the start: {}; at the end: {}. Other work on the \
         machine during the run skews the numbers.\n",
        s(&m["load_average_at_start"]),
        s(&m["load_average_at_end"]),
    );
    md.push_str("| id | what | value | target | baseline | ratio | met |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for row in report.rows().filter(|r| r.id != "K1") {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.id,
            row.label,
            value_text(row),
            row.target.map_or("–".into(), |t| t.text(row.unit)),
            baseline_text(row),
            row.ratio().map_or("–".into(), ratio_text),
            match row.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    rates(&mut md, report);
    versus_keda(&mut md, report);
    md.push_str("\n![B1 latency distribution and B4 memory per worker count](benchmarks.png)\n");
    md.push_str("\n## How each number is measured\n\n");
    for row in report.rows() {
        let _ = writeln!(md, "- **{} {}**: {}", row.id, row.label, row.method);
        if !row.detail.is_empty() {
            let detail = serde_json::to_string(&row.detail).unwrap_or_default();
            let _ = writeln!(md, "  Detail: `{detail}`");
        }
    }
    md
}

/// B1 and B6 rate by rate, ottoscaler's run next to the bare kube-rs client's.
fn rates(md: &mut String, report: &Report) {
    let lines: Vec<&RateLine> = report.sections.iter().flat_map(|s| &s.rates).collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## B1 and B6 by rate: where the control plane saturates\n\n\
         Each rate starts with a warm-up (the bare kube-rs client program, unmeasured: \
         the API server sizes each new watch's buffer to the event rate it has seen, so \
         the first run at a higher rate meets closed watches and seconds of lag). Then \
         rounds: in each, one run of ottoscaler (a fresh process on fresh lanes, qps/burst \
         500 and 1000 creates in flight, not the defaults 50/100 and 64, so no client-side \
         limit shapes the latency; HTTP/1.1, kubernetes.http2 false, not the default, as \
         the bare client speaks) and two of the bare kube-rs client program with copies \
         of its pods (a process of its own, without Redis, on the stock kube client: \
         HTTP/1.1, Nagle on, where ottoscaler sets TCP_NODELAY, so it is no ceiling); the \
         order rotates from round to round. Each cell is `ottoscaler / bare kube-rs \
         client`: p99 over every run of the rate, then each round's. \"ratio\" is the \
         pooled p99s' ratio, \"median ratio\" the median over rounds of each round's own \
         ratio (paired: both contenders met the machine as it was in that round). \"A/A\" \
         is the same two numbers for the bare client's second run over its first: the \
         same program twice, so how far apart two runs fall by chance on this machine; \
         a ratio inside the A/A spread is no difference this run can show. Cores are CPU \
         seconds per wall-clock second, the mean over the runs, on {} cores; \"all \
         processes\" is kube-apiserver, etcd, the harness (kubesim, watches), \
         redis-server and ottoscaler or the bare client program together. Watch \
         re-opens: how many times each contender had to open its own pod watch again (the \
         API server closed it because it fell behind, or it failed), over every run; the \
         API server's count for all its pod watches (scheduler, controllers, kubesim, the \
         harness) is in the row's detail.\n",
        report.machine["cores"]
    );
    md.push_str(
        "| events/s | B1 p99 (ms) | ratio | median ratio | A/A ratio, median | \
         B1 p99 by round (ms; bare client again) \
         | B6 p99 (ms) | kube-apiserver cores | all processes, cores | watch re-opens |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or("–".into(), num);
    for l in lines {
        let again = |round: usize| {
            l.aa.as_ref()
                .and_then(|aa| aa.round_p99.get(round).copied())
                .map_or(String::new(), |a| format!(" ({})", opt(a)))
        };
        let rounds: Vec<String> = l
            .round_p99
            .iter()
            .enumerate()
            .map(|(i, (o, b))| format!("{} / {}{}", opt(*o), opt(*b), again(i)))
            .collect();
        let aa = l.aa.as_ref().map_or("–".into(), |aa| {
            format!(
                "{}, {}",
                num(aa.latency_p99 / l.latency_p99.1),
                opt(aa.median_round_ratio)
            )
        });
        let _ = writeln!(
            md,
            "| {} | {} / {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} |",
            l.rate,
            num(l.latency_p99.0),
            num(l.latency_p99.1),
            num(l.latency_p99.0 / l.latency_p99.1),
            opt(l.median_round_ratio),
            aa,
            rounds.join("; "),
            opt(l.completion_p99.0),
            opt(l.completion_p99.1),
            opt(l.apiserver_cores.0),
            opt(l.apiserver_cores.1),
            opt(l.busy_cores.0),
            opt(l.busy_cores.1),
            l.watch_reopens.0,
            l.watch_reopens.1,
        );
    }
}

/// The baseline with its unit; a model is marked as one.
fn baseline_text(row: &Row) -> String {
    match row.baseline {
        Some(b) if row.model => format!("{} {} (model, not measured)", num(b), row.unit),
        Some(b) => format!("{} {}", num(b), row.unit),
        None => "–".into(),
    }
}

/// K1's rows: ottoscaler next to KEDA's ScaledJob, with the ratio.
fn versus_keda(md: &mut String, report: &Report) {
    let rows: Vec<&Row> = report.rows().filter(|r| r.id == "K1").collect();
    if rows.is_empty() {
        return;
    }
    md.push_str(
        "\n## Versus KEDA\n\nK1: the same one-pod entries at the same rate to ottoscaler and \
         to KEDA's ScaledJob (redis-streams scaler, `lagCount` 1, pollingInterval 1 s, \
         then KEDA's default 30 s where a row says so), on the same control plane, Redis \
         and machine, in this run; the harness plays KEDA's job agent (XREADGROUP + XACK \
         of one entry when a job's pod runs). The restart rows SIGKILL each system \
         half-way through a run and start it again at once. Ratio: ottoscaler / KEDA \
         (below 1: ottoscaler lower). Settings in results.json.\n\n\
         | what | ottoscaler | KEDA | ratio |\n|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row.label,
            value_text(row),
            baseline_text(row),
            row.ratio().map_or("–".into(), ratio_text),
        );
    }
    if report.has_peers() {
        let _ = writeln!(
            md,
            "\n![K1: XADD -> pod created p50 and p99 by rate, and the distributions, \
             ottoscaler and KEDA]({KEDA_PLOT})"
        );
    }
}

/// A ratio with two significant digits at least, so 0.004 does not read 0.00.
fn ratio_text(r: f64) -> String {
    let a = r.abs();
    if a >= 0.1 || a == 0.0 {
        format!("{r:.2}")
    } else if a >= 0.01 {
        format!("{r:.3}")
    } else {
        format!("{r:.4}")
    }
}

fn value_text(row: &Row) -> String {
    match (row.value, &row.error) {
        (Some(v), _) => match &row.shortfall {
            Some(why) => format!("{} {} (**{why}**)", num(v), row.unit),
            None => format!("{} {}", num(v), row.unit),
        },
        (None, Some(err)) => format!("not measured: {}", first_line(err)),
        (None, None) => "–".into(),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").replace('|', "/")
}

/// Three significant digits, without a trailing `.0` on large numbers.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::AaLine;

    #[test]
    fn the_rate_table_puts_ottoscaler_next_to_the_bare_client() {
        let report = Report {
            command: "bench".into(),
            date: "2026-11-26T00:00:00Z".into(),
            quick: false,
            duration: std::time::Duration::from_secs(1),
            machine: serde_json::json!({ "cores": 2 }),
            sections: vec![super::super::Section {
                rates: vec![RateLine {
                    rate: 50,
                    latency_p99: (173.4, 256.0),
                    round_p99: vec![(Some(150.0), Some(256.0)), (Some(180.0), None)],
                    median_round_ratio: Some(0.586),
                    completion_p99: (Some(217.0), None),
                    apiserver_cores: (Some(1.26), Some(1.2)),
                    busy_cores: (Some(1.8), Some(1.66)),
                    watch_reopens: (2.0, 0.0),
                    aa: Some(AaLine {
                        latency_p99: 281.6,
                        median_round_ratio: Some(1.1),
                        round_p99: vec![Some(281.6), None],
                    }),
                }],
                ..super::super::Section::default()
            }],
        };
        let md = render(&report);
        assert!(md.contains("on 2 cores"), "{md}");
        assert!(
            md.contains(
                "| 50 | 173 / 256 | 0.68 | 0.59 | 1.10, 1.10 | 150 / 256 (282); 180 / – (–) \
                 | 217 / – | 1.26 / 1.20 | 1.80 / 1.66 | 2 / 0 |"
            ),
            "{md}"
        );
    }

    #[test]
    fn a_model_baseline_and_a_shortfall_are_spelled_out() {
        let model = Row::new("B3", "1 s", 2.0, "requests").model_baseline(2.5);
        assert_eq!(baseline_text(&model), "2.50 requests (model, not measured)");
        let missing =
            Row::new("B1", "10/s", 8.0, "ms").shortfall(Some("198 of 200 pods seen".into()));
        assert_eq!(value_text(&missing), "8.00 ms (**198 of 200 pods seen**)");
    }

    #[test]
    fn keda_rows_get_their_own_table() {
        let report = Report {
            command: "bench --peers".into(),
            date: "2026-12-02T00:00:00Z".into(),
            quick: true,
            duration: std::time::Duration::from_secs(1),
            machine: serde_json::json!({ "cores": 2 }),
            sections: vec![super::super::Section {
                rows: vec![
                    Row::new("K1", "peak RSS, ottoscaler / KEDA operator", 20.0, "MiB")
                        .baseline(80.0),
                ],
                ..super::super::Section::default()
            }],
        };
        let md = render(&report);
        assert!(md.contains("## Versus KEDA"), "{md}");
        assert!(
            md.contains("| peak RSS, ottoscaler / KEDA operator | 20.0 MiB | 80.0 MiB | 0.25 |"),
            "{md}"
        );
        assert!(!md.contains("| K1 |"), "{md}");
        assert!(
            !md.contains("benchmarks-keda.png"),
            "no samples, no plot: {md}"
        );
        let mut with_samples = report;
        with_samples.sections[0]
            .peers
            .push(super::super::PeerLatency {
                system: "ottoscaler".into(),
                rate: 10,
                samples: vec![9.0],
            });
        assert!(render(&with_samples).contains("](benchmarks-keda.png)"));
    }

    #[test]
    fn ha_and_fairness_rows_go_in_the_main_table() {
        let report = Report {
            command: "bench --only H1,F1".into(),
            date: "2026-12-03T00:00:00Z".into(),
            quick: false,
            duration: std::time::Duration::from_secs(1),
            machine: serde_json::json!({ "cores": 2 }),
            sections: vec![super::super::Section {
                rows: vec![
                    Row::new(
                        "H1",
                        "intake gap max of 6, Lease 15s/10s/2s (defaults)",
                        0.61,
                        "s",
                    )
                    .target(super::super::Target::at_most(2.0)),
                    Row::new(
                        "F1",
                        "tenant B's queue wait p99, fair (baseline fifo)",
                        1.2,
                        "s",
                    )
                    .baseline(24.0),
                ],
                ..super::super::Section::default()
            }],
        };
        let md = render(&report);
        assert!(
            md.contains(
                "| H1 | intake gap max of 6, Lease 15s/10s/2s (defaults) | 0.61 s | <= 2 s | – | – | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| F1 | tenant B's queue wait p99, fair (baseline fifo) | 1.20 s | – | 24.0 s | 0.050 | – |"),
            "{md}"
        );
    }

    #[test]
    fn small_ratios_keep_their_digits() {
        assert_eq!(ratio_text(0.26), "0.26");
        assert_eq!(ratio_text(0.0312), "0.031");
        assert_eq!(ratio_text(0.00379), "0.0038");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(42.26), "42.3");
        assert_eq!(num(2.041), "2.04");
    }
}
