//! Where settings come from, in which order, and how the seed's variables map.
//!
//! Precedence, lowest first: built-in defaults < config file < the seed's variables <
//! `OTTOSCALER_<SECTION>__<KEY>`. The `OTTOSCALER_*` names win because they are the more
//! specific: they name one key each, while the seed's variables are kept for
//! compatibility.
//!
//! The seed's variables:
//!
//! | variable | key |
//! |---|---|
//! | `REDIS_HOST`, `REDIS_PORT` | host and port of `redis.url`; scheme, credentials and db kept |
//! | `REDIS_URL` | `redis.url` (wins over `REDIS_HOST`/`REDIS_PORT`) |
//! | `REDIS_PASSWORD` | the password inside `redis.url`, replacing one from the file or `REDIS_URL`; also filled into an `OTTOSCALER_REDIS__URL` that carries none, so a password kept in a Secret need not be copied into the URL |
//! | `REDIS_STREAM` | `redis.stream` |
//! | `REDIS_CONSUMER_GROUP` | `redis.group` |
//! | `REDIS_CONSUMER` | `redis.consumer` |
//! | `OTTO_AGENT_IMAGE` | `templates.default.image` |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Source, Value};
use url::Url;

use super::{ConfigError, Settings};

/// Prefix of the environment overrides: `OTTOSCALER_<SECTION>__<KEY>`.
const PREFIX: &str = "OTTOSCALER";
/// Names the config file when `--config` is absent. Not a setting, so it is kept out of
/// the overrides (where it would be the unknown key `config`).
pub(super) const CONFIG_VAR: &str = "OTTOSCALER_CONFIG";

/// Default `<stream>:dead`: a renamed stream keeps its own dead letters (docs/contract.md section 1).
const DEAD_LETTER_STREAM: &str = "redis.dead_letter_stream";
/// Default 50, but never more than `limits.max_workers`: `OTTOSCALER_LIMITS__MAX_WORKERS=20`
/// alone must give a valid configuration. Set explicitly above `max_workers`, it is an error.
const MAX_PODS_PER_EVENT: &str = "limits.max_pods_per_event";

/// Seed variables that set one key each, verbatim.
const SEED_KEYS: [(&str, &str); 4] = [
    ("REDIS_STREAM", "redis.stream"),
    ("REDIS_CONSUMER_GROUP", "redis.group"),
    ("REDIS_CONSUMER", "redis.consumer"),
    ("OTTO_AGENT_IMAGE", "templates.default.image"),
];

/// The environment a load sees. Empty values count as unset: Kubernetes manifests often
/// carry `value: ""` for "not configured".
pub(super) struct Env(BTreeMap<String, String>);

impl Env {
    pub(super) fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(vars.into_iter().filter(|(_, v)| !v.is_empty()).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Merges every source into one unvalidated [`Settings`].
pub(super) fn load(file: Option<&Path>, env: Env) -> Result<Settings, ConfigError> {
    let file: Option<PathBuf> = file
        .map(Path::to_path_buf)
        .or_else(|| env.get(CONFIG_VAR).map(PathBuf::from));
    let file = file.as_deref();
    let to_error = |e| from_config(e, file);

    let mut builder = Config::builder().add_source(defaults()?);
    if let Some(path) = file {
        builder = builder.add_source(file_source(path)?);
    }
    // REDIS_HOST/REDIS_PORT edit the URL below them, so that URL must be known first.
    let url_below_seed = builder
        .build_cloned()
        .and_then(|c| c.get_string("redis.url"))
        .map_err(to_error)?;
    let merged = builder
        .add_source(SeedVariables::from_env(&env, &url_below_seed)?)
        .add_source(overrides(&env))
        .build()
        .map_err(to_error)?;
    let explicit = |key: &str| merged.get::<Value>(key).is_ok();
    let (dead_letter_set, max_pods_set) =
        (explicit(DEAD_LETTER_STREAM), explicit(MAX_PODS_PER_EVENT));
    let mut settings: Settings = merged.try_deserialize().map_err(to_error)?;

    if !dead_letter_set {
        settings.redis.dead_letter_stream = format!("{}:dead", settings.redis.stream);
    }
    if !max_pods_set {
        settings.limits.max_pods_per_event = settings
            .limits
            .max_pods_per_event
            .min(settings.limits.max_workers);
    }
    if let Some(password) = env.get("REDIS_PASSWORD") {
        settings.redis.url = fill_password(&settings.redis.url, password);
    }
    Ok(settings)
}

/// The built-in defaults as the lowest source, without the keys whose default depends
/// on another key ([`DEAD_LETTER_STREAM`], [`MAX_PODS_PER_EVENT`]): [`load`] derives those
/// when no source set them.
fn defaults() -> Result<Config, ConfigError> {
    let mut defaults = serde_json::to_value(Settings::default())
        .map_err(|e| ConfigError::invalid("settings", e.to_string()))?;
    for key in [DEAD_LETTER_STREAM, MAX_PODS_PER_EVENT] {
        if let Some((section, field)) = key.split_once('.')
            && let Some(table) = defaults.get_mut(section).and_then(|t| t.as_object_mut())
        {
            table.remove(field);
        }
    }
    Config::try_from(&defaults).map_err(|e| from_config(e, None))
}

fn file_source(path: &Path) -> Result<File<config::FileSourceString, FileFormat>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => FileFormat::Toml,
        Some("yaml" | "yml") => FileFormat::Yaml,
        _ => {
            return Err(file_error(
                "unknown extension, use .toml, .yaml or .yml".into(),
            ));
        }
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    Ok(File::from_str(&text, format))
}

/// `OTTOSCALER_*` variables that name a setting. Others with the prefix are skipped, not
/// refused: Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8080_TCP`... for
/// every Service, so a Service named `ottoscaler` would otherwise stop the process.
/// Inside a section an unknown key is still an error, which catches typos.
fn overrides(env: &Env) -> Environment {
    let roots = setting_roots();
    let wanted = |name: &str| {
        let Some(rest) = name.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('_')) else {
            return false;
        };
        roots.iter().any(|(root, is_section)| {
            if *is_section {
                rest.strip_prefix(root.as_str())
                    .is_some_and(|r| r.starts_with("__"))
            } else {
                rest == root
            }
        })
    };
    let vars: Map<String, String> = env
        .0
        .iter()
        .filter(|(name, _)| name.as_str() != CONFIG_VAR && wanted(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Environment::with_prefix(PREFIX)
        .prefix_separator("_")
        .separator("__")
        .source(Some(vars))
}

/// An `OTTOSCALER_*` variable that names no setting (and is no Kubernetes service
/// link): most likely a typo, which would otherwise be silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub name: String,
    /// The known variable nearest to it by edit distance, when one is near enough.
    pub closest: Option<String>,
}

impl std::fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a setting and is ignored", self.name)?;
        match &self.closest {
            Some(closest) => write!(f, "; did you mean {closest}?"),
            None => write!(f, " (settings are OTTOSCALER_<SECTION>__<KEY>)"),
        }
    }
}

/// The `OTTOSCALER_*` variables of `env` that no setting reads, each with the nearest
/// known name. Service links (`OTTOSCALER_SERVICE_HOST`, `OTTOSCALER_PORT_8080_TCP`...,
/// injected for a Service named `ottoscaler*`) are not reported.
pub fn unknown_variables(env: impl IntoIterator<Item = (String, String)>) -> Vec<UnknownVariable> {
    let env = Env::new(env);
    let roots = setting_roots();
    let known = known_variables();
    env.0
        .keys()
        .filter(|name| name.starts_with(&format!("{PREFIX}_")))
        .filter(|name| name.as_str() != CONFIG_VAR && !is_service_link(name))
        .filter(|name| !is_known(name, &roots, &known))
        .map(|name| UnknownVariable {
            name: name.clone(),
            closest: closest(name, &known),
        })
        .collect()
}

/// Every variable naming one setting: `OTTOSCALER_<SECTION>__<KEY>` and top-level
/// `OTTOSCALER_<KEY>`; template keys as `OTTOSCALER_TEMPLATES__<NAME>__<KEY>` with
/// `<NAME>` standing for any template.
fn known_variables() -> Vec<String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(Settings::default()) else {
        return Vec::new();
    };
    let mut known = vec![CONFIG_VAR.to_string()];
    for (root, value) in &fields {
        let root = root.to_uppercase();
        match value.as_object() {
            Some(_) if root == "TEMPLATES" => {
                if let Ok(serde_json::Value::Object(keys)) =
                    serde_json::to_value(super::TemplateSettings::default())
                {
                    known.extend(
                        keys.keys()
                            .map(|k| format!("{PREFIX}_TEMPLATES__<NAME>__{}", k.to_uppercase())),
                    );
                }
            }
            Some(section) => known.extend(
                section
                    .keys()
                    .map(|k| format!("{PREFIX}_{root}__{}", k.to_uppercase())),
            ),
            None => known.push(format!("{PREFIX}_{root}")),
        }
    }
    known
}

/// Whether `name` is read: a known variable, or any template key (whose name is free).
fn is_known(name: &str, roots: &[(String, bool)], known: &[String]) -> bool {
    if known.iter().any(|k| k == name) {
        return true;
    }
    let template_key = name
        .strip_prefix(&format!("{PREFIX}_TEMPLATES__"))
        .and_then(|rest| rest.split_once("__"))
        .map(|(_, key)| format!("{PREFIX}_TEMPLATES__<NAME>__{key}"));
    // A key inside a known section that does not exist is refused by the load itself
    // (deny_unknown_fields), which names it.
    let in_section = roots.iter().any(|(root, is_section)| {
        *is_section
            && root != "TEMPLATES"
            && name.strip_prefix(&format!("{PREFIX}_{root}__")).is_some()
    });
    in_section || template_key.is_some_and(|k| known.contains(&k))
}

/// `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<NAME>]`, `<SVC>_PORT` and
/// `<SVC>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`, as the kubelet injects them.
fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT")
    {
        return true;
    }
    let Some((_, tail)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let mut parts = tail.split('_');
    let port_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let proto_ok = parts
        .next()
        .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
    let rest: Vec<&str> = parts.collect();
    port_ok && proto_ok && matches!(rest.as_slice(), [] | ["PROTO"] | ["PORT"] | ["ADDR"])
}

/// The known variable nearest to `name`, when at most a third of its length away
/// (a typo, not another word). Template keys are compared with the template name
/// of `name` in place of `<NAME>`.
fn closest(name: &str, known: &[String]) -> Option<String> {
    let template = name
        .strip_prefix(&format!("{PREFIX}_"))
        .and_then(|rest| rest.split("__").nth(1))
        .unwrap_or("DEFAULT");
    known
        .iter()
        .map(|k| k.replace("<NAME>", template))
        .map(|k| (edit_distance(name, &k), k))
        .min()
        .filter(|(distance, _)| *distance * 3 <= name.len().saturating_sub(PREFIX.len() + 1).max(3))
        .map(|(_, k)| k)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The top-level keys of [`Settings`], upper-cased, and whether each is a section.
/// Read from the defaults so a new field needs no second list here.
fn setting_roots() -> Vec<(String, bool)> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| (k.to_uppercase(), v.is_object()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The seed's variables as one config source, between the file and the overrides.
#[derive(Debug, Clone)]
struct SeedVariables(Map<String, Value>);

impl SeedVariables {
    fn from_env(env: &Env, url_below: &str) -> Result<Self, ConfigError> {
        let mut values = Map::new();
        let mut set = |key: &str, origin: &str, value: String| {
            values.insert(
                key.to_string(),
                Value::new(Some(&origin.to_string()), value),
            );
        };
        for (var, key) in SEED_KEYS {
            if let Some(value) = env.get(var) {
                set(key, var, value.to_string());
            }
        }
        if let Some(url) = seed_url(env, url_below)? {
            set("redis.url", "the REDIS_* variables", url);
        }
        Ok(Self(values))
    }
}

impl Source for SeedVariables {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// `redis.url` as the seed's variables make it, or `None` when none of them is set.
fn seed_url(env: &Env, url_below: &str) -> Result<Option<String>, ConfigError> {
    let (host, port) = (env.get("REDIS_HOST"), env.get("REDIS_PORT"));
    let mut url = None;
    if host.is_some() || port.is_some() {
        let mut below = parse_url("redis.url", url_below)?;
        if let Some(host) = host {
            set_host(&mut below, host)?;
        }
        if let Some(port) = port {
            let port: u16 = port.parse().map_err(|e| {
                ConfigError::invalid("REDIS_PORT", format!("{e} ({port:?}), expected 1-65535"))
            })?;
            below
                .set_port(Some(port))
                .map_err(|()| ConfigError::invalid("REDIS_PORT", "the URL has no host"))?;
        }
        url = Some(below);
    }
    if let Some(text) = env.get("REDIS_URL") {
        url = Some(parse_url("REDIS_URL", text)?);
    }
    if let Some(password) = env.get("REDIS_PASSWORD") {
        let mut with_password = match url {
            Some(url) => url,
            None => parse_url("redis.url", url_below)?,
        };
        with_password.set_password(Some(password)).map_err(|()| {
            ConfigError::invalid("REDIS_PASSWORD", "the Redis URL has no host to add it to")
        })?;
        url = Some(with_password);
    }
    Ok(url.map(String::from))
}

/// Never echoes the text: a URL may carry a password.
fn parse_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    Url::parse(text).map_err(|e| ConfigError::invalid(key, format!("not a valid URL: {e}")))
}

fn set_host(url: &mut Url, host: &str) -> Result<(), ConfigError> {
    // A bare IPv6 address needs brackets inside a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    url.set_host(Some(&host))
        .map_err(|e| ConfigError::invalid("REDIS_HOST", format!("{e} ({host:?})")))
}

/// Adds `password` to `url` when the URL carries none; otherwise (or when the URL does
/// not parse, which validation reports) returns it unchanged.
fn fill_password(url: &str, password: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_none() => {
            match parsed.set_password(Some(password)) {
                Ok(()) => parsed.into(),
                Err(()) => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Maps the `config` crate's error to ours, keeping the key it names. `file` names the
/// config file in parse errors, which `File::from_str` leaves without a path.
fn from_config(error: config::ConfigError, file: Option<&Path>) -> ConfigError {
    use config::ConfigError as E;
    let origin =
        |origin: Option<String>| origin.map(|o| format!(" (from {o})")).unwrap_or_default();
    match error {
        E::Type {
            origin: from,
            unexpected,
            expected,
            key,
        } => ConfigError::invalid(
            key.as_deref().unwrap_or("settings"),
            format!("expected {expected}, found {unexpected}{}", origin(from)),
        ),
        E::At {
            error,
            origin: from,
            key,
        } => {
            let message = match *error {
                E::Message(m) => m,
                other => other.to_string(),
            };
            ConfigError::invalid(
                key.as_deref().unwrap_or("settings"),
                format!("{message}{}", origin(from)),
            )
        }
        E::NotFound(key) => ConfigError::invalid(&key, "missing"),
        E::FileParse { uri, cause } => ConfigError::File {
            path: uri
                .or_else(|| file.map(|f| f.display().to_string()))
                .unwrap_or_default(),
            message: cause.to_string(),
        },
        other => ConfigError::invalid("settings", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn redis_host_and_port_keep_scheme_credentials_and_db() {
        let url = seed_url(
            &env(&[("REDIS_HOST", "redis.prod"), ("REDIS_PORT", "6380")]),
            "rediss://user:pw@127.0.0.1:6379/2",
        );
        assert_eq!(
            url.expect("url").as_deref(),
            Some("rediss://user:pw@redis.prod:6380/2")
        );
    }

    #[test]
    fn a_bare_ipv6_redis_host_is_bracketed() {
        let url = seed_url(&env(&[("REDIS_HOST", "::1")]), "redis://127.0.0.1:6379");
        assert_eq!(url.expect("url").as_deref(), Some("redis://[::1]:6379"));
    }

    #[test]
    fn redis_url_wins_over_host_and_port() {
        let url = seed_url(
            &env(&[("REDIS_HOST", "a"), ("REDIS_URL", "redis://b:1")]),
            "redis://127.0.0.1:6379",
        );
        assert_eq!(url.expect("url").as_deref(), Some("redis://b:1"));
    }

    #[test]
    fn redis_password_replaces_the_urls_password() {
        let url = seed_url(
            &env(&[
                ("REDIS_URL", "redis://u:old@h:1"),
                ("REDIS_PASSWORD", "new"),
            ]),
            "redis://127.0.0.1:6379",
        );
        assert_eq!(url.expect("url").as_deref(), Some("redis://u:new@h:1"));
    }

    #[test]
    fn no_seed_variable_leaves_the_url_alone() {
        assert_eq!(seed_url(&env(&[]), "redis://x:1").expect("url"), None);
    }

    #[test]
    fn a_bad_redis_port_names_the_variable() {
        let err = seed_url(&env(&[("REDIS_PORT", "http")]), "redis://h:1").expect_err("port");
        assert!(err.to_string().starts_with("REDIS_PORT: "), "{err}");
    }

    #[test]
    fn a_bad_redis_url_names_the_variable_but_not_its_text() {
        let err =
            seed_url(&env(&[("REDIS_URL", "s3cret-not-a-url")]), "redis://h:1").expect_err("url");
        assert!(err.to_string().starts_with("REDIS_URL: "), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn fill_password_keeps_a_password_already_there() {
        assert_eq!(fill_password("redis://:a@h:1", "b"), "redis://:a@h:1");
        assert_eq!(fill_password("redis://h:1", "b"), "redis://:b@h:1");
    }

    #[test]
    fn only_setting_variables_reach_the_overrides() {
        let source = overrides(&env(&[
            ("OTTOSCALER_LIMITS__MAX_WORKERS", "20"),
            ("OTTOSCALER_SHUTDOWN_TIMEOUT", "5s"),
            ("OTTOSCALER_SERVICE_HOST", "10.0.0.1"),
            ("OTTOSCALER_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("OTTOSCALER_CONFIG", "/etc/ottoscaler.toml"),
            ("OTTOSCALER_LIMITSX__MAX_WORKERS", "1"),
        ]));
        let keys: Vec<String> = source.collect().expect("collect").into_keys().collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&"limits.max_workers".to_string()), "{keys:?}");
        assert!(keys.contains(&"shutdown_timeout".to_string()), "{keys:?}");
    }

    fn unknown(vars: &[(&str, &str)]) -> Vec<UnknownVariable> {
        unknown_variables(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn a_mistyped_section_is_reported_with_the_closest_key() {
        assert_eq!(
            unknown(&[("OTTOSCALER_LIMIT__MAX_WORKERS", "20")]),
            vec![UnknownVariable {
                name: "OTTOSCALER_LIMIT__MAX_WORKERS".into(),
                closest: Some("OTTOSCALER_LIMITS__MAX_WORKERS".into()),
            }]
        );
        let typo = unknown(&[("OTTOSCALER_SHUTDOWN_TIMEOT", "5s")]);
        assert_eq!(
            typo[0].closest.as_deref(),
            Some("OTTOSCALER_SHUTDOWN_TIMEOUT")
        );
        let template = unknown(&[("OTTOSCALER_TEMPLATE__GPU__IMAGE", "x")]);
        assert_eq!(
            template[0].closest.as_deref(),
            Some("OTTOSCALER_TEMPLATES__GPU__IMAGE")
        );
        assert_eq!(
            typo[0].to_string(),
            "OTTOSCALER_SHUTDOWN_TIMEOT is not a setting and is ignored; did you mean OTTOSCALER_SHUTDOWN_TIMEOUT?"
        );
    }

    #[test]
    fn a_name_far_from_every_key_gets_no_suggestion() {
        let far = unknown(&[("OTTOSCALER_ZZZZZZZZZZZZZZZZZZZZ", "1")]);
        assert_eq!(far.len(), 1);
        assert_eq!(far[0].closest, None);
    }

    #[test]
    fn settings_service_links_and_other_variables_are_not_reported() {
        assert_eq!(
            unknown(&[
                ("OTTOSCALER_LIMITS__MAX_WORKERS", "20"),
                ("OTTOSCALER_SHUTDOWN_TIMEOUT", "5s"),
                ("OTTOSCALER_CONFIG", "/etc/o.toml"),
                ("OTTOSCALER_TEMPLATES__GPU__IMAGE", "agent:gpu"),
                ("OTTOSCALER_SERVICE_HOST", "10.0.0.1"),
                ("OTTOSCALER_SERVICE_PORT", "8080"),
                ("OTTOSCALER_SERVICE_PORT_HTTP", "8080"),
                ("OTTOSCALER_PORT", "tcp://10.0.0.1:8080"),
                ("OTTOSCALER_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
                ("OTTOSCALER_PORT_8080_TCP_ADDR", "10.0.0.1"),
                ("OTTOSCALER_METRICS_SERVICE_HOST", "10.0.0.2"),
                ("REDIS_HOST", "redis"),
                ("PATH", "/bin"),
            ]),
            vec![]
        );
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("LIMIT", "LIMITS"), 1);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn sections_and_top_level_keys_are_told_apart() {
        let roots = setting_roots();
        assert!(roots.contains(&("TEMPLATES".into(), true)), "{roots:?}");
        assert!(
            roots.contains(&("SHUTDOWN_TIMEOUT".into(), false)),
            "{roots:?}"
        );
    }
}
