//! The contract's gate, shared by the services' contract stage and the edge
//! gateway so that both enforce one declaration in one way: who may call a
//! method (its authorization option: public, signed-in, roles, internal
//! with allowed caller services) and whether a request message keeps the
//! field rules (every violation reported).

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::Status;

use crate::{
    contract,
    contract::status,
    contract::validate::{BadPattern, Validator},
    identity::auth::{AuthError, AuthenticatedUser, TokenVerifier, bearer},
    options::v1::{Access, Authorization},
    r#type::v1::ErrorReason,
};

/// What a method declares, read once at start-up.
#[derive(Debug, Clone)]
pub struct MethodPolicy {
    /// The method itself.
    pub method: MethodDescriptor,
    /// Who may call it.
    pub authorization: Authorization,
    /// Its request message.
    pub input: MessageDescriptor,
}

impl MethodPolicy {
    /// Whether only mesh services may call it (never exposed at the edge).
    #[must_use]
    pub fn is_internal(&self) -> bool {
        self.authorization.access() == Access::Internal
    }
}

/// Every Safra method's declarations, the validator and the token verifier.
#[derive(Debug)]
pub struct Gate {
    methods: HashMap<String, Arc<MethodPolicy>>,
    validator: Validator,
    verifier: Arc<TokenVerifier>,
}

impl Gate {
    /// Reads every Safra method of `pool`; tokens are checked by `verifier`.
    ///
    /// # Errors
    /// A pattern in the contracts that does not compile.
    pub fn new(pool: &DescriptorPool, verifier: Arc<TokenVerifier>) -> Result<Self, BadPattern> {
        let methods = contract::safra_methods(pool)
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                let policy = Arc::new(MethodPolicy {
                    // A method without a declaration is refused to everyone:
                    // the contract lint keeps that from shipping.
                    authorization: contract::authorization(&method).unwrap_or_default(),
                    input: method.input(),
                    method,
                });
                (path, policy)
            })
            .collect();
        Ok(Self {
            methods,
            validator: Validator::new(pool)?,
            verifier,
        })
    }

    /// The policy of the method at gRPC path `/<package>.<Service>/<Method>`.
    #[must_use]
    pub fn policy(&self, path: &str) -> Option<&Arc<MethodPolicy>> {
        self.methods.get(path)
    }

    /// Every method's policy, by gRPC path.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &Arc<MethodPolicy>)> {
        self.methods
            .iter()
            .map(|(path, policy)| (path.as_str(), policy))
    }

    /// The user of an `authorization` header value; a token that is present
    /// is verified even on public methods.
    ///
    /// # Errors
    /// UNAUTHENTICATED for a malformed header or a bad token; UNAVAILABLE
    /// when the signing keys cannot be fetched.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
    ) -> Result<Option<AuthenticatedUser>, Status> {
        let Some(value) = header else {
            return Ok(None);
        };
        let token = bearer(value).ok_or_else(|| {
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

    /// The field rules of the request's message type.
    ///
    /// # Errors
    /// INVALID_ARGUMENT with a BadRequest listing every violated field.
    pub fn validate(&self, message: &DynamicMessage) -> Result<(), Status> {
        let violations = self.validator.validate(message);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(status::invalid_argument(&violations))
        }
    }
}

/// Applies a method's caller scopes to a decoded request: a mesh caller
/// with a scope may send only the values it lists in the scoped field.
///
/// # Errors
/// PERMISSION_DENIED, CALLER_NOT_ALLOWED, naming the field and value.
pub fn authorize_scope(
    authorization: &Authorization,
    caller_service: Option<&str>,
    message: &DynamicMessage,
) -> Result<(), Status> {
    let Some(caller) = caller_service else {
        return Ok(());
    };
    for scope in authorization
        .caller_scopes
        .iter()
        .filter(|scope| scope.caller == caller)
    {
        let Some(field) =
            prost_reflect::ReflectMessage::descriptor(message).get_field_by_name(&scope.field)
        else {
            continue;
        };
        let number = message.get_field(&field).as_enum_number().unwrap_or(0);
        let name = match field.kind() {
            prost_reflect::Kind::Enum(enumeration) => enumeration
                .get_value(number)
                .map_or_else(|| number.to_string(), |value| value.name().to_owned()),
            _ => number.to_string(),
        };
        if !scope.values.contains(&name) {
            return Err(status::permission_denied(
                ErrorReason::CallerNotAllowed,
                format!(
                    "the service '{caller}' may not call this method with {} = {name}",
                    scope.field
                ),
            ));
        }
    }
    Ok(())
}

/// Applies a method's authorization declaration to a caller: the signed-in
/// user, if any, and the calling mesh service, if the call came over mTLS.
///
/// # Errors
/// UNAUTHENTICATED without a needed token; PERMISSION_DENIED for a role or
/// a caller the declaration does not allow.
pub fn authorize(
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
