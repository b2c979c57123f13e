//! `results.json`: the machine, then one object per row with `id`, `label`, `value`,
//! `unit`, `target`, `baseline`, `baseline_kind` (`measured`, `model` or null), `ratio`,
//! `met`, `method`, `detail` (and `error` when the row could not be measured,
//! `shortfall` when the target is missed whatever the value).

use serde_json::{Value, json};

use super::{Report, Row};

pub fn to_json(report: &Report) -> Value {
    json!({
        "command": report.command,
        "date": report.date,
        "quick": report.quick,
        "duration_seconds": round(report.duration.as_secs_f64(), 1),
        "machine": report.machine,
        "results": report.rows().map(row).collect::<Vec<_>>(),
    })
}

fn row(r: &Row) -> Value {
    let mut v = json!({
        "id": r.id,
        "label": r.label,
        "value": r.value.map(|v| round(v, 3)),
        "unit": r.unit,
        "target": r.target.map(|t| t.text(r.unit)),
        "baseline": r.baseline.map(|b| round(b, 3)),
        "baseline_kind": r.baseline.map(|_| if r.model { "model" } else { "measured" }),
        "ratio": r.ratio().map(|x| round(x, 3)),
        "met": r.met(),
        "method": r.method,
        "detail": r.detail,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(error) = &r.error {
            obj.insert("error".into(), Value::from(error.as_str()));
        }
        if let Some(shortfall) = &r.shortfall {
            obj.insert("shortfall".into(), Value::from(shortfall.as_str()));
        }
    }
    v
}

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Target;

    #[test]
    fn a_row_has_every_documented_key() {
        let r = Row::new("B2", "2000 events", 80.123_456, "pods/s")
            .baseline(100.0)
            .target(Target::ratio_at_least(0.8));
        let v = row(&r);
        for key in [
            "id",
            "label",
            "value",
            "unit",
            "target",
            "baseline",
            "baseline_kind",
            "ratio",
            "met",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["value"], 80.123);
        assert_eq!(v["ratio"], 0.801);
        assert_eq!(v["met"], true);
        assert_eq!(v["baseline_kind"], "measured");
        let model = row(&Row::new("B3", "1 s", 2.0, "requests").model_baseline(2.5));
        assert_eq!(model["baseline_kind"], "model");
    }
}
