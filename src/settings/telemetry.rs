//! `[telemetry]`: optional OTLP trace export (docs/contract.md, "Traces"). Off unless
//! `otlp_endpoint` is set; then one trace per event and one span per worker go to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP receiver (`http://` or `https://`, no credentials), such
    /// as `http://otel-collector:4318`; spans are posted as protobuf to `<url>/v1/traces`.
    /// Empty (the default) turns tracing off: no exporter, no spans, no `trace_id`.
    pub otlp_endpoint: String,
    /// The `service.name` of the exported spans. Default `ottoscaler`.
    pub service_name: String,
    /// How long one export request may take before it is given up. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Spans waiting for export, at most; past it new spans are dropped (and counted by
    /// the SDK), never blocking ottoscaler. Default 2048.
    pub max_queue_size: usize,
    /// Spans per export request, at most; at most `max_queue_size`. Default 512.
    pub max_export_batch_size: usize,
    /// How often waiting spans are exported. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// How long shutdown waits to flush the spans still queued. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "ottoscaler".into(),
            export_timeout: Duration::from_secs(10),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl TelemetrySettings {
    /// Whether traces are exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// An `http`/`https` URL with a host, a service name, positive timeouts and a batch
    /// that fits the queue. Checked only when tracing is on, except the URL's form.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let endpoint = self.otlp_endpoint.trim();
        match url::Url::parse(endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    // They would be printed by check-config, and are not sent anyway.
                    return Err(ConfigError::invalid(
                        "telemetry.otlp_endpoint",
                        "must not carry credentials; an Authorization header goes in OTEL_EXPORTER_OTLP_HEADERS",
                    ));
                }
                if u.query().is_some() || u.fragment().is_some() {
                    return Err(ConfigError::invalid(
                        "telemetry.otlp_endpoint",
                        format!(
                            "({endpoint:?}) must have no query or fragment: it is a base URL, /v1/traces is appended"
                        ),
                    ));
                }
            }
            Ok(u) => {
                return Err(ConfigError::invalid(
                    "telemetry.otlp_endpoint",
                    format!(
                        "({endpoint:?}) must be an http:// or https:// URL with a host, not {}:",
                        u.scheme()
                    ),
                ));
            }
            Err(e) => {
                return Err(ConfigError::invalid(
                    "telemetry.otlp_endpoint",
                    format!("({endpoint:?}) is not a URL: {e}"),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        for (key, value) in [
            ("telemetry.export_timeout", self.export_timeout),
            ("telemetry.export_interval", self.export_interval),
            ("telemetry.shutdown_timeout", self.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than 0s"));
            }
        }
        if self.max_queue_size == 0 {
            return Err(ConfigError::invalid(
                "telemetry.max_queue_size",
                "must be at least 1",
            ));
        }
        if self.max_export_batch_size == 0 || self.max_export_batch_size > self.max_queue_size {
            return Err(ConfigError::invalid(
                "telemetry.max_export_batch_size",
                format!(
                    "({}) must be from 1 to telemetry.max_queue_size ({})",
                    self.max_export_batch_size, self.max_queue_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_endpoint(url: &str) -> TelemetrySettings {
        TelemetrySettings {
            otlp_endpoint: url.into(),
            ..TelemetrySettings::default()
        }
    }

    fn error(s: &TelemetrySettings) -> String {
        s.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn off_by_default_and_valid() {
        let s = TelemetrySettings::default();
        assert!(!s.enabled());
        assert!(s.validate().is_ok());
        assert!(!with_endpoint("  ").enabled());
    }

    #[test]
    fn the_endpoint_is_an_http_or_https_url() {
        for good in [
            "http://127.0.0.1:4318",
            "https://otel.example:4318/",
            "http://c/otlp",
        ] {
            assert!(with_endpoint(good).validate().is_ok(), "{good}");
        }
        for (bad, says) in [
            ("grpc://collector:4317", "http:// or https://"),
            ("collector:4318", "http:// or https://"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
            ("http://c:4318/?x=1", "no query"),
            ("http://user:secret@c:4318", "credentials"),
        ] {
            let text = error(&with_endpoint(bad));
            assert!(
                text.contains("telemetry.otlp_endpoint") && text.contains(says),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn the_batch_fits_the_queue_and_timeouts_are_positive() {
        let mut s = with_endpoint("http://c:4318");
        s.max_export_batch_size = 4096;
        assert!(error(&s).contains("telemetry.max_export_batch_size"));
        s.max_export_batch_size = 512;
        s.export_timeout = Duration::ZERO;
        assert!(error(&s).contains("telemetry.export_timeout"));
        s.export_timeout = Duration::from_secs(1);
        s.max_queue_size = 0;
        assert!(error(&s).contains("telemetry.max_queue_size"));
        s.max_queue_size = 2048;
        s.service_name = String::new();
        assert!(error(&s).contains("telemetry.service_name"));
    }
}
