//! Checks that run before anything starts: a bad setting stops the service with a
//! message naming the key, instead of failing later at the first event that needs it.

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{DEFAULT_TEMPLATE, Settings, TemplateSettings, TolerationSettings};

/// The most `worker.max_disruption_retries` may be.
pub const MAX_DISRUPTION_RETRIES: u32 = 10;
/// The most `kubernetes.http2_connections` may be: past a few, connections only add
/// sockets and TLS state.
pub const MAX_HTTP2_CONNECTIONS: u64 = 64;

/// A setting that cannot be used. The message always starts with the key (or the config
/// file) so an operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key, or a variable like `REDIS_PORT`, holds a value that cannot be used.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
}

impl ConfigError {
    pub(super) fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The key (or config file path) the error is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } => key,
            Self::File { path, .. } => path,
        }
    }
}

impl Settings {
    /// Every rule a running service relies on; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Self {
            shutdown_timeout,
            redis,
            kubernetes,
            limits,
            worker,
            http,
            ha,
            telemetry,
            scheduling,
            priorities,
            templates,
        } = self;
        positive("shutdown_timeout", *shutdown_timeout)?;

        redis_url(&redis.url)?;
        for (key, name) in [
            ("redis.stream", &redis.stream),
            ("redis.group", &redis.group),
            ("redis.dead_letter_stream", &redis.dead_letter_stream),
            ("redis.results_stream", &redis.results_stream),
        ] {
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        for (key, other) in [
            ("redis.dead_letter_stream", &redis.dead_letter_stream),
            ("redis.results_stream", &redis.results_stream),
        ] {
            if *other == redis.stream {
                return Err(ConfigError::invalid(
                    key,
                    format!("must differ from redis.stream ({other:?}), or entries would loop"),
                ));
            }
        }
        at_least("redis.results_maxlen", redis.results_maxlen, 1)?;
        at_least("redis.dead_letter_maxlen", redis.dead_letter_maxlen, 1)?;
        at_least("redis.max_deliveries", redis.max_deliveries, 1)?;
        positive("redis.claim_idle", redis.claim_idle)?;
        positive("redis.stats_interval", redis.stats_interval)?;
        result_marker_ttl(redis)?;

        if !kubernetes.namespace.is_empty() && !is_dns_label(&kubernetes.namespace) {
            return Err(ConfigError::invalid(
                "kubernetes.namespace",
                format!(
                    "{:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)",
                    kubernetes.namespace
                ),
            ));
        }
        at_least("kubernetes.qps", kubernetes.qps.into(), 1)?;
        at_least("kubernetes.burst", kubernetes.burst.into(), 1)?;
        at_least(
            "kubernetes.max_concurrent_creates",
            kubernetes.max_concurrent_creates.into(),
            1,
        )?;
        between(
            "kubernetes.http2_connections",
            kubernetes.http2_connections.into(),
            1,
            MAX_HTTP2_CONNECTIONS,
        )?;

        at_least(
            "kubernetes.events_per_second",
            kubernetes.events_per_second.into(),
            1,
        )?;
        at_least("kubernetes.events_burst", kubernetes.events_burst.into(), 1)?;
        at_least("kubernetes.events_queue", kubernetes.events_queue.into(), 1)?;

        at_least("limits.max_workers", limits.max_workers.into(), 1)?;
        at_least(
            "limits.max_pods_per_event",
            limits.max_pods_per_event.into(),
            1,
        )?;
        at_least_a_second("limits.settle_timeout", limits.settle_timeout)?;
        if limits.max_pods_per_event > limits.max_workers {
            return Err(ConfigError::invalid(
                "limits.max_pods_per_event",
                format!(
                    "({}) must not exceed limits.max_workers ({}): such an event could never fit",
                    limits.max_pods_per_event, limits.max_workers
                ),
            ));
        }

        positive("http.liveness_timeout", http.liveness_timeout)?;
        positive("worker.pending_timeout", worker.pending_timeout)?;
        if limits.settle_timeout <= worker.pending_timeout {
            return Err(ConfigError::invalid(
                "limits.settle_timeout",
                format!(
                    "({}) must be longer than worker.pending_timeout ({}): a create refused for quota waits up to the pending timeout, and its event must not stall before",
                    humantime::format_duration(limits.settle_timeout),
                    humantime::format_duration(worker.pending_timeout)
                ),
            ));
        }
        ha.validate()?;
        telemetry.validate()?;
        scheduling.validate(priorities)?;
        positive("worker.image_pull_grace", worker.image_pull_grace)?;
        if worker.max_disruption_retries > MAX_DISRUPTION_RETRIES {
            return Err(ConfigError::invalid(
                "worker.max_disruption_retries",
                format!(
                    "({}) must be at most {MAX_DISRUPTION_RETRIES}: a build disrupted that often needs a person, not another pod",
                    worker.max_disruption_retries
                ),
            ));
        }
        // activeDeadlineSeconds is whole seconds and must be at least 1.
        if worker.run_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "worker.run_timeout",
                "must be at least 1s (it becomes activeDeadlineSeconds)",
            ));
        }

        if !templates.contains_key(DEFAULT_TEMPLATE) {
            return Err(ConfigError::invalid(
                "templates.default",
                "must exist: events without a template use it",
            ));
        }
        for (name, template) in templates {
            pod_options(name, template)?;
            match &template.pod_spec_file {
                Some(path) if !Path::new(path).is_file() => {
                    return Err(ConfigError::invalid(
                        &format!("templates.{name}.pod_spec_file"),
                        format!("{path} does not exist or is not a file"),
                    ));
                }
                Some(_) => {}
                None if template.image.trim().is_empty() => {
                    return Err(ConfigError::invalid(
                        &format!("templates.{name}"),
                        "needs an image or a pod_spec_file",
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// The pod options of a simple template (docs/contract.md section 3). With a
/// `pod_spec_file` they must stay unset: the file says them, and a key silently ignored
/// would be worse than an error.
fn pod_options(name: &str, t: &TemplateSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("templates.{name}.{field}");
    if t.pod_spec_file.is_some() {
        let set = [
            ("node_selector", !t.node_selector.is_empty()),
            ("tolerations", !t.tolerations.is_empty()),
            ("env", !t.env.is_empty()),
            ("service_account_name", !t.service_account_name.is_empty()),
            ("image_pull_secrets", !t.image_pull_secrets.is_empty()),
            ("priority_class_name", !t.priority_class_name.is_empty()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                &key(field),
                "cannot be used with pod_spec_file: set it in the PodSpec file",
            ));
        }
    }
    for (label, value) in &t.node_selector {
        if !is_qualified_name(label) || !is_label_value(value) {
            return Err(ConfigError::invalid(
                &key("node_selector"),
                format!("{label:?}={value:?} is not a valid label"),
            ));
        }
    }
    for (i, toleration) in t.tolerations.iter().enumerate() {
        self::toleration(toleration)
            .map_err(|m| ConfigError::invalid(&key(&format!("tolerations[{i}]")), m))?;
    }
    for var in t.env.keys() {
        if !is_env_name(var) {
            return Err(ConfigError::invalid(
                &key("env"),
                format!(
                    "{var:?} is not a valid variable name (letters, digits, '_', '-', '.'; not starting with a digit)"
                ),
            ));
        }
        if var.starts_with("OTTO_") {
            return Err(ConfigError::invalid(
                &key("env"),
                format!("{var:?}: OTTO_* variables are ottoscaler's own"),
            ));
        }
    }
    for (field, value) in [
        ("service_account_name", &t.service_account_name),
        ("priority_class_name", &t.priority_class_name),
    ] {
        if !value.is_empty() && !is_dns_subdomain(value) {
            return Err(ConfigError::invalid(
                &key(field),
                format!(
                    "{value:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
                ),
            ));
        }
    }
    if let Some(secret) = t.image_pull_secrets.iter().find(|s| !is_dns_subdomain(s)) {
        return Err(ConfigError::invalid(
            &key("image_pull_secrets"),
            format!("{secret:?} is not a valid Secret name"),
        ));
    }
    Ok(())
}

/// The rules the API server applies to a toleration, so a bad one fails at start and
/// not at the first create.
fn toleration(t: &TolerationSettings) -> Result<(), String> {
    let exists = match t.operator.as_str() {
        "" | "Equal" => false,
        "Exists" => true,
        other => return Err(format!("operator {other:?} must be Equal or Exists")),
    };
    if exists && !t.value.is_empty() {
        return Err("value must be empty when operator is Exists".into());
    }
    if t.key.is_empty() && !exists {
        return Err("an empty key needs operator Exists".into());
    }
    if !t.key.is_empty() && !is_qualified_name(&t.key) {
        return Err(format!("key {:?} is not a valid taint key", t.key));
    }
    if !matches!(
        t.effect.as_str(),
        "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
    ) {
        return Err(format!(
            "effect {:?} must be NoSchedule, PreferNoSchedule, NoExecute or empty",
            t.effect
        ));
    }
    if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
        return Err("toleration_seconds needs effect NoExecute".into());
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// letters, digits, '-', '_' and '.', alphanumeric at both ends.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or at most 63 letters, digits, '-', '_' and '.', alphanumeric
/// at both ends.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A container variable name as the API server accepts it.
fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Scheme and host only; the message never repeats the URL, which may hold a password.
fn redis_url(text: &str) -> Result<(), ConfigError> {
    const KEY: &str = "redis.url";
    let url =
        Url::parse(text).map_err(|e| ConfigError::invalid(KEY, format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(ConfigError::invalid(
            KEY,
            format!("scheme must be redis or rediss, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(KEY, "has no host"));
    }
    Ok(())
}

/// The marker makes a redelivered event's results publish once; it must outlive the
/// redeliveries, which span up to `claim_idle` x `max_deliveries`.
fn result_marker_ttl(redis: &super::RedisSettings) -> Result<(), ConfigError> {
    const KEY: &str = "redis.result_marker_ttl";
    at_least_a_second(KEY, redis.result_marker_ttl)?;
    let deliveries = u32::try_from(redis.max_deliveries).unwrap_or(u32::MAX);
    let redeliveries = redis.claim_idle.saturating_mul(deliveries);
    if redis.result_marker_ttl <= redeliveries {
        return Err(ConfigError::invalid(
            KEY,
            format!(
                "({}) must be longer than redis.claim_idle ({}) x redis.max_deliveries ({}) = {}, \
                 or a late redelivery could publish a worker's result twice",
                humantime::format_duration(redis.result_marker_ttl),
                humantime::format_duration(redis.claim_idle),
                redis.max_deliveries,
                humantime::format_duration(redeliveries),
            ),
        ));
    }
    Ok(())
}

fn at_least_a_second(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "({}) must be at least 1s",
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than 0s"));
    }
    Ok(())
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            format!("({value}) must be at least {min}"),
        ));
    }
    Ok(())
}

fn between(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError::invalid(
            key,
            format!("({value}) must be from {min} to {max}"),
        ));
    }
    Ok(())
}

/// RFC 1123 label, what Kubernetes requires of a namespace name.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = Box<dyn FnOnce(&mut Settings)>;
    type TemplateChange = Box<dyn FnOnce(&mut TemplateSettings)>;

    fn error_of(change: impl FnOnce(&mut Settings)) -> String {
        let mut settings = Settings::default();
        change(&mut settings);
        settings.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn more_pods_per_event_than_workers_is_refused() {
        let err = error_of(|s| {
            s.limits.max_workers = 200;
            s.limits.max_pods_per_event = 300;
        });
        assert!(
            err.starts_with(
                "limits.max_pods_per_event: (300) must not exceed limits.max_workers (200)"
            ),
            "{err}"
        );
    }

    #[test]
    fn each_rule_names_its_key() {
        let cases: Vec<(&str, Change)> = vec![
            ("redis.url", Box::new(|s| s.redis.url = "http://h:1".into())),
            ("redis.url", Box::new(|s| s.redis.url = "nonsense".into())),
            ("redis.stream", Box::new(|s| s.redis.stream = " ".into())),
            ("redis.group", Box::new(|s| s.redis.group.clear())),
            (
                "redis.dead_letter_stream",
                Box::new(|s| s.redis.dead_letter_stream = s.redis.stream.clone()),
            ),
            (
                "redis.results_maxlen",
                Box::new(|s| s.redis.results_maxlen = 0),
            ),
            (
                "redis.dead_letter_maxlen",
                Box::new(|s| s.redis.dead_letter_maxlen = 0),
            ),
            (
                "redis.max_deliveries",
                Box::new(|s| s.redis.max_deliveries = 0),
            ),
            (
                "redis.result_marker_ttl",
                Box::new(|s| s.redis.result_marker_ttl = Duration::from_millis(999)),
            ),
            (
                "limits.settle_timeout",
                Box::new(|s| s.limits.settle_timeout = Duration::from_millis(999)),
            ),
            (
                "redis.claim_idle",
                Box::new(|s| s.redis.claim_idle = Duration::ZERO),
            ),
            (
                "redis.stats_interval",
                Box::new(|s| s.redis.stats_interval = Duration::ZERO),
            ),
            ("kubernetes.qps", Box::new(|s| s.kubernetes.qps = 0)),
            ("kubernetes.burst", Box::new(|s| s.kubernetes.burst = 0)),
            (
                "kubernetes.events_per_second",
                Box::new(|s| s.kubernetes.events_per_second = 0),
            ),
            (
                "kubernetes.events_burst",
                Box::new(|s| s.kubernetes.events_burst = 0),
            ),
            (
                "kubernetes.events_queue",
                Box::new(|s| s.kubernetes.events_queue = 0),
            ),
            (
                "kubernetes.max_concurrent_creates",
                Box::new(|s| s.kubernetes.max_concurrent_creates = 0),
            ),
            (
                "kubernetes.http2_connections",
                Box::new(|s| s.kubernetes.http2_connections = 0),
            ),
            (
                "kubernetes.http2_connections",
                Box::new(|s| s.kubernetes.http2_connections = 65),
            ),
            (
                "kubernetes.namespace",
                Box::new(|s| s.kubernetes.namespace = "Bad_NS".into()),
            ),
            ("limits.max_workers", Box::new(|s| s.limits.max_workers = 0)),
            (
                "shutdown_timeout",
                Box::new(|s| s.shutdown_timeout = Duration::ZERO),
            ),
            (
                "worker.pending_timeout",
                Box::new(|s| s.worker.pending_timeout = Duration::ZERO),
            ),
            (
                "worker.run_timeout",
                Box::new(|s| s.worker.run_timeout = Duration::from_millis(500)),
            ),
            (
                "worker.max_disruption_retries",
                Box::new(|s| s.worker.max_disruption_retries = MAX_DISRUPTION_RETRIES + 1),
            ),
            ("templates.default", Box::new(|s| s.templates.clear())),
            (
                "templates.default",
                Box::new(|s| {
                    s.templates
                        .insert("default".into(), TemplateSettings::default());
                }),
            ),
            (
                "templates.gpu.pod_spec_file",
                Box::new(|s| {
                    s.templates.insert(
                        "gpu".into(),
                        TemplateSettings {
                            pod_spec_file: Some("/nonexistent/gpu.yaml".into()),
                            ..Default::default()
                        },
                    );
                }),
            ),
        ];
        for (key, change) in cases {
            let err = error_of(change);
            assert!(err.starts_with(&format!("{key}: ")), "{key}: {err}");
        }
    }

    fn with_template(change: impl FnOnce(&mut TemplateSettings)) -> String {
        error_of(|s| {
            let mut t = TemplateSettings {
                image: "agent:1".into(),
                ..Default::default()
            };
            change(&mut t);
            s.templates.insert("arm".into(), t);
        })
    }

    #[test]
    fn bad_pod_options_of_a_simple_template_name_their_key() {
        let toleration =
            |operator: &str, value: &str, effect: &str, secs: Option<i64>| TolerationSettings {
                key: "ci".into(),
                operator: operator.into(),
                value: value.into(),
                effect: effect.into(),
                toleration_seconds: secs,
            };
        let cases: Vec<(&str, TemplateChange)> = vec![
            (
                "templates.arm.node_selector: ",
                Box::new(|t| {
                    t.node_selector.insert("bad key!".into(), "x".into());
                }),
            ),
            (
                "templates.arm.tolerations[0]: operator \"In\"",
                Box::new(move |t| t.tolerations.push(toleration("In", "", "", None))),
            ),
            (
                "templates.arm.tolerations[0]: value must be empty",
                Box::new(move |t| t.tolerations.push(toleration("Exists", "x", "", None))),
            ),
            (
                "templates.arm.tolerations[0]: effect",
                Box::new(move |t| t.tolerations.push(toleration("Equal", "x", "NoRun", None))),
            ),
            (
                "templates.arm.tolerations[0]: toleration_seconds needs effect NoExecute",
                Box::new(move |t| {
                    t.tolerations
                        .push(toleration("Equal", "x", "NoSchedule", Some(5)))
                }),
            ),
            (
                "templates.arm.env: \"OTTO_TASK_ID\"",
                Box::new(|t| {
                    t.env.insert("OTTO_TASK_ID".into(), "x".into());
                }),
            ),
            (
                "templates.arm.env: \"1X\"",
                Box::new(|t| {
                    t.env.insert("1X".into(), "x".into());
                }),
            ),
            (
                "templates.arm.service_account_name: ",
                Box::new(|t| t.service_account_name = "Builder".into()),
            ),
            (
                "templates.arm.priority_class_name: ",
                Box::new(|t| t.priority_class_name = "low_prio".into()),
            ),
            (
                "templates.arm.image_pull_secrets: ",
                Box::new(|t| t.image_pull_secrets.push("Creds".into())),
            ),
            (
                "templates.arm.priority_class_name: cannot be used with pod_spec_file",
                Box::new(|t| {
                    t.pod_spec_file = Some("/etc/hostname".into());
                    t.priority_class_name = "low".into();
                }),
            ),
        ];
        for (start, change) in cases {
            let err = with_template(change);
            assert!(err.starts_with(start), "{start}: {err}");
        }
    }

    #[test]
    fn good_pod_options_are_accepted() {
        let mut settings = Settings::default();
        settings.templates.insert(
            "arm".into(),
            TemplateSettings {
                image: "agent:1".into(),
                node_selector: [("kubernetes.io/arch".to_string(), "arm64".to_string())].into(),
                tolerations: vec![
                    TolerationSettings {
                        operator: "Exists".into(),
                        ..Default::default()
                    },
                    TolerationSettings {
                        key: "example.com/ci".into(),
                        value: "yes".into(),
                        effect: "NoExecute".into(),
                        toleration_seconds: Some(30),
                        ..Default::default()
                    },
                ],
                env: [("GRADLE_OPTS".to_string(), "-Xmx2g".to_string())].into(),
                service_account_name: "builder".into(),
                image_pull_secrets: vec!["registry-creds".into()],
                priority_class_name: "ci-low".into(),
                ..Default::default()
            },
        );
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn a_marker_ttl_within_the_redelivery_window_is_refused_with_the_values() {
        let err = error_of(|s| {
            s.redis.claim_idle = Duration::from_secs(60);
            s.redis.max_deliveries = 5;
            s.redis.result_marker_ttl = Duration::from_secs(300);
        });
        assert_eq!(
            err,
            "redis.result_marker_ttl: (5m) must be longer than redis.claim_idle (1m) x \
             redis.max_deliveries (5) = 5m, or a late redelivery could publish a worker's \
             result twice"
        );
        let mut settings = Settings::default();
        settings.redis.result_marker_ttl = Duration::from_secs(301);
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn a_huge_redelivery_window_does_not_overflow() {
        let err = error_of(|s| {
            s.redis.claim_idle = Duration::from_secs(u64::MAX / 2);
            s.redis.max_deliveries = u64::MAX;
        });
        assert!(err.starts_with("redis.result_marker_ttl: "), "{err}");
    }

    #[test]
    fn a_settle_timeout_under_a_second_is_refused() {
        let err = error_of(|s| s.limits.settle_timeout = Duration::from_millis(500));
        assert_eq!(err, "limits.settle_timeout: (500ms) must be at least 1s");
        let mut settings = Settings::default();
        settings.worker.pending_timeout = Duration::from_millis(500);
        settings.limits.settle_timeout = Duration::from_secs(1);
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn a_redis_url_error_does_not_repeat_the_password() {
        let err = error_of(|s| s.redis.url = "http://u:hunter2@h:1".into());
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_template_with_an_existing_pod_spec_file_needs_no_image() {
        let path =
            std::env::temp_dir().join(format!("ottoscaler-validate-{}.yaml", std::process::id()));
        std::fs::write(&path, "containers: []\n").expect("write");
        let mut settings = Settings::default();
        settings.templates.insert(
            "gpu".into(),
            TemplateSettings {
                pod_spec_file: Some(path.display().to_string()),
                ..Default::default()
            },
        );
        let result = settings.validate();
        let _ = std::fs::remove_file(&path);
        assert_eq!(result, Ok(()));
    }
}
