//! The simulated nodes: Node objects that look Ready to anyone who reads them, kept
//! alive by node lease heartbeats as a kubelet keeps them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Client};
use serde_json::json;

use super::status::time;

/// One simulated node.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Node name (`<prefix><index>`).
    pub name: String,
    /// Its InternalIP, used as the `hostIP` of its pods.
    pub host_ip: String,
    /// Its labels when it was registered (the scheduler matches pods against them).
    pub labels: BTreeMap<String, String>,
    /// Index of the node, used to derive pod IPs.
    pub index: usize,
}

impl SimNode {
    /// Node `index` named with `prefix`.
    ///
    /// Addresses are in 127.0.0.0/8 on purpose: they are only strings in the API,
    /// but if anything ever followed them, traffic would stay on this machine.
    pub fn new(prefix: &str, index: usize) -> SimNode {
        let name = format!("{prefix}{index}");
        let labels = [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("node.kubernetes.io/instance-type", "kubesim"),
            ("topology.kubernetes.io/zone", "kubesim"),
            ("kubesim.ottoscaler.dev/node", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        SimNode {
            host_ip: format!("127.0.100.{}", (index % 250) + 1),
            name,
            labels,
            index,
        }
    }

    /// The `n`-th pod IP on this node (127.<101+index>.x.y, never .0).
    pub fn pod_ip(&self, n: u32) -> String {
        let n = n % (254 * 256);
        format!(
            "127.{}.{}.{}",
            101 + (self.index % 150),
            n / 254,
            (n % 254) + 1
        )
    }
}

/// CPUs of every simulated node (allocatable; memory is 4Ti, pods 5000).
pub const NODE_CPUS: u32 = 1000;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long a node lease is valid, as the kubelet sets it.
const LEASE_SECONDS: i32 = 40;

/// Creates the nodes (or keeps existing ones of the same name), their leases in
/// `kube-node-lease`, and reports them Ready with generous capacity.
pub async fn register(client: &Client, nodes: &[SimNode]) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    for node in nodes {
        let object = Node {
            metadata: ObjectMeta {
                name: Some(node.name.clone()),
                labels: Some(node.labels.clone()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create node {}", node.name));
            }
        }
        post_status(client, node).await?;
        // The heartbeat creates the lease if this fails (its namespace may be missing
        // for a moment after the apiserver started).
        if let Err(err) = renew_lease(client, &node.name).await {
            tracing::warn!(node = %node.name, %err, "kubesim cannot create the node lease yet");
        }
    }
    Ok(())
}

/// Renews the node's lease in `kube-node-lease` (creating it, owned by the node, if
/// it is missing), which is how the node lifecycle controller sees a kubelet alive.
pub async fn renew_lease(client: &Client, name: &str) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let renew = json!({ "spec": { "renewTime": now, "holderIdentity": name } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&renew))
        .await
    {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(err) => return Err(err).with_context(|| format!("cannot renew the lease of {name}")),
    }
    let node = Api::<Node>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("cannot read node {name}"))?;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_string(),
                uid: node.metadata.uid.unwrap_or_default(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create the lease of {name}")),
    }
}

/// Sets a label on a node (the Node object; pods only see it through the scheduler).
pub async fn label(client: &Client, name: &str, key: &str, value: &str) -> Result<()> {
    let patch = json!({ "metadata": { "labels": { key: value } } });
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cannot label node {name}"))?;
    Ok(())
}

/// Posts the node's status as a kubelet does: Ready, no pressure, capacity and
/// allocatable, addresses, with `lastHeartbeatTime` now.
pub async fn post_status(client: &Client, node: &SimNode) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let now = time(Timestamp::now());
    // Room for 5000 pods of ottoscaler's default template (100m CPU, 64Mi) per node,
    // so the scale tests and benchmarks (10,000 workers on 3 nodes) fit.
    let resources = json!({
        "cpu": NODE_CPUS.to_string(), "memory": "4Ti", "pods": "5000", "ephemeral-storage": "4Ti",
    });
    let status = json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                { "type": "InternalIP", "address": node.host_ip },
                { "type": "Hostname", "address": node.name },
            ],
            "conditions": [
                {
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status (kubesim)",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
                {
                    "type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                    "message": "kubelet has sufficient memory available",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
                {
                    "type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                    "message": "kubelet has no disk pressure",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
                {
                    "type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                    "message": "kubelet has sufficient PID available",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                },
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "kubesim", "osImage": "kubesim",
                "containerRuntimeVersion": "kubesim://1", "kubeletVersion": "v1.37.0-kubesim",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("cannot set status of node {}", node.name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_have_their_hostname_label_and_pod_ips_differ() {
        let node = SimNode::new("kubesim-node-", 1);
        assert_eq!(
            node.labels
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("kubesim-node-1")
        );
        assert_eq!(node.pod_ip(0), "127.102.0.1");
        assert_ne!(node.pod_ip(253), node.pod_ip(254));
    }
}
