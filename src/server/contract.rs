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
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::{Status, body::Body};

use crate::{
    auth::{AuthError, AuthenticatedUser, TokenVerifier, bearer},
    contract,
    options::v1::{Access, Authorization},
    status,
    tls::PeerInfo,
    r#type::v1::ErrorReason,
    validate::{BadPattern, Validator},
};

/// What a method declares, read once at start-up.
#[derive(Debug, Clone)]
struct MethodPolicy {
    authorization: Authorization,
    input: MessageDescriptor,
    client_streaming: bool,
}

/// Shared by every connection's copy of the service.
#[derive(Debug)]
struct ContractState {
    methods: HashMap<String, Arc<MethodPolicy>>,
    validator: Validator,
    verifier: Arc<TokenVerifier>,
    max_message_size: usize,
}

/// The tower layer enforcing the contract's authorization and field rules.
#[derive(Debug, Clone)]
pub struct ContractLayer {
    state: Arc<ContractState>,
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
        let methods = contract::safra_methods(pool)
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                let policy = Arc::new(MethodPolicy {
                    // A method without a declaration is refused to everyone:
                    // the contract lint keeps that from shipping.
                    authorization: contract::authorization(&method).unwrap_or_default(),
                    input: method.input(),
                    client_streaming: method.is_client_streaming(),
                });
                (path, policy)
            })
            .collect();
        Ok(Self {
            state: Arc::new(ContractState {
                methods,
                validator: Validator::new(pool)?,
                verifier,
                max_message_size,
            }),
        })
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
        let Some(policy) = self.state.methods.get(request.uri().path()).cloned() else {
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
        mut request: http::Request<Body>,
        policy: &MethodPolicy,
    ) -> Result<http::Request<Body>, Status> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().map(str::to_owned).unwrap_or_default());
        let user = self.authenticate(header).await?;
        let caller = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.service.clone());
        authorize(&policy.authorization, user.as_ref(), caller.as_deref())?;
        if let Some(user) = user {
            request.extensions_mut().insert(user);
        }
        if policy.client_streaming {
            // No Safra contract streams requests; such a method's messages
            // are left to the handler rather than buffered without end.
            return Ok(request);
        }
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
        self.validate(&bytes, &policy.input)?;
        Ok(http::Request::from_parts(
            parts,
            Body::new(Full::new(bytes)),
        ))
    }

    /// The user of a present bearer token; a token that is present is
    /// verified even on public methods.
    async fn authenticate(
        &self,
        header: Option<String>,
    ) -> Result<Option<AuthenticatedUser>, Status> {
        let Some(value) = header else {
            return Ok(None);
        };
        let token = bearer(&value).ok_or_else(|| {
            status::unauthenticated(
                ErrorReason::TokenInvalid,
                "the authorization header must be 'Bearer <token>'",
            )
        })?;
        let claims = self
            .verifier
            .verify(token)
            .await
            .map_err(|error| match error {
                AuthError::KeysUnavailable(_) => status::with_reason(
                    tonic::Code::Unavailable,
                    ErrorReason::Unavailable,
                    "the signing keys cannot be fetched right now",
                    Vec::new(),
                ),
                other => status::unauthenticated(other.reason(), other.to_string()),
            })?;
        Ok(Some(AuthenticatedUser {
            user_id: claims.sub,
            role: claims.role,
            token: token.to_owned(),
            expires_at: claims.exp,
        }))
    }

    fn validate(&self, body: &Bytes, input: &MessageDescriptor) -> Result<(), Status> {
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
                DynamicMessage::decode(input.clone(), message).map_err(|_| malformed())?;
            let violations = self.validator.validate(&dynamic);
            if !violations.is_empty() {
                return Err(status::invalid_argument(&violations));
            }
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

/// Applies a method's authorization declaration to a caller.
fn authorize(
    authorization: &Authorization,
    user: Option<&AuthenticatedUser>,
    caller_service: Option<&str>,
) -> Result<(), Status> {
    let signed_in = || {
        user.ok_or_else(|| {
            status::unauthenticated(
                ErrorReason::TokenMissing,
                "this method needs an access token",
            )
        })
    };
    match authorization.access() {
        Access::Public => Ok(()),
        Access::SignedIn => signed_in().map(|_| ()),
        Access::Roles => {
            let user = signed_in()?;
            if authorization.roles.contains(&user.role) {
                Ok(())
            } else {
                Err(status::permission_denied(
                    ErrorReason::RoleNotAllowed,
                    format!("the role '{}' may not call this method", user.role),
                ))
            }
        }
        Access::Internal => match caller_service {
            Some(caller)
                if authorization
                    .callers
                    .iter()
                    .any(|allowed| allowed == caller) =>
            {
                Ok(())
            }
            Some(caller) => Err(status::permission_denied(
                ErrorReason::CallerNotAllowed,
                format!("the service '{caller}' may not call this method"),
            )),
            None => Err(status::permission_denied(
                ErrorReason::CallerNotAllowed,
                "this method is internal to the mesh",
            )),
        },
        Access::Unspecified => Err(status::permission_denied(
            ErrorReason::CallerNotAllowed,
            "this method declares no authorization",
        )),
    }
}
