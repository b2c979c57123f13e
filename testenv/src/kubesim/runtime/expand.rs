//! A container's command line and environment as the kubelet computes them:
//! `$(VAR)` expansion, `fieldRef` (downward API), `secretKeyRef` and
//! `configMapKeyRef`. Pure: the objects the references point to are looked up by the
//! caller and handed in as [`Sources`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use super::image::ImageMapping;

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value of `NAME` when it is
/// defined, and stays as written when not; `$$` is a literal `$` (so `$$(NAME)` is
/// the literal text `$(NAME)`); any other `$` is kept.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match vars(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The values `fieldRef`, `secretKeyRef` and `configMapKeyRef` may point to: the
/// pod's runtime facts and the data of the Secrets and ConfigMaps of its namespace
/// that exist (a missing one is absent from the map).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The pod's IP (`status.podIP`).
    pub pod_ip: String,
    /// Its node's IP (`status.hostIP`).
    pub host_ip: String,
    /// Secret name -> key -> value.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// ConfigMap name -> key -> value.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why a container cannot be started yet (the kubelet's CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// The value of a downward-API `fieldPath` of `pod`.
pub fn field(pod: &Pod, path: &str, sources: &Sources) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(value) = keyed("metadata.labels['", meta.labels.as_ref()) {
        return Ok(value);
    }
    if let Some(value) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(value);
    }
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(sources.pod_ip.clone()),
        "status.hostIP" | "status.hostIPs" => Some(sources.host_ip.clone()),
        _ => return Err(ConfigError(format!("unsupported fieldPath {path:?}"))),
    };
    Ok(value.unwrap_or_default())
}

/// One `env` entry's value: `None` for an optional reference that does not resolve
/// (the variable is then left out, as the kubelet does).
fn env_value(
    var: &EnvVar,
    pod: &Pod,
    sources: &Sources,
    defined: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), defined)));
    };
    if let Some(field_ref) = &from.field_ref {
        return field(pod, &field_ref.field_path, sources).map(Some);
    }
    if let Some(r) = &from.secret_key_ref {
        let value = sources
            .secrets
            .get(&r.name)
            .and_then(|data| data.get(&r.key))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        return missing_or(value, r.optional, "secret", &r.name, &r.key);
    }
    if let Some(r) = &from.config_map_key_ref {
        let value = sources
            .config_maps
            .get(&r.name)
            .and_then(|data| data.get(&r.key))
            .cloned();
        return missing_or(value, r.optional, "configmap", &r.name, &r.key);
    }
    Err(ConfigError(format!(
        "env {}: unsupported valueFrom (resourceFieldRef is not implemented)",
        var.name
    )))
}

fn missing_or(
    value: Option<String>,
    optional: Option<bool>,
    kind: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(value) => Ok(Some(value)),
        None if optional == Some(true) => Ok(None),
        None => Err(ConfigError(format!(
            "couldn't find key {key} in {kind} {name} (or the {kind} does not exist)"
        ))),
    }
}

/// The environment of `container`: `base` (PATH, HOSTNAME, KUBERNETES_SERVICE_*,
/// service links) overridden by `envFrom`, then by `env` in order, where each value
/// may use `$(VAR)` of the variables defined before it.
pub fn environment(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = base.to_vec();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(k, _)| *k == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        let v = String::from_utf8_lossy(v).into_owned();
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let snapshot = env.clone();
        let defined = |name: &str| {
            snapshot
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(value) = env_value(var, pod, sources, &defined)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The process' argv: the image's entrypoint unless `command` replaces it, then
/// `args` (or the image's default arguments when neither `command` nor `args` is
/// given), each with `$(VAR)` expanded from `env`.
pub fn argv(
    container: &Container,
    image: &ImageMapping,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let command = container.command.clone().filter(|c| !c.is_empty());
    let args = container.args.clone().filter(|a| !a.is_empty());
    let (head, tail) = match (command, args) {
        (Some(command), args) => (command, args.unwrap_or_default()),
        (None, Some(args)) => (image.entrypoint(), args),
        (None, None) => (image.entrypoint(), image.default_args.clone()),
    };
    let argv: Vec<String> = head
        .iter()
        .chain(tail.iter())
        .map(|a| expand(a, &lookup))
        .collect();
    if argv.is_empty() {
        return Err(ConfigError(format!(
            "container {}: no command: the image mapping has no entrypoint and the pod gives no command or args",
            container.name
        )));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVarSource, ObjectFieldSelector, PodSpec, PodStatus,
        SecretKeySelector,
    };

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".into()),
            "POD_IP" => Some("127.99.0.1".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(expand("$(A)-$(POD_IP)", &vars), "1-127.99.0.1");
        assert_eq!(expand("$(MISSING) stays", &vars), "$(MISSING) stays");
        assert_eq!(expand("$$(A) is literal", &vars), "$(A) is literal");
        assert_eq!(expand("a $ b $x $(A", &vars), "a $ b $x $(A");
        assert_eq!(expand("$$$(A)", &vars), "$1");
        assert_eq!(expand("", &vars), "");
    }

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-0".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        pod.spec = Some(PodSpec {
            node_name: Some("kubesim-node-1".into()),
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus::default());
        pod
    }

    fn field_var(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    fn plain(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..EnvVar::default()
        }
    }

    fn sources() -> Sources {
        Sources {
            pod_ip: "127.99.0.7".into(),
            host_ip: "127.100.0.2".into(),
            secrets: [(
                "creds".to_string(),
                [("url".to_string(), b"redis://x".to_vec())].into(),
            )]
            .into(),
            config_maps: [(
                "cfg".to_string(),
                [("mode".to_string(), "fast".to_string())].into(),
            )]
            .into(),
        }
    }

    #[test]
    fn env_resolves_field_secret_and_config_map_references_in_order() {
        let secret = |name: &str, optional: Option<bool>| EnvVar {
            name: "URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.into(),
                    key: "url".into(),
                    optional,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        let config = EnvVar {
            name: "MODE".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cfg".into(),
                    key: "mode".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        let container = Container {
            name: "c".into(),
            env: Some(vec![
                field_var("POD", "metadata.name"),
                field_var("NS", "metadata.namespace"),
                field_var("IP", "status.podIP"),
                field_var("NODE", "spec.nodeName"),
                field_var("APP", "metadata.labels['app']"),
                secret("creds", None),
                secret("absent", Some(true)),
                config,
                plain("ADDR", "$(IP):8080 $(UNDEFINED) $(LATER)"),
                plain("LATER", "x"),
                plain("HOME", "/override"),
            ]),
            ..Container::default()
        };
        let base = vec![("HOME".to_string(), "/".to_string())];
        let env = environment(&pod(), &container, &sources(), &base).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD"), Some("web-0"));
        assert_eq!(get("NS"), Some("ns"));
        assert_eq!(get("IP"), Some("127.99.0.7"));
        assert_eq!(get("NODE"), Some("kubesim-node-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("URL"), Some("redis://x"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("ADDR"), Some("127.99.0.7:8080 $(UNDEFINED) $(LATER)"));
        assert_eq!(get("HOME"), Some("/override"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn a_required_reference_that_does_not_resolve_is_a_config_error() {
        let container = Container {
            name: "c".into(),
            env: Some(vec![EnvVar {
                name: "URL".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "absent".into(),
                        key: "url".into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }]),
            ..Container::default()
        };
        let err = environment(&pod(), &container, &sources(), &[]).unwrap_err();
        assert!(err.0.contains("secret absent"), "{err:?}");
    }

    #[test]
    fn argv_follows_command_args_and_the_image_defaults() {
        let image = ImageMapping::binary("/bin/ottoscaler");
        let env = vec![("PORT".to_string(), "8080".to_string())];
        let mut c = Container {
            name: "c".into(),
            ..Container::default()
        };
        c.args = Some(vec!["run".into(), "--port=$(PORT)".into()]);
        assert_eq!(
            argv(&c, &image, &env).unwrap(),
            ["/kubesim/bin/ottoscaler", "run", "--port=8080"]
        );
        c.command = Some(vec!["sh".into(), "-c".into()]);
        c.args = Some(vec!["echo $(PORT)".into()]);
        assert_eq!(argv(&c, &image, &env).unwrap(), ["sh", "-c", "echo 8080"]);
        let passthrough = ImageMapping::passthrough();
        let bare = Container {
            name: "c".into(),
            ..Container::default()
        };
        assert!(argv(&bare, &passthrough, &env).is_err());
        let mut redis = bare.clone();
        redis.args = Some(vec!["redis-server".into(), "--port".into(), "6379".into()]);
        assert_eq!(
            argv(&redis, &passthrough, &env).unwrap(),
            ["redis-server", "--port", "6379"]
        );
    }
}
