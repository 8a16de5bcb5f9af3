//! A lean gRPC caller for the runtime benchmark: one pre-encoded request sent
//! again and again over hyper's HTTP/2 client connection, with no tower
//! stack, channel buffer or message encoding per call. Every server is
//! called by the same code (plaintext or mutual TLS is the only difference),
//! and the load generator costs far less per call than a typed stub, so it
//! is less often the bottleneck that decides how busy the server gets.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower::Service as _;

use crate::Caller;

/// One stream of calls: a clone of a connection's sender and the request.
#[derive(Clone)]
pub struct RawCaller {
    sender: SendRequest<Full<Bytes>>,
    request: http::Request<()>,
    body: Bytes,
}

impl Caller for RawCaller {
    async fn call(&mut self) -> bool {
        let mut request = http::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.request.method().clone();
        *request.uri_mut() = self.request.uri().clone();
        *request.headers_mut() = self.request.headers().clone();
        let Ok(response) = self.sender.send_request(request).await else {
            return false;
        };
        if response.status() != http::StatusCode::OK {
            return false;
        }
        // The status is in the trailers (or in the headers of a
        // trailers-only answer).
        let in_headers = response.headers().get("grpc-status").cloned();
        let Ok(collected) = response.into_body().collect().await else {
            return false;
        };
        let status = collected
            .trailers()
            .and_then(|trailers| trailers.get("grpc-status").cloned())
            .or(in_headers);
        status.is_some_and(|status| status == "0")
    }
}

/// The gRPC framing of `message`: uncompressed flag, length, bytes.
fn frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    Bytes::from(framed)
}

/// Connects once to `addr` (over mutual TLS as `tls`'s holder when given)
/// and returns a caller of `path` with `message` and the `authorization`
/// header when a token is given.
pub async fn connect(
    addr: std::net::SocketAddr,
    tls: Option<&std::sync::Arc<safra::identity::tls::MeshTls>>,
    path: &str,
    message: &impl prost::Message,
    token: Option<&str>,
) -> anyhow::Result<RawCaller> {
    let builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    let sender = match tls {
        Some(tls) => {
            let mut connector = safra::transport::client::MeshConnector::new(tls, "wallet")?;
            let io = connector.call(format!("http://{addr}").parse()?).await?;
            let (sender, connection) = builder.handshake(io).await?;
            tokio::spawn(connection);
            sender
        }
        None => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            sender
        }
    };
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    Ok(RawCaller {
        sender,
        request: request.body(())?,
        body: frame(message),
    })
}
