//! A real OpenTelemetry Collector on a free loopback port, for the trace tests.
//!
//! `otelcol-ottoscaler` is built from the pinned Go module in `testenv/otelcol/` (the
//! core OTLP receiver and a small exporter of ours that appends each batch of spans as
//! one line of OTLP JSON to a file) by `testenv/otelcol/build.sh`, cached outside the
//! clone like the control plane; `OTTOSCALER_OTELCOL_BIN` may name a prebuilt binary.
//! [`Collector::spans`] reads that file back.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::binaries::run_cached_build;
use crate::ports::free_port;
use crate::process::ManagedChild;
use crate::workdir::WorkDir;

/// Environment variable naming a prebuilt `otelcol-ottoscaler`.
pub const OTELCOL_ENV: &str = "OTTOSCALER_OTELCOL_BIN";

/// How long a start may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the build script, fixed at compile time so tests find it from any cwd.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("otelcol/build.sh")
}

/// The collector binary: `$OTTOSCALER_OTELCOL_BIN`, else what `build.sh` built (instant
/// when cached, minutes on a cold cache). Resolved once per process.
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = match std::env::var_os(OTELCOL_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => run_cached_build(&build_script(), "ottoscaler-otelcol-build.lock")
                .map_err(|e| format!("{e:#}"))?,
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} is not a file (built by {})",
                path.display(),
                build_script().display()
            ))
        }
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind` number (1 internal, 5 consumer...).
    pub kind: i64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// String, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// OTLP's status code (0 unset, 1 ok, 2 error).
    pub status_code: i64,
    /// The resource's `service.name`.
    pub service_name: String,
}

impl Span {
    /// One attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running collector: OTLP/HTTP on `127.0.0.1:<port>`, spans into a file. Killed on
/// drop; also dies with the test binary (PDEATHSIG).
#[derive(Debug)]
pub struct Collector {
    // Field order matters: the collector is killed before its directory is removed.
    child: ManagedChild,
    port: u16,
    spans_file: PathBuf,
    _dir: WorkDir,
}

impl Collector {
    /// Starts a collector; panics with its log if it does not come up.
    pub fn start() -> Collector {
        Self::try_start().unwrap_or_else(|err| panic!("testenv: {err:#}"))
    }

    /// Like [`start`](Collector::start) but returns errors.
    pub fn try_start() -> Result<Collector> {
        let binary = binary()?;
        let mut last_err = None;
        // A port found free may be taken before the collector binds it: retry.
        for _ in 0..3 {
            match Self::launch(&binary) {
                Ok(collector) => return Ok(collector),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the collector did not start")))
    }

    fn launch(binary: &Path) -> Result<Collector> {
        let dir = WorkDir::temp("otelcol")?;
        let port = free_port()?;
        let spans_file = dir.path().join("spans.jsonl");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(port, &spans_file))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let mut command = Command::new(binary);
        command.arg(format!("--config=file:{}", config.display()));
        let mut child = ManagedChild::start("otelcol", command, &dir.path().join("otelcol.log"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Some(status) = child.try_exited() {
                bail!("the collector exited ({status}):\n{}", child.log_tail(4000));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the collector did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                    child.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Collector {
            child,
            port,
            spans_file,
            _dir: dir,
        })
    }

    /// The OTLP/HTTP base URL, as `telemetry.otlp_endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The collector's log, its last `max_bytes`.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        self.child.log_tail(max_bytes)
    }

    /// Every span received so far (none before the first export).
    pub fn spans(&self) -> Result<Vec<Span>> {
        let text = match std::fs::read_to_string(&self.spans_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read {}", self.spans_file.display()));
            }
        };
        let mut spans = Vec::new();
        // The last line may be half written while the collector appends: only whole
        // lines (ending in a newline) are read.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let batch: Value = serde_json::from_str(line.trim())
                .with_context(|| format!("a line of {} is not JSON", self.spans_file.display()))?;
            spans.extend(parse_batch(&batch));
        }
        Ok(spans)
    }

    /// Polls [`spans`](Collector::spans) until `done` holds for them, at most `timeout`;
    /// panics with what was received when it does not.
    pub fn wait_spans(&self, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans().unwrap_or_else(|e| panic!("testenv: {e:#}"));
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "testenv: the collector did not receive the expected spans within {timeout:?}; it has {spans:#?}\nlog:\n{}",
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The collector's configuration: OTLP/HTTP in on loopback, our file exporter out, and
/// none of its own telemetry (whose default port would clash between collectors).
fn config_yaml(port: u16, spans_file: &Path) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  spanfile:
    path: {path}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [spanfile]
"#,
        path = serde_json::to_string(&spans_file.display().to_string()).unwrap_or_default(),
    )
}

/// The spans of one OTLP JSON `TracesData` object.
fn parse_batch(batch: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for rs in array(batch, "resourceSpans") {
        let service_name = attributes(rs.get("resource").unwrap_or(&Value::Null))
            .remove("service.name")
            .unwrap_or_default();
        for ss in array(rs, "scopeSpans") {
            for s in array(ss, "spans") {
                let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let number = |k: &str| match s.get(k) {
                    Some(Value::String(n)) => n.parse().unwrap_or(0),
                    Some(v) => v.as_u64().unwrap_or(0),
                    None => 0,
                };
                spans.push(Span {
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: text("name"),
                    kind: s.get("kind").and_then(Value::as_i64).unwrap_or(0),
                    start_unix_nano: number("startTimeUnixNano"),
                    end_unix_nano: number("endTimeUnixNano"),
                    attributes: attributes(s),
                    status_code: s
                        .get("status")
                        .and_then(|st| st.get("code"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    spans
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// An OTLP JSON `attributes` list as key -> text.
fn attributes(v: &Value) -> BTreeMap<String, String> {
    array(v, "attributes")
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_string();
            let value = kv.get("value")?;
            let text = if let Some(s) = value.get("stringValue").and_then(Value::as_str) {
                s.to_string()
            } else if let Some(i) = value.get("intValue") {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            } else if let Some(b) = value.get("boolValue") {
                b.to_string()
            } else {
                value.to_string()
            };
            Some((key, text))
        })
        .collect()
}
