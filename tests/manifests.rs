//! The deployment files, checked against the real thing:
//! - every manifest in `manifests/` (and `manifests/dev`) passes the API server's own
//!   validation (`kubectl apply --dry-run=server --validate=strict`);
//! - ottoscaler's namespace and the worker namespace are apart, and their Pod Security
//!   Admission labels admit ottoscaler's pod (`restricted`) and refuse a privileged
//!   worker (`baseline`);
//! - the ConfigMap's `ottoscaler.toml` (base/ottoscaler.toml, through kustomize's
//!   configMapGenerator) loads and validates with the product's settings loader, is
//!   accepted by `check-config`, and sits where the Deployment says it does;
//! - the Role is enough for the compiled binary to run a scale_up in the worker
//!   namespace under the ServiceAccount's own token, and refuses everything else, pods
//!   in ottoscaler's own namespace included;
//! - `ottoscaler check-config` redacts secrets and names a bad key;
//! - the shipped binary does not depend on the `testenv` crate.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ObjectMeta;
use kube::{Api, Client};
use serde_json::Value;
use testenv::RedisServer;
use testenv::process::ManagedChild;

use common::tools::{kubectl, repo_path, run_with_timeout, yaml_documents};

/// The namespace the manifests install ottoscaler into.
const NAMESPACE: &str = "ottoscaler";
/// The namespace of the worker pods (the Role's).
const WORKERS: &str = "ottoscaler-workers";
const EVENTS: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";
/// `check-config` reads a file and the environment.
const CHECK_CONFIG_TIMEOUT: Duration = Duration::from_secs(20);
/// `cargo tree` only reads manifests and the lock file.
const CARGO_TREE_TIMEOUT: Duration = Duration::from_secs(120);

fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `ottoscaler` binary with nothing from this process' environment but `PATH` and
/// `HOME`, so an outside `REDIS_URL` or `OTTOSCALER_*` cannot change what a test sees.
fn ottoscaler_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ottoscaler"));
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd
}

/// Creates namespace `name` unless it exists (several tests of this binary want it).
async fn ensure_namespace(client: Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client)
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(e) => panic!("cannot create namespace {name}: {e}"),
    }
}

/// Server-side dry run of `kubectl apply -k <dir>`: every object must be accepted as
/// the API server would accept it for real, with unknown fields as errors.
async fn assert_server_dry_run_accepts(dir: &str, expected: &[&str]) {
    let env = testenv::shared();
    // Namespaced objects are only validated when their namespace exists.
    ensure_namespace(env.client(), NAMESPACE).await;
    ensure_namespace(env.client(), WORKERS).await;
    let path = repo_path(dir);
    let path = path.to_str().expect("repository path is UTF-8");
    let out = kubectl(&[
        "apply",
        "-k",
        path,
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "name",
    ]);
    assert!(
        out.status.success(),
        "kubectl apply -k {dir} --dry-run=server: {}",
        out.describe()
    );
    // The generated ConfigMap's name ends in a hash of its content.
    let mut applied: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .map(
            |name| match name.strip_prefix("configmap/ottoscaler-config-") {
                Some(hash) if !hash.is_empty() => "configmap/ottoscaler-config-<hash>",
                _ => name,
            },
        )
        .collect();
    applied.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(applied, expected, "objects of {dir}\n{}", out.describe());

    // A dry run: nothing was created.
    let deployment = kubectl(&["-n", NAMESPACE, "get", "deployments", "-o", "name"]);
    assert!(deployment.status.success(), "{}", deployment.describe());
    assert_eq!(deployment.stdout.trim(), "", "a dry run created objects");
}

const BASE_OBJECTS: [&str; 12] = [
    "namespace/ottoscaler",
    "namespace/ottoscaler-workers",
    "networkpolicy.networking.k8s.io/ottoscaler",
    "serviceaccount/ottoscaler",
    "role.rbac.authorization.k8s.io/ottoscaler",
    "rolebinding.rbac.authorization.k8s.io/ottoscaler",
    "role.rbac.authorization.k8s.io/ottoscaler-leader",
    "rolebinding.rbac.authorization.k8s.io/ottoscaler-leader",
    "configmap/ottoscaler-config-<hash>",
    "service/ottoscaler",
    "deployment.apps/ottoscaler",
    "poddisruptionbudget.policy/ottoscaler",
];

#[tokio::test]
async fn the_manifests_pass_the_api_servers_validation() {
    assert_server_dry_run_accepts("manifests", &BASE_OBJECTS).await;
}

#[tokio::test]
async fn the_dev_manifests_add_a_redis_and_pass_the_api_servers_validation() {
    let mut expected = BASE_OBJECTS.to_vec();
    expected.extend(["service/redis", "deployment.apps/redis"]);
    assert_server_dry_run_accepts("manifests/dev", &expected).await;
}

/// The YAML documents of a manifest file, as JSON values.
fn file_documents(relative: &str) -> Vec<Value> {
    yaml_documents(&read_repo_file(relative))
}

fn single_document(relative: &str) -> Value {
    let mut docs = file_documents(relative);
    assert_eq!(docs.len(), 1, "{relative} holds one object");
    docs.remove(0)
}

/// `value` at the slash-separated `path` (array items by index), as a string.
fn string_at<'a>(value: &'a Value, path: &str) -> &'a str {
    value
        .pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {path}"))
}

/// The ConfigMap `ottoscaler-config` as base/kustomization.yaml generates it: its
/// generator entry, and each data key with the repository file it comes from.
struct GeneratedConfigMap {
    generator: Value,
    files: BTreeMap<String, String>,
}

fn generated_configmap() -> GeneratedConfigMap {
    let kustomization = single_document("manifests/base/kustomization.yaml");
    let generator = kustomization["configMapGenerator"]
        .as_array()
        .expect("base/kustomization.yaml has a configMapGenerator")
        .iter()
        .find(|g| g["name"] == "ottoscaler-config")
        .expect("a configMapGenerator named ottoscaler-config")
        .clone();
    let files = generator["files"]
        .as_array()
        .expect("the generator's files")
        .iter()
        .map(|f| {
            let entry = f.as_str().expect("a file entry is a string");
            // `key=path` or `path` (the key is then the file name).
            let (key, path) = entry
                .split_once('=')
                .unwrap_or_else(|| (entry.rsplit('/').next().unwrap_or(entry), entry));
            (key.to_string(), format!("manifests/base/{path}"))
        })
        .collect();
    GeneratedConfigMap { generator, files }
}

#[test]
fn the_generated_config_file_loads_and_validates_with_the_settings_loader() {
    let configmap = generated_configmap();
    let path = configmap
        .files
        .get("ottoscaler.toml")
        .expect("the ConfigMap has the key ottoscaler.toml");
    assert_eq!(path, "manifests/base/ottoscaler.toml");
    // The loader the binary uses, with an empty environment: the file alone is valid.
    let settings = ottoscaler::settings::Settings::load_from(
        Some(&repo_path(path)),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap_or_else(|e| panic!("{path} does not load: {e}"));
    assert_eq!(
        settings.kubernetes.namespace, WORKERS,
        "the worker namespace, not ottoscaler's own"
    );
    assert_eq!(settings.http.addr.to_string(), "0.0.0.0:8080");
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
    assert!(settings.templates.contains_key("default"));
    assert_eq!(
        configmap.generator["namespace"].as_str(),
        Some(NAMESPACE),
        "the ConfigMap lives with the Deployment"
    );
}

#[test]
fn the_configmaps_config_file_is_valid_and_mounted_where_the_deployment_points() {
    let configmap = generated_configmap();
    let file = repo_path(
        configmap
            .files
            .get("ottoscaler.toml")
            .expect("the ConfigMap has the key ottoscaler.toml"),
    );
    let mut cmd = ottoscaler_command();
    cmd.arg("check-config").arg("--config").arg(&file);
    let out = run_with_timeout(cmd, CHECK_CONFIG_TIMEOUT);
    assert!(out.status.success(), "check-config: {}", out.describe());
    let effective: toml::Table = out.stdout.parse().expect("check-config prints TOML");
    let get = |section: &str, key: &str| {
        effective
            .get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or_else(|| panic!("{section}.{key} missing:\n{}", out.stdout))
    };
    assert_eq!(
        get("kubernetes", "namespace").as_str(),
        Some(WORKERS),
        "the worker namespace"
    );
    assert_eq!(get("http", "addr").as_str(), Some("0.0.0.0:8080"));
    let shutdown = effective
        .get("shutdown_timeout")
        .and_then(toml::Value::as_str)
        .and_then(|s| humantime::parse_duration(s).ok())
        .expect("shutdown_timeout is a duration");

    let deployment = single_document("manifests/base/deployment.yaml");
    let pod = deployment.pointer("/spec/template/spec").expect("pod spec");
    let container = pod.pointer("/containers/0").expect("a container");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .expect("env list")
        .iter()
        .map(|e| (string_at(e, "/name"), e))
        .collect();
    let config_path = string_at(env["OTTOSCALER_CONFIG"], "/value");
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let mount = mounts
        .iter()
        .find(|m| config_path.starts_with(&format!("{}/", string_at(m, "/mountPath"))))
        .unwrap_or_else(|| panic!("no volume mounted at {config_path}"));
    let file_name = config_path.rsplit('/').next().unwrap_or_default();
    assert!(
        configmap.files.contains_key(file_name),
        "the ConfigMap has no key {file_name}"
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(
        volume.pointer("/configMap/name"),
        Some(&configmap.generator["name"]),
        "the volume is the ConfigMap"
    );

    // The probes and the port match what the binary serves.
    assert_eq!(
        container.pointer("/ports/0/containerPort"),
        Some(&Value::from(8080))
    );
    assert_eq!(
        string_at(container, "/livenessProbe/httpGet/path"),
        "/healthz"
    );
    assert_eq!(
        string_at(container, "/readinessProbe/httpGet/path"),
        "/readyz"
    );
    // SIGTERM must end in ottoscaler's clean exit, not the kubelet's SIGKILL.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > shutdown,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_timeout {shutdown:?}"
    );
    assert_eq!(
        string_at(env["REDIS_CONSUMER"], "/valueFrom/fieldRef/fieldPath"),
        "metadata.name"
    );
}

/// `kubectl kustomize <dir>`: the rendered objects.
fn kustomize(dir: &Path) -> Vec<Value> {
    yaml_documents(&common::tools::kustomize(dir))
}

/// The rendered ConfigMap's name and the name the Deployment's config volume refers to.
fn rendered_config_names(dir: &Path) -> (String, String) {
    let objects = kustomize(dir);
    let of_kind = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} rendered"))
    };
    let configmap = string_at(of_kind("ConfigMap"), "/metadata/name").to_string();
    let referenced = of_kind("Deployment")
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .expect("volumes")
        .iter()
        .find_map(|v| v.pointer("/configMap/name").and_then(Value::as_str))
        .expect("a configMap volume")
        .to_string();
    (configmap, referenced)
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

#[test]
fn an_edited_config_renders_a_new_configmap_name_so_the_deployment_rolls_out() {
    let (name, referenced) = rendered_config_names(&repo_path("manifests"));
    assert!(
        name.starts_with("ottoscaler-config-") && name.len() > "ottoscaler-config-".len(),
        "the ConfigMap's name carries a content hash: {name}"
    );
    assert_eq!(
        referenced, name,
        "the Deployment mounts the generated ConfigMap"
    );

    // The same manifests with one setting changed.
    let copy = temp_dir("rollout");
    copy_tree(&repo_path("manifests"), &copy);
    let toml = copy.join("base/ottoscaler.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read the copy");
    text.push_str("\n# an operator's edit\n");
    std::fs::write(&toml, text).expect("edit the copy");
    let (edited, edited_ref) = rendered_config_names(&copy);
    let _ = std::fs::remove_dir_all(&copy);
    assert_ne!(edited, name, "an edit changes the ConfigMap's name");
    assert_eq!(edited_ref, edited, "and the pod template that mounts it");
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ottoscaler-manifests-{label}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A manifest file with its namespaces moved: every `namespace: ottoscaler-workers` to
/// `workers` and every `namespace: ottoscaler` to `own`; asserts how many of each were
/// found, so a changed manifest cannot silently apply elsewhere.
fn in_namespaces(
    relative: &str,
    (own, own_count): (&str, usize),
    (workers, workers_count): (&str, usize),
) -> String {
    let mut text = read_repo_file(relative);
    for (from, to, expected) in [
        (WORKERS, workers, workers_count),
        (NAMESPACE, own, own_count),
    ] {
        let from = format!("namespace: {from}\n");
        assert_eq!(
            text.matches(&from).count(),
            expected,
            "`{}` in {relative}",
            from.trim()
        );
        text = text.replace(&from, &format!("namespace: {to}\n"));
    }
    text
}

/// The Pod Security Admission labels of Namespace `name` in base/namespace.yaml.
fn pod_security_labels(name: &str) -> BTreeMap<String, String> {
    let namespace = file_documents("manifests/base/namespace.yaml")
        .into_iter()
        .find(|doc| doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Namespace {name} in base/namespace.yaml"));
    let labels: BTreeMap<String, String> = namespace["metadata"]["labels"]
        .as_object()
        .expect("labels")
        .iter()
        .filter(|(key, _)| key.starts_with("pod-security.kubernetes.io/"))
        .map(|(key, value)| (key.clone(), value.as_str().expect("a string").to_string()))
        .collect();
    assert!(!labels.is_empty(), "{name} has Pod Security labels");
    labels
}

/// Puts base/namespace.yaml's Pod Security labels of `from` on the test namespace `to`.
async fn label_like(client: &Client, to: &str, from: &str) {
    let patch = serde_json::json!({ "metadata": { "labels": pod_security_labels(from) } });
    Api::<Namespace>::all(client.clone())
        .patch(
            to,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("label namespace {to}: {e}"));
}

/// A token of ServiceAccount `ottoscaler` in `namespace`, from the TokenRequest API as
/// the kubelet gets the one it mounts.
async fn service_account_token(client: Client, namespace: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client, namespace)
        .create_token_request("ottoscaler", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the ottoscaler ServiceAccount");
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .expect("a token in the TokenRequest status")
}

async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP/1.0 GET of `http://127.0.0.1:<port><path>`: the status, 0 when
/// nothing answers.
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `redis-cli -p PORT ARGS...`, stdout trimmed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-p").arg(port.to_string()).args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        out.describe()
    );
    out.stdout.trim().to_string()
}

/// The results stream as field maps (`--raw` XRANGE: an id line, then field and value
/// lines; every results entry has an even number of lines after its id).
fn results(port: u16) -> Vec<BTreeMap<String, String>> {
    let raw = redis_cli(port, &["--raw", "XRANGE", RESULTS, "-", "+"]);
    let mut entries = Vec::new();
    let mut lines = raw.lines().peekable();
    while let Some(_id) = lines.next() {
        let mut fields = BTreeMap::new();
        while let Some(field) = lines.next_if(|l| !is_entry_id(l)) {
            let value = lines.next().unwrap_or_default();
            fields.insert(field.to_string(), value.to_string());
        }
        entries.push(fields);
    }
    entries
}

fn is_entry_id(line: &str) -> bool {
    line.split_once('-').is_some_and(|(ms, seq)| {
        ms.len() >= 10
            && ms.bytes().all(|b| b.is_ascii_digit())
            && !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Asks the API server whether the caller of `client` may do `verb` on `resource`
/// (`pods` or a subresource as `pods/exec`; `namespace` None: cluster-wide).
async fn may(client: &Client, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    may_named(client, verb, resource, namespace, None).await
}

/// [`may`] for one object: `resource` as `group/resource` for API groups
/// (`coordination.k8s.io/leases`) and `name` the object's name.
async fn may_named(
    client: &Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (group, resource) = match resource.rsplit_once('/') {
        Some((group, resource)) if group.contains('.') => (Some(group.to_string()), resource),
        _ => (None, resource),
    };
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                group,
                name: name.map(str::to_string),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// Whether ottoscaler's log shows a request the API server refused (403 Forbidden).
fn refused(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("forbidden")
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[test]
fn the_workers_have_a_namespace_of_their_own_with_the_role_in_it() {
    let namespaces: Vec<String> = file_documents("manifests/base/namespace.yaml")
        .iter()
        .map(|doc| string_at(doc, "/metadata/name").to_string())
        .collect();
    assert_eq!(namespaces, [NAMESPACE, WORKERS]);
    // The pods (and Events) Role in the worker namespace; the Lease's Role, and nothing
    // else, in ottoscaler's own.
    for doc in file_documents("manifests/base/rbac.yaml") {
        let (expected, rules) = match string_at(&doc, "/metadata/name") {
            "ottoscaler" => (WORKERS, "pods"),
            "ottoscaler-leader" => (NAMESPACE, "leases"),
            other => panic!(
                "unexpected {} {other} in rbac.yaml",
                string_at(&doc, "/kind")
            ),
        };
        assert_eq!(
            string_at(&doc, "/metadata/namespace"),
            expected,
            "{} {} lives in the namespace of its {rules}",
            string_at(&doc, "/kind"),
            string_at(&doc, "/metadata/name")
        );
        if doc["kind"] == "RoleBinding" {
            assert_eq!(string_at(&doc, "/subjects/0/namespace"), NAMESPACE);
        }
    }
    let deployment = single_document("manifests/base/deployment.yaml");
    assert_eq!(string_at(&deployment, "/metadata/namespace"), NAMESPACE);
}

/// A pod named `name` with `spec`.
fn pod_with(name: &str, spec: PodSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        ..Pod::default()
    }
}

/// Creates `pod` in `namespace` as a server-side dry run (admission runs, nothing is
/// stored).
async fn dry_run_create(client: &Client, namespace: &str, pod: &Pod) -> Result<Pod, kube::Error> {
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, pod)
        .await
}

fn assert_refused_by_pod_security(result: Result<Pod, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("violates PodSecurity") => {}
        other => panic!("{what}: expected a PodSecurity refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_security_admits_ottoscaler_restricted_and_keeps_workers_off_the_node() {
    let env = testenv::shared();
    let admin = env.client();
    let own = env.namespace("psa-own").await;
    label_like(&admin, &own, NAMESPACE).await;
    let workers = env.namespace("psa-workers").await;
    label_like(&admin, &workers, WORKERS).await;

    // ottoscaler's pod, as the Deployment makes it, passes `restricted` (its
    // ServiceAccount must exist for the ServiceAccount admission plugin).
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("ottoscaler".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &own)
        .create(&PostParams::default(), &account)
        .await
        .expect("create the ottoscaler ServiceAccount");
    let deployment = single_document("manifests/base/deployment.yaml");
    let spec: PodSpec =
        serde_json::from_value(deployment["spec"]["template"]["spec"].clone()).expect("a PodSpec");
    dry_run_create(&admin, &own, &pod_with("ottoscaler-psa", spec.clone()))
        .await
        .unwrap_or_else(|e| panic!("ottoscaler's pod refused in its namespace: {e}"));
    // So does dev/'s Redis, which runs beside it.
    let redis = file_documents("manifests/dev/redis.yaml")
        .into_iter()
        .find(|doc| doc["kind"] == "Deployment")
        .expect("dev/redis.yaml has a Deployment");
    let redis_spec: PodSpec =
        serde_json::from_value(redis["spec"]["template"]["spec"].clone()).expect("a PodSpec");
    dry_run_create(&admin, &own, &pod_with("redis-psa", redis_spec))
        .await
        .unwrap_or_else(|e| panic!("dev/'s Redis refused in ottoscaler's namespace: {e}"));
    // The label is enforced: the same pod without its security context is refused.
    let mut loose = spec;
    loose.security_context = None;
    for container in &mut loose.containers {
        container.security_context = None;
    }
    assert_refused_by_pod_security(
        dry_run_create(&admin, &own, &pod_with("ottoscaler-loose", loose)).await,
        "a pod without securityContext in ottoscaler's namespace",
    );

    // A plain worker (what a simple template makes) is admitted under `baseline`...
    let worker = PodSpec {
        containers: vec![Container {
            name: "worker".into(),
            image: Some("busybox:latest".into()),
            ..Container::default()
        }],
        restart_policy: Some("Never".into()),
        ..PodSpec::default()
    };
    dry_run_create(&admin, &workers, &pod_with("worker-plain", worker.clone()))
        .await
        .unwrap_or_else(|e| panic!("a plain worker refused: {e}"));
    // ...a privileged one, or one on the host's network, is not.
    let mut privileged = worker.clone();
    privileged.containers[0].security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    assert_refused_by_pod_security(
        dry_run_create(&admin, &workers, &pod_with("worker-privileged", privileged)).await,
        "a privileged worker",
    );
    let mut host = worker;
    host.host_network = Some(true);
    assert_refused_by_pod_security(
        dry_run_create(&admin, &workers, &pod_with("worker-host-network", host)).await,
        "a worker on the host network",
    );
}

#[tokio::test]
async fn the_role_lets_the_binary_run_a_scale_up_and_refuses_everything_else() {
    let env = testenv::shared();
    let admin = env.client();
    // ottoscaler's own namespace (its ServiceAccount) and the worker namespace (the
    // Role), fresh, the worker one with the shipped Pod Security labels.
    let ns = env.namespace("rbac").await;
    let workers = env.namespace("rbac-workers").await;
    label_like(&admin, &workers, WORKERS).await;
    let other_ns = env.namespace("rbac-other").await;
    let dir = temp_dir("rbac");

    // The ServiceAccount, Role and RoleBinding exactly as shipped.
    let manifest = dir.join("rbac.yaml");
    let rendered = [
        in_namespaces(
            "manifests/base/serviceaccount.yaml",
            (&ns, 1),
            (&workers, 0),
        ),
        in_namespaces("manifests/base/rbac.yaml", (&ns, 4), (&workers, 2)),
    ]
    .join("\n---\n");
    std::fs::write(&manifest, rendered).expect("write rendered manifests");
    let manifest_arg = manifest.to_str().expect("temp path is UTF-8");
    let applied = kubectl(&["apply", "--validate=strict", "-f", manifest_arg]);
    assert!(applied.status.success(), "{}", applied.describe());

    let token = service_account_token(admin.clone(), &ns).await;
    let kubeconfig = dir.join("kubeconfig");
    testenv::shared()
        .write_kubeconfig(&kubeconfig, &token, &ns)
        .expect("write the ServiceAccount's kubeconfig");

    // The binary under that identity completes a scale_up of 2.
    let redis = RedisServer::start();
    let http_port = free_port();
    let config = dir.join("ottoscaler.toml");
    std::fs::write(
        &config,
        "[templates.default]\n\
         image = \"busybox:latest\"\n\
         annotations = { \"kubesim.ottoscaler.dev/run-seconds\" = \"1\" }\n",
    )
    .expect("write config");
    let mut cmd = ottoscaler_command();
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("OTTOSCALER_CONFIG", &config)
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port().to_string())
        .env("REDIS_CONSUMER", "ottoscaler-rbac-0")
        .env("OTTOSCALER_KUBERNETES__NAMESPACE", &workers)
        .env("OTTOSCALER_HTTP__ADDR", format!("127.0.0.1:{http_port}"))
        .env("OTTOSCALER_SHUTDOWN_TIMEOUT", "5s")
        .env("RUST_LOG", "info,ottoscaler=debug");
    let log = dir.join("ottoscaler.log");
    let mut ottoscaler = ManagedChild::start("ottoscaler", cmd, &log).expect("ottoscaler starts");

    // Ready means Redis answered and the pod watch (list + watch) is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(http_port, "/readyz") != 200 {
        if let Some(exit) = ottoscaler.try_exited() {
            panic!("ottoscaler exited ({exit}):\n{}", ottoscaler.log_tail(8000));
        }
        assert!(
            Instant::now() < deadline,
            "ottoscaler not ready under the ServiceAccount:\n{}",
            ottoscaler.log_tail(8000)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = redis_cli(
        redis.port(),
        &[
            "XADD",
            EVENTS,
            "*",
            "type",
            "scale_up",
            "pod_count",
            "2",
            "task_id",
            "rbac-test",
        ],
    );
    assert!(is_entry_id(&id), "XADD answered {id:?}");

    let pods: Api<Pod> = Api::namespaced(admin.clone(), &workers);
    let managed = ListParams::default().labels("managed-by=ottoscaler");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = results(redis.port()).len() >= 2;
        let left = pods.list(&managed).await.expect("list pods").items.len();
        if done && left == 0 {
            break;
        }
        if let Some(exit) = ottoscaler.try_exited() {
            panic!("ottoscaler exited ({exit}):\n{}", ottoscaler.log_tail(8000));
        }
        assert!(
            !refused(&log),
            "the API server refused a request ottoscaler made:\n{}",
            ottoscaler.log_tail(8000)
        );
        assert!(
            Instant::now() < deadline,
            "no 2 results and an empty namespace after 90s: results {:?}\n{}\n{}",
            results(redis.port()),
            env.pods_summary(&workers).await,
            ottoscaler.log_tail(8000)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = results(redis.port());
    assert_eq!(got.len(), 2, "{got:?}");
    for result in &got {
        assert_eq!(result.get("task_id").map(String::as_str), Some("rbac-test"));
        assert_eq!(result.get("event_id"), Some(&id));
        assert_eq!(
            result.get("outcome").map(String::as_str),
            Some("succeeded"),
            "{result:?}"
        );
    }
    let status = ottoscaler.stop(Duration::from_secs(15));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM:\n{log_text}"
    );
    assert!(
        !refused(&log),
        "the API server refused a request ottoscaler made:\n{log_text}"
    );

    // Under that identity it also led: it created the Lease in its namespace, and
    // released it on SIGTERM (holder cleared).
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("ottoscaler")
        .await
        .expect("the Lease ottoscaler exists");
    let spec = lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity, None, "released on SIGTERM: {spec:?}");
    assert_eq!(spec.lease_duration_seconds, Some(1), "{spec:?}");
    assert!(
        log_text.contains("acquired the Lease") && log_text.contains("released the Lease"),
        "{log_text}"
    );

    // The same identity: refused for anything beyond the worker pods, their Events and its Lease.
    let sa = client_from_kubeconfig(&kubeconfig).await;
    for namespace in [&ns, &workers] {
        assert_forbidden(
            Api::<Secret>::namespaced(sa.clone(), namespace)
                .list(&ListParams::default())
                .await,
            &format!("listing secrets in {namespace}"),
        );
    }
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("rbac-escape".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "worker".into(),
                image: Some("busybox:latest".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    for namespace in [&ns, &other_ns] {
        assert_forbidden(
            Api::<Pod>::namespaced(sa.clone(), namespace)
                .create(&PostParams::default(), &pod)
                .await,
            &format!("creating a pod in {namespace}, not the worker namespace"),
        );
    }

    // And exactly the Role's verbs, as the API server's authorizer sees them.
    for verb in ["create", "get", "list", "watch", "delete"] {
        assert!(
            may(&sa, verb, "pods", Some(&workers)).await,
            "may {verb} pods"
        );
    }
    let own = Some(ns.as_str());
    let wns = Some(workers.as_str());
    // Worker Events, in the worker namespace: create, and patch for a repeat's series;
    // nothing else.
    for verb in ["create", "patch"] {
        assert!(
            may(&sa, verb, "events.k8s.io/events", wns).await,
            "may {verb} events.k8s.io events"
        );
    }
    for verb in ["get", "list", "watch", "update", "delete"] {
        assert!(
            !may(&sa, verb, "events.k8s.io/events", wns).await,
            "must not {verb} events.k8s.io events"
        );
    }
    for namespace in [own, Some(other_ns.as_str())] {
        assert!(
            !may(&sa, "create", "events.k8s.io/events", namespace).await,
            "must not create events in {namespace:?}"
        );
    }
    const LEASES: &str = "coordination.k8s.io/leases";
    assert!(
        may(&sa, "create", LEASES, Some(&ns)).await,
        "may create leases"
    );
    for verb in ["get", "update", "list", "watch"] {
        assert!(
            may_named(&sa, verb, LEASES, Some(&ns), Some("ottoscaler")).await,
            "may {verb} the Lease ottoscaler"
        );
        assert!(
            !may_named(&sa, verb, LEASES, Some(&ns), Some("someone-elses")).await,
            "must not {verb} another Lease"
        );
    }
    for (verb, name) in [
        ("list", None),
        ("watch", None),
        ("patch", Some("ottoscaler")),
        ("delete", Some("ottoscaler")),
        ("deletecollection", None),
    ] {
        assert!(
            !may_named(&sa, verb, LEASES, Some(&ns), name).await,
            "must not {verb} leases ({name:?})"
        );
    }
    assert!(
        !may_named(&sa, "get", LEASES, Some(&other_ns), Some("ottoscaler")).await,
        "must not get the Lease of another namespace"
    );
    for (verb, resource, namespace) in [
        ("patch", "pods", wns),
        ("update", "pods", wns),
        ("deletecollection", "pods", wns),
        ("create", "pods/exec", wns),
        ("create", "pods/eviction", wns),
        ("update", "pods/status", wns),
        ("create", "events", wns),
        ("get", "secrets", wns),
        ("get", "configmaps", wns),
        // Nothing in its own namespace: not its own pod, nor a Redis beside it.
        ("delete", "pods", own),
        ("get", "pods", own),
        ("list", "pods", own),
        ("create", "pods", own),
        ("get", "secrets", own),
        ("get", "configmaps", own),
        ("list", "pods", Some(other_ns.as_str())),
        ("list", "pods", None),
        ("list", "namespaces", None),
    ] {
        assert!(
            !may(&sa, verb, resource, namespace).await,
            "must not {verb} {resource} in {namespace:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_prints_the_effective_config_without_the_redis_password() {
    let mut cmd = ottoscaler_command();
    cmd.arg("check-config")
        .env("REDIS_URL", "redis://user:s3cret@host:6379");
    let out = run_with_timeout(cmd, CHECK_CONFIG_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", out.describe());
    assert!(
        !out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"),
        "the password leaked: {}",
        out.describe()
    );
    assert!(
        out.stdout.contains("redis://user:***@host:6379"),
        "{}",
        out.describe()
    );
    // The rest of the effective configuration is there too.
    let effective: toml::Table = out.stdout.parse().expect("check-config prints TOML");
    for section in [
        "redis",
        "kubernetes",
        "limits",
        "worker",
        "http",
        "templates",
    ] {
        assert!(effective.contains_key(section), "[{section}] missing");
    }
}

#[test]
fn check_config_refuses_a_bad_value_and_names_its_key() {
    let mut cmd = ottoscaler_command();
    cmd.arg("check-config")
        .env("OTTOSCALER_LIMITS__MAX_WORKERS", "abc");
    let out = run_with_timeout(cmd, CHECK_CONFIG_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("limits.max_workers"),
        "{}",
        out.describe()
    );
    assert_eq!(out.stdout, "", "nothing printed as the configuration");
}

/// `cargo tree -p ottoscaler --prefix none` with the given edge kinds: one package a line.
fn cargo_tree(edges: &str) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--offline", "-p", "ottoscaler", "-e", edges])
        .args(["--prefix", "none", "--manifest-path"])
        .arg(repo_path("Cargo.toml"));
    let out = run_with_timeout(cmd, CARGO_TREE_TIMEOUT);
    assert!(out.status.success(), "cargo tree: {}", out.describe());
    out.stdout
}

fn lists_package(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn the_shipped_binary_does_not_depend_on_the_test_environment() {
    let shipped = cargo_tree("normal");
    assert!(lists_package(&shipped, "ottoscaler"), "{shipped}");
    assert!(lists_package(&shipped, "kube"), "{shipped}");
    assert!(
        !lists_package(&shipped, "testenv"),
        "testenv is a normal dependency:\n{shipped}"
    );
    // The check can see it where it belongs: among the dev-dependencies.
    let dev = cargo_tree("dev");
    assert!(lists_package(&dev, "testenv"), "{dev}");
}
