//! `benchmarks.md`: the table, the command and date that produced it, the machine, and
//! how each number was measured.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Report, Row};

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
    for row in report.rows() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.id,
            row.label,
            value_text(row),
            row.target.map_or("–".into(), |t| t.text(row.unit)),
            row.baseline
                .map_or("–".into(), |b| format!("{} {}", num(b), row.unit)),
            row.ratio().map_or("–".into(), |r| format!("{r:.2}")),
            match row.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
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

fn value_text(row: &Row) -> String {
    match (row.value, &row.error) {
        (Some(v), _) => format!("{} {}", num(v), row.unit),
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

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(42.26), "42.3");
        assert_eq!(num(2.041), "2.04");
    }
}
