//! Request metrics of a mesh server, in Prometheus text on the admin port:
//! calls by method and status code, their latency, calls in flight, and
//! `safra_build_info`. A tower layer observes every call, including those
//! the contract stage refuses, until its last byte (streams included).

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body as HttpBody, Frame};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tonic::body::Body;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    process: String,
    version: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_25, 2.0, 17,
    ))
}

/// The metric handles of one method, resolved once so that a call records
/// without building labels (and a successful one without allocating).
#[derive(Debug)]
struct MethodMetrics {
    method: String,
    ok: Counter,
    latency: Histogram,
    in_flight: Gauge,
}

/// The metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    methods: HashMap<String, Arc<MethodMetrics>>,
    other: Arc<MethodMetrics>,
}

impl Metrics {
    /// Metrics for the process `name` at `version`; calls to methods
    /// outside `known_methods` (gRPC paths) are labelled `other`, so made-up
    /// paths cannot grow the label set.
    #[must_use]
    pub fn new(name: &str, version: &str, known_methods: impl IntoIterator<Item = String>) -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Family::<MethodLabels, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "safra_grpc_requests",
            "gRPC calls served, by method and status code",
            calls.clone(),
        );
        registry.register(
            "safra_grpc_request_duration_seconds",
            "Time from a call's arrival to its last response byte",
            latency.clone(),
        );
        registry.register(
            "safra_grpc_in_flight",
            "gRPC calls being served",
            in_flight.clone(),
        );
        registry.register(
            "safra_build_info",
            "The running build (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                process: name.to_owned(),
                version: version.to_owned(),
            })
            .set(1);
        let mut known_methods: HashSet<String> = known_methods.into_iter().collect();
        known_methods.insert("/grpc.health.v1.Health/Check".into());
        known_methods.insert("/grpc.health.v1.Health/Watch".into());
        let handles = |method: String| {
            let labels = MethodLabels {
                method: method.clone(),
            };
            Arc::new(MethodMetrics {
                ok: calls
                    .get_or_create(&CallLabels {
                        method: method.clone(),
                        code: "OK".into(),
                    })
                    .clone(),
                latency: latency.get_or_create(&labels).clone(),
                in_flight: in_flight.get_or_create(&labels).clone(),
                method,
            })
        };
        let other = handles("other".to_owned());
        let methods = known_methods
            .into_iter()
            .map(|method| (method.clone(), handles(method)))
            .collect();
        Self {
            registry,
            calls,
            methods,
            other,
        }
    }

    /// The registry, for a process to add metrics of its own before it
    /// serves.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Everything in Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry).ok();
        text
    }

    /// Starts observing a call to the gRPC method `path` made outside a
    /// tower stack of gRPC messages (the edge's REST side); it counts as
    /// CANCELLED unless [`Observed::finish`] is called.
    #[must_use]
    pub fn begin(self: &Arc<Self>, path: &str) -> Observed {
        let record = CallRecord {
            metrics: self.clone(),
            method: self.method(path),
            started: Instant::now(),
            code: None,
            done: false,
        };
        record.method.in_flight.inc();
        Observed(record)
    }

    fn method(&self, path: &str) -> Arc<MethodMetrics> {
        self.methods
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.other.clone())
    }
}

/// The tower layer recording every call into [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// Records into `metrics`.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] produces.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for MetricsService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Observed(mut call) = self.metrics.begin(request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            // A trailers-only response (every error) carries its status here.
            call.code = grpc_status(response.headers());
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(RecordedBody { inner: body, call }),
            ))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn code_name(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "OK",
        Some(1) => "CANCELLED",
        Some(3) => "INVALID_ARGUMENT",
        Some(4) => "DEADLINE_EXCEEDED",
        Some(5) => "NOT_FOUND",
        Some(6) => "ALREADY_EXISTS",
        Some(7) => "PERMISSION_DENIED",
        Some(8) => "RESOURCE_EXHAUSTED",
        Some(9) => "FAILED_PRECONDITION",
        Some(10) => "ABORTED",
        Some(11) => "OUT_OF_RANGE",
        Some(12) => "UNIMPLEMENTED",
        Some(13) => "INTERNAL",
        Some(14) => "UNAVAILABLE",
        Some(15) => "DATA_LOSS",
        Some(16) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// A call observed by [`Metrics::begin`].
#[derive(Debug)]
pub struct Observed(CallRecord);

impl Observed {
    /// Records the call as ended with `code`.
    pub fn finish(mut self, code: tonic::Code) {
        self.0.code = Some(code as i32);
        self.0.finish(false);
    }
}

/// One call being observed; recorded once, when the response ends or is
/// dropped (a client that goes away counts as CANCELLED).
#[derive(Debug)]
struct CallRecord {
    metrics: Arc<Metrics>,
    method: Arc<MethodMetrics>,
    started: Instant,
    code: Option<i32>,
    done: bool,
}

impl CallRecord {
    fn finish(&mut self, cancelled: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.method.in_flight.dec();
        self.method
            .latency
            .observe(self.started.elapsed().as_secs_f64());
        let code = if cancelled && self.code.is_none() {
            "CANCELLED"
        } else {
            code_name(self.code)
        };
        if code == "OK" {
            self.method.ok.inc();
        } else {
            self.metrics
                .calls
                .get_or_create(&CallLabels {
                    method: self.method.method.clone(),
                    code: code.to_owned(),
                })
                .inc();
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// The response body, watched for its trailers and its end.
struct RecordedBody {
    inner: Body,
    call: CallRecord,
}

impl HttpBody for RecordedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.code = grpc_status(trailers).or(this.call.code);
                }
            }
            Poll::Ready(None) => this.call.finish(false),
            Poll::Ready(Some(Err(_))) => {
                this.call.code = this.call.code.or(Some(2));
                this.call.finish(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
