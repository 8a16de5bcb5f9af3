//! Logs and traces. Every line is JSON (or human-readable on request) and,
//! inside a traced call, carries the call's `trace_id` and `span_id`. Spans
//! go to an OTLP collector (Jaeger ingests OTLP) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; trace ids exist either way, so logs
//! and traces line up. W3C `traceparent` is read from inbound metadata and
//! written into outbound metadata ([`extract`], [`inject`]).

use std::{collections::BTreeMap, fmt};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter, format::Writer},
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{ConfigError, LogConfig, LogFormat};

/// Keeps the trace pipeline alive; dropping it (at the end of `main`)
/// flushes the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends every finished span now (tests, and before exiting).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "flushing spans failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.provider.shutdown().ok();
    }
}

/// Installs logging and tracing for the process `service`, writing logs to
/// stderr.
///
/// # Errors
/// A bad `RUST_LOG` or OTLP endpoint.
pub fn init(config: &LogConfig, service: &str) -> Result<Telemetry, ConfigError> {
    init_with_writer(config, service, std::io::stderr)
}

/// As [`init`], with logs going to `writer` (tests capture them).
///
/// # Errors
/// A bad `RUST_LOG` or OTLP endpoint.
pub fn init_with_writer<W>(
    config: &LogConfig,
    service: &str,
    writer: W,
) -> Result<Telemetry, ConfigError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.filter).map_err(|error| ConfigError {
        variable: "RUST_LOG".into(),
        problem: format!("'{}' is not a valid filter: {error}", config.filter),
    })?;
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|error| ConfigError {
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                problem: format!("'{endpoint}' cannot be used: {error}"),
            })?;
        // Batches are sent from the tokio runtime the exporter's tonic
        // channel lives on, not from a thread of their own.
        let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        provider = provider.with_span_processor(batches);
    }
    let provider = provider.build();
    let tracer = provider.tracer("safra");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // Cheap spans: no per-poll context switching (trace ids are read from
    // the span itself), no time tracking, threads or source locations.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false);
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let installed = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .fmt_fields(NoSpanFields)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_writer(writer),
            )
            .try_init(),
    };
    // A second initialisation in one process (tests) keeps the first.
    drop(installed);
    Ok(Telemetry { provider })
}

/// JSON lines carry the event's fields, not every span's: skip formatting
/// span fields (the fmt layer would render them on every span's creation).
#[derive(Debug, Clone, Copy)]
struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// One JSON object per line: time, level, target, the current span's name,
/// `trace_id` and `span_id` when inside a traced span, then the fields.
#[derive(Debug, Clone, Copy)]
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(time_rfc3339()));
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().to_owned()));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(span.name().to_owned()));
        }
        let context = tracing::Span::current().context();
        let span_context = context.span().span_context().clone();
        if span_context.is_valid() {
            line.insert(
                "trace_id".into(),
                Value::String(span_context.trace_id().to_string()),
            );
            line.insert(
                "span_id".into(),
                Value::String(span_context.span_id().to_string()),
            );
        }
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        for (name, value) in fields.0 {
            line.insert(name, value);
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

fn time_rfc3339() -> String {
    // Seconds and microseconds since the epoch, rendered as UTC RFC 3339.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(now.as_secs()).unwrap_or(0);
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        now.subsec_micros()
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// well-known civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[derive(Default)]
struct FieldCollector(BTreeMap<String, Value>);

impl tracing::field::Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace id of the current span, when inside a traced call (for audit
/// records and error reports).
#[must_use]
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The W3C trace context of inbound `headers`, as the parent of the span
/// that serves them.
#[must_use]
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes the W3C trace context of inbound `headers` the parent of `span`;
/// a malformed or absent `traceparent` leaves `span` the root of a new trace.
pub fn follow(span: &tracing::Span, headers: &http::HeaderMap) {
    drop(span.set_parent(extract(headers)));
}

/// Makes the W3C `traceparent` an event carried the parent of `span`; an
/// empty or malformed one leaves `span` the root of a new trace.
pub fn follow_traceparent(span: &tracing::Span, traceparent: &str) {
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
    }
    follow(span, &headers);
}

/// Writes the current span's trace context into outbound `headers` as
/// `traceparent`, unless the caller set one on purpose.
pub fn inject(headers: &mut http::HeaderMap) {
    if headers.contains_key("traceparent") {
        return;
    }
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The current span's W3C `traceparent`, when inside a traced call (for
/// events, which carry it to their consumers).
#[must_use]
pub fn current_traceparent() -> Option<String> {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_422), (2025, 11, 30));
    }
}
