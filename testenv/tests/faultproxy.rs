//! The fault proxy in front of the shared apiserver: it forwards with the client's
//! token, streams watches, injects the faults it is told to and counts them.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ObjectMeta;
use kube::{Api, Client, Config};
use testenv::{FaultProxy, Faults};

async fn client_through(proxy: &FaultProxy, namespace: &str) -> Client {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    proxy
        .write_kubeconfig(&path, testenv::shared().admin_token(), namespace)
        .expect("kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    // kube's default stack retries 429 and 503 by itself (up to 15 times): off, so
    // each injected fault reaches the caller once.
    config.default_retry = false;
    assert_eq!(config.default_namespace, namespace);
    Client::try_from(config).expect("client")
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

#[tokio::test]
async fn the_proxy_forwards_with_the_token_and_streams_watches() {
    let env = testenv::shared();
    let ns = env.namespace("proxy-forward").await;
    let proxy = FaultProxy::start(env.server_url(), Faults::none())
        .await
        .expect("proxy");
    let client = client_through(&proxy, &ns).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    // Only our map: the controller-manager publishes kube-root-ca.crt in every
    // namespace.
    let only_ours = "metadata.name=through-proxy";
    let mut watch = maps
        .watch(&WatchParams::default().fields(only_ours).timeout(20), "0")
        .await
        .expect("watch through the proxy")
        .boxed();
    maps.create(&PostParams::default(), &config_map("through-proxy"))
        .await
        .expect("create through the proxy");
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = watch.next().await {
            if let Ok(WatchEvent::Added(cm)) = event {
                return cm.metadata.name;
            }
        }
        None
    })
    .await
    .expect("the watch event arrives in time");
    assert_eq!(seen.as_deref(), Some("through-proxy"));
    let listed = maps
        .list(&ListParams::default().fields(only_ours))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let stats = proxy.stats();
    assert_eq!(stats.watches, 1, "{stats:?}");
    assert_eq!(stats.requests, 2, "create and list: {stats:?}");
    assert_eq!(stats.forwarded, 3, "{stats:?}");
    assert_eq!(stats.injected(), 0, "{stats:?}");
}

#[tokio::test]
async fn injected_statuses_and_resets_reach_the_client_and_are_counted() {
    let env = testenv::shared();
    let ns = env.namespace("proxy-faults").await;
    let proxy = FaultProxy::start(env.server_url(), Faults::none())
        .await
        .expect("proxy");
    let maps: Api<ConfigMap> = Api::default_namespaced(client_through(&proxy, &ns).await);
    let cases = [
        (
            Faults {
                too_many_requests: 1.0,
                ..Faults::none()
            },
            Some(429),
        ),
        (
            Faults {
                internal_error: 1.0,
                ..Faults::none()
            },
            Some(500),
        ),
        (
            Faults {
                unavailable: 1.0,
                ..Faults::none()
            },
            Some(503),
        ),
        (
            Faults {
                reset: 1.0,
                ..Faults::none()
            },
            None,
        ),
    ];
    for (faults, code) in cases {
        proxy.set_faults(faults);
        let err = maps
            .list(&ListParams::default())
            .await
            .expect_err("the fault reaches the client");
        match (code, &err) {
            (Some(code), kube::Error::Api(status)) => assert_eq!(status.code, code, "{err}"),
            (None, kube::Error::Api(_)) => panic!("a reset came back as an API error: {err}"),
            (Some(code), other) => panic!("expected {code}, got {other}"),
            (None, _) => {}
        }
    }
    // Delays forward the request.
    proxy.set_faults(Faults {
        delay: 1.0,
        delay_range: (Duration::from_millis(300), Duration::from_millis(300)),
        ..Faults::none()
    });
    let started = std::time::Instant::now();
    maps.list(&ListParams::default())
        .await
        .expect("a delayed request succeeds");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let stats = proxy.stats();
    assert_eq!(
        (
            stats.too_many_requests,
            stats.internal_error,
            stats.unavailable,
            stats.resets,
            stats.delays
        ),
        (1, 1, 1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.injected(), 5);
    assert_eq!(stats.requests, 5);
    assert_eq!(
        stats.forwarded, 1,
        "only the delayed request went on: {stats:?}"
    );

    // Faulted or not, a watch always passes.
    proxy.set_faults(Faults {
        internal_error: 1.0,
        ..Faults::none()
    });
    let _events = maps
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("a watch is never faulted");
    assert_eq!(proxy.stats().watches, 1);
}
