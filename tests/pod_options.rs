//! A simple template's pod options (docs/contract.md section 3), against the real API
//! server and scheduler: the pod is accepted with its nodeSelector, tolerations, env,
//! service account, pull secret and priority class (the Priority admission plugin
//! resolves the class), and the scheduler places it on the one node that matches.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use ::ottoscaler::messages::Outcome;
use ::ottoscaler::settings::{TemplateSettings, TolerationSettings};
use common::*;

const WAIT: Duration = Duration::from_secs(60);
const PRIORITY_CLASS: &str = "ottoscaler-test-ci-low";

#[actix_rt::test]
async fn a_simple_templates_pod_options_reach_the_api_server_and_the_scheduler() {
    let env = testenv::shared();
    let pool = format!("arm-{}", rand::random::<u32>());
    let node = env
        .kubesim()
        .add_node(&[("ottoscaler.dev/pool", pool.as_str())])
        .await
        .expect("add a node");
    testenv::wait_nodes_schedulable(&env.client(), std::slice::from_ref(&node), WAIT)
        .await
        .expect("the node becomes schedulable");
    let classes: Api<PriorityClass> = Api::all(env.client());
    let class = PriorityClass {
        metadata: ObjectMeta {
            name: Some(PRIORITY_CLASS.into()),
            ..ObjectMeta::default()
        },
        value: Some(10),
        ..PriorityClass::default()
    };
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        // Another run of this test made it already.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create the PriorityClass: {e}"),
    }

    let mut settings = test_settings();
    settings.templates.insert(
        "arm".into(),
        TemplateSettings {
            image: "registry.example/agent:arm".into(),
            annotations: BTreeMap::from([(RUN_SECONDS.to_string(), "3600".to_string())]),
            node_selector: BTreeMap::from([("ottoscaler.dev/pool".into(), pool.clone())]),
            tolerations: vec![TolerationSettings {
                key: "ottoscaler.dev/ci".into(),
                operator: "Exists".into(),
                effect: "NoSchedule".into(),
                ..TolerationSettings::default()
            }],
            env: BTreeMap::from([("GRADLE_OPTS".into(), "-Xmx2g".into())]),
            service_account_name: "builder".into(),
            image_pull_secrets: vec!["registry-creds".into()],
            priority_class_name: PRIORITY_CLASS.into(),
            ..TemplateSettings::default()
        },
    );
    settings.validate().expect("the options are valid");
    let h = Harness::start("pod-options", &settings).await;
    // The ServiceAccount admission plugin refuses pods of an account that does not exist.
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("builder".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(h.client.clone(), &h.namespace)
        .create(&PostParams::default(), &account)
        .await
        .expect("create the template's ServiceAccount");
    let accepted = h
        .send(scale_up("730-0", "task-arm", 1, "arm"))
        .await
        .expect("the API server accepts the pod");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.namespace);
    let deadline = Instant::now() + WAIT;
    let pod = loop {
        let pod = pods.get(&accepted.pods[0]).await.expect("get pod");
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            break pod;
        }
        assert!(Instant::now() < deadline, "not scheduled: {pod:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(spec.service_account_name.as_deref(), Some("builder"));
    assert_eq!(spec.priority_class_name.as_deref(), Some(PRIORITY_CLASS));
    assert_eq!(
        spec.priority,
        Some(10),
        "resolved by the Priority admission plugin"
    );
    assert_eq!(
        spec.image_pull_secrets.expect("pull secrets")[0].name,
        "registry-creds"
    );
    assert!(
        spec.tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("ottoscaler.dev/ci")),
        "{:?}",
        spec.tolerations
    );
    let env_vars = spec.containers[0].env.clone().unwrap_or_default();
    assert!(
        env_vars
            .iter()
            .any(|e| e.name == "GRADLE_OPTS" && e.value.as_deref() == Some("-Xmx2g")),
        "{env_vars:?}"
    );

    h.send(scale_down("731-0", "task-arm", None))
        .await
        .expect("cancelled");
    let results = h.results.wait_for(1, WAIT).await;
    assert_eq!(results[0].outcome, Outcome::Cancelled, "{results:?}");
    h.wait_no_pods(Duration::from_secs(30)).await;
}
