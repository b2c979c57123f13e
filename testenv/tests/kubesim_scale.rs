//! kubesim keeps up with a few hundred pods at once (its own test binary, so its load
//! does not slow the other tests' control plane).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};

const PODS: usize = 300;

#[tokio::test]
async fn kubesim_drives_300_short_pods_to_succeeded() {
    let env = testenv::shared();
    let ns = env.namespace("scale").await;
    let client = env.client();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Watch first, so every Succeeded is seen through the watch.
    let mut watch = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let started = Instant::now();
    let creating = futures::stream::iter(0..PODS)
        .map(|i| {
            let api = api.clone();
            async move {
                let pod = common::pod(&format!("p{i:03}"), &[("run-seconds", "0.2")]);
                api.create(&PostParams::default(), &pod).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>();
    let created = tokio::time::timeout(Duration::from_secs(60), creating)
        .await
        .expect("creating the pods took over 60 s")
        .expect("the apiserver accepts every pod");
    assert_eq!(created.len(), PODS);
    let created_in = started.elapsed();

    let mut succeeded = HashSet::new();
    let mut failed = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while succeeded.len() < PODS {
            let event = watch
                .try_next()
                .await
                .expect("watch works")
                .expect("watch goes on");
            if let Event::Apply(pod) | Event::InitApply(pod) = event {
                let name = pod.metadata.name.clone().unwrap_or_default();
                match common::phase(&pod) {
                    "Succeeded" => {
                        succeeded.insert(name);
                    }
                    "Failed" => failed.push(name),
                    _ => {}
                }
            }
        }
    })
    .await;
    if waited.is_err() || !failed.is_empty() {
        panic!(
            "{} of {PODS} pods Succeeded within 120 s, failed: {failed:?}\n{}",
            succeeded.len(),
            env.pods_summary(&ns).await
        );
    }
    eprintln!(
        "kubesim scale: created {PODS} pods in {created_in:.1?}, all Succeeded after {:.1?}",
        started.elapsed()
    );
}
