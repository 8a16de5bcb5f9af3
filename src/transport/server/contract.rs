//! The contract stage of a mesh server: before any handler runs, it reads the
//! method's declarations from the descriptor set and enforces them — who may
//! call (the authorization option: public, signed-in, roles, internal with
//! allowed caller services) and what they may send (the field rules, every
//! violation reported). Handlers never repeat either.
//!
//! A tower layer over tonic's routes. The token (from the headers) and the
//! method's authorization are checked first, so no body is read for a call
//! that will be refused; then the request's single protobuf message (unary
//! and server-streaming methods) is read within a deadline and up to the
//! size limit, decompressed if the client sent it gzipped (the bound applies
//! to the decompressed size), validated as a `DynamicMessage` and handed on
//! uncompressed.

use std::{
    convert::Infallible,
    future::Future,
    io::Read as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::{Status, body::Body};

use crate::{
    contract::gate::{Gate, MethodPolicy, authorize, authorize_scope},
    contract::status,
    contract::validate::BadPattern,
    identity::auth::TokenVerifier,
    identity::tls::PeerInfo,
    r#type::v1::ErrorReason,
};

/// The tower layer enforcing the contract's authorization and field rules.
#[derive(Debug, Clone)]
pub struct ContractLayer {
    state: Arc<ContractState>,
}

/// How long a request's body may take to arrive, unless set otherwise.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(10);

/// Shared by every connection's copy of the service.
#[derive(Debug)]
struct ContractState {
    gate: Arc<Gate>,
    max_message_size: usize,
    body_deadline: Duration,
}

impl ContractLayer {
    /// Reads every Safra method of `pool`; tokens are checked by `verifier`
    /// and request messages larger than `max_message_size` are refused.
    ///
    /// # Errors
    /// A pattern in the contracts that does not compile.
    pub fn new(
        pool: &DescriptorPool,
        verifier: Arc<TokenVerifier>,
        max_message_size: usize,
    ) -> Result<Self, BadPattern> {
        Ok(Self::with_gate(
            Arc::new(Gate::new(pool, verifier)?),
            max_message_size,
        ))
    }

    /// The stage for a gate already built (the edge shares its own).
    #[must_use]
    pub fn with_gate(gate: Arc<Gate>, max_message_size: usize) -> Self {
        Self {
            state: Arc::new(ContractState {
                gate,
                max_message_size,
                body_deadline: BODY_READ_DEADLINE,
            }),
        }
    }

    /// How long a request's body may take to arrive (10 s unless set):
    /// past it the call is DEADLINE_EXCEEDED and what arrived is dropped.
    #[must_use]
    pub fn with_body_deadline(self, deadline: Duration) -> Self {
        Self {
            state: Arc::new(ContractState {
                gate: self.state.gate.clone(),
                max_message_size: self.state.max_message_size,
                body_deadline: deadline,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ContractLayer {
    type Service = ContractService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContractService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`ContractLayer`] produces.
#[derive(Debug, Clone)]
pub struct ContractService<S> {
    inner: S,
    state: Arc<ContractState>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for ContractService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Health, reflection and unknown methods (UNIMPLEMENTED) pass as they are.
        let Some(policy) = self.state.gate.policy(request.uri().path()).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            match state.admit(request, &policy).await {
                Ok(request) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl ContractState {
    /// Authorizes, then reads and validates the body; the request comes
    /// back ready for the handler, with the signed-in user in its
    /// extensions and its messages uncompressed.
    async fn admit(
        &self,
        request: http::Request<Body>,
        policy: &MethodPolicy,
    ) -> Result<http::Request<Body>, Status> {
        let encoding = Encoding::of(request.headers())?;
        let (parts, body) = request.into_parts();
        let version = parts.version;
        // Who may call is known from the headers: a refused call costs no
        // body. An HTTP/1.1 grpc-web client still writing its body would see
        // its connection closed instead of the status, so what it sends is
        // read (never kept) within the deadline first.
        let (mut parts, ()) = match self
            .authorize(http::Request::from_parts(parts, ()), policy)
            .await
        {
            Ok(request) => request.into_parts(),
            Err(status) => {
                if version < http::Version::HTTP_2 {
                    super::discard(body, self.max_message_size, self.body_deadline).await;
                }
                return Err(status);
            }
        };
        if policy.method.is_client_streaming() {
            // No Safra contract streams requests; such a method's messages
            // are left to the handler rather than buffered without end.
            return Ok(http::Request::from_parts(parts, body));
        }
        let bytes = self.read(body).await?;
        let caller = parts
            .extensions
            .get::<PeerInfo>()
            .and_then(|peer| peer.service.as_deref());
        let messages = self.validate(&bytes, encoding, policy, caller)?;
        let body = match messages {
            // Sent uncompressed: handed on as it came.
            None => bytes,
            Some(messages) => {
                parts.headers.remove("grpc-encoding");
                // The length the client declared was the compressed one.
                parts.headers.remove(http::header::CONTENT_LENGTH);
                reframe(&messages)
            }
        };
        Ok(http::Request::from_parts(parts, Body::new(Full::new(body))))
    }

    /// The whole body, within the size limit and the deadline.
    async fn read(&self, body: Body) -> Result<Bytes, Status> {
        let collected = tokio::time::timeout(
            self.body_deadline,
            Limited::new(body, self.max_message_size).collect(),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the request body did not arrive within {} s",
                self.body_deadline.as_secs()
            ))
        })?;
        collected
            .map(http_body_util::Collected::to_bytes)
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    return self.too_large();
                }
                match super::budget_exceeded(&*error) {
                    Some(exceeded) => status::with_reason(
                        tonic::Code::ResourceExhausted,
                        ErrorReason::RateLimited,
                        exceeded.to_string(),
                        Vec::new(),
                    ),
                    None => Status::cancelled("the request body could not be read"),
                }
            })
    }

    fn too_large(&self) -> Status {
        status::with_reason(
            tonic::Code::ResourceExhausted,
            ErrorReason::RequestTooLarge,
            format!("the request is larger than {} bytes", self.max_message_size),
            Vec::new(),
        )
    }

    /// Authenticates the bearer token and applies the method's
    /// authorization; the request comes back with the user in its
    /// extensions.
    async fn authorize<B>(
        &self,
        mut request: http::Request<B>,
        policy: &MethodPolicy,
    ) -> Result<http::Request<B>, Status> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().map(str::to_owned).unwrap_or_default());
        let user = self.gate.authenticate(header.as_deref()).await?;
        let caller = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.service.clone());
        authorize(&policy.authorization, user.as_ref(), caller.as_deref())?;
        if let Some(user) = user {
            request.extensions_mut().insert(user);
        }
        Ok(request)
    }

    /// Decodes each message of the body (gunzipped first, when it came
    /// compressed), applies the caller's scope (if the method narrows it)
    /// and the field rules. The messages come back when any was
    /// compressed, for the body to be made again without compression.
    fn validate(
        &self,
        body: &Bytes,
        encoding: Encoding,
        policy: &MethodPolicy,
        caller: Option<&str>,
    ) -> Result<Option<Vec<Bytes>>, Status> {
        let mut rest = body.clone();
        let mut messages = Vec::new();
        let mut any_compressed = false;
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err(malformed());
            }
            let header = rest.split_to(5);
            let compressed = header[0] != 0;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if rest.len() < length {
                return Err(malformed());
            }
            let framed = rest.split_to(length);
            let message = if compressed {
                any_compressed = true;
                encoding.decompress(&framed, self.max_message_size, || self.too_large())?
            } else {
                framed
            };
            let dynamic = DynamicMessage::decode(policy.input.clone(), message.clone())
                .map_err(|_| malformed())?;
            authorize_scope(&policy.authorization, caller, &dynamic)?;
            self.gate.validate(&dynamic)?;
            messages.push(message);
        }
        Ok(any_compressed.then_some(messages))
    }
}

/// How the client compressed its messages (`grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// The request's encoding; one the mesh does not speak is UNIMPLEMENTED,
    /// as the gRPC protocol asks.
    fn of(headers: &http::HeaderMap) -> Result<Self, Status> {
        match headers
            .get("grpc-encoding")
            .map(http::HeaderValue::as_bytes)
        {
            None | Some(b"identity") => Ok(Self::Identity),
            Some(b"gzip") => Ok(Self::Gzip),
            Some(other) => Err(Status::unimplemented(format!(
                "grpc-encoding '{}' is not accepted; send gzip or identity",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// The message `framed` held, at most `limit` bytes once decompressed.
    fn decompress(
        self,
        framed: &[u8],
        limit: usize,
        too_large: impl FnOnce() -> Status,
    ) -> Result<Bytes, Status> {
        if self == Self::Identity {
            return Err(status::with_reason(
                tonic::Code::InvalidArgument,
                ErrorReason::MalformedRequest,
                "a message is marked compressed but the request names no grpc-encoding",
                Vec::new(),
            ));
        }
        let mut message = Vec::new();
        // One byte past the limit tells a message at the limit from a bomb.
        let read = flate2::read::GzDecoder::new(framed)
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut message)
            .map_err(|_| malformed())?;
        if read > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(message))
    }
}

/// `messages` framed again as uncompressed gRPC messages.
fn reframe(messages: &[Bytes]) -> Bytes {
    let mut body = bytes::BytesMut::with_capacity(messages.iter().map(|m| m.len() + 5).sum());
    for message in messages {
        body.extend_from_slice(&[0]);
        // Each message is within the size limit, far below 4 GiB.
        body.extend_from_slice(
            &u32::try_from(message.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        body.extend_from_slice(message);
    }
    body.freeze()
}

fn malformed() -> Status {
    status::with_reason(
        tonic::Code::InvalidArgument,
        ErrorReason::MalformedRequest,
        "the request message cannot be decoded",
        Vec::new(),
    )
}
