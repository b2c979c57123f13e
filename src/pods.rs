//! Worker pods as plain data: deterministic names, pod templates, and building the pod
//! a worker creates (docs/contract.md section 3). Nothing here talks to Kubernetes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, LocalObjectReference, ObjectFieldSelector, Pod, PodSpec,
    ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::settings::{Settings, TemplateSettings, TolerationSettings};

/// The label every ottoscaler pod carries; the shared watch selects on it.
pub const MANAGED_BY_SELECTOR: &str = "managed-by=ottoscaler";
pub const LABEL_MANAGED_BY: &str = "managed-by";
pub const LABEL_APP: &str = "app";
pub const LABEL_TASK_ID: &str = "ottoscaler.io/task-id";
pub const LABEL_WORKER_INDEX: &str = "ottoscaler.io/worker-index";
pub const ANNOTATION_EVENT_ID: &str = "ottoscaler.io/event-id";
pub const ANNOTATION_CREATED_AT: &str = "ottoscaler.io/created-at";
pub const ANNOTATION_METADATA: &str = "ottoscaler.io/metadata";
/// The pod template a pod was built from (an annotation: template names are free text).
pub const ANNOTATION_TEMPLATE: &str = "ottoscaler.io/template";
/// The priority class of the pod's event (an annotation: class names are free text).
pub const ANNOTATION_PRIORITY: &str = "ottoscaler.io/priority";
/// The tenant of the pod's event (an annotation: tenants are free text).
pub const ANNOTATION_TENANT: &str = "ottoscaler.io/tenant";
/// Which attempt of its worker a pod is (1-based; absent on the first attempt): a worker
/// whose pod is disrupted (evicted, preempted, lost with its node) runs again in a new pod.
pub const ANNOTATION_ATTEMPT: &str = "ottoscaler.io/attempt";
/// The name of the container every worker pod runs its agent in.
pub const WORKER_CONTAINER: &str = "worker";

const NAME_PREFIX: &str = "otto-agent-";
/// DNS-1123 label limit, which pod names must meet to be usable as hostnames.
const MAX_NAME_LEN: usize = 63;

/// The pod name of worker `index` of stream entry `event_id` for `task_id`:
/// `otto-agent-<task>-<h>-<i>`. Deterministic, so a redelivered event finds its pods
/// (409 AlreadyExists) instead of creating new ones.
pub fn pod_name(task_id: &str, event_id: &str, index: u32) -> String {
    attempt_pod_name(task_id, event_id, index, 1)
}

/// The pod name of attempt `attempt` (1-based) of a worker: the first attempt is
/// [`pod_name`]; an attempt after a disruption (eviction, preemption, node loss) adds
/// `-r<attempt>`: `otto-agent-<task>-<h>-<i>-r2`. Deterministic too, so a restarted
/// ottoscaler finds the attempt it already created.
pub fn attempt_pod_name(task_id: &str, event_id: &str, index: u32, attempt: u32) -> String {
    let hash = hex8(event_id);
    let suffix = if attempt <= 1 {
        format!("-{hash}-{index}")
    } else {
        format!("-{hash}-{index}-r{attempt}")
    };
    let budget = MAX_NAME_LEN - NAME_PREFIX.len() - suffix.len();
    let task: String = task_id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .take(budget)
        .collect();
    format!("{NAME_PREFIX}{task}{suffix}")
}

/// 8 hex characters of SHA-256: stable across versions and platforms.
fn hex8(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A pod template resolved at start: the spec, and labels/annotations to add.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTemplate {
    pub spec: PodSpec,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A template that cannot be used; the message names the template.
#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("templates.{name}.pod_spec_file: cannot read {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("templates.{name}.pod_spec_file: {path} is not a valid PodSpec: {source}")]
    Parse {
        name: String,
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error(
        "templates.{name}.pod_spec_file: {path} is not a valid PodSpec: unknown field(s) {fields}{hint}"
    )]
    UnknownFields {
        name: String,
        path: String,
        fields: String,
        hint: &'static str,
    },
    #[error("templates.{name}.pod_spec_file: the PodSpec in {path} has no container")]
    NoContainer { name: String, path: String },
    #[error("templates.{name}: the image is empty")]
    NoImage { name: String },
}

/// Resolves every configured template (reading `pod_spec_file`s) once, at start.
pub fn resolve_templates(
    settings: &Settings,
) -> Result<BTreeMap<String, PodTemplate>, TemplateError> {
    settings
        .templates
        .iter()
        .map(|(name, t)| Ok((name.clone(), resolve_template(name, t, settings)?)))
        .collect()
}

fn resolve_template(
    name: &str,
    t: &TemplateSettings,
    settings: &Settings,
) -> Result<PodTemplate, TemplateError> {
    let mut spec = match &t.pod_spec_file {
        Some(path) => read_pod_spec(name, Path::new(path))?,
        None => simple_spec(name, t)?,
    };
    // The contract's settings for every worker pod, whatever the template says.
    spec.restart_policy = Some("Never".into());
    if spec.active_deadline_seconds.is_none() {
        spec.active_deadline_seconds = Some(secs(settings.worker.run_timeout));
    }
    let mut annotations = t.annotations.clone();
    // Ours, so the pod's start-up metrics can be sliced by template (also after adoption).
    annotations.insert(ANNOTATION_TEMPLATE.to_string(), name.to_string());
    Ok(PodTemplate {
        spec,
        labels: t.labels.clone(),
        annotations,
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

fn read_pod_spec(name: &str, path: &Path) -> Result<PodSpec, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        name: name.into(),
        path: path.display().to_string(),
        source,
    })?;
    let mut spec: PodSpec =
        serde_yaml_ng::from_str(&text).map_err(|source| TemplateError::Parse {
            name: name.into(),
            path: path.display().to_string(),
            source,
        })?;
    let unknown = unknown_fields(&text, &spec);
    if !unknown.is_empty() {
        return Err(TemplateError::UnknownFields {
            name: name.into(),
            path: path.display().to_string(),
            hint: if unknown.iter().any(|f| f == "`spec`" || f == "`kind`") {
                " (a whole Pod manifest? keep only what is under its `spec:`)"
            } else {
                ""
            },
            fields: unknown.join(", "),
        });
    }
    let first = spec
        .containers
        .first_mut()
        .ok_or_else(|| TemplateError::NoContainer {
            name: name.into(),
            path: path.display().to_string(),
        })?;
    first.name = WORKER_CONTAINER.into();
    Ok(spec)
}

/// Top-level keys of the YAML `text` that the parsed PodSpec does not carry: the
/// PodSpec type ignores unknown fields, so a typo (`nodeSelecter`) or a whole Pod
/// manifest would otherwise pass as an empty spec. Keys whose value is null are fine.
fn unknown_fields(text: &str, spec: &PodSpec) -> Vec<String> {
    let Ok(serde_yaml_ng::Value::Mapping(input)) = serde_yaml_ng::from_str(text) else {
        return Vec::new();
    };
    let known = match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return Vec::new(),
    };
    input
        .iter()
        .filter(|(_, value)| !value.is_null())
        .filter_map(|(key, _)| key.as_str())
        .filter(|key| !known.contains_key(*key))
        .map(|key| format!("`{key}`"))
        .collect()
}

fn simple_spec(name: &str, t: &TemplateSettings) -> Result<PodSpec, TemplateError> {
    if t.image.trim().is_empty() {
        return Err(TemplateError::NoImage { name: name.into() });
    }
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    let env: Vec<EnvVar> = t
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    Ok(PodSpec {
        containers: vec![Container {
            name: WORKER_CONTAINER.into(),
            image: Some(t.image.clone()),
            command: (!t.command.is_empty()).then(|| t.command.clone()),
            env: (!env.is_empty()).then_some(env),
            resources: Some(ResourceRequirements {
                requests: quantities(&t.resources.requests),
                limits: quantities(&t.resources.limits),
                ..Default::default()
            }),
            ..Default::default()
        }],
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        tolerations: (!t.tolerations.is_empty())
            .then(|| t.tolerations.iter().map(toleration).collect()),
        service_account_name: text(&t.service_account_name),
        image_pull_secrets: (!t.image_pull_secrets.is_empty()).then(|| {
            t.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        priority_class_name: text(&t.priority_class_name),
        ..Default::default()
    })
}

fn toleration(t: &TolerationSettings) -> Toleration {
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    Toleration {
        key: text(&t.key),
        operator: text(&t.operator),
        value: text(&t.value),
        effect: text(&t.effect),
        toleration_seconds: t.toleration_seconds,
    }
}

/// Which worker a pod is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub task_id: String,
    pub event_id: String,
    pub index: u32,
}

impl WorkerIdentity {
    /// The pod name of its first attempt, which also names the worker.
    pub fn pod_name(&self) -> String {
        pod_name(&self.task_id, &self.event_id, self.index)
    }

    /// The pod name of attempt `attempt` (1-based), see [`attempt_pod_name`].
    pub fn attempt_pod_name(&self, attempt: u32) -> String {
        attempt_pod_name(&self.task_id, &self.event_id, self.index, attempt)
    }
}

/// What one of our pods says about how it was built (its annotations): enough to build
/// the next attempt of its worker from the same template, event metadata, priority
/// class and tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    pub priority: Option<String>,
    pub tenant: Option<String>,
}

impl Recipe {
    /// From the pod's annotations; `None` for a pod that lacks the template annotation
    /// or whose metadata annotation does not parse (not built by this version).
    pub fn of(pod: &Pod) -> Option<Recipe> {
        let annotations = pod.metadata.annotations.as_ref()?;
        let metadata = match annotations.get(ANNOTATION_METADATA) {
            Some(json) => serde_json::from_str(json).ok()?,
            None => BTreeMap::new(),
        };
        Some(Recipe {
            template: annotations.get(ANNOTATION_TEMPLATE)?.clone(),
            metadata,
            priority: annotations.get(ANNOTATION_PRIORITY).cloned(),
            tenant: annotations.get(ANNOTATION_TENANT).cloned(),
        })
    }
}

/// Builds the pods of later attempts: the resolved templates and the priority classes'
/// PriorityClass names, shared by every worker.
#[derive(Debug, Clone, Default)]
pub struct PodBuilder {
    pub templates: BTreeMap<String, PodTemplate>,
    pub priority_class_names: std::collections::HashMap<String, String>,
}

impl PodBuilder {
    /// The pod of attempt `attempt` of `worker`, built as its first attempt was (same
    /// template, metadata, class and tenant), with its own name and the
    /// `ottoscaler.io/attempt` annotation. Fails when the template is no longer
    /// configured.
    pub fn attempt(
        &self,
        worker: &WorkerIdentity,
        attempt: u32,
        recipe: &Recipe,
        built_at: jiff::Timestamp,
    ) -> Result<Pod, String> {
        let template = self.templates.get(&recipe.template).ok_or_else(|| {
            format!(
                "its pod template {:?} is no longer configured",
                recipe.template
            )
        })?;
        let mut pod = build_pod(template, worker, &recipe.metadata, built_at);
        if let (Some(priority), Some(tenant)) = (&recipe.priority, &recipe.tenant) {
            let class = self.priority_class_names.get(priority).map(String::as_str);
            place(&mut pod, priority, tenant, class);
        }
        pod.metadata.name = Some(worker.attempt_pod_name(attempt));
        if attempt > 1 {
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANNOTATION_ATTEMPT.to_string(), attempt.to_string());
            set_env(&mut pod, "OTTO_ATTEMPT", attempt.to_string());
        }
        Ok(pod)
    }
}

/// The pod of one worker: the template's spec, the contract's labels, annotations and
/// env. The event contributes only the documented env and annotations: it can never
/// change the image, command, service account or security settings.
pub fn build_pod(
    template: &PodTemplate,
    worker: &WorkerIdentity,
    metadata: &BTreeMap<String, String>,
    created_at: jiff::Timestamp,
) -> Pod {
    let mut labels = template.labels.clone();
    labels.extend([
        (LABEL_MANAGED_BY.to_string(), "ottoscaler".to_string()),
        (LABEL_APP.to_string(), "otto-agent".to_string()),
        (LABEL_TASK_ID.to_string(), worker.task_id.clone()),
        (LABEL_WORKER_INDEX.to_string(), worker.index.to_string()),
    ]);
    let mut annotations = template.annotations.clone();
    let metadata_json = serde_json::to_string(metadata).unwrap_or_else(|_| "{}".into());
    annotations.extend([
        (ANNOTATION_EVENT_ID.to_string(), worker.event_id.clone()),
        (ANNOTATION_CREATED_AT.to_string(), created_at.to_string()),
        (ANNOTATION_METADATA.to_string(), metadata_json),
    ]);

    let mut spec = template.spec.clone();
    add_env(&mut spec, &worker_env(worker, metadata));

    Pod {
        metadata: ObjectMeta {
            name: Some(worker.pod_name()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Marks `pod` with its event's priority class and tenant (annotations), and sets the
/// class's `priorityClassName`, if it has one, over the template's.
pub fn place(pod: &mut Pod, priority: &str, tenant: &str, priority_class_name: Option<&str>) {
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_PRIORITY.to_string(), priority.to_string());
    annotations.insert(ANNOTATION_TENANT.to_string(), tenant.to_string());
    if let (Some(name), Some(spec)) = (priority_class_name, pod.spec.as_mut()) {
        spec.priority_class_name = Some(name.to_string());
        // The API server derives the number from the class; a template's would conflict.
        spec.priority = None;
    }
}

/// Sets variable `name` to `value` in every container and init container of the pod,
/// replacing one of that name (`TRACEPARENT`, added once the worker's span exists).
pub fn set_env(pod: &mut Pod, name: &str, value: String) {
    if let Some(spec) = pod.spec.as_mut() {
        let var = EnvVar {
            name: name.into(),
            value: Some(value),
            value_from: None,
        };
        add_env(spec, &[var]);
    }
}

/// Adds `env` to every container and init container; ours win over a template
/// variable of the same name.
fn add_env(spec: &mut PodSpec, env: &[EnvVar]) {
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        let own = c.env.get_or_insert_with(Vec::new);
        own.retain(|v| !env.iter().any(|e| e.name == v.name));
        own.extend(env.iter().cloned());
    }
}

fn worker_env(worker: &WorkerIdentity, metadata: &BTreeMap<String, String>) -> Vec<EnvVar> {
    let plain = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    };
    let mut env = vec![
        plain("OTTO_TASK_ID", &worker.task_id),
        plain("OTTO_WORKER_INDEX", &worker.index.to_string()),
        plain("OTTO_EVENT_ID", &worker.event_id),
        EnvVar {
            name: "OTTO_POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
    ];
    env.extend(
        metadata
            .iter()
            .map(|(k, v)| plain(&format!("OTTO_META_{}", k.to_ascii_uppercase()), v)),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS-1123 label: lowercase alphanumerics and '-', alphanumeric at both ends, <= 63.
    fn is_dns1123_label(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    }

    #[test]
    fn seed_event_names_follow_the_contract() {
        let name = pod_name("task-123", "1718000000000-0", 2);
        assert!(name.starts_with("otto-agent-task-123-"), "{name}");
        assert!(name.ends_with("-2"), "{name}");
        let hash = &name["otto-agent-task-123-".len()..name.len() - 2];
        assert_eq!(hash.len(), 8);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn names_are_stable_and_depend_on_the_event() {
        assert_eq!(pod_name("t", "1-0", 0), pod_name("t", "1-0", 0));
        // A pinned value: a change here would make upgraded ottoscalers recreate pods.
        assert_eq!(
            pod_name("t", "1-0", 0),
            format!("otto-agent-t-{}-0", hex8("1-0"))
        );
        assert_eq!(hex8("1-0").len(), 8);
        assert_ne!(pod_name("t", "1-0", 0), pod_name("t", "1-1", 0));
        assert_ne!(pod_name("t", "1-0", 0), pod_name("t", "1-0", 1));
    }

    #[test]
    fn long_odd_and_unicode_task_ids_give_valid_names() {
        let long = "X".repeat(63);
        for task in [
            "task-123",
            long.as_str(),
            "A.B_C",
            "ünïcödé-τασκ",
            "a..b__c",
            "UPPER",
            "9",
        ] {
            for index in [0, 49, 4_000_000_000] {
                let name = pod_name(task, "1718000000000-12", index);
                assert!(is_dns1123_label(&name), "{task:?} {index} -> {name:?}");
            }
        }
        assert_eq!(
            pod_name("A.B_C", "1-0", 0),
            format!("otto-agent-a-b-c-{}-0", hex8("1-0"))
        );
    }

    fn default_template() -> PodTemplate {
        let templates = resolve_templates(&Settings::default()).expect("defaults resolve");
        templates["default"].clone()
    }

    #[test]
    fn default_template_follows_the_contract() {
        let t = default_template();
        assert_eq!(t.spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(t.spec.active_deadline_seconds, Some(3600));
        let c = &t.spec.containers[0];
        assert_eq!(c.name, "worker");
        assert_eq!(c.image.as_deref(), Some("busybox:latest"));
        let res = c.resources.as_ref().expect("resources");
        let req = res.requests.as_ref().expect("requests");
        assert_eq!(req["cpu"].0, "100m");
        assert_eq!(res.limits.as_ref().expect("limits")["memory"].0, "256Mi");
    }

    #[test]
    fn built_pod_has_contract_labels_annotations_and_env() {
        let mut t = default_template();
        t.labels.insert("team".into(), "ci".into());
        t.labels
            .insert(LABEL_MANAGED_BY.into(), "someone-else".into());
        let worker = WorkerIdentity {
            task_id: "task-123".into(),
            event_id: "1-0".into(),
            index: 1,
        };
        let meta = BTreeMap::from([("branch".to_string(), "main".to_string())]);
        let at: jiff::Timestamp = "2026-11-26T07:00:00Z".parse().expect("time");
        let pod = build_pod(&t, &worker, &meta, at);

        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels["managed-by"], "ottoscaler",
            "the contract's labels win"
        );
        assert_eq!(labels["app"], "otto-agent");
        assert_eq!(labels["ottoscaler.io/task-id"], "task-123");
        assert_eq!(labels["ottoscaler.io/worker-index"], "1");
        assert_eq!(labels["team"], "ci");
        let ann = pod.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann["ottoscaler.io/event-id"], "1-0");
        assert_eq!(ann["ottoscaler.io/created-at"], "2026-11-26T07:00:00Z");
        assert_eq!(ann["ottoscaler.io/metadata"], r#"{"branch":"main"}"#);
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some(worker.pod_name().as_str())
        );

        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            get("OTTO_TASK_ID").and_then(|e| e.value).as_deref(),
            Some("task-123")
        );
        assert_eq!(
            get("OTTO_WORKER_INDEX").and_then(|e| e.value).as_deref(),
            Some("1")
        );
        assert_eq!(
            get("OTTO_EVENT_ID").and_then(|e| e.value).as_deref(),
            Some("1-0")
        );
        assert_eq!(
            get("OTTO_META_BRANCH").and_then(|e| e.value).as_deref(),
            Some("main")
        );
        let pod_name_ref = get("OTTO_POD_NAME")
            .and_then(|e| e.value_from)
            .and_then(|f| f.field_ref)
            .map(|f| f.field_path);
        assert_eq!(pod_name_ref.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn event_metadata_cannot_change_image_command_or_security() {
        let t = default_template();
        let worker = WorkerIdentity {
            task_id: "t".into(),
            event_id: "1-0".into(),
            index: 0,
        };
        let hostile = BTreeMap::from([
            ("image".to_string(), "evil:latest".to_string()),
            ("command".to_string(), "rm -rf /".to_string()),
            ("serviceAccountName".to_string(), "admin".to_string()),
            ("privileged".to_string(), "true".to_string()),
        ]);
        let pod = build_pod(&t, &worker, &hostile, jiff::Timestamp::UNIX_EPOCH);
        let spec = pod.spec.expect("spec");
        let plain = build_pod(&t, &worker, &BTreeMap::new(), jiff::Timestamp::UNIX_EPOCH)
            .spec
            .expect("spec");
        assert_eq!(spec.containers[0].image, plain.containers[0].image);
        assert_eq!(spec.containers[0].command, plain.containers[0].command);
        assert_eq!(spec.service_account_name, plain.service_account_name);
        assert_eq!(spec.security_context, plain.security_context);
        assert_eq!(spec.containers[0].security_context, None);
    }

    #[test]
    fn a_simple_template_sets_the_pod_options_and_events_cannot_change_them() {
        let mut settings = Settings::default();
        settings.templates.insert(
            "arm".into(),
            TemplateSettings {
                image: "registry/agent:arm".into(),
                node_selector: BTreeMap::from([("kubernetes.io/arch".into(), "arm64".into())]),
                tolerations: vec![TolerationSettings {
                    key: "ci".into(),
                    operator: "Equal".into(),
                    value: "arm".into(),
                    effect: "NoSchedule".into(),
                    toleration_seconds: None,
                }],
                env: BTreeMap::from([
                    ("GRADLE_OPTS".into(), "-Xmx2g".into()),
                    ("OTTO_TASK_ID".into(), "from-the-template".into()),
                ]),
                service_account_name: "builder".into(),
                image_pull_secrets: vec!["registry-creds".into()],
                priority_class_name: "ci-low".into(),
                ..Default::default()
            },
        );
        let templates = resolve_templates(&settings).expect("resolve");
        let worker = WorkerIdentity {
            task_id: "task-1".into(),
            event_id: "1-0".into(),
            index: 0,
        };
        let hostile = BTreeMap::from([
            ("serviceAccountName".to_string(), "admin".to_string()),
            (
                "priority_class_name".to_string(),
                "system-node-critical".to_string(),
            ),
            ("node_selector".to_string(), "evil=1".to_string()),
        ]);
        let pod = build_pod(
            &templates["arm"],
            &worker,
            &hostile,
            jiff::Timestamp::UNIX_EPOCH,
        );
        let spec = pod.spec.expect("spec");
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([(
                "kubernetes.io/arch".into(),
                "arm64".into()
            )]))
        );
        let toleration = &spec.tolerations.as_ref().expect("tolerations")[0];
        assert_eq!(toleration.key.as_deref(), Some("ci"));
        assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
        assert_eq!(toleration.toleration_seconds, None);
        assert_eq!(spec.service_account_name.as_deref(), Some("builder"));
        assert_eq!(spec.priority_class_name.as_deref(), Some("ci-low"));
        assert_eq!(
            spec.image_pull_secrets.as_ref().expect("pull secrets")[0].name,
            "registry-creds"
        );
        let env = spec.containers[0].env.clone().expect("env");
        let value = |n: &str| {
            let found: Vec<_> = env.iter().filter(|e| e.name == n).collect();
            assert_eq!(found.len(), 1, "{n} once: {env:?}");
            found[0].value.clone()
        };
        assert_eq!(value("GRADLE_OPTS").as_deref(), Some("-Xmx2g"));
        assert_eq!(value("OTTO_TASK_ID").as_deref(), Some("task-1"), "ours win");

        // The built-in default template sets none of them.
        let plain = default_template().spec;
        assert_eq!(plain.node_selector, None);
        assert_eq!(plain.tolerations, None);
        assert_eq!(plain.service_account_name, None);
        assert_eq!(plain.image_pull_secrets, None);
        assert_eq!(plain.priority_class_name, None);
    }

    #[test]
    fn pod_spec_file_templates_rename_the_first_container() {
        let dir = std::env::temp_dir().join(format!("ottoscaler-pods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("gpu.yaml");
        std::fs::write(
            &path,
            "containers:\n- name: agent\n  image: registry/agent:gpu\n  resources:\n    limits:\n      nvidia.com/gpu: 1\nnodeSelector:\n  accelerator: a100\nserviceAccountName: builder\n",
        )
        .expect("write");
        let mut settings = Settings::default();
        settings.templates.insert(
            "gpu".into(),
            TemplateSettings {
                pod_spec_file: Some(path.display().to_string()),
                ..Default::default()
            },
        );
        let templates = resolve_templates(&settings).expect("resolve");
        let gpu = &templates["gpu"];
        assert_eq!(gpu.spec.containers[0].name, "worker");
        assert_eq!(
            gpu.spec.containers[0].image.as_deref(),
            Some("registry/agent:gpu")
        );
        assert_eq!(gpu.spec.service_account_name.as_deref(), Some("builder"));
        assert_eq!(gpu.spec.restart_policy.as_deref(), Some("Never"));

        std::fs::write(
            &path,
            "containers:\n- name: a\n  image: x\nnodeSelecter:\n  a: b\nhostNetwork: null\n",
        )
        .expect("write");
        let err = resolve_templates(&settings).expect_err("a typo");
        assert!(
            err.to_string()
                .ends_with("is not a valid PodSpec: unknown field(s) `nodeSelecter`"),
            "{err}"
        );

        std::fs::write(&path, "containers: 12").expect("write");
        let err = resolve_templates(&settings).expect_err("bad yaml");
        assert!(
            err.to_string().starts_with("templates.gpu.pod_spec_file"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placing_a_pod_records_its_class_and_tenant_and_sets_the_classs_priority_class() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                priority_class_name: Some("from-template".into()),
                priority: Some(5),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        place(&mut pod, "normal", "team-a", None);
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.priority_class_name.as_deref(), Some("from-template"));
        let annotations = pod.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            annotations.get(ANNOTATION_PRIORITY).map(String::as_str),
            Some("normal")
        );
        assert_eq!(
            annotations.get(ANNOTATION_TENANT).map(String::as_str),
            Some("team-a")
        );

        place(&mut pod, "high", "team-a", Some("otto-high"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.priority_class_name.as_deref(), Some("otto-high"));
        assert_eq!(
            spec.priority, None,
            "the API server derives it from the class"
        );
    }

    #[test]
    fn later_attempts_have_names_of_their_own_within_63_characters() {
        let first = attempt_pod_name("task-123", "1718000000000-0", 2, 1);
        assert_eq!(first, pod_name("task-123", "1718000000000-0", 2));
        let second = attempt_pod_name("task-123", "1718000000000-0", 2, 2);
        assert_eq!(second, format!("{first}-r2"));
        let long = "x".repeat(200);
        for attempt in [1, 2, 10, 11] {
            let name = attempt_pod_name(&long, "1-0", 49, attempt);
            assert!(is_dns1123_label(&name), "{name}");
        }
        assert_ne!(
            attempt_pod_name(&long, "1-0", 1, 2),
            attempt_pod_name(&long, "1-0", 1, 3)
        );
    }

    #[test]
    fn the_next_attempt_is_built_like_the_first_from_what_the_pod_says() {
        let worker = WorkerIdentity {
            task_id: "task-9".into(),
            event_id: "5-0".into(),
            index: 1,
        };
        let metadata: BTreeMap<String, String> =
            [("branch".to_string(), "main".to_string())].into();
        let built_at: jiff::Timestamp = "2026-12-06T00:00:00Z".parse().expect("time");
        let template = default_template();
        let mut first = build_pod(&template, &worker, &metadata, built_at);
        place(&mut first, "high", "team-a", Some("otto-high"));
        // What a disrupted pod of this worker says about itself.
        let recipe = Recipe::of(&first).expect("recipe");
        assert_eq!(recipe.template, "default");
        assert_eq!(recipe.metadata, metadata);
        assert_eq!(recipe.priority.as_deref(), Some("high"));
        assert_eq!(recipe.tenant.as_deref(), Some("team-a"));

        let builder = PodBuilder {
            templates: [("default".to_string(), template)].into(),
            priority_class_names: [("high".to_string(), "otto-high".to_string())].into(),
        };
        let second = builder
            .attempt(&worker, 2, &recipe, built_at)
            .expect("built");
        assert_eq!(
            second.metadata.name.as_deref(),
            Some(worker.attempt_pod_name(2).as_str())
        );
        let annotations = second.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            annotations.get(ANNOTATION_ATTEMPT).map(String::as_str),
            Some("2")
        );
        // Everything else is the first attempt's: spec (with the class), labels, metadata.
        let mut expected = first.clone();
        expected.metadata.name = second.metadata.name.clone();
        expected
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_ATTEMPT.into(), "2".into());
        set_env(&mut expected, "OTTO_ATTEMPT", "2".into());
        assert_eq!(second, expected);

        let gone = Recipe {
            template: "gpu".into(),
            ..recipe
        };
        let err = builder
            .attempt(&worker, 2, &gone, built_at)
            .expect_err("no such template");
        assert!(err.contains("\"gpu\""), "{err}");
        assert_eq!(Recipe::of(&Pod::default()), None);
    }
}
