//! The Helm chart `charts/ottoscaler`, checked with the real helm (built from its Go
//! module by testenv/tools/build.sh) and the test control plane:
//! - `helm lint --strict` passes, with the defaults and with every option on;
//! - for the default values it renders the same objects as `kubectl kustomize
//!   manifests`, object by object (normalised as [`normalise`] says);
//! - values reach the objects they name, and a config change changes the pod
//!   template (the checksum annotation), so `helm upgrade` rolls the pod;
//! - the rendered config loads with the product's settings loader;
//! - `helm template` passes the API server's server-side dry run (strict fields);
//! - a real `helm install` creates the objects, `helm upgrade` rolls a config change
//!   into the Deployment, `helm uninstall` removes them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use kube::core::ObjectMeta;
use serde_json::Value;

use common::ottoscaler::temp_dir;
use common::tools::{
    MONITORING_ON, NAMESPACE, chart_dir, helm, helm_template, kustomize, named, one_of_kind,
    repo_path, server_dry_run, sorted_names, write_file, yaml_documents,
};

/// The pod template annotation that carries the config's checksum.
const CHECKSUM: &str = "checksum/config";

/// Every option of the chart that is off by default, on (with MONITORING_ON).
const OTHERS_ON: [&str; 6] = [
    "--set",
    "podDisruptionBudget.enabled=true",
    "--set",
    "replicaCount=2",
    "--set",
    "rbac.ownRules[0].apiGroups[0]=coordination.k8s.io,rbac.ownRules[0].resources[0]=leases,rbac.ownRules[0].verbs[0]=get",
];

#[test]
fn helm_lint_passes_with_the_defaults_and_with_every_option_on() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let out = helm(&["lint", "--strict", chart]);
    assert!(out.status.success(), "helm lint: {}", out.describe());
    assert!(
        out.stdout.contains("0 chart(s) failed"),
        "{}",
        out.describe()
    );
    let mut args = vec!["lint", "--strict", chart];
    args.extend_from_slice(&MONITORING_ON);
    args.extend_from_slice(&OTHERS_ON);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm lint, all on: {}",
        out.describe()
    );
}

/// The identity of a rendered object: kind, namespace, name.
type Key = (String, String, String);

/// Objects by [`Key`], after the normalisation both renderings need to be compared:
/// - the ConfigMap `ottoscaler-config-<hash>` kustomize generates (and the
///   Deployment's reference to it) is named `ottoscaler-config`, as the chart names
///   it: kustomize rolls the pod by renaming the ConfigMap, the chart by the
///   `checksum/config` annotation on the pod template, which is removed here (and
///   checked by `a_config_change_changes_the_pod_template`);
/// - the ConfigMap's `ottoscaler.toml` is compared as parsed TOML (the chart writes
///   it from values, without the manifests' comments);
/// - the Namespace of the release is left out: Helm creates it
///   (`helm install --create-namespace`) and keeps its release record there, so a
///   chart cannot own it.
fn normalise(objects: Vec<Value>) -> BTreeMap<Key, Value> {
    let mut by_key = BTreeMap::new();
    for mut object in objects {
        let kind = object["kind"].as_str().expect("kind").to_string();
        if kind == "Namespace" && object["metadata"]["name"] == NAMESPACE {
            continue;
        }
        if kind == "ConfigMap" {
            let name = &mut object["metadata"]["name"];
            *name = Value::from(strip_config_hash(name.as_str().expect("name")));
            let data = object["data"].as_object_mut().expect("ConfigMap data");
            if let Some(toml) = data.get_mut("ottoscaler.toml") {
                *toml = parsed_toml(toml.as_str().expect("a string"));
            }
        }
        if kind == "Deployment" {
            let template = &mut object["spec"]["template"];
            let metadata = template
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
                .expect("pod template metadata");
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(CHECKSUM);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
            for volume in template["spec"]["volumes"].as_array_mut().expect("volumes") {
                if let Some(name) = volume.pointer_mut("/configMap/name") {
                    *name = Value::from(strip_config_hash(name.as_str().expect("name")));
                }
            }
        }
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let previous = by_key.insert((kind.clone(), namespace, name.clone()), object);
        assert!(previous.is_none(), "two {kind} {name}");
    }
    by_key
}

/// `ottoscaler-config-<hash>` (kustomize's generated name) -> `ottoscaler-config`.
fn strip_config_hash(name: &str) -> String {
    match name.strip_prefix("ottoscaler-config-") {
        Some(hash) if hash.len() == 10 && hash.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            "ottoscaler-config".to_string()
        }
        _ => name.to_string(),
    }
}

/// TOML text as a JSON value, so two files with the same settings compare equal.
fn parsed_toml(text: &str) -> Value {
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
    serde_json::to_value(table).expect("TOML as JSON")
}

/// The JSON pointer of the first place where `a` and `b` differ, if any.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (left, right) = (x.get(k), y.get(k));
                match (left, right) {
                    (Some(l), Some(r)) => first_difference(l, r, format!("{at}/{k}")),
                    _ => Some(format!("{at}/{k}")),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".to_string() } else { at }),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[test]
fn the_chart_renders_the_kustomize_objects_for_default_values() {
    let manifests = normalise(yaml_documents(&kustomize(&repo_path("manifests"))));
    let chart = normalise(yaml_documents(&helm_template(NAMESPACE, &[])));
    let keys = |m: &BTreeMap<Key, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&chart), keys(&manifests), "the same objects");
    for (key, expected) in &manifests {
        if let Some(path) = first_difference(&chart[key], expected, String::new()) {
            panic!(
                "{key:?}: the chart differs from the manifests at {path}\nchart: {}\nmanifests: {}",
                pretty(&chart[key]),
                pretty(expected)
            );
        }
    }
}

/// The Deployment's pod template annotations of a rendering.
fn checksum_of(rendered: &str) -> String {
    let objects = yaml_documents(rendered);
    let deployment = one_of_kind(&objects, "Deployment");
    let checksum = deployment
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(CHECKSUM))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {CHECKSUM} on the pod template"))
        .to_string();
    assert!(
        checksum.len() == 64 && checksum.bytes().all(|b| b.is_ascii_hexdigit()),
        "{CHECKSUM} is a sha256: {checksum}"
    );
    checksum
}

/// The rendered ConfigMap's `ottoscaler.toml`.
fn rendered_toml(objects: &[Value]) -> String {
    one_of_kind(objects, "ConfigMap")["data"]["ottoscaler.toml"]
        .as_str()
        .expect("ottoscaler.toml in the ConfigMap")
        .to_string()
}

#[test]
fn a_config_change_changes_the_pod_template() {
    let default = checksum_of(&helm_template(NAMESPACE, &[]));
    assert_eq!(
        checksum_of(&helm_template(NAMESPACE, &[])),
        default,
        "the same values render the same checksum"
    );
    for change in [
        "config.limits.max_workers=20",
        "workerNamespace.name=builds",
        "configFiles.gpu\\.yaml=containers: []",
    ] {
        let changed = checksum_of(&helm_template(NAMESPACE, &["--set", change]));
        assert_ne!(changed, default, "{change} must roll the pod");
    }
    // A value outside the config does not.
    let other = checksum_of(&helm_template(NAMESPACE, &["--set", "replicaCount=2"]));
    assert_eq!(other, default, "replicaCount is not config");
}

#[test]
fn the_rendered_config_is_a_valid_configuration() {
    let objects = yaml_documents(&helm_template(NAMESPACE, &[]));
    let dir = temp_dir("chart-config");
    let file = write_file(&dir, "ottoscaler.toml", &rendered_toml(&objects));
    let settings = ottoscaler::settings::Settings::load_from(
        Some(&file),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap_or_else(|e| panic!("the chart's ottoscaler.toml does not load: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(settings.kubernetes.namespace, "ottoscaler-workers");
    assert_eq!(settings.limits.max_workers, 200);
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(settings.http.addr.to_string(), "0.0.0.0:8080");
    assert!(settings.templates.contains_key("default"));
    // The pods Role is where the workers go, the Lease's in the release namespace; both
    // bind the ServiceAccount of the release.
    for (name, namespace) in [
        ("ottoscaler", "ottoscaler-workers"),
        ("ottoscaler-leader", NAMESPACE),
    ] {
        assert_eq!(
            named(&objects, "Role", name)["metadata"]["namespace"],
            namespace
        );
        let binding = named(&objects, "RoleBinding", name);
        assert_eq!(binding["metadata"]["namespace"], namespace);
        assert_eq!(
            binding.pointer("/subjects/0/namespace"),
            Some(&Value::from(NAMESPACE))
        );
    }
}

#[test]
fn the_values_reach_the_objects() {
    let values = r#"
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
replicaCount: 3
strategy:
  type: RollingUpdate
  rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
resources:
  requests: {cpu: 100m, memory: 128Mi, ephemeral-storage: 64Mi}
  limits: {cpu: "1", memory: 512Mi, ephemeral-storage: 128Mi}
nodeSelector: {pool: system}
tolerations: [{key: dedicated, operator: Equal, value: system, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: ottoscaler}}
priorityClassName: system-cluster-critical
workerNamespace: {name: builds}
config:
  limits: {max_workers: 20}
  redis: {stream: "ci:events", claim_idle: 90s}
  templates:
    gpu:
      pod_spec_file: /etc/ottoscaler/gpu.yaml
      command: ["sh", "-c", "echo \"<a & b>\" 'c:\\d' ü 🚀\nexit 0"]
configFiles:
  gpu.yaml:
    containers: [{name: worker, image: "registry.example.com/agent-gpu:1"}]
    nodeSelector: {gpu: "true"}
networkPolicy:
  redis:
    to: [{ipBlock: {cidr: 10.20.0.0/16}}]
"#;
    let dir = temp_dir("chart-values");
    let file = write_file(&dir, "values.yaml", values);
    let rendered = helm_template(NAMESPACE, &["-f", file.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    let objects = yaml_documents(&rendered);

    let deployment = one_of_kind(&objects, "Deployment");
    let at = |path: &str| deployment.pointer(path).cloned().unwrap_or(Value::Null);
    assert_eq!(at("/spec/replicas"), 3);
    assert_eq!(at("/spec/strategy/type"), "RollingUpdate");
    assert_eq!(at("/spec/strategy/rollingUpdate/maxUnavailable"), 0);
    assert_eq!(
        at("/spec/template/spec/containers/0/image"),
        "ghcr.io/otto-ci/ottoscaler@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "a digest pins the image"
    );
    assert_eq!(
        at("/spec/template/spec/containers/0/resources/limits/memory"),
        "512Mi"
    );
    assert_eq!(at("/spec/template/spec/nodeSelector/pool"), "system");
    assert_eq!(at("/spec/template/spec/tolerations/0/key"), "dedicated");
    assert_eq!(
        at(
            "/spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/weight"
        ),
        100
    );
    assert_eq!(
        at("/spec/template/spec/priorityClassName"),
        "system-cluster-critical"
    );

    // The worker namespace moves the Namespace, the Role and its binding.
    let namespace = one_of_kind(&objects, "Namespace");
    assert_eq!(namespace["metadata"]["name"], "builds");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "baseline"
    );
    assert_eq!(
        named(&objects, "Role", "ottoscaler")["metadata"]["namespace"],
        "builds"
    );
    assert_eq!(
        named(&objects, "RoleBinding", "ottoscaler")["metadata"]["namespace"],
        "builds"
    );

    // The config: every section given, the worker namespace, the pod spec file.
    let configmap = one_of_kind(&objects, "ConfigMap");
    let config = parsed_toml(&rendered_toml(&objects));
    assert_eq!(config["limits"]["max_workers"], 20, "an integer, not 20.0");
    assert_eq!(config["limits"]["max_pods_per_event"], 50, "defaults stay");
    assert_eq!(config["redis"]["stream"], "ci:events");
    assert_eq!(config["redis"]["claim_idle"], "90s");
    assert_eq!(config["kubernetes"]["namespace"], "builds");
    assert_eq!(
        config["templates"]["gpu"]["pod_spec_file"],
        "/etc/ottoscaler/gpu.yaml"
    );
    assert_eq!(
        config["templates"]["gpu"]["command"][2], "echo \"<a & b>\" 'c:\\d' ü 🚀\nexit 0",
        "quotes, backslashes, HTML characters, non-ASCII and newlines survive"
    );
    assert!(config["templates"]["default"].is_object());
    let gpu = configmap["data"]["gpu.yaml"]
        .as_str()
        .expect("gpu.yaml in the ConfigMap");
    let gpu: Value = serde_yaml_ng::from_str(gpu).expect("gpu.yaml is YAML");
    assert_eq!(
        gpu.pointer("/containers/0/image"),
        Some(&Value::from("registry.example.com/agent-gpu:1"))
    );

    let policy = one_of_kind(&objects, "NetworkPolicy");
    let redis_rule = policy["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .find(|rule| rule.pointer("/ports/0/port") == Some(&Value::from(6379)))
        .expect("the Redis egress rule");
    assert_eq!(
        redis_rule.pointer("/to/0/ipBlock/cidr"),
        Some(&Value::from("10.20.0.0/16"))
    );
}

/// Creates namespace `name` (a worker namespace the dry run needs to exist).
async fn create_namespace(name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(testenv::shared().client())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

#[tokio::test]
async fn helm_template_passes_the_api_servers_server_side_dry_run() {
    let env = testenv::shared();
    let release_ns = env.namespace("chart-dry-run").await;
    let workers = format!("{release_ns}-workers");
    // Namespaced objects are only validated when their namespace exists.
    create_namespace(&workers).await;
    let rendered = helm_template(
        &release_ns,
        &["--set", &format!("workerNamespace.name={workers}")],
    );
    let applied = sorted_names(
        &server_dry_run(&rendered).ok("kubectl apply --dry-run=server of helm template"),
    );
    let mut expected = vec![
        "configmap/ottoscaler-config",
        "deployment.apps/ottoscaler",
        "networkpolicy.networking.k8s.io/ottoscaler",
        "poddisruptionbudget.policy/ottoscaler",
        "role.rbac.authorization.k8s.io/ottoscaler",
        "role.rbac.authorization.k8s.io/ottoscaler-leader",
        "rolebinding.rbac.authorization.k8s.io/ottoscaler",
        "rolebinding.rbac.authorization.k8s.io/ottoscaler-leader",
        "service/ottoscaler",
        "serviceaccount/ottoscaler",
    ];
    let namespace = format!("namespace/{workers}");
    expected.push(&namespace);
    expected.sort_unstable();
    assert_eq!(applied, expected);
    let deployments: Api<Deployment> = Api::namespaced(env.client(), &release_ns);
    assert_absent(&deployments, "ottoscaler", "a dry run creates nothing").await;
}

/// Asserts that `api` has no object `name`.
async fn assert_absent<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let found = api.get_opt(name).await.expect("get");
    assert!(found.is_none(), "{what}: {found:?}");
}

/// `helm ARGS... --kubeconfig <admin> --namespace <namespace>`, which must succeed.
fn helm_in_cluster(namespace: &str, args: &[&str]) -> String {
    let env = testenv::shared();
    let kubeconfig = env.kubeconfig_path().to_str().expect("UTF-8").to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--kubeconfig", &kubeconfig, "--namespace", namespace]);
    helm(&all).ok(&format!("helm {args:?}"))
}

#[tokio::test]
async fn helm_install_creates_the_objects_upgrade_rolls_the_config_uninstall_removes_them() {
    let env = testenv::shared();
    let client = env.client();
    let release_ns = env.namespace("chart-install").await;
    let workers = format!("{release_ns}-workers");
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8");
    let worker_value = format!("workerNamespace.name={workers}");
    helm_in_cluster(
        &release_ns,
        &["install", "ottoscaler", chart, "--set", &worker_value],
    );

    // What the release created, as the API server has it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let deployment = deployments.get("ottoscaler").await.expect("the Deployment");
    let template = deployment.spec.template.clone();
    let pod = template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("ottoscaler"));
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/otto-ci/ottoscaler:0.1.0")
    );
    let checksum = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CHECKSUM).cloned())
            .expect("the checksum annotation")
    };
    let first = checksum(&deployment);
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), &release_ns)
        .get("ottoscaler-config")
        .await
        .expect("the ConfigMap");
    let toml = configmap
        .data
        .as_ref()
        .and_then(|d| d.get("ottoscaler.toml"))
        .expect("ottoscaler.toml");
    assert_eq!(
        parsed_toml(toml)["kubernetes"]["namespace"],
        workers.as_str()
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &release_ns)
        .get("ottoscaler")
        .await
        .expect("the ServiceAccount");
    Api::<Service>::namespaced(client.clone(), &release_ns)
        .get("ottoscaler")
        .await
        .expect("the Service");
    Api::<NetworkPolicy>::namespaced(client.clone(), &release_ns)
        .get("ottoscaler")
        .await
        .expect("the NetworkPolicy");
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&workers)
        .await
        .expect("the worker namespace");
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
    let role = Api::<Role>::namespaced(client.clone(), &workers)
        .get("ottoscaler")
        .await
        .expect("the Role in the worker namespace");
    let rule = &role.rules.expect("rules")[0];
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &workers)
        .get("ottoscaler")
        .await
        .expect("the RoleBinding");
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(subject.name, "ottoscaler");
    assert_eq!(subject.namespace.as_deref(), Some(release_ns.as_str()));
    let status: Value = serde_json::from_str(&helm_in_cluster(
        &release_ns,
        &["status", "ottoscaler", "-o", "json"],
    ))
    .expect("helm status -o json");
    assert_eq!(
        status.pointer("/info/status"),
        Some(&Value::from("deployed"))
    );

    // An upgrade with another config: a new pod template.
    helm_in_cluster(
        &release_ns,
        &[
            "upgrade",
            "ottoscaler",
            chart,
            "--set",
            &worker_value,
            "--set",
            "config.limits.max_workers=20",
        ],
    );
    let upgraded = deployments.get("ottoscaler").await.expect("the Deployment");
    assert_ne!(
        checksum(&upgraded),
        first,
        "the config change rolls the pod"
    );
    assert!(
        upgraded.metadata.generation > deployment.metadata.generation,
        "the Deployment's spec changed"
    );

    helm_in_cluster(&release_ns, &["uninstall", "ottoscaler"]);
    assert_absent(
        &deployments,
        "ottoscaler",
        "uninstall removes the Deployment",
    )
    .await;
    let roles = Api::<Role>::namespaced(client.clone(), &workers);
    assert_absent(&roles, "ottoscaler", "uninstall removes the Role").await;
}
