//! The key set the accounts service publishes (GetJwks), fetched over a
//! mesh channel: the key source every service but accounts verifies tokens
//! with. It lives with the client, which it uses; `auth` knows only the
//! `KeySource` it implements.

use std::time::Duration;

use super::MeshChannel;
use crate::identity::auth::{AuthError, KeySource, KeysFuture, PublicKey};

/// The key set as the accounts service publishes it (GetJwks), fetched over
/// a mesh channel: what every other service verifies tokens with.
#[derive(Debug, Clone)]
pub struct AccountsJwks {
    channel: MeshChannel,
}

impl AccountsJwks {
    /// How long one fetch may take.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// Fetches through `channel`, a mesh channel to accounts.
    #[must_use]
    pub fn new(channel: MeshChannel) -> Self {
        Self { channel }
    }
}

impl KeySource for AccountsJwks {
    fn fetch(&self) -> KeysFuture<'_> {
        use crate::accounts::v1::{GetJwksRequest, accounts_service_client::AccountsServiceClient};

        let mut client = AccountsServiceClient::new(self.channel.clone());
        Box::pin(async move {
            let mut request = tonic::Request::new(GetJwksRequest {});
            request.set_timeout(Self::TIMEOUT);
            let set = client
                .get_jwks(request)
                .await
                .map_err(|status| {
                    AuthError::KeysUnavailable(format!("{:?}: {}", status.code(), status.message()))
                })?
                .into_inner();
            Ok(set
                .keys
                .into_iter()
                .filter(|key| key.kty == "OKP" && key.crv == "Ed25519")
                .filter(|key| key.alg.is_empty() || key.alg == "EdDSA")
                .map(|key| PublicKey {
                    kid: key.kid,
                    x: key.x,
                })
                .collect())
        })
    }
}
