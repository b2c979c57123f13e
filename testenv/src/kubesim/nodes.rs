//! The simulated nodes: Node objects that look Ready to anyone who reads them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
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
    /// Its labels, matched against pods' `nodeSelector`.
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

    /// Whether a pod with this `nodeSelector` fits the node.
    pub fn matches(&self, selector: Option<&BTreeMap<String, String>>) -> bool {
        selector.is_none_or(|s| s.iter().all(|(k, v)| self.labels.get(k) == Some(v)))
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

/// Creates the nodes (or keeps existing ones of the same name) and reports them Ready
/// with generous capacity.
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
        let now = time(Timestamp::now());
        let resources =
            json!({ "cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti" });
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_selectors_match_by_label_and_pod_ips_differ() {
        let node = SimNode::new("kubesim-node-", 1);
        let mut sel = BTreeMap::new();
        assert!(node.matches(None));
        sel.insert("kubernetes.io/os".to_string(), "linux".to_string());
        assert!(node.matches(Some(&sel)));
        sel.insert("disktype".to_string(), "ssd".to_string());
        assert!(!node.matches(Some(&sel)));
        assert_eq!(node.pod_ip(0), "127.102.0.1");
        assert_ne!(node.pod_ip(253), node.pod_ip(254));
    }
}
