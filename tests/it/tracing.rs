//! One trace across two services, exported over OTLP to a real OTLP/gRPC
//! receiver running in the test, and log lines carrying the same trace id.

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use safra::{
    config::{LogConfig, LogFormat},
    testing::echo::v1::{EchoRequest, echo_service_client::EchoServiceClient},
    transport::server::Limits,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::runtime::{Seen, spawn_mesh, spawn_relaying_echo};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    pub(crate) name: String,
    pub(crate) trace_id: Vec<u8>,
    pub(crate) span_id: Vec<u8>,
    pub(crate) parent_span_id: Vec<u8>,
    /// String attributes, e.g. `subscriber`.
    pub(crate) attributes: Vec<(String, String)>,
    /// OTLP's span kind (2 server, 3 client, 4 producer, 5 consumer).
    pub(crate) kind: i32,
}

impl ReceivedSpan {
    /// The string attribute `key`, if it has one.
    pub(crate) fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// A real OTLP/gRPC trace receiver, keeping what it is sent.
#[derive(Clone, Default)]
pub(crate) struct Receiver(pub(crate) Arc<Mutex<Vec<ReceivedSpan>>>);

impl Receiver {
    /// Serves on a free loopback port; returns its `http://` endpoint.
    pub(crate) async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let otlp = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{otlp}")
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|attribute| {
                            use opentelemetry_proto::tonic::common::v1::any_value::Value;
                            match attribute.value.as_ref()?.value.as_ref()? {
                                Value::StringValue(text) => {
                                    Some((attribute.key.clone(), text.clone()))
                                }
                                _ => None,
                            }
                        })
                        .collect();
                    spans.push(ReceivedSpan {
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes,
                        kind: span.kind,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_a_call_through_two_services_and_reaches_otlp() {
    let receiver = Receiver::default();
    let otlp = receiver.serve().await;
    let logs = Captured::default();
    let telemetry = safra::observability::telemetry::init_with_writer(
        &LogConfig {
            format: LogFormat::Json,
            filter: "info".into(),
            otlp_endpoint: Some(otlp),
        },
        "trace-test",
        logs.clone(),
    )
    .expect("telemetry");

    // Downstream: the mesh's echo server. Upstream: one that relays to it.
    let mesh = spawn_mesh(Limits::default()).await;
    let (upstream, _) = spawn_relaying_echo(
        &mesh.pki,
        Limits::default(),
        mesh.verifier.clone(),
        Arc::new(Seen::default()),
        Some(mesh.echo),
    )
    .await;

    let root = tracing::info_span!("test.request");
    let answer = async {
        let channel = safra::transport::client::mesh_channel(
            &mesh.pki.tls("gateway"),
            "wallet",
            &upstream.to_string(),
        )
        .expect("channel");
        EchoServiceClient::new(channel)
            .echo(EchoRequest {
                message: "relay".into(),
                ..Default::default()
            })
            .await
    }
    .instrument(root)
    .await
    .expect("relayed")
    .into_inner();
    assert_eq!(answer.message, "relayed");

    // Server spans end when their response is sent; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    })
    .await
    .expect("flushed");
    let spans = receiver.0.lock().expect("spans").clone();
    let root = spans
        .iter()
        .find(|span| span.name == "test.request")
        .unwrap_or_else(|| panic!("no root span in {spans:?}"));
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == root.trace_id)
        .collect();
    let servers: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|span| {
            span.name == "/safra.echo.v1.EchoService/Echo" && {
                // A server span's parent is a client span of the same trace.
                trace
                    .iter()
                    .any(|parent| parent.span_id == span.parent_span_id)
            }
        })
        .collect();
    assert!(
        servers.len() >= 2,
        "the call crossed two servers within one trace: {trace:#?}"
    );

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    let handled: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["message"] == "echo handled")
        .collect();
    assert_eq!(handled.len(), 2, "both services logged: {text}");
    for line in handled {
        assert_eq!(line["trace_id"], hex(&root.trace_id), "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    drop(telemetry);
}
