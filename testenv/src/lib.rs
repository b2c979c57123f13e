//! Test environment for ottoscaler: a real control plane on loopback (etcd,
//! kube-apiserver, kube-scheduler, kube-controller-manager), kubesim (a simulated
//! kubelet) and real redis-server instances.
//!
//! No mocks: ottoscaler's tests talk to the same apiserver code a production cluster
//! runs, so validation, watch semantics, resource versions and status subresources
//! behave for real. Only the nodes are simulated, by [`kubesim`].
//!
//! ```no_run
//! # async fn example() {
//! let env = testenv::shared();
//! let ns = env.namespace("my-test").await;
//! let client = env.client();
//! // ... create pods in `ns`; the scheduler binds them and kubesim runs them.
//! let redis = testenv::RedisServer::start();
//! println!("{}", redis.url());
//! # let _ = (ns, client);
//! # }
//! ```
//!
//! Every server is spawned with `PR_SET_PDEATHSIG` from a thread that never exits,
//! so nothing outlives the test binary (see [`process`]).

pub mod binaries;
mod certs;
pub mod controlplane;
mod env;
pub mod faultproxy;
mod kubeconfig;
pub mod kubesim;
pub mod otelcol;
mod pods;
mod ports;
pub mod process;
mod redis;
pub mod tools;
mod workdir;

pub use controlplane::{ControlPlane, ControlPlaneOptions};
pub use env::{TestEnv, TestEnvOptions, shared, start_static, wait_nodes_schedulable};
pub use faultproxy::{FaultProxy, FaultStats, Faults};
pub use otelcol::Collector;
pub use pods::{describe as describe_pod, pods_summary};
pub use redis::RedisServer;
pub use workdir::WorkDir;
