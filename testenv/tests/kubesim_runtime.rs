//! kubesim's process runtime against the real control plane: pods of a mapped image
//! run as real processes in a bubblewrap sandbox. Every check reads what the process
//! itself saw (its log, files it wrote) or what the API shows.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use testenv::kubesim::runtime::ImageMapping;
use testenv::{TestEnv, TestEnvOptions};

/// A mapped image without entrypoint: the pods' commands run as given, from the
/// host's /usr.
const IMAGE: &str = "kubesim.test/shell:1";

const WAIT: Duration = Duration::from_secs(30);

fn env() -> &'static TestEnv {
    static ENV: OnceLock<Result<&'static TestEnv, String>> = OnceLock::new();
    let started = ENV.get_or_init(|| {
        testenv::start_static(TestEnvOptions {
            images: [(IMAGE.to_string(), ImageMapping::passthrough())].into(),
            ..TestEnvOptions::default()
        })
    });
    match started {
        Ok(env) => env,
        Err(err) => panic!("cannot start the test environment: {err}"),
    }
}

async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(value).expect("valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

/// Polls the pod every 100 ms until `done` holds; panics with the pod after `within`.
async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + within;
    loop {
        let pod = api.get_opt(name).await.expect("get pod");
        if let Some(pod) = &pod
            && done(pod)
        {
            return pod.clone();
        }
        assert!(
            Instant::now() < deadline,
            "pod {name}: not {what} after {within:?}: {:#?}",
            pod.map(|p| p.status)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminated_code(pod: &Pod) -> Option<i32> {
    common::container_state(pod)?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// The status (`True`/`False`) of a pod condition.
fn condition(pod: &Pod, kind: &str) -> Option<String> {
    common::condition(pod, kind).map(|c| c.status.clone())
}

fn container_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .is_some_and(|c| c.ready)
}

fn running(pod: &Pod) -> bool {
    common::container_state(pod).is_some_and(|s| s.running.is_some())
}

/// The runtime's directory of a pod.
fn pod_dir(ns: &str, pod: &Pod) -> PathBuf {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    env()
        .control_plane()
        .dir()
        .join("pods")
        .join(format!("{ns}_{name}_{uid}"))
}

fn log_of(ns: &str, pod: &Pod, container: &str) -> String {
    let path = pod_dir(ns, pod).join(format!("{container}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()))
}

#[tokio::test]
async fn a_mapped_pod_gets_env_volumes_its_user_and_a_read_only_root() {
    let env = env();
    let ns = env.namespace("runtime-env").await;
    let client = env.client();
    let _: Secret = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "stringData": {"url": "redis://secret"}}),
    )
    .await;
    let _: ConfigMap = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
               "data": {"mode": "fast", "app.toml": "answer = 42\n"}}),
    )
    .await;
    let script = r#"
        echo "uid=$(id -u) gid=$(id -g)"
        echo "POD=$POD NS=$NS NODE=$NODE URL=$URL MODE=$MODE ADDR=$ADDR OPT=${OPT-unset}"
        echo "config=$(cat /config/app.toml)"
        touch /root-write 2>/dev/null && echo "root=writable" || echo "root=read-only"
        touch /tmp/x 2>/dev/null && echo "tmp=writable" || echo "tmp=read-only"
        echo hello > /scratch/out && echo "scratch=writable"
        exit 3
    "#;
    let pod: Pod = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "env"},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 1234, "runAsGroup": 2345},
                "containers": [{
                    "name": "main", "image": IMAGE,
                    "command": ["sh", "-c", script],
                    "env": [
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
                        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": true}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                        {"name": "ADDR", "value": "$(IP):6379"}
                    ],
                    "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/config", "readOnly": true},
                        {"name": "scratch", "mountPath": "/scratch"}
                    ]
                }],
                "volumes": [
                    {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "app.toml", "path": "app.toml"}]}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        }),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let done = wait_pod(&api, "env", "Failed", WAIT, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let log = log_of(&ns, &pod, "main");
    assert_eq!(
        terminated_code(&done),
        Some(3),
        "the real exit code; log:\n{log}"
    );
    let ip = done
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    assert!(ip.starts_with("127.99."), "{ip}");
    let node = done
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("bound");
    for line in [
        "uid=1234 gid=2345".to_string(),
        format!(
            "POD=env NS={ns} NODE={node} URL=redis://secret MODE=fast ADDR={ip}:6379 OPT=unset"
        ),
        "config=answer = 42".to_string(),
        "root=read-only".to_string(),
        "tmp=read-only".to_string(),
        "scratch=writable".to_string(),
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "{line:?} missing from the log:\n{log}"
        );
    }
    // The file the process wrote belongs to its real uid on the host.
    let out = pod_dir(&ns, &pod).join("volumes/scratch/out");
    let meta = std::fs::metadata(&out).expect("the emptyDir file exists on the host");
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
}

#[tokio::test]
async fn the_projected_service_account_token_is_bound_to_the_pod_and_accepted_by_the_api_server() {
    let env = env();
    let ns = env.namespace("runtime-token").await;
    let client = env.client();
    // Python's urllib: an HTTPS request to the API server with the pod's token and CA.
    let script = r#"
import json, os, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
ns = open(sa + "/namespace").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
url = "https://%s:%s/api/v1/namespaces/%s/pods" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], ns)
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    print("status=200")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    print("status=%d" % e.code)
    print("message=" + body.get("message", ""))
"#;
    let pod: Pod = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "token"},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 4321},
                "containers": [{"name": "main", "image": IMAGE,
                                "command": ["python3", "-c", script]}]
            }
        }),
    )
    .await;
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "the ServiceAccount admission plugin added the token volume: {volumes:?}"
    );
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let done = wait_pod(&api, "token", "Succeeded", WAIT, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let log = log_of(&ns, &pod, "main");
    assert_eq!(terminated_code(&done), Some(0), "log:\n{log}");
    // Authenticated (403, not 401) as the namespace's default ServiceAccount, which
    // may not list pods.
    assert!(log.contains("status=403"), "log:\n{log}");
    let user = format!("system:serviceaccount:{ns}:default");
    assert!(log.contains(&user), "log:\n{log}");

    // The token is a bound token of this very pod.
    let volume = volumes
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("token volume");
    let token_file = pod_dir(&ns, &pod)
        .join("volumes")
        .join(&volume.name)
        .join("token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let mut config = env.config();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.trim().to_string().into()),
        ..kube::config::AuthInfo::default()
    };
    let as_pod = Client::try_from(config).expect("client");
    let review: SelfSubjectReview = Api::all(as_pod)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with the pod's token");
    let info = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(info.username.as_deref(), Some(user.as_str()));
    let pod_name = info
        .extra
        .unwrap_or_default()
        .get("authentication.kubernetes.io/pod-name")
        .cloned();
    assert_eq!(pod_name, Some(vec!["token".to_string()]));
}

/// A Python HTTP server on 0.0.0.0:8080: /ready answers 200 while /scratch/ready
/// exists; on SIGTERM it waits 1 s, then exits 42.
const SERVER: &str = r#"
import http.server, os, signal, sys, time
def term(*_):
    print("got SIGTERM", flush=True)
    time.sleep(1)
    os._exit(42)
signal.signal(signal.SIGTERM, term)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists("/scratch/ready")
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

fn server_pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "web", "image": IMAGE,
                "command": ["python3", "-c", SERVER],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                   "periodSeconds": 1, "failureThreshold": 1},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}}]
        }
    })
}

#[tokio::test]
async fn an_http_readiness_probe_flips_ready_and_sigterm_gets_the_grace_period() {
    let env = env();
    let ns = env.namespace("runtime-probe").await;
    let client = env.client();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Two pods listening on 0.0.0.0:8080 each: every pod binds its own IP.
    let a: Pod = create(&client, &ns, server_pod("web-a")).await;
    let b: Pod = create(&client, &ns, server_pod("web-b")).await;
    for pod in [&a, &b] {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let seen = wait_pod(&api, name, "running and unready", WAIT, running).await;
        assert!(!container_ready(&seen));
        assert_eq!(condition(&seen, "Ready").as_deref(), Some("False"));
    }
    // Ready once the probe passes...
    for pod in [&a, &b] {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let flag = pod_dir(&ns, pod).join("volumes/scratch/ready");
        std::fs::write(&flag, b"").expect("write the flag");
        let seen = wait_pod(&api, name, "Ready", WAIT, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
        assert!(container_ready(&seen));
        assert_eq!(condition(&seen, "ContainersReady").as_deref(), Some("True"));
    }
    // ... and unready again when it fails.
    std::fs::remove_file(pod_dir(&ns, &a).join("volumes/scratch/ready")).expect("remove flag");
    wait_pod(&api, "web-a", "unready", WAIT, |p| {
        condition(p, "Ready").as_deref() == Some("False") && running(p)
    })
    .await;
    let ips: Vec<String> = [&a, &b]
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let mut pod_ips = Vec::new();
    for name in &ips {
        let p = api.get(name).await.expect("get");
        pod_ips.push(p.status.and_then(|s| s.pod_ip).expect("pod ip"));
    }
    assert_ne!(pod_ips[0], pod_ips[1], "each pod has an IP of its own");

    // Deletion: SIGTERM, the handler's 1 s, exit 42 as the terminated state.
    let gone = watch_until_gone(&api, "web-b").await;
    let deleting = Instant::now();
    api.delete("web-b", &DeleteParams::default())
        .await
        .expect("delete");
    let last = gone.await.expect("watch task");
    let took = deleting.elapsed();
    assert_eq!(last, Some(42), "the handler's exit code is reported");
    assert!(
        took >= Duration::from_secs(1),
        "the handler's second was waited for: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "no SIGKILL needed: {took:?}"
    );
    let log = log_of(&ns, &b, "web");
    assert!(log.contains("got SIGTERM"), "log:\n{log}");
    let gone = watch_until_gone(&api, "web-a").await;
    api.delete("web-a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(gone.await.expect("watch task"), Some(42));
}

/// Watches pod `name` (the watch is established when this returns) until it is
/// gone; the task returns the last terminated exit code seen.
async fn watch_until_gone(api: &Api<Pod>, name: &str) -> tokio::task::JoinHandle<Option<i32>> {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    let (listed, listed_rx) = tokio::sync::oneshot::channel();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut listed = Some(listed);
        let mut last = None;
        let watching = async {
            while let Some(event) = stream.next().await {
                match event.expect("pod watch") {
                    Event::Apply(p) | Event::InitApply(p) => last = terminated_code(&p).or(last),
                    Event::InitDone => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Delete(_) => return,
                    Event::Init => {}
                }
            }
        };
        tokio::time::timeout(WAIT, watching)
            .await
            .unwrap_or_else(|_| panic!("pod {name} not gone after {WAIT:?}"));
        last
    });
    listed_rx.await.expect("the watch listed the pod");
    task
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let env = env();
    let ns = env.namespace("runtime-kill").await;
    let client = env.client();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let _: Pod = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": IMAGE,
                                "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]}]
            }
        }),
    )
    .await;
    wait_pod(&api, "stubborn", "running", WAIT, running).await;
    let gone = watch_until_gone(&api, "stubborn").await;
    let deleting = Instant::now();
    api.delete("stubborn", &DeleteParams::default())
        .await
        .expect("delete");
    let last = gone.await.expect("watch task");
    let took = deleting.elapsed();
    assert_eq!(last, Some(137), "SIGKILL after the grace period");
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

/// Live processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

#[tokio::test]
async fn the_processes_of_real_pods_die_with_their_environment() {
    let env = TestEnv::start(TestEnvOptions {
        images: [(IMAGE.to_string(), ImageMapping::passthrough())].into(),
        ..TestEnvOptions::default()
    })
    .await
    .expect("own environment");
    let ns = env.namespace("runtime-hygiene").await;
    let client = env.client();
    let marker = format!("kubesim-hygiene-{:08x}", std::process::id());
    let _: Pod = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
            "spec": {"containers": [{"name": "main", "image": IMAGE,
                     "command": ["sh", "-c", format!("sleep 300; echo {marker}")]}]}
        }),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(client, &ns);
    wait_pod(&api, "sleeper", "running", WAIT, running).await;
    let before = processes_with(&marker);
    assert!(before.len() >= 2, "bwrap and the shell run: {before:?}");
    drop(env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandbox processes outlived their environment: {:?}",
            processes_with(&marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
