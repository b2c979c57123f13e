//! OTLP trace export (`[telemetry]`, docs/contract.md "Traces"): one span per event
//! from read to acknowledgement, one per worker from create to delete, exported in
//! batches as OTLP/HTTP protobuf over hyper and rustls.
//!
//! Off unless `telemetry.otlp_endpoint` is set: then [`init`] installs nothing, no
//! thread or task runs, [`start`] returns `None` and the actors carry no trace context.
//! The process-wide tracer is set once, in `main`; actor tests never set it.
//!
//! The SDK's batch processor exports from a thread of its own; the HTTP client needs a
//! Tokio runtime, so requests run on a small current-thread runtime on one more thread
//! ([`OnRuntime`]), never on the actors' runtime.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

use super::TraceParent;
use crate::settings::TelemetrySettings;

/// The tracer, once [`init`] installed one.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Keeps the exporter; [`Traces::shutdown`] flushes what is queued, with a bound.
pub struct Traces {
    provider: SdkTracerProvider,
    shutdown_timeout: Duration,
}

impl Traces {
    /// Flushes the queued spans and stops the exporter, waiting at most
    /// `telemetry.shutdown_timeout`.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::warn!(%error, "flushing the trace exporter at shutdown failed; queued spans may be lost");
        }
    }
}

/// Starts the exporter when `telemetry.otlp_endpoint` is set; `Ok(None)` when it is not.
/// A second call (tests) keeps the first tracer.
pub fn init(settings: &TelemetrySettings) -> Result<Option<Traces>, String> {
    if !settings.enabled() {
        return Ok(None);
    }
    let endpoint = format!(
        "{}/v1/traces",
        settings.otlp_endpoint.trim().trim_end_matches('/')
    );
    let client = OnRuntime::start(http_client(settings.export_timeout)?)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| {
            format!("telemetry.otlp_endpoint: the OTLP exporter for {endpoint} does not start: {e}")
        })?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size)
        .with_scheduled_delay(settings.export_interval)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
        )
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let _ = TRACER.set(opentelemetry::trace::TracerProvider::tracer(
        &provider,
        "ottoscaler",
    ));
    tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    Ok(Some(Traces {
        provider,
        shutdown_timeout: settings.shutdown_timeout,
    }))
}

/// Whether spans are made at all.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span ottoscaler made; it ends when [`TraceSpan::end`] is called or it is dropped.
#[derive(Debug)]
pub struct TraceSpan(opentelemetry_sdk::trace::Span);

impl TraceSpan {
    /// The context a child continues (an event's workers, a pod's `TRACEPARENT`).
    pub fn context(&self) -> TraceParent {
        let sc = self.0.span_context();
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
    }

    /// Adds or replaces one attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed with `reason`.
    pub fn fail(&mut self, reason: impl Into<String>) {
        let reason: String = reason.into();
        self.0.set_status(Status::error(reason));
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.0.end();
    }
}

/// What kind of work a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reading and acting on a stream entry (`SpanKind::Consumer`).
    Consumer,
    /// Work inside ottoscaler (`SpanKind::Internal`).
    Internal,
}

/// Starts span `name` as a child of `parent` (a remote context: the producer's or
/// another actor's), or as the root of a new trace. `None` when tracing is off.
pub fn start(
    name: &'static str,
    kind: Kind,
    parent: Option<&TraceParent>,
    attributes: Vec<KeyValue>,
) -> Option<TraceSpan> {
    let tracer = TRACER.get()?;
    let parent_cx = match parent {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.span_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let kind = match kind {
        Kind::Consumer => SpanKind::Consumer,
        Kind::Internal => SpanKind::Internal,
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent_cx);
    Some(TraceSpan(span))
}

/// hyper over rustls (the system's roots) for https endpoints, plain TCP for http.
fn http_client(timeout: Duration) -> Result<HyperClient<Https>, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("telemetry.otlp_endpoint: no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(HyperClient::new(https, timeout, None))
}

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Runs each request of the exporter on a runtime of its own (see the module docs).
#[derive(Debug, Clone)]
struct OnRuntime {
    client: Arc<HyperClient<Https>>,
    runtime: tokio::runtime::Handle,
}

impl OnRuntime {
    /// Starts the runtime's thread; it lives as long as the process.
    fn start(client: HyperClient<Https>) -> Result<OnRuntime, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("telemetry: the export runtime does not start: {e}"))?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("otlp-http".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("telemetry: the export thread does not start: {e}"))?;
        Ok(OnRuntime {
            client: Arc::new(client),
            runtime: handle,
        })
    }
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| -> HttpError { format!("the export task failed: {e}").into() })?
    }
}
