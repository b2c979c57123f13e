//! Service names for sandboxed processes: the ready pods of every Service (by its
//! selector), kept current from Service and Pod watches, rendered into each pod's
//! hosts file.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

/// (namespace, service) -> IPs of its ready endpoints, sorted.
pub type ServiceIps = BTreeMap<(String, String), Vec<String>>;

/// The hosts file of a pod: localhost, its own name, and for every Service with a
/// ready endpoint the first of their IPs under `svc.ns`, `svc.ns.svc` and
/// `svc.ns.svc.cluster.local` (and the bare `svc` in the pod's own namespace).
pub fn render(pod_ip: &str, hostname: &str, namespace: &str, services: &ServiceIps) -> String {
    let mut out = format!(
        "# kubesim: written for pod {namespace}/{hostname}; Service names resolve to a ready endpoint's pod IP\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{pod_ip}\t{hostname}\n"
    );
    for ((ns, svc), ips) in services {
        let Some(ip) = ips.first() else { continue };
        let mut names = Vec::new();
        if ns == namespace {
            names.push(svc.clone());
        }
        names.push(format!("{svc}.{ns}"));
        names.push(format!("{svc}.{ns}.svc"));
        names.push(format!("{svc}.{ns}.svc.cluster.local"));
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// Whether `pod` is a ready endpoint of a Service with `selector`: the labels match,
/// it has a pod IP, it is Ready and not being deleted.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    if selector.is_empty() || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    ready && has_ip && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The ready pod IPs of every Service with a selector.
pub fn service_ips(
    services: &BTreeMap<(String, String), BTreeMap<String, String>>,
    pods: &BTreeMap<(String, String), Pod>,
) -> ServiceIps {
    let mut out = ServiceIps::new();
    for ((ns, name), selector) in services {
        let mut ips: Vec<String> = pods
            .iter()
            .filter(|((pod_ns, _), pod)| pod_ns == ns && selects(selector, pod))
            .filter_map(|(_, pod)| pod.status.as_ref()?.pod_ip.clone())
            .collect();
        ips.sort();
        ips.dedup();
        out.insert((ns.clone(), name.clone()), ips);
    }
    out
}

fn key_of<K: kube::Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Watches Services and Pods until the receiver side is gone, publishing the ready
/// pod IPs per Service whenever they change. (EndpointSlices cannot serve: the API
/// refuses loopback endpoint addresses, and kubesim's pod IPs are in 127.0.0.0/8.)
/// Watch errors are retried with backoff.
pub async fn watch_services(client: Client, publish: watch::Sender<Arc<ServiceIps>>) {
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let pods =
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    let mut services = std::pin::pin!(services);
    let mut pods = std::pin::pin!(pods);
    let mut selectors: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    let mut known: BTreeMap<(String, String), Pod> = BTreeMap::new();
    loop {
        tokio::select! {
            svc = services.next() => match svc {
                Some(Ok(svc)) => {
                    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
                    selectors.insert(key_of(&svc), selector);
                }
                Some(Err(err)) => {
                    tracing::warn!(%err, "kubesim Service watch error (retrying)");
                    continue;
                }
                None => return,
            },
            pod = pods.next() => match pod {
                Some(Ok(Event::Apply(p) | Event::InitApply(p))) => {
                    known.insert(key_of(&p), p);
                }
                Some(Ok(Event::Delete(p))) => {
                    known.remove(&key_of(&p));
                }
                Some(Ok(Event::Init | Event::InitDone)) => continue,
                Some(Err(err)) => {
                    tracing::warn!(%err, "kubesim pod watch (Service names) error (retrying)");
                    continue;
                }
                None => return,
            },
        }
        let ips = service_ips(&selectors, &known);
        let changed = publish.send_if_modified(|current| {
            if **current == ips {
                return false;
            }
            *current = Arc::new(ips.clone());
            true
        });
        if !changed && publish.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, app: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
            "status": {"podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn services_resolve_to_their_ready_selected_pods_only() {
        let selectors = [
            (
                ("a".to_string(), "redis".to_string()),
                [("app".to_string(), "redis".to_string())].into(),
            ),
            (("a".to_string(), "headless".to_string()), BTreeMap::new()),
        ]
        .into();
        let pods = [
            pod("a", "r1", "redis", "127.99.0.2", true),
            pod("a", "r2", "redis", "127.99.0.1", false),
            pod("b", "r3", "redis", "127.99.0.3", true),
            pod("a", "w", "web", "127.99.0.4", true),
        ]
        .into_iter()
        .map(|p| (key_of(&p), p))
        .collect();
        let ips = service_ips(&selectors, &pods);
        assert_eq!(ips[&("a".to_string(), "redis".to_string())], ["127.99.0.2"]);
        assert!(ips[&("a".to_string(), "headless".to_string())].is_empty());
    }

    #[test]
    fn hosts_name_services_of_the_own_namespace_short_and_others_qualified() {
        let services: ServiceIps = [
            (
                ("ottoscaler".to_string(), "redis".to_string()),
                vec!["127.99.0.1".to_string(), "127.99.0.9".to_string()],
            ),
            (
                ("other".to_string(), "api".to_string()),
                vec!["127.99.0.2".to_string()],
            ),
            (("ottoscaler".to_string(), "none".to_string()), vec![]),
        ]
        .into();
        let hosts = render("127.99.0.3", "ottoscaler-abc", "ottoscaler", &services);
        let lines: Vec<&str> = hosts.lines().collect();
        assert!(lines.contains(&"127.0.0.1\tlocalhost"));
        assert!(lines.contains(&"127.99.0.3\tottoscaler-abc"));
        assert!(lines.contains(
            &"127.99.0.1\tredis redis.ottoscaler redis.ottoscaler.svc redis.ottoscaler.svc.cluster.local"
        ));
        assert!(lines.contains(&"127.99.0.2\tapi.other api.other.svc api.other.svc.cluster.local"));
        assert!(!hosts.contains("none"), "no ready endpoint, no name");
    }
}
