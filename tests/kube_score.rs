//! A second opinion on the deployment files: `kube-score` (built from its Go module by
//! testenv/tools/build.sh) reports no CRITICAL finding on the rendered kustomize
//! manifests, on the chart's default rendering, or on the chart with every option on.
//! Its warnings (update strategy, replicas, anti-affinity) are not failures.

mod common;

use common::ottoscaler::temp_dir;
use common::tools::{
    MONITORING_ON, NAMESPACE, helm_template, kube_score, kustomize, repo_path, write_file,
};

/// The CRITICAL lines of `kube-score score -o ci` on `yaml`, and its whole output.
fn critical_findings(label: &str, yaml: &str) -> (Vec<String>, String) {
    let dir = temp_dir(label);
    let file = write_file(&dir, "objects.yaml", yaml);
    let out = kube_score(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let critical: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("[CRITICAL]"))
        .map(str::to_string)
        .collect();
    // kube-score exits 1 exactly when something is critical.
    assert_eq!(
        out.status.success(),
        critical.is_empty(),
        "kube-score's exit status and its findings disagree: {}",
        out.describe()
    );
    // It scored the Deployment (an empty input would pass too).
    assert!(
        out.stdout.contains("apps/v1/Deployment"),
        "{}",
        out.describe()
    );
    (critical, out.stdout)
}

#[test]
fn kube_score_finds_nothing_critical_in_the_kustomize_manifests() {
    let (critical, all) =
        critical_findings("kube-score-manifests", &kustomize(&repo_path("manifests")));
    assert!(critical.is_empty(), "{}", all);
}

#[test]
fn kube_score_finds_nothing_critical_in_the_chart() {
    let (critical, all) = critical_findings("kube-score-chart", &helm_template(NAMESPACE, &[]));
    assert!(critical.is_empty(), "defaults:\n{all}");
    let mut everything = MONITORING_ON.to_vec();
    everything.extend([
        "--set",
        "replicaCount=2",
        "--set",
        "podDisruptionBudget.enabled=true",
    ]);
    let (critical, all) = critical_findings(
        "kube-score-chart-all",
        &helm_template(NAMESPACE, &everything),
    );
    assert!(critical.is_empty(), "every option on:\n{all}");
}

#[test]
fn kube_score_reports_what_the_manifests_fixed() {
    // Without the NetworkPolicy, the pull policy and the ephemeral-storage resources
    // (how the manifests were before), the same check fails.
    let rendered = helm_template(
        NAMESPACE,
        &[
            "--set",
            "networkPolicy.enabled=false",
            "--set",
            "image.pullPolicy=IfNotPresent",
            "--set",
            "resources.requests.ephemeral-storage=null",
            "--set",
            "resources.limits.ephemeral-storage=null",
        ],
    );
    let (critical, all) = critical_findings("kube-score-before", &rendered);
    for finding in [
        "does not have a matching NetworkPolicy",
        "ImagePullPolicy is not set to Always",
        "Ephemeral Storage limit is not set",
        "Ephemeral Storage request is not set",
    ] {
        assert!(
            critical.iter().any(|c| c.contains(finding)),
            "expected a CRITICAL {finding:?}:\n{all}"
        );
    }
}
