//! Service names for sandboxed processes: the ready endpoints of every Service, kept
//! current from an EndpointSlice watch, rendered into each pod's hosts file.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

/// (namespace, service) -> IPs of its ready endpoints, sorted.
pub type ServiceIps = BTreeMap<(String, String), Vec<String>>;

/// EndpointSlice (namespace/name) -> its Service and ready IPs.
type Slices = BTreeMap<String, ((String, String), Vec<String>)>;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

/// The ready addresses of one slice, with its Service.
fn slice_ips(slice: &EndpointSlice) -> Option<((String, String), Vec<String>)> {
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ips = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    Some(((ns, svc), ips))
}

/// Watches EndpointSlices until the receiver side is gone, publishing the ready IPs
/// per Service on every change. Watch errors are retried with backoff.
pub async fn watch_services(client: Client, publish: watch::Sender<Arc<ServiceIps>>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Slice (namespace/name) -> its service and IPs.
    let mut slices: Slices = BTreeMap::new();
    let mut relisted: Option<Slices> = None;
    let key = |s: &EndpointSlice| {
        format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or(""),
            s.metadata.name.as_deref().unwrap_or("")
        )
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relisted = Some(BTreeMap::new()),
            Ok(Event::InitApply(s)) => {
                if let (Some(fresh), Some(ips)) = (relisted.as_mut(), slice_ips(&s)) {
                    fresh.insert(key(&s), ips);
                }
                continue;
            }
            Ok(Event::InitDone) => slices = relisted.take().unwrap_or_default(),
            Ok(Event::Apply(s)) => {
                if let Some(ips) = slice_ips(&s) {
                    slices.insert(key(&s), ips);
                }
            }
            Ok(Event::Delete(s)) => {
                slices.remove(&key(&s));
            }
            Err(err) => {
                tracing::warn!(%err, "kubesim EndpointSlice watch error (retrying)");
                continue;
            }
        }
        let mut services: ServiceIps = BTreeMap::new();
        for (svc, ips) in slices.values() {
            services
                .entry(svc.clone())
                .or_default()
                .extend(ips.iter().cloned());
        }
        for ips in services.values_mut() {
            ips.sort();
            ips.dedup();
        }
        if publish.send(Arc::new(services)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
