//! A ResourceQuota is capacity, not failure (docs/contract.md, outcomes): creates refused
//! for `exceeded quota` wait and retry with backoff, counting as pending. Runs against the
//! real API server's quota admission and the controller manager's quota controller.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};

use common::*;

const WAIT: Duration = Duration::from_secs(120);

/// What a watch saw of the namespace's pods: every uid, and the most pods that counted
/// against the quota (not yet Succeeded or Failed) at the same time.
#[derive(Default)]
struct Seen {
    uids: BTreeSet<String>,
    counting: BTreeSet<String>,
    most_counting: usize,
}

fn follow_pods(pods: Api<Pod>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let (pod, gone) = match event {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => (p, false),
                Ok(Event::Delete(p)) => (p, true),
                _ => continue,
            };
            let (Some(uid), Ok(mut seen)) = (pod.metadata.uid.clone(), sink.lock()) else {
                continue;
            };
            let terminal = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            seen.uids.insert(uid.clone());
            if gone || terminal {
                seen.counting.remove(&uid);
            } else {
                seen.counting.insert(uid);
            }
            seen.most_counting = seen.most_counting.max(seen.counting.len());
        }
    });
    seen
}

#[actix_rt::test]
async fn a_pod_quota_of_two_runs_five_workers_two_at_a_time() {
    let (client, ns) = namespace("quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": "2"}}
    }))
    .expect("a quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("quota created");
    // Quota admission refuses every create until the quota controller has set the
    // quota's status.
    wait_until_async(
        "the quota controller has counted the namespace",
        WAIT,
        || {
            let quotas = quotas.clone();
            async move {
                quotas
                    .get("pods")
                    .await
                    .ok()
                    .and_then(|q| q.status)
                    .and_then(|s| s.hard)
                    .is_some_and(|h| h.contains_key("pods"))
            }
        },
    )
    .await;

    let mut settings = test_settings();
    sim_template(&mut settings, "one-second", &[(RUN_SECONDS, "1")]);
    let h = Harness::start_in(client.clone(), ns.clone(), &settings, Collected::default()).await;
    let seen = follow_pods(Api::namespaced(client, &ns));

    let accepted = h
        .send(scale_up("1-0", "task-q", 5, "one-second"))
        .await
        .expect("accepted: quota refusals are capacity, the workers wait");
    assert_eq!(accepted.pods.len(), 5);
    let results = h.results.wait_for(5, WAIT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("succeeded".into(), 5)]),
        "{results:?}\n{}",
        h.describe_pods().await
    );
    h.wait_no_pods(WAIT).await;

    let seen = seen.lock().expect("watch state");
    assert_eq!(seen.uids.len(), 5, "one pod per worker, none twice");
    // Exactly 2: the quota held the other three back (without it all five run at once).
    assert_eq!(
        seen.most_counting, 2,
        "pods counted against the quota at once"
    );
    eprintln!(
        "quota: 5 workers through a pods=2 quota, at most {} counting at once",
        seen.most_counting
    );
}
