//! Key material for a throw-away control plane, generated in-process with rcgen so
//! the test environment needs no openssl CLI.
//!
//! We generate our own CA and serving certificate (rather than letting kube-apiserver
//! self-sign into `--cert-dir`) so the kubeconfig can carry the CA and clients verify
//! TLS for real, the same way they do against a production cluster.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA certificate's file name in the certificates' directory.
pub const CA_CERT_FILE: &str = "ca.crt";

/// Files written by [`generate`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM of the CA that signed the serving certificate (goes into the kubeconfig).
    pub ca_pem: String,
    /// CA certificate file.
    pub ca_cert: PathBuf,
    /// kube-apiserver serving certificate (SANs 127.0.0.1, localhost, kubernetes...).
    pub serving_cert: PathBuf,
    /// Private key of the serving certificate.
    pub serving_key: PathBuf,
    /// ECDSA P-256 private key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public key, which verifies them (the apiserver does not derive it from a
    /// PKCS#8 private key file).
    pub service_account_pub: PathBuf,
    /// Client certificate and key of kube-scheduler (CN `system:kube-scheduler`).
    pub scheduler_client: (PathBuf, PathBuf),
    /// Client certificate and key of kube-controller-manager
    /// (CN `system:kube-controller-manager`).
    pub controller_manager_client: (PathBuf, PathBuf),
    /// Serving certificate and key of kube-scheduler and kube-controller-manager
    /// (SANs 127.0.0.1 and localhost), so their `/healthz` is verified too.
    pub component_serving: (PathBuf, PathBuf),
}

/// Writes a CA, the apiserver's serving certificate, a service-account key, client
/// certificates of the scheduler and controller-manager, and their serving certificate
/// into `dir`.
pub fn generate(dir: &Path) -> Result<CertFiles> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ottoscaler-testenv-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_key = KeyPair::generate().context("cannot generate CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot self-sign CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let sans = [
        "127.0.0.1",
        "10.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec();
    let mut serving_params = CertificateParams::new(sans).context("serving cert params")?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving_params.use_authority_key_identifier_extension = true;
    let serving_key = KeyPair::generate().context("cannot generate serving key")?;
    let serving_cert = serving_params
        .signed_by(&serving_key, &issuer)
        .context("cannot sign serving certificate")?;

    let sa_key = KeyPair::generate().context("cannot generate service-account key")?;

    // Client certificates: the apiserver maps the CN to the user, so the default RBAC
    // bootstrap roles of a real cluster apply to the scheduler and controller-manager.
    let client = |cn: &str| -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new()).context("client params")?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("cannot generate client key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("cannot sign the client certificate of {cn}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let scheduler_client = client("system:kube-scheduler")?;
    let controller_manager_client = client("system:kube-controller-manager")?;
    let mut component_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .context("component serving params")?;
    component_params
        .distinguished_name
        .push(DnType::CommonName, "testenv-components");
    component_params.key_usages = serving_params.key_usages.clone();
    component_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    component_params.use_authority_key_identifier_extension = true;
    let component_key = KeyPair::generate().context("cannot generate component key")?;
    let component_cert = component_params
        .signed_by(&component_key, &issuer)
        .context("cannot sign the component serving certificate")?;

    let files = CertFiles {
        ca_pem: ca_cert.pem(),
        ca_cert: dir.join(CA_CERT_FILE),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        service_account_key: dir.join("sa.key"),
        service_account_pub: dir.join("sa.pub"),
        scheduler_client: (dir.join("scheduler.crt"), dir.join("scheduler.key")),
        controller_manager_client: (
            dir.join("controller-manager.crt"),
            dir.join("controller-manager.key"),
        ),
        component_serving: (dir.join("components.crt"), dir.join("components.key")),
    };
    write(&files.ca_cert, &files.ca_pem)?;
    write(&files.serving_cert, &serving_cert.pem())?;
    write(&files.serving_key, &serving_key.serialize_pem())?;
    write(&files.service_account_key, &sa_key.serialize_pem())?;
    write(&files.service_account_pub, &sa_key.public_key_pem())?;
    for ((cert, key), (cert_path, key_path)) in [
        (scheduler_client, &files.scheduler_client),
        (controller_manager_client, &files.controller_manager_client),
        (
            (component_cert.pem(), component_key.serialize_pem()),
            &files.component_serving,
        ),
    ] {
        write(cert_path, &cert)?;
        write(key_path, &key)?;
    }
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
