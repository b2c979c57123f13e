//! Logging: `tracing` events to stdout, human-readable by default, JSON with
//! `LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info,kube=warn,hyper=warn`).
//! Traces: optional OTLP export ([`traces`]) and W3C `traceparent` values ([`TraceParent`]).

mod traceparent;
pub mod traces;

pub use traceparent::TraceParent;

use tracing_subscriber::EnvFilter;

/// What `RUST_LOG` falls back to: our own info lines, and only the warnings of the
/// chatty HTTP and Kubernetes client crates.
pub const DEFAULT_FILTER: &str = "info,kube=warn,hyper=warn";

/// The shape of each log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event; the default, for people at a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The values `LOG_FORMAT` accepts.
    pub const ACCEPTED: &'static str = "text or json";

    /// From `LOG_FORMAT`; see [`LogFormat::parse`].
    pub fn from_env() -> Result<Self, String> {
        Self::parse(std::env::var("LOG_FORMAT").ok().as_deref())
    }

    /// `text` or `json` (any case); unset or empty means text. Anything else is an
    /// error naming the accepted values: a typo must not silently give the wrong format.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Self::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Self::Json),
            Some(v) => Err(format!(
                "LOG_FORMAT: {v:?} is not a log format, use {}",
                Self::ACCEPTED
            )),
        }
    }
}

/// Installs the global subscriber. Calling it again (tests, a second `main` path) keeps
/// the first subscriber and returns false instead of panicking.
pub fn init(format: LogFormat) -> bool {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => {
            // Unset is the normal case; only a RUST_LOG that does not parse is worth a word.
            let bad = std::env::var("RUST_LOG").is_ok().then(|| e.to_string());
            (EnvFilter::new(DEFAULT_FILTER), bad)
        }
    };
    // Colours only for a person at a terminal, never into files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
            .is_ok(),
    };
    if let (true, Some(error)) = (installed, bad_filter) {
        tracing::warn!(%error, default = DEFAULT_FILTER, "RUST_LOG does not parse, using the default");
    }
    installed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some(" JSON ")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
    }

    #[test]
    fn a_bad_log_format_is_an_error_naming_the_accepted_values() {
        assert_eq!(
            LogFormat::parse(Some("yaml")),
            Err("LOG_FORMAT: \"yaml\" is not a log format, use text or json".into())
        );
    }

    #[test]
    fn a_second_init_does_not_panic() {
        init(LogFormat::Text);
        assert!(!init(LogFormat::Json));
    }

    #[test]
    fn the_default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }
}
