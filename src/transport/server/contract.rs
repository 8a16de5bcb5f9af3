//! The contract stage of a mesh server: before any handler runs, it reads the
//! method's declarations from the descriptor set and enforces them — who may
//! call (the authorization option: public, signed-in, roles, internal with
//! allowed caller services) and what they may send (the field rules, every
//! violation reported). Handlers never repeat either.
//!
//! A tower layer over tonic's routes: the request's single protobuf message
//! (unary and server-streaming methods) is buffered up to the size limit,
//! validated as a `DynamicMessage` and handed on unchanged.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
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

/// Shared by every connection's copy of the service.
#[derive(Debug)]
struct ContractState {
    gate: Arc<Gate>,
    max_message_size: usize,
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
    /// Authorizes, then validates; the request comes back ready for the
    /// handler, with the signed-in user in its extensions.
    async fn admit(
        &self,
        request: http::Request<Body>,
        policy: &MethodPolicy,
    ) -> Result<http::Request<Body>, Status> {
        if policy.method.is_client_streaming() {
            // No Safra contract streams requests; such a method's messages
            // are left to the handler rather than buffered without end.
            return self.authorize(request, policy).await;
        }
        // The message is read before anything is refused: an HTTP/1.1
        // grpc-web client still writing it would otherwise see its
        // connection closed instead of the status.
        let (parts, body) = request.into_parts();
        let bytes = Limited::new(body, self.max_message_size)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    status::with_reason(
                        tonic::Code::ResourceExhausted,
                        ErrorReason::RequestTooLarge,
                        format!("the request is larger than {} bytes", self.max_message_size),
                        Vec::new(),
                    )
                } else {
                    Status::cancelled("the request body could not be read")
                }
            })?
            .to_bytes();
        let (parts, ()) = self
            .authorize(http::Request::from_parts(parts, ()), policy)
            .await?
            .into_parts();
        let caller = parts
            .extensions
            .get::<PeerInfo>()
            .and_then(|peer| peer.service.as_deref());
        self.validate(&bytes, policy, caller)?;
        Ok(http::Request::from_parts(
            parts,
            Body::new(Full::new(bytes)),
        ))
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

    /// Decodes each message of the body, applies the caller's scope (if
    /// the method narrows it) and the field rules.
    fn validate(
        &self,
        body: &Bytes,
        policy: &MethodPolicy,
        caller: Option<&str>,
    ) -> Result<(), Status> {
        let mut rest: &[u8] = body;
        while !rest.is_empty() {
            let Some((&[compressed, a, b, c, d], after)) = rest.split_first_chunk::<5>() else {
                return Err(malformed());
            };
            if compressed != 0 {
                return Err(Status::unimplemented(
                    "compressed requests are not accepted",
                ));
            }
            let length = u32::from_be_bytes([a, b, c, d]) as usize;
            if after.len() < length {
                return Err(malformed());
            }
            let (message, tail) = after.split_at(length);
            let dynamic =
                DynamicMessage::decode(policy.input.clone(), message).map_err(|_| malformed())?;
            authorize_scope(&policy.authorization, caller, &dynamic)?;
            self.gate.validate(&dynamic)?;
            rest = tail;
        }
        Ok(())
    }
}

fn malformed() -> Status {
    status::with_reason(
        tonic::Code::InvalidArgument,
        ErrorReason::MalformedRequest,
        "the request message cannot be decoded",
        Vec::new(),
    )
}
