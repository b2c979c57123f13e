//! The chart's monitoring objects, checked by the tools that will read them:
//! - the ServiceMonitor, PodMonitor, PrometheusRule and the dashboard ConfigMap pass
//!   the API server's validation against the Prometheus Operator's own CRDs (from its
//!   pinned Go module, applied to the test control plane);
//! - every alert of the PrometheusRule has a `promtool test rules` case where it fires
//!   and one where it stays quiet (tests/monitoring/alerts.test.yaml), and they pass;
//! - every query of the Grafana dashboard parses with promtool;
//! - the rules and the dashboard name only metrics ottoscaler exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use common::ottoscaler::temp_dir;
use common::tools::{
    MONITORING_ON, NAMESPACE, chart_dir, helm_template, kubectl, of_kind, one_of_kind, promtool,
    repo_path, server_dry_run, sorted_names, write_file, yaml_documents,
};

/// The Prometheus Operator CRDs the chart's objects need.
const CRDS: [&str; 3] = ["servicemonitors", "podmonitors", "prometheusrules"];

/// Applies the Prometheus Operator's CRDs to the shared test cluster (idempotent: every
/// test that needs them calls it) and waits until the API server serves them.
fn install_prometheus_operator_crds() {
    for plural in CRDS {
        let crd = testenv::tools::prometheus_operator_crd(plural);
        // Server-side: the CRDs are too big for the last-applied annotation.
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().expect("UTF-8"),
        ])
        .ok(&format!("apply the {plural} CRD"));
    }
    let names: Vec<String> = CRDS
        .iter()
        .map(|plural| format!("crd/{plural}.monitoring.coreos.com"))
        .collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=50s"];
    args.extend(names.iter().map(String::as_str));
    kubectl(&args).ok("the CRDs are established");
}

#[tokio::test]
async fn the_monitoring_objects_pass_the_prometheus_operators_crds() {
    let env = testenv::shared();
    install_prometheus_operator_crds();
    let release_ns = env.namespace("monitoring").await;
    let workers = format!("{release_ns}-workers");
    let mut args = MONITORING_ON.to_vec();
    let worker_value = format!("workerNamespace.name={workers}");
    args.extend([
        "--set",
        &worker_value,
        "--set",
        "workerNamespace.create=false",
    ]);
    let rendered = helm_template(&release_ns, &args);
    let objects = yaml_documents(&rendered);
    let monitoring: Vec<Value> = ["ServiceMonitor", "PodMonitor", "PrometheusRule"]
        .iter()
        .map(|kind| one_of_kind(&objects, kind).clone())
        .chain(
            of_kind(&objects, "ConfigMap")
                .into_iter()
                .filter(|c| c["metadata"]["name"] == "ottoscaler-dashboard")
                .cloned(),
        )
        .collect();
    assert_eq!(monitoring.len(), 4, "the dashboard ConfigMap is rendered");
    let text = monitoring
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    let applied = sorted_names(&server_dry_run(&text).ok("dry run of the monitoring objects"));
    assert_eq!(
        applied,
        [
            "configmap/ottoscaler-dashboard",
            "podmonitor.monitoring.coreos.com/ottoscaler",
            "prometheusrule.monitoring.coreos.com/ottoscaler",
            "servicemonitor.monitoring.coreos.com/ottoscaler",
        ]
    );

    // The schema is really applied: an unknown field and a malformed duration are refused.
    let service_monitor = one_of_kind(&objects, "ServiceMonitor");
    for (path, value) in [
        ("/spec/endpoints/0/intervall", Value::from("30s")),
        ("/spec/endpoints/0/interval", Value::from("thirty seconds")),
    ] {
        let mut broken = service_monitor.clone();
        let (parent, key) = path.rsplit_once('/').expect("a path");
        broken
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("the endpoint")
            .insert(key.to_string(), value);
        let out = server_dry_run(&serde_yaml_ng::to_string(&broken).expect("YAML"));
        assert!(
            !out.status.success(),
            "a ServiceMonitor with {path} broken was accepted: {}",
            out.describe()
        );
    }
}

/// The PrometheusRule of the chart with `extra` values, as a Prometheus rules file.
fn rules_file(extra: &[&str]) -> String {
    let mut args = vec!["--set", "monitoring.prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let objects = yaml_documents(&helm_template(NAMESPACE, &args));
    let rule = one_of_kind(&objects, "PrometheusRule");
    serde_yaml_ng::to_string(&rule["spec"]).expect("rules YAML")
}

/// The alert names of a rules file.
fn alerts_of(rules: &str) -> BTreeSet<String> {
    let rules: Value = serde_yaml_ng::from_str(rules).expect("rules YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// Runs alerts.test.yaml against `rules` with promtool.
fn promtool_test_rules(label: &str, rules: &str) -> common::tools::Finished {
    let dir = temp_dir(label);
    write_file(&dir, "rules.yaml", rules);
    let cases = std::fs::read_to_string(repo_path("tests/monitoring/alerts.test.yaml"))
        .expect("read alerts.test.yaml");
    let file = write_file(&dir, "alerts.test.yaml", &cases);
    let check = promtool(&[
        "check",
        "rules",
        dir.join("rules.yaml").to_str().expect("UTF-8"),
    ]);
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        check.describe()
    );
    let out = promtool(&["test", "rules", file.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn every_alert_fires_and_stays_quiet_under_promtool_test_rules() {
    let rules = rules_file(&[]);
    let alerts = alerts_of(&rules);
    assert_eq!(alerts.len(), 7, "{alerts:?}");

    // Each alert has a firing case and a quiet case, and no case names a missing alert.
    let cases: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_path("tests/monitoring/alerts.test.yaml"))
            .expect("read alerts.test.yaml"),
    )
    .expect("alerts.test.yaml is YAML");
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for case in cases["tests"].as_array().expect("tests") {
        for check in case["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = check["alertname"].as_str().expect("alertname").to_string();
            let fires = check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            let entry = seen.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        alerts,
        "the cases cover exactly the alerts"
    );
    for (alert, (fires, quiet)) in &seen {
        assert!(
            *fires && *quiet,
            "{alert}: firing case {fires}, quiet case {quiet}"
        );
    }

    let out = promtool_test_rules("promtool-rules", &rules);
    assert!(
        out.status.success(),
        "promtool test rules: {}",
        out.describe()
    );
    assert!(out.stdout.contains("SUCCESS"), "{}", out.describe());

    // The cases depend on the thresholds: others make them fail.
    let stricter = rules_file(&["--set", "monitoring.prometheusRule.failureRatio=0.9"]);
    let out = promtool_test_rules("promtool-rules-changed", &stricter);
    assert!(
        !out.status.success()
            && out
                .stderr
                .contains("alertname: OttoscalerWorkerFailureRatioHigh"),
        "a failure ratio of 0.9 must not fire at 50%: {}",
        out.describe()
    );
}

/// Every `expr` in the dashboard JSON, recursively.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_queries(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_queries(i, out)),
        _ => {}
    }
}

fn dashboard() -> (String, Vec<String>) {
    let path = chart_dir().join("dashboards/ottoscaler.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let json: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&json, &mut queries);
    (text, queries)
}

/// A rules file with one recording rule per query, Grafana's variables replaced by
/// what Grafana would put there (`$__rate_interval` a duration, `$namespace` a regex).
fn queries_as_rules(queries: &[String]) -> String {
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", "ottoscaler|other");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    serde_yaml_ng::to_string(&file).expect("rules YAML")
}

fn promtool_check_rules(label: &str, rules: &str) -> common::tools::Finished {
    let dir = temp_dir(label);
    let file = write_file(&dir, "rules.yaml", rules);
    let out = promtool(&["check", "rules", file.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn every_dashboard_query_parses_with_promtool() {
    let (text, queries) = dashboard();
    assert!(queries.len() >= 10, "{queries:?}");
    let out = promtool_check_rules("dashboard-queries", &queries_as_rules(&queries));
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        out.describe()
    );
    assert!(
        out.stdout
            .contains(&format!("{} rules found", queries.len())),
        "{}",
        out.describe()
    );
    // The same check refuses a query that does not parse.
    let mut broken = queries.clone();
    broken.push("sum(rate(ottoscaler_events_total[5m])".to_string());
    let out = promtool_check_rules("dashboard-broken", &queries_as_rules(&broken));
    assert!(
        !out.status.success(),
        "a broken query passed: {}",
        out.describe()
    );

    // The chart ships it as a ConfigMap for Grafana's sidecar.
    let objects = yaml_documents(&helm_template(NAMESPACE, &MONITORING_ON));
    let configmap = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "ottoscaler-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        configmap["data"]["ottoscaler.json"]
            .as_str()
            .map(str::trim_end),
        Some(text.trim_end())
    );
    // Off by default.
    let defaults = yaml_documents(&helm_template(NAMESPACE, &[]));
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&defaults, kind).is_empty(),
            "{kind} is on by default"
        );
    }
    assert_eq!(of_kind(&defaults, "ConfigMap").len(), 1, "only the config");
}

/// The `ottoscaler_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("ottoscaler_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The series names ottoscaler's /metrics exposes (every family is exported from the
/// start).
fn exported_names() -> BTreeSet<String> {
    ottoscaler::metrics::Metrics::new()
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_ottoscaler_exports() {
    let exported = exported_names();
    assert!(exported.contains("ottoscaler_build_info"), "{exported:?}");
    let rules = rules_file(&[]);
    let (_, queries) = dashboard();
    let exprs: Vec<String> = {
        let parsed: Value = serde_yaml_ng::from_str(&rules).expect("rules YAML");
        parsed["groups"][0]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r["expr"].as_str().expect("expr").to_string())
            .chain(queries)
            .collect()
    };
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is not a metric ottoscaler exports"
            );
        }
    }
}
