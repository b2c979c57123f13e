//! The kubeconfig handed to clients (kube-rs, kubectl, ottoscaler itself).

use std::path::Path;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Writes a kubeconfig for `server` that trusts the CA file `ca_cert` and
/// authenticates with the bearer `token` (context `testenv`, in `namespace`).
pub fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    token: &str,
    namespace: &str,
) -> Result<()> {
    let user = format!("    token: {token:?}\n");
    write_config(
        path,
        server,
        ca_cert,
        &user,
        &format!("    namespace: {namespace:?}\n"),
    )
}

/// Writes a kubeconfig for `server` that trusts the CA file `ca_cert` and
/// authenticates with a client certificate (for kube-scheduler and
/// kube-controller-manager).
pub fn write_client_cert(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    (cert, key): (&Path, &Path),
) -> Result<()> {
    let user = format!(
        "    client-certificate: {cert:?}\n    client-key: {key:?}\n",
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    write_config(path, server, ca_cert, &user, "")
}

/// The one-cluster, one-user, one-context kubeconfig (all named `testenv`); `user` and
/// `context_extra` are indented YAML lines for the user and the context.
fn write_config(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    context_extra: &str,
) -> Result<()> {
    // Plain formatting keeps serde_yaml out of the crate; every value is ours and
    // quoted, so nothing needs escaping beyond what `{:?}` does.
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server:?}
    certificate-authority: {ca:?}
users:
- name: testenv
  user:
{user}contexts:
- name: testenv
  context:
    cluster: testenv
    user: testenv
{context_extra}current-context: testenv
",
        ca = ca_cert.display().to_string(),
    );
    std::fs::write(path, yaml).with_context(|| format!("cannot write {}", path.display()))
}

/// Loads a kube-rs [`kube::Config`] from a kubeconfig file (its current context).
pub async fn load(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("invalid kubeconfig {}", path.display()))
}
