//! Loading end to end: defaults, files, the seed's variables and the overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn load(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(
        file,
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// A config file in its own temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ottoscaler-settings-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn no_file_and_no_environment_gives_the_defaults() {
    assert_eq!(load(None, &[]), Ok(Settings::default()));
}

#[test]
fn the_new_limits_have_their_documented_defaults() {
    let settings = Settings::default();
    assert_eq!(settings.redis.dead_letter_maxlen, 100_000);
    assert_eq!(
        settings.redis.result_marker_ttl,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(settings.limits.settle_timeout, Duration::from_secs(600));
}

#[test]
fn the_new_limits_come_from_the_file_and_the_environment() {
    let file = TempFile::new(
        "c.toml",
        "[redis]\ndead_letter_maxlen = 10\nresult_marker_ttl = \"2days\"\n\
         [limits]\nsettle_timeout = \"20m\"\n",
    );
    let settings = load(Some(&file.0), &[]).expect("load");
    assert_eq!(settings.redis.dead_letter_maxlen, 10);
    assert_eq!(
        settings.redis.result_marker_ttl,
        Duration::from_secs(2 * 24 * 3600)
    );
    assert_eq!(settings.limits.settle_timeout, Duration::from_secs(1200));

    let settings = load(
        Some(&file.0),
        &[
            ("OTTOSCALER_REDIS__DEAD_LETTER_MAXLEN", "500"),
            ("OTTOSCALER_REDIS__RESULT_MARKER_TTL", "12h"),
            ("OTTOSCALER_LIMITS__SETTLE_TIMEOUT", "12m"),
        ],
    )
    .expect("load");
    assert_eq!(settings.redis.dead_letter_maxlen, 500);
    assert_eq!(
        settings.redis.result_marker_ttl,
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(settings.limits.settle_timeout, Duration::from_secs(720));
}

#[test]
fn a_bad_settle_timeout_names_the_key() {
    let err = load(None, &[("OTTOSCALER_LIMITS__SETTLE_TIMEOUT", "later")]).expect_err("later");
    assert!(
        err.to_string().starts_with("limits.settle_timeout"),
        "{err}"
    );
    let err = load(None, &[("OTTOSCALER_LIMITS__SETTLE_TIMEOUT", "0s")]).expect_err("0s");
    assert_eq!(err.key(), "limits.settle_timeout", "{err}");
    let err = load(None, &[("OTTOSCALER_LIMITS__SETTLE_TIMEOUT", "5m")]).expect_err("5m");
    assert!(
        err.to_string()
            .contains("longer than worker.pending_timeout (5m)"),
        "{err}"
    );
}

#[test]
fn the_example_file_parses_to_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ottoscaler.example.toml");
    assert_eq!(load(Some(&path), &[]), Ok(Settings::default()));
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let file = TempFile::new(
        "c.toml",
        "shutdown_timeout = \"7s\"\n[limits]\nmax_workers = 30\nmax_pods_per_event = 10\n",
    );
    let settings = load(
        Some(&file.0),
        &[
            ("OTTOSCALER_LIMITS__MAX_WORKERS", "20"),
            ("OTTOSCALER_REDIS__CLAIM_IDLE", "2s"),
        ],
    )
    .expect("load");
    assert_eq!(settings.limits.max_workers, 20);
    assert_eq!(settings.limits.max_pods_per_event, 10);
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(7));
    assert_eq!(settings.redis.claim_idle, Duration::from_secs(2));
    assert_eq!(settings.kubernetes.qps, 50);
}

#[test]
fn ottoscaler_config_names_the_file_when_no_path_is_given() {
    let file = TempFile::new("c.yaml", "limits:\n  max_workers: 60\n");
    let path = file.0.display().to_string();
    let settings = load(None, &[("OTTOSCALER_CONFIG", &path)]).expect("load");
    assert_eq!(settings.limits.max_workers, 60);
}

#[test]
fn a_top_level_duration_comes_from_the_environment() {
    let settings = load(None, &[("OTTOSCALER_SHUTDOWN_TIMEOUT", "5s")]).expect("load");
    assert_eq!(settings.shutdown_timeout, Duration::from_secs(5));
}

#[test]
fn a_non_number_in_the_environment_names_the_key() {
    let err = load(None, &[("OTTOSCALER_LIMITS__MAX_WORKERS", "abc")]).expect_err("abc");
    assert_eq!(err.key(), "limits.max_workers", "{err}");
    assert!(err.to_string().contains("abc"), "{err}");
}

#[test]
fn a_bad_duration_names_the_key() {
    let err = load(None, &[("OTTOSCALER_WORKER__PENDING_TIMEOUT", "soon")]).expect_err("soon");
    assert!(
        err.to_string().starts_with("worker.pending_timeout"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_in_a_section_is_refused() {
    let err = load(None, &[("OTTOSCALER_LIMITS__MAX_WORKER", "3")]).expect_err("typo");
    assert!(err.to_string().contains("max_worker"), "{err}");
}

#[test]
fn an_unknown_key_in_the_file_names_its_section() {
    let file = TempFile::new("c.toml", "[redis]\nstreem = \"x\"\n");
    let err = load(Some(&file.0), &[]).expect_err("typo");
    assert!(err.to_string().starts_with("redis"), "{err}");
    assert!(err.to_string().contains("streem"), "{err}");
}

#[test]
fn kubernetes_service_variables_with_our_prefix_are_ignored() {
    let settings = load(
        None,
        &[
            ("OTTOSCALER_SERVICE_HOST", "10.0.0.1"),
            ("OTTOSCALER_PORT", "tcp://10.0.0.1:8080"),
        ],
    );
    assert_eq!(settings, Ok(Settings::default()));
}

#[test]
fn a_missing_file_names_the_file() {
    let err = load(Some(Path::new("/nonexistent/ottoscaler.toml")), &[]).expect_err("missing");
    assert!(
        err.to_string()
            .starts_with("config file /nonexistent/ottoscaler.toml: "),
        "{err}"
    );
}

#[test]
fn a_broken_file_names_the_file() {
    let file = TempFile::new("c.toml", "[redis\n");
    let err = load(Some(&file.0), &[]).expect_err("broken");
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
}

#[test]
fn the_seed_variables_set_their_keys() {
    let settings = load(
        None,
        &[
            ("REDIS_HOST", "redis.ci"),
            ("REDIS_PORT", "6380"),
            ("REDIS_STREAM", "events"),
            ("REDIS_CONSUMER_GROUP", "scalers"),
            ("REDIS_CONSUMER", "scaler-0"),
            ("OTTO_AGENT_IMAGE", "otto/agent:1.2"),
        ],
    )
    .expect("load");
    assert_eq!(settings.redis.url, "redis://redis.ci:6380");
    assert_eq!(settings.redis.stream, "events");
    assert_eq!(settings.redis.group, "scalers");
    assert_eq!(settings.redis.consumer, "scaler-0");
    assert_eq!(settings.consumer_name(), "scaler-0");
    assert_eq!(settings.templates["default"].image, "otto/agent:1.2");
    // The rest of the default template stays.
    assert_eq!(
        settings.templates["default"].command,
        TemplateSettings::builtin_default().command
    );
}

#[test]
fn the_dead_letter_stream_follows_a_renamed_stream() {
    let settings = load(None, &[("REDIS_STREAM", "events")]).expect("load");
    assert_eq!(settings.redis.dead_letter_stream, "events:dead");
    let explicit = load(
        None,
        &[
            ("REDIS_STREAM", "events"),
            ("OTTOSCALER_REDIS__DEAD_LETTER_STREAM", "graveyard"),
        ],
    )
    .expect("load");
    assert_eq!(explicit.redis.dead_letter_stream, "graveyard");
}

#[test]
fn redis_url_and_password_build_the_url() {
    let settings = load(
        None,
        &[
            ("REDIS_URL", "rediss://otto@redis:6380/0"),
            ("REDIS_PASSWORD", "pw"),
        ],
    )
    .expect("load");
    assert_eq!(settings.redis.url, "rediss://otto:pw@redis:6380/0");
}

#[test]
fn redis_host_keeps_the_files_credentials() {
    let file = TempFile::new("c.toml", "[redis]\nurl = \"redis://:pw@old:6379/3\"\n");
    let settings = load(Some(&file.0), &[("REDIS_HOST", "new")]).expect("load");
    assert_eq!(settings.redis.url, "redis://:pw@new:6379/3");
}

#[test]
fn ottoscaler_variables_win_over_seed_variables() {
    let settings = load(
        None,
        &[
            ("REDIS_STREAM", "seed"),
            ("OTTOSCALER_REDIS__STREAM", "specific"),
            ("REDIS_URL", "redis://seed:1"),
            ("OTTOSCALER_REDIS__URL", "redis://specific:2"),
            ("OTTO_AGENT_IMAGE", "seed:1"),
            ("OTTOSCALER_TEMPLATES__DEFAULT__IMAGE", "specific:2"),
        ],
    )
    .expect("load");
    assert_eq!(settings.redis.stream, "specific");
    assert_eq!(settings.redis.url, "redis://specific:2");
    assert_eq!(settings.templates["default"].image, "specific:2");
}

#[test]
fn redis_password_fills_an_override_url_without_one() {
    let settings = load(
        None,
        &[
            ("OTTOSCALER_REDIS__URL", "redis://h:2"),
            ("REDIS_PASSWORD", "pw"),
        ],
    )
    .expect("load");
    assert_eq!(settings.redis.url, "redis://:pw@h:2");
}

#[test]
fn empty_variables_count_as_unset() {
    assert_eq!(
        load(
            None,
            &[("REDIS_HOST", ""), ("OTTOSCALER_LIMITS__MAX_WORKERS", "")]
        ),
        Ok(Settings::default())
    );
}

#[test]
fn a_further_template_does_not_inherit_the_default_command() {
    let file = TempFile::new("c.toml", "[templates.big]\nimage = \"otto/big:1\"\n");
    let settings = load(Some(&file.0), &[]).expect("load");
    assert_eq!(settings.templates["big"].image, "otto/big:1");
    assert!(settings.templates["big"].command.is_empty());
    assert_eq!(settings.template_names(), vec!["big", "default"]);
}

#[test]
fn a_small_max_workers_alone_lowers_the_default_pods_per_event() {
    let settings = load(None, &[("OTTOSCALER_LIMITS__MAX_WORKERS", "20")]).expect("load");
    assert_eq!(settings.limits.max_workers, 20);
    assert_eq!(settings.limits.max_pods_per_event, 20);
    let roomy = load(None, &[("OTTOSCALER_LIMITS__MAX_WORKERS", "500")]).expect("load");
    assert_eq!(roomy.limits.max_pods_per_event, 50);
}

#[test]
fn an_explicitly_empty_dead_letter_stream_is_refused() {
    let file = TempFile::new("c.toml", "[redis]\ndead_letter_stream = \"\"\n");
    let err = load(Some(&file.0), &[]).expect_err("empty");
    assert_eq!(err.key(), "redis.dead_letter_stream", "{err}");
}

#[test]
fn loading_validates() {
    let err = load(
        None,
        &[
            ("OTTOSCALER_LIMITS__MAX_WORKERS", "200"),
            ("OTTOSCALER_LIMITS__MAX_PODS_PER_EVENT", "300"),
        ],
    )
    .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "limits.max_pods_per_event: (300) must not exceed limits.max_workers (200): such an event could never fit"
    );
}

#[test]
fn check_config_output_never_shows_a_password() {
    for vars in [
        vec![("REDIS_URL", "redis://otto:hunter2@redis:6379")],
        vec![("REDIS_PASSWORD", "hunter2")],
        vec![("OTTOSCALER_REDIS__URL", "rediss://:hunter2@redis:6379")],
    ] {
        let settings = load(None, &vars).expect("load");
        assert!(
            settings.redis.url.contains("hunter2"),
            "the real URL keeps it"
        );
        let text = settings.to_toml_string().expect("toml");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"), "{text}");
        assert!(!format!("{:?}", settings.redacted()).contains("hunter2"));
    }
}

#[test]
fn an_empty_consumer_means_the_hostname() {
    let name = Settings::default().consumer_name();
    assert!(!name.is_empty());
}

#[test]
fn scheduling_settings_are_validated_naming_the_key() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("OTTOSCALER_SCHEDULING__AGING", "0s")],
            "scheduling.aging",
        ),
        (
            &[("OTTOSCALER_SCHEDULING__TENANT_FIELD", "task_id")],
            "scheduling.tenant_field",
        ),
        (
            &[("OTTOSCALER_SCHEDULING__TENANT_FIELD", "a b")],
            "scheduling.tenant_field",
        ),
        (
            &[("OTTOSCALER_SCHEDULING__DEFAULT_PRIORITY", "urgent")],
            "scheduling.default_priority",
        ),
        (
            &[("OTTOSCALER_PRIORITIES__NORMAL__WEIGHT", "0")],
            "priorities.normal.weight",
        ),
        (
            &[(
                "OTTOSCALER_PRIORITIES__NORMAL__PRIORITY_CLASS_NAME",
                "Not_Valid",
            )],
            "priorities.normal.priority_class_name",
        ),
    ];
    for (env, key) in cases {
        match load(None, env) {
            Err(e) => assert_eq!(e.key(), key, "{env:?}: {e}"),
            Ok(_) => panic!("{env:?} accepted"),
        }
    }
}

#[test]
fn priorities_and_caps_load_from_a_file() {
    let file = TempFile::new(
        "p.toml",
        "[scheduling]\ndefault_priority = \"low\"\ntenant_weights = { big = 3 }\n\
         [priorities.low]\nweight = 1\n[priorities.high]\nweight = 10\npriority_class_name = \"otto-high\"\n\
         [limits]\nmax_workers_per_task = 4\nmax_waiting_events = 50\n\
         [templates.gpu]\nimage = \"gpu:1\"\nmax_workers = 2\n",
    );
    let settings = load(Some(&file.0), &[]).expect("load");
    let names: Vec<&str> = settings.priorities.keys().map(String::as_str).collect();
    assert_eq!(names, ["high", "low", "normal"], "normal stays built in");
    assert_eq!(settings.priorities["high"].priority_class_name, "otto-high");
    assert_eq!(settings.scheduling.tenant_weights.get("big"), Some(&3));
    let rules = crate::scheduler::Rules::from_settings(&settings);
    assert_eq!(rules.template_caps.get("gpu"), Some(&2));
    assert_eq!(rules.task_cap, Some(4));
    assert_eq!(rules.max_waiting_events, 50);
    assert_eq!(
        rules.priority_class_names.get("high").map(String::as_str),
        Some("otto-high")
    );
    assert!(rules.policy.level("high") > rules.policy.level("low"));
}
