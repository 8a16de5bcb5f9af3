//! Test-only contracts (`proto-test/`, feature `test-contracts`): the echo
//! service that exercises authorization, validation, streaming and deadlines
//! through the real server stack, and the transcoding service whose server
//! ([`Mirror`]) answers every request with itself, so that gateway tests see
//! exactly what reached the service. Production never serves them.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, StreamBody};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use tonic::{Status, body::Body, server::NamedService};

/// Generated code of the test packages (`safra.echo.v1`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/test/safra_test_proto.rs"));
}

pub use proto::safra::{echo, transcode};

// Aliases for the generated code: prost cannot spell `r#type` in an extern path.
#[doc(hidden)]
pub use crate::proto::google::r#type as google_type;
#[doc(hidden)]
pub use crate::proto::safra::r#type as safra_type;

/// The descriptor set of `proto-test/`, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/safra_test_descriptor.bin"));

/// Decodes [`FILE_DESCRIPTOR_SET`].
///
/// # Errors
/// A corrupt embedded set.
pub fn pool() -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET)
}

/// The server of `safra.transcode.v1.TranscodeService`: every method answers
/// the request message itself (`StreamShelves` three times over), and
/// `Fail` answers the status its request names.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mirror;

impl NamedService for Mirror {
    const NAME: &'static str = "safra.transcode.v1.TranscodeService";
}

type MirrorFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Mirror {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = MirrorFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let Ok(collected) = request.into_body().collect().await else {
                return Ok(Status::cancelled("the request was not read").into_http());
            };
            let framed = collected.to_bytes();
            // One message: a 5-byte frame header, then the message.
            let message = framed
                .get(5..)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            if method == "Fail" {
                let fail = transcode::v1::FailRequest::decode(message).unwrap_or_default();
                return Ok(Status::new(fail.code.into(), fail.message).into_http());
            }
            let copies = if method == "StreamShelves" { 3 } else { 1 };
            let mut body = BytesMut::new();
            for _ in 0..copies {
                body.put_u8(0);
                body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
                body.put_slice(&message);
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = tokio_stream::iter([
                Ok::<_, Status>(http_body::Frame::data(body.freeze())),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            let mut response = http::Response::new(Body::new(StreamBody::new(frames)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        })
    }
}
