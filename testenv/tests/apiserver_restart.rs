//! Restarting only kube-apiserver of an environment of our own: same URL, same etcd,
//! so objects survive and clients and watches carry on.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use kube::core::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use testenv::{TestEnv, TestEnvOptions};

type Events = BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>>;

/// Waits until the watch shows the config map `name`.
async fn wait_for(events: &mut Events, name: &str) {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(cm) | Event::InitApply(cm))
                    if cm.metadata.name.as_deref() == Some(name) =>
                {
                    return;
                }
                Ok(_) => {}
                // The watcher retries on the next poll; do not spin meanwhile.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the watch never showed {name}");
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_restarts_on_the_same_port_with_its_data_and_watches_resume() {
    let mut env = TestEnv::start(TestEnvOptions::default())
        .await
        .expect("test environment");
    let ns = env.namespace("restart").await;
    let maps: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    maps.create(&PostParams::default(), &config_map("before"))
        .await
        .expect("create before");
    let url = env.server_url().to_string();
    let (_, old_pid) = env.control_plane().pids();

    // A watch that lives through the restart, as a controller's would.
    let mut names = watcher::watcher(maps.clone(), watcher::Config::default()).boxed();
    wait_for(&mut names, "before").await;

    let took = env
        .control_plane_mut()
        .restart_apiserver(false)
        .await
        .expect("apiserver restarts");
    eprintln!("apiserver back after {took:?}");
    assert_eq!(env.server_url(), url, "same URL");
    let (_, new_pid) = env.control_plane().pids();
    assert_ne!(old_pid, new_pid, "a new process");

    let got = maps.get("before").await.expect("data kept in etcd");
    assert_eq!(got.metadata.name.as_deref(), Some("before"));
    maps.create(&PostParams::default(), &config_map("after"))
        .await
        .expect("the old client works again");
    wait_for(&mut names, "after").await;

    // Stopped, it is down; started, it is back.
    env.control_plane_mut().stop_apiserver(false);
    assert!(maps.get("before").await.is_err(), "down while stopped");
    env.control_plane_mut()
        .start_apiserver()
        .await
        .expect("apiserver starts");
    maps.get("after")
        .await
        .expect("back after the second start");
    env.stop().await.expect("stops");
}
