//! PostgreSQL over TLS (rustls), as managed databases ask for it: the
//! libpq `sslmode` and `sslrootcert` parameters of a database URL.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | absent, `disable` | no | — |
//! | `allow`, `prefer` | if the server offers it | not checked |
//! | `require` | yes | checked against `sslrootcert` when given (as libpq does), else not |
//! | `verify-ca` | yes | chains to `sslrootcert` |
//! | `verify-full` | yes | chains to `sslrootcert` and names the host |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no
//! root certificates: [`Connector::from_url`] reads the two parameters,
//! hands tokio-postgres a URL it understands, and brings the rustls
//! configuration that does the checking.

use std::{
    future::Future,
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// How a database URL asks to be reached.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The URL without `sslrootcert`, its `sslmode` one tokio-postgres knows.
    url: String,
    /// The TLS configuration, when TLS may be used at all.
    tls: Option<Arc<ClientConfig>>,
}

/// What is wrong with a URL's TLS parameters.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    /// `sslmode` names no mode.
    #[error("sslmode={0} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    Mode(String),
    /// A verifying mode without the CA to verify with.
    #[error("sslmode={0} needs sslrootcert=<path to the CA certificates (PEM)>")]
    NoRoot(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("sslrootcert {path}: {problem}")]
    Root {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

impl Connector {
    /// Reads `url`'s `sslmode` and `sslrootcert`.
    ///
    /// # Errors
    /// An unknown mode, a verifying mode without a CA, an unreadable CA.
    pub fn from_url(url: &str) -> Result<Self, TlsSettingsError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = None;
        let mut root = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "sslmode" => mode = Some(value),
                "sslrootcert" => root = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        let Some(mode) = mode else {
            return Ok(Self {
                url: url.to_owned(),
                tls: None,
            });
        };
        let (driver_mode, check) = match mode.as_str() {
            "disable" => ("disable", None),
            "allow" | "prefer" => ("prefer", Some(Check::Nothing)),
            "require" if root.is_some() => ("require", Some(Check::Chain)),
            "require" => ("require", Some(Check::Nothing)),
            "verify-ca" => ("require", Some(Check::Chain)),
            "verify-full" => ("require", Some(Check::ChainAndName)),
            other => return Err(TlsSettingsError::Mode(other.to_owned())),
        };
        kept.push(match driver_mode {
            "disable" => "sslmode=disable",
            "prefer" => "sslmode=prefer",
            _ => "sslmode=require",
        });
        let url = format!("{base}?{}", kept.join("&"));
        let tls = match check {
            None => None,
            Some(Check::Nothing) => Some(client_config(Arc::new(AnyCertificate(provider())))?),
            Some(check) => {
                let path = root.ok_or_else(|| TlsSettingsError::NoRoot(mode.clone()))?;
                let verifier = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(&path)?),
                    Arc::new(provider()),
                )
                .build()
                .map_err(|error| TlsSettingsError::Rustls(error.to_string()))?;
                if matches!(check, Check::ChainAndName) {
                    Some(client_config(verifier)?)
                } else {
                    Some(client_config(Arc::new(AnyName(verifier)))?)
                }
            }
        };
        Ok(Self { url, tls })
    }

    /// The URL to hand tokio-postgres.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether connections may use TLS.
    #[must_use]
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The tokio-postgres connector, when TLS may be used.
    #[must_use]
    pub fn make_tls(&self) -> Option<MakeRustls> {
        self.tls.clone().map(MakeRustls)
    }
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, TlsSettingsError> {
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSettingsError::Rustls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn roots(path: &PathBuf) -> Result<RootCertStore, TlsSettingsError> {
    let failed = |problem: String| TlsSettingsError::Root {
        path: path.clone(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|error| failed(error.to_string()))?;
    let mut store = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| failed(error.to_string()))?;
        store
            .add(certificate)
            .map_err(|error| failed(error.to_string()))?;
    }
    if store.is_empty() {
        return Err(failed("no certificate in the file".into()));
    }
    Ok(store)
}

/// `require` and `prefer` without a CA: encryption without checking who
/// answers (libpq's meaning of those modes). The handshake's signatures
/// are still checked.
#[derive(Debug)]
struct AnyCertificate(CryptoProvider);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the host name is not
/// compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS connector over rustls.
#[derive(Debug, Clone)]
pub struct MakeRustls(Arc<ClientConfig>);

impl MakeTlsConnect<tokio_postgres::Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One connection's TLS handshake.
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<tokio_postgres::Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: tokio_postgres::Socket) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(|stream| RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS connection to PostgreSQL.
#[derive(Debug)]
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<tokio_postgres::Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM then authenticates without channel binding (libpq's
        // `channel_binding=prefer` does the same when none is offered).
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sslmode_the_url_is_untouched_and_plain() {
        let connector = Connector::from_url("postgres://u@h/db?application_name=x").expect("ok");
        assert_eq!(connector.url(), "postgres://u@h/db?application_name=x");
        assert!(!connector.uses_tls());
    }

    #[test]
    fn modes_map_to_what_the_driver_knows() {
        let require = Connector::from_url("postgres://u@h/db?sslmode=require&x=1").expect("ok");
        assert_eq!(require.url(), "postgres://u@h/db?x=1&sslmode=require");
        assert!(require.uses_tls());
        let prefer = Connector::from_url("postgres://u@h/db?sslmode=prefer").expect("ok");
        assert_eq!(prefer.url(), "postgres://u@h/db?sslmode=prefer");
        let disable = Connector::from_url("postgres://u@h/db?sslmode=disable").expect("ok");
        assert!(!disable.uses_tls());
    }

    #[test]
    fn a_verifying_mode_needs_a_readable_ca() {
        assert!(matches!(
            Connector::from_url("postgres://h/db?sslmode=verify-full"),
            Err(TlsSettingsError::NoRoot(_))
        ));
        assert!(matches!(
            Connector::from_url("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem"),
            Err(TlsSettingsError::Root { .. })
        ));
        assert!(matches!(
            Connector::from_url("postgres://h/db?sslmode=sometimes"),
            Err(TlsSettingsError::Mode(_))
        ));
    }
}
