//! The command line: `run` (the service, also the default), `send-event` (XADD one scale
//! event, for people and scripts), `check-config` (print the effective configuration).
//!
//! `main` parses [`Cli`], then calls [`check_config`] / [`send_event_command`] or runs the
//! service; each returns the process exit code so `main` stays thin.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use crate::pods::resolve_templates;
use crate::settings::{Settings, UnknownVariable, unknown_variables};
use crate::telemetry::LogFormat;

/// Connecting to Redis: a reachable server answers in milliseconds, a wrong host should
/// not leave a person at a terminal waiting for the OS's TCP timeout.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One XADD.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Event fields a `--meta` key may not use: the event's own fields (docs/contract.md section 1).
const RESERVED_FIELDS: [&str; 5] = ["type", "task_id", "pod_count", "template", "timestamp"];
/// Longest metadata key (docs/contract.md section 1).
const MAX_META_KEY_LEN: usize = 63;
/// Longest metadata value in bytes (docs/contract.md section 1).
const MAX_META_VALUE_LEN: usize = 1024;

/// Scales Otto CI build-agent pods on Kubernetes from a Redis Stream of scale events.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "ottoscaler", version, about)]
pub struct Cli {
    /// Config file (TOML, or YAML by extension).
    #[arg(long, global = true, env = "OTTOSCALER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Kubeconfig to use instead of in-cluster config, KUBECONFIG or ~/.kube/config.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The subcommand to run; `run` when none was given.
    pub fn subcommand(&self) -> Command {
        self.command.clone().unwrap_or(Command::Run)
    }
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Run the scaler (the default).
    Run,
    /// Add one scale event to the events stream and print its entry id.
    SendEvent(SendEventArgs),
    /// Print the effective configuration, secrets redacted; exit 1 when it is invalid.
    CheckConfig,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct SendEventArgs {
    /// scale_up or scale_down.
    #[arg(long = "type", value_enum)]
    pub kind: EventType,
    /// The task the workers belong to.
    #[arg(long)]
    pub task_id: String,
    /// Workers to start (required by scale_up) or stop (scale_down; default all).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pod_count: Option<u32>,
    /// Pod template name; the service uses `default` when absent.
    #[arg(long)]
    pub template: Option<String>,
    /// Metadata field, repeatable; workers see it as OTTO_META_<KEY>.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventType {
    ScaleUp,
    ScaleDown,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendEventError {
    #[error("--pod-count is required for scale_up")]
    MissingPodCount,
    /// `url` is redacted: this message may end up in a terminal log.
    #[error("redis {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// `KEY=VALUE` of `--meta`, checked against the contract's metadata rules so a mistake is
/// reported here rather than by a dead-lettered event.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let key_ok = (1..=MAX_META_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !key_ok {
        return Err(format!(
            "metadata key {key:?} must be 1-{MAX_META_KEY_LEN} letters, digits or '_'"
        ));
    }
    if RESERVED_FIELDS.contains(&key) {
        return Err(format!(
            "{key:?} is an event field, not metadata; use --{}",
            key.replace('_', "-")
        ));
    }
    if value.len() > MAX_META_VALUE_LEN {
        return Err(format!(
            "metadata value of {key:?} is {} bytes, at most {MAX_META_VALUE_LEN}",
            value.len()
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The stream fields of the event, in the order `redis-cli XRANGE` will show them.
pub fn event_fields(args: &SendEventArgs, now_unix_secs: u64) -> Vec<(String, String)> {
    let SendEventArgs {
        kind,
        task_id,
        pod_count,
        template,
        meta,
    } = args;
    let mut fields = vec![
        ("type".to_string(), kind.as_str().to_string()),
        ("task_id".to_string(), task_id.clone()),
    ];
    if let Some(n) = pod_count {
        fields.push(("pod_count".into(), n.to_string()));
    }
    if let Some(t) = template {
        fields.push(("template".into(), t.clone()));
    }
    fields.push(("timestamp".into(), now_unix_secs.to_string()));
    fields.extend(meta.iter().cloned());
    fields
}

/// XADDs the event to `redis.stream` and returns the new entry id.
pub async fn send_event(
    settings: &Settings,
    args: &SendEventArgs,
) -> Result<String, SendEventError> {
    if args.kind == EventType::ScaleUp && args.pod_count.is_none() {
        return Err(SendEventError::MissingPodCount);
    }
    let redis_error = |source| SendEventError::Redis {
        url: settings.redacted().redis.url,
        source,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let fields = event_fields(args, now);
    let mut conn = connect(&settings.redis.url).await.map_err(redis_error)?;
    let id: String = conn
        .xadd(&settings.redis.stream, "*", &fields)
        .await
        .map_err(redis_error)?;
    Ok(id)
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// `send-event`: prints the entry id and returns 0, or prints `error: ...` and returns 1.
pub async fn send_event_command(cli: &Cli, args: &SendEventArgs) -> i32 {
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => return report(&e),
    };
    match send_event(&settings, args).await {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => report(&e),
    }
}

/// What `run` needs before anything starts, checked the same way for `run` and
/// `check-config`: the settings (validated), every pod template resolved as the
/// Supervisor will use it (each `pod_spec_file` read and parsed as a PodSpec), the log
/// format, and the `OTTOSCALER_*` variables that name no setting.
#[derive(Debug)]
pub struct Prepared {
    pub settings: Settings,
    pub log_format: LogFormat,
    /// Warned about by `run`, refused by `check-config`.
    pub unknown_variables: Vec<UnknownVariable>,
}

/// Loads and checks everything `run` uses; the error is the `error: ...` line to print.
/// `env` is the process environment (a parameter, so tests need not change it).
pub fn prepare(
    config: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Prepared, String> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let log_format = LogFormat::parse(
        env.iter()
            .find(|(k, _)| k == "LOG_FORMAT")
            .map(|(_, v)| v.as_str()),
    )
    .map_err(|e| format!("error: {e}"))?;
    let settings =
        Settings::load_from(config, env.iter().cloned()).map_err(|e| format!("error: {e}"))?;
    resolve_templates(&settings).map_err(|e| format!("error: {e}"))?;
    Ok(Prepared {
        settings,
        log_format,
        unknown_variables: unknown_variables(env),
    })
}

/// `check-config`: prints the redacted effective configuration as TOML and returns 0, or
/// prints `error: <message naming the key>` and returns 1.
pub fn check_config(cli: &Cli) -> i32 {
    match check_config_output(prepare(cli.config.as_deref(), std::env::vars())) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

/// What `check-config` prints for a preparation: the TOML, or the `error: ...` lines.
/// An `OTTOSCALER_*` variable that names no setting fails the check (`run` only warns):
/// `check-config` is where a person looks for mistakes, and a typo there is one.
pub fn check_config_output(prepared: Result<Prepared, String>) -> Result<String, String> {
    let prepared = prepared?;
    if !prepared.unknown_variables.is_empty() {
        let lines: Vec<String> = prepared
            .unknown_variables
            .iter()
            .map(|v| format!("error: {v}"))
            .collect();
        return Err(lines.join("\n"));
    }
    prepared
        .settings
        .to_toml_string()
        .map_err(|e| format!("error: cannot print the configuration: {e}"))
}

fn report(error: &dyn std::error::Error) -> i32 {
    eprintln!("error: {error}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ottoscaler").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run() {
        let cli = parse(&["--config", "/etc/o.toml"]).expect("parse");
        assert_eq!(cli.subcommand(), Command::Run);
        assert_eq!(cli.config, Some(PathBuf::from("/etc/o.toml")));
    }

    #[test]
    fn global_flags_go_after_the_subcommand_too() {
        let cli =
            parse(&["check-config", "--kubeconfig", "/k", "--config", "/c.yaml"]).expect("parse");
        assert_eq!(cli.subcommand(), Command::CheckConfig);
        assert_eq!(cli.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(cli.config, Some(PathBuf::from("/c.yaml")));
    }

    #[test]
    fn send_event_takes_the_contracts_flags() {
        let cli = parse(&[
            "send-event",
            "--type",
            "scale_up",
            "--pod-count",
            "3",
            "--task-id",
            "task-123",
            "--template",
            "gpu",
            "--meta",
            "branch=main",
            "--meta",
            "commit=abc=def",
        ])
        .expect("parse");
        let Command::SendEvent(args) = cli.subcommand() else {
            panic!("not send-event: {cli:?}");
        };
        assert_eq!(args.kind, EventType::ScaleUp);
        assert_eq!(args.pod_count, Some(3));
        assert_eq!(args.task_id, "task-123");
        assert_eq!(args.template.as_deref(), Some("gpu"));
        assert_eq!(
            args.meta,
            vec![
                ("branch".into(), "main".into()),
                ("commit".into(), "abc=def".into())
            ]
        );
        assert_eq!(
            event_fields(&args, 1_700_000_000),
            [
                ("type", "scale_up"),
                ("task_id", "task-123"),
                ("pod_count", "3"),
                ("template", "gpu"),
                ("timestamp", "1700000000"),
                ("branch", "main"),
                ("commit", "abc=def"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn send_event_refuses_a_bad_type_or_pod_count() {
        assert!(parse(&["send-event", "--type", "scale-sideways", "--task-id", "t"]).is_err());
        assert!(
            parse(&[
                "send-event",
                "--type",
                "scale_up",
                "--task-id",
                "t",
                "--pod-count",
                "0"
            ])
            .is_err()
        );
        assert!(
            parse(&["send-event", "--type", "scale_up"]).is_err(),
            "task id is required"
        );
    }

    #[test]
    fn parse_meta_splits_at_the_first_equals_sign() {
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_meta("empty="), Ok(("empty".into(), String::new())));
    }

    #[test]
    fn parse_meta_refuses_what_the_contract_refuses() {
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=v").is_err());
        assert!(parse_meta("bad-key=v").is_err());
        assert!(parse_meta(&format!("{}=v", "k".repeat(64))).is_err());
        assert!(parse_meta(&format!("k={}", "v".repeat(1025))).is_err());
        let reserved = parse_meta("task_id=x").expect_err("reserved");
        assert!(reserved.contains("--task-id"), "{reserved}");
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn check_config_prints_an_error_naming_the_key() {
        let err = check_config_output(prepare(
            None,
            vars(&[("OTTOSCALER_LIMITS__MAX_WORKERS", "many")]),
        ))
        .expect_err("invalid");
        assert!(err.starts_with("error: limits.max_workers: "), "{err}");
    }

    #[test]
    fn check_config_refuses_a_mistyped_variable_naming_the_closest_key() {
        let err = check_config_output(prepare(
            None,
            vars(&[("OTTOSCALER_LIMIT__MAX_WORKERS", "20")]),
        ))
        .expect_err("typo");
        assert_eq!(
            err,
            "error: OTTOSCALER_LIMIT__MAX_WORKERS is not a setting and is ignored; did you mean OTTOSCALER_LIMITS__MAX_WORKERS?"
        );
        let prepared = prepare(None, vars(&[("OTTOSCALER_LIMIT__MAX_WORKERS", "20")]))
            .expect("run only warns");
        assert_eq!(prepared.unknown_variables.len(), 1);
    }

    #[test]
    fn a_bad_log_format_stops_run_and_check_config() {
        let err = prepare(None, vars(&[("LOG_FORMAT", "jsn")])).expect_err("bad format");
        assert_eq!(
            err,
            "error: LOG_FORMAT: \"jsn\" is not a log format, use text or json"
        );
    }

    #[test]
    fn a_pod_spec_file_that_is_no_pod_spec_fails_naming_template_and_file() {
        let dir = std::env::temp_dir().join(format!("ottoscaler-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // A whole Pod manifest where a PodSpec belongs: the mistake a new user makes.
        let spec = dir.join("gpu.yaml");
        std::fs::write(
            &spec,
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n",
        )
        .expect("write");
        let config = dir.join("ottoscaler.toml");
        std::fs::write(
            &config,
            format!(
                "[templates.gpu]\npod_spec_file = {:?}\n",
                spec.display().to_string()
            ),
        )
        .expect("write");
        let err =
            check_config_output(prepare(Some(&config), vars(&[]))).expect_err("not a PodSpec");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.starts_with(&format!(
                "error: templates.gpu.pod_spec_file: {} is not a valid PodSpec: ",
                spec.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn check_config_output_redacts_passwords_from_every_source() {
        for vars in [
            vec![("REDIS_URL", "rediss://otto:hunter2@redis:6380")],
            vec![("REDIS_PASSWORD", "hunter2")],
            vec![("REDIS_HOST", "redis"), ("REDIS_PASSWORD", "hunter2")],
        ] {
            let prepared = prepare(
                None,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            );
            let text = check_config_output(prepared).expect("valid");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains(":***@"), "{text}");
        }
    }

    #[tokio::test]
    async fn scale_up_without_pod_count_is_refused_before_connecting() {
        let args = SendEventArgs {
            kind: EventType::ScaleUp,
            task_id: "t".into(),
            pod_count: None,
            template: None,
            meta: vec![],
        };
        let err = send_event(&Settings::default(), &args)
            .await
            .expect_err("refused");
        assert!(matches!(err, SendEventError::MissingPodCount), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_in_time_without_showing_the_password() {
        let mut settings = Settings::default();
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        settings.redis.url = "redis://:hunter2@127.0.0.1:1".into();
        let args = SendEventArgs {
            kind: EventType::ScaleDown,
            task_id: "t".into(),
            pod_count: None,
            template: None,
            meta: vec![],
        };
        let result = tokio::time::timeout(
            REDIS_CONNECT_TIMEOUT + Duration::from_secs(5),
            send_event(&settings, &args),
        )
        .await
        .expect("bounded by the connect timeout");
        let err = result.expect_err("unreachable").to_string();
        assert!(err.starts_with("redis redis://:***@127.0.0.1:1: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn send_event_adds_the_entry_to_the_stream() {
        let server = testenv::RedisServer::start();
        let mut settings = Settings::default();
        settings.redis.url = server.url();
        settings.redis.stream = format!("test:send-event:{}", rand::random::<u32>());
        let args = SendEventArgs {
            kind: EventType::ScaleUp,
            task_id: "task-123".into(),
            pod_count: Some(3),
            template: None,
            meta: vec![("branch".into(), "main".into())],
        };
        let id = send_event(&settings, &args).await.expect("sent");

        let mut conn = connect(&settings.redis.url).await.expect("connect");
        let entries: redis::streams::StreamRangeReply = conn
            .xrange_all(&settings.redis.stream)
            .await
            .expect("xrange");
        assert_eq!(entries.ids.len(), 1);
        let entry = &entries.ids[0];
        assert_eq!(entry.id, id);
        let field = |name: &str| entry.get::<String>(name);
        assert_eq!(field("type").as_deref(), Some("scale_up"));
        assert_eq!(field("task_id").as_deref(), Some("task-123"));
        assert_eq!(field("pod_count").as_deref(), Some("3"));
        assert_eq!(field("branch").as_deref(), Some("main"));
        assert!(field("timestamp").is_some());
    }
}
