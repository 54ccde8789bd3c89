//! Logs and traces. The binary installs one `tracing` subscriber ([`init`]): log lines on
//! stderr, as text or as JSON objects (`--log-format`), and with `--otlp-endpoint` the node's
//! spans also become OpenTelemetry spans, exported in batches over OTLP/HTTP (protobuf).
//!
//! The spans (docs/ARCHITECTURE.md, "Traces and logs"):
//! - `connection` (conn, tenant, room, dialect): everything one socket does. Its children are
//!   `upgrade` (the checks before the 101), `join` (per room) and `update` (per frame that
//!   carries an update).
//! - In the room: `apply`, a child of the update; `persist`, a child of the first traced
//!   update of a batch, open until the write commits; `publish`, a child of the apply, whose
//!   context rides in the envelope to the other nodes.
//! - On another node: `remote_apply`, a child of the `publish` that sent the update.
//! - `room` (tenant, room): a room's life on this node.
//!
//! Every span is at level debug. Without `--otlp-endpoint` (and under the default `info`
//! filter) they are disabled at their call sites: each costs one relaxed atomic load. With
//! `RUST_LOG=info,chorus_hub=debug` log lines carry the connection's and the room's fields,
//! which costs about 570 bytes per idle connection and 6 % more CPU per delivery
//! (docs/BENCHMARKS.md, "Traces"): too much to have by default.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::cluster::envelope::TraceContext;

/// Where traces go (`--otlp-endpoint` and its companions).
#[derive(Debug, Clone)]
pub struct Otlp<'a> {
    /// The collector's base URL: spans are posted to `{endpoint}/v1/traces`.
    pub endpoint: &'a str,
    /// The share of connections and rooms traced (a root's decision holds for its children,
    /// on every node).
    pub sample_ratio: f64,
    /// This node's id (`service.instance.id`), when it has one.
    pub node_id: Option<&'a str>,
}

/// The runtime the exporter's requests run on, once there is one.
type RuntimeSlot = Arc<Mutex<Option<tokio::runtime::Handle>>>;

/// The installed subscriber's exporter, if any: flushed by [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    runtime: RuntimeSlot,
}

impl Telemetry {
    /// The runtime the exporter's requests run on. Exports before it is given fail (and are
    /// dropped): the subscriber is installed before the runtime exists, so that a bad
    /// configuration is logged.
    pub fn attach_runtime(&self, handle: tokio::runtime::Handle) {
        *lock(&self.runtime) = Some(handle);
    }

    /// Exports what is still queued and stops the exporter. Call it once the node's runtime
    /// is shut down: its tasks (connections, rooms) are dropped then, which ends their spans.
    /// The last export runs on a one-worker runtime of its own; this blocks at most a few
    /// seconds.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let last = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        match last {
            Ok(rt) => {
                *lock(&self.runtime) = Some(rt.handle().clone());
                if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                    eprintln!("warning: traces not flushed at exit: {e}");
                }
                rt.shutdown_timeout(Duration::from_secs(1));
            }
            Err(e) => eprintln!("warning: traces not flushed at exit: {e}"),
        }
    }
}

fn lock(slot: &RuntimeSlot) -> std::sync::MutexGuard<'_, Option<tokio::runtime::Handle>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `/v1/traces` URL of a collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read);
/// a URL that already names the path is kept.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the process's subscriber: log lines (`json` or text) filtered by `RUST_LOG`
/// (default `info`), and, with `otlp`, the OpenTelemetry layer.
///
/// Without `otlp` the log filter is global, as it always was. With it each layer has its own
/// filter, and the exporter's is dynamic on purpose: a callsite that every per-layer filter
/// enables statically is never asked again, and the `log` bridge (sqlx reports each query
/// through `log_enabled!`) leaves a stale per-layer decision behind on its thread, which would
/// silently drop the next such span (`connection`, `room`) from the exporter
/// (tokio-rs/tracing#2519). A dynamic filter makes every enabled callsite ask each time.
pub fn init(json: bool, otlp: Option<Otlp<'_>>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let runtime = RuntimeSlot::default();
    let mut exporter = None;
    let installed = match otlp {
        // Typed layers, not a list of boxed ones: a list cannot see that the log layer's
        // level is the filter's, so it would report no maximum level, and every `trace!`
        // and `debug!` call site of every crate would be asked at run time (measured: about
        // 8 % more CPU per delivery).
        None => {
            let text = (!json).then(log_lines);
            let json = json.then(|| log_lines().json());
            tracing_subscriber::registry()
                .with(filter)
                .with(text)
                .with(json)
                .try_init()
        }
        Some(otlp) => {
            let provider = provider(&otlp, runtime.clone())?;
            // Dynamic (it takes the context, unused): see above.
            let ours = tracing_subscriber::filter::dynamic_filter_fn(|m, _| {
                *m.level() <= Level::DEBUG
                    && (m.target().starts_with("chorus_hub")
                        || m.target().starts_with("chorus_persistence"))
            })
            .with_max_level_hint(Level::DEBUG);
            let traces = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("chorus"))
                // Busy/idle times and the thread and source location would cost clock reads
                // and attributes on every span; the context is read from the span, never from
                // a thread-local.
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_context_activation(false)
                // Only the node's own spans (and the events inside them): not the libraries'.
                .with_filter(ours)
                .boxed();
            // Each layer filtered on its own, each with a level hint: a list is fine here.
            let logs = if json {
                log_lines().json().with_filter(filter).boxed()
            } else {
                log_lines().with_filter(filter).boxed()
            };
            let installed = tracing_subscriber::registry()
                .with(vec![traces, logs])
                .try_init();
            exporter = Some(provider);
            EXPORTING.store(installed.is_ok(), Ordering::Relaxed);
            installed
        }
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry {
        provider: exporter,
        runtime,
    })
}

/// The log layer: lines on stderr, coloured on a terminal.
fn log_lines<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    fn() -> std::io::Stderr,
> {
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

fn provider(otlp: &Otlp<'_>, runtime: RuntimeSlot) -> Result<SdkTracerProvider, String> {
    let client = Client::new(runtime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url(otlp.endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("--otlp-endpoint: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    // OTEL_SERVICE_NAME (read by the builder) wins over our default.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("chorus");
    }
    if let Some(node) = otlp.node_id {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node.to_string(),
        ));
    }
    Ok(SdkTracerProvider::builder()
        // Bounded: past 2,048 spans waiting, new ones are dropped, never queued without end.
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otlp.sample_ratio,
        ))))
        .with_resource(resource.build())
        .build())
}

/// How long one export may take, answer included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read (it is a small status message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The exporter's HTTP client: the node's own reqwest (rustls on ring, as the webhooks use)
/// running on the node's runtime. The SDK's batch processor calls it from its own thread,
/// which has no runtime: the request is spawned onto the node's, and awaited from there.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: RuntimeSlot,
}

impl Client {
    fn new(runtime: RuntimeSlot) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A collector answers; it never sends us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("--otlp-endpoint: cannot build the HTTP client: {e}"))?;
        Ok(Client { http, runtime })
    }
}

type HttpError = opentelemetry_http::HttpError;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let runtime = lock(&self.runtime)
            .clone()
            .ok_or("the node's runtime has not started")?;
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let answer = runtime.spawn(async move {
            let answer = export(http, request).await;
            let ok = answer.as_ref().is_ok_and(|a| a.status().is_success());
            metrics::counter!(
                crate::metrics::names::OTLP_EXPORTS_TOTAL,
                "result" => if ok { "ok" } else { "failed" }
            )
            .increment(1);
            if !ok {
                complain(&answer);
            }
            answer
        });
        answer.await?
    }
}

/// Says why exports fail, at most once a minute (the SDK's own logs are off): the first
/// failure at once.
fn complain(answer: &Result<http::Response<Bytes>, HttpError>) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 60)
        && LAST
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        match answer {
            Ok(a) => tracing::warn!(
                status = a.status().as_u16(),
                "trace export refused by the collector"
            ),
            Err(e) => tracing::warn!(error = %e, "trace export failed"),
        }
    }
}

/// One export: the collector's answer, its body bounded.
async fn export(
    http: reqwest::Client,
    request: reqwest::Request,
) -> Result<http::Response<Bytes>, HttpError> {
    let mut response = http.execute(request).await?;
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = std::mem::take(response.headers_mut());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err::<_, HttpError>("the collector's answer is too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(answer.body(Bytes::from(body))?)
}

/// Where `span` sits in its trace, to carry to another node; `None` unless it is sampled.
pub fn trace_context(span: &tracing::Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Whether `span` is recorded and sampled: the root of a trace that will be exported. Forces the
/// sampling decision (once per connection or room; `false` at once without `--otlp-endpoint`).
/// What is not sampled is traced no further: its per-update spans are never created.
pub fn sampled(span: &tracing::Span) -> bool {
    trace_context(span).is_some()
}

/// `span` unless the exporter's sampler refused it: a root it refused costs nothing more (its
/// spans and their per-connection state are dropped at once). Without an exporter, an enabled
/// span is kept (`RUST_LOG=...,chorus_hub=debug`: log lines carry it).
pub fn keep_if_sampled(span: tracing::Span) -> tracing::Span {
    if span.is_disabled() || (EXPORTING.load(Ordering::Relaxed) && !sampled(&span)) {
        tracing::Span::none()
    } else {
        span
    }
}

/// Set once the OpenTelemetry layer is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Makes `span` (not yet entered) a child of the remote span `trace` names.
pub fn continue_trace(span: &tracing::Span, trace: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    let sc = SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/"),
            "https://otel.example/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn without_a_subscriber_no_context_travels() {
        let span = tracing::debug_span!("apply");
        assert_eq!(trace_context(&span), None);
        continue_trace(
            &span,
            &TraceContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                flags: 1,
            },
        );
    }
}
