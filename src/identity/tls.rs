//! Mutual TLS between the mesh's processes, on rustls with the ring provider.
//!
//! Every process holds one [`MeshTls`]: its certificate and key and the CA
//! bundle, re-read from disk when the files change (rotation without a
//! restart). Servers require a client certificate chaining to the CA and
//! unexpired; clients check the server's chain and its SPIFFE id
//! (`spiffe://safra.local/svc/<name>`) rather than a DNS name, so pod IPs
//! work. The caller's service identity travels with each accepted connection
//! ([`PeerInfo`]) into the request extensions, where the authorization layer
//! and handlers read it.

use std::{
    collections::hash_map::DefaultHasher,
    fmt, fs,
    hash::{Hash, Hasher},
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::coalesce::Coalesced;

/// The trust domain of every SPIFFE id in the mesh.
pub const TRUST_DOMAIN: &str = "safra.local";

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `spiffe://safra.local/svc/<name>`.
#[must_use]
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/svc/{name}")
}

/// The service name in a Safra SPIFFE id, if it is one.
#[must_use]
pub fn service_of_spiffe_id(id: &str) -> Option<&str> {
    id.strip_prefix("spiffe://")?
        .strip_prefix(TRUST_DOMAIN)?
        .strip_prefix("/svc/")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The URI SANs of a DER certificate.
#[must_use]
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// The mesh service a certificate belongs to, from its SPIFFE URI SAN.
#[must_use]
pub fn service_identity(der: &[u8]) -> Option<String> {
    uri_sans(der)
        .iter()
        .find_map(|uri| service_of_spiffe_id(uri).map(str::to_owned))
}

/// Installs ring as the process-wide rustls provider. Call once at start;
/// a second call is harmless.
pub fn install_crypto_provider() {
    drop(rustls::crypto::ring::default_provider().install_default());
}

/// The three files a process needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Its certificate (`SAFRA_TLS_CERT`, default `<certs>/<name>.pem`).
    pub cert: PathBuf,
    /// Its private key (`SAFRA_TLS_KEY`, default `<certs>/<name>.key`).
    pub key: PathBuf,
    /// The CA bundle it trusts (`SAFRA_TLS_CA`, default `<certs>/ca.pem`).
    pub ca: PathBuf,
}

impl TlsPaths {
    /// The layout of `safra certs` in `dir` for the process `name`.
    #[must_use]
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.pem"),
        }
    }
}

/// What can go wrong loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: io::Error,
    },
    /// A file holds no usable PEM object.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One consistent set of certificate, key and trust roots.
struct Material {
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    identity: Option<String>,
    fingerprint: u64,
}

/// A process's TLS identity and trust, reloadable while connections use it.
pub struct MeshTls {
    paths: TlsPaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
}

impl fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshTls")
            .field("paths", &self.paths)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|reason| TlsError::Read {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Parse {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl Material {
    fn load(paths: &TlsPaths, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let cert_pem = read(&paths.cert)?;
        let key_pem = read(&paths.key)?;
        let ca_pem = read(&paths.ca)?;
        let mut hasher = DefaultHasher::new();
        (&cert_pem, &key_pem, &ca_pem).hash(&mut hasher);

        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| parse_error(&paths.cert, error))?;
        let Some(leaf) = chain.first() else {
            return Err(parse_error(&paths.cert, "no certificate in the file"));
        };
        let identity = service_identity(leaf);
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|error| parse_error(&paths.key, error))?;
        let signing_key = provider
            .key_provider
            .load_private_key(private_key)
            .map_err(|error| parse_error(&paths.key, error))?;
        let key = Arc::new(CertifiedKey::new(chain, signing_key));
        key.keys_match().map_err(|error| {
            parse_error(
                &paths.key,
                format!("does not match the certificate: {error}"),
            )
        })?;

        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&ca_pem) {
            let ca = ca.map_err(|error| parse_error(&paths.ca, error))?;
            roots
                .add(ca)
                .map_err(|error| parse_error(&paths.ca, error))?;
        }
        if roots.is_empty() {
            return Err(parse_error(&paths.ca, "no CA certificate in the file"));
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|error| parse_error(&paths.ca, error))?;
        Ok(Self {
            key,
            roots,
            client_verifier,
            identity,
            fingerprint: hasher.finish(),
        })
    }
}

impl MeshTls {
    /// Loads the material at `paths`.
    ///
    /// # Errors
    /// A missing, unreadable or inconsistent file, named in the error.
    pub fn load(paths: TlsPaths) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = Material::load(&paths, &provider)?;
        Ok(Arc::new(Self {
            paths,
            provider,
            current: RwLock::new(Arc::new(material)),
        }))
    }

    /// The service name in this process's own certificate.
    #[must_use]
    pub fn identity(&self) -> Option<String> {
        self.material().identity.clone()
    }

    /// The files this material comes from.
    #[must_use]
    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    fn material(&self) -> Arc<Material> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files and switches to them if they changed. New
    /// handshakes use the new material; open connections keep theirs.
    /// Returns whether anything changed.
    ///
    /// # Errors
    /// The new files are unusable; the old material stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let material = Material::load(&self.paths, &self.provider)?;
        if material.fingerprint == self.material().fingerprint {
            return Ok(false);
        }
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(material),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(material),
        }
        Ok(true)
    }

    /// Checks the files every `period` and reloads them when they change,
    /// for as long as this value lives.
    pub fn spawn_reloader(self: &Arc<Self>, period: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = weak.upgrade() else { break };
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.paths.cert.display(), "TLS certificates reloaded");
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "TLS certificates changed but cannot be used; keeping the previous ones");
                    }
                }
            }
        });
    }

    /// A server configuration that demands a client certificate chaining to
    /// the CA, and presents this process's certificate. HTTP/2 only.
    ///
    /// # Errors
    /// The provider supports none of the safe protocol versions.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(ReloadingClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(ReloadingCertResolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration that presents this process's certificate and
    /// accepts only a server whose certificate chains to the CA and carries
    /// the SPIFFE id of `expected_service`. HTTP/2 only.
    ///
    /// # Errors
    /// The provider supports none of the safe protocol versions.
    pub fn client_config(
        self: &Arc<Self>,
        expected_service: &str,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(SpiffeServerVerifier {
            tls: self.clone(),
            expected: spiffe_id(expected_service),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(ReloadingCertResolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

/// Presents the current certificate, as server or as client.
#[derive(Debug)]
struct ReloadingCertResolver(Arc<MeshTls>);

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }
}

impl ResolvesClientCert for ReloadingCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the current CA bundle.
#[derive(Debug)]
struct ReloadingClientVerifier(Arc<MeshTls>);

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; each mesh process holds exactly one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .material()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.0.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.0.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms().supported_schemes()
    }
}

/// Checks a server's chain against the CA and its SPIFFE id, not its DNS name.
#[derive(Debug)]
struct SpiffeServerVerifier {
    tls: Arc<MeshTls>,
    expected: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.tls.material().roots,
            intermediates,
            now,
            self.tls.algorithms().all,
        )?;
        if uri_sans(end_entity).contains(&self.expected) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongPeer(
                    self.expected.clone(),
                )))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.tls.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.tls.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.tls.algorithms().supported_schemes()
    }
}

/// The server's certificate does not carry the SPIFFE id the caller expects.
#[derive(Debug, thiserror::Error)]
#[error("the peer is not {0}")]
struct WrongPeer(String);

/// Who is on the other end of an accepted connection; tonic puts it in
/// every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The caller's socket address.
    pub remote_addr: Option<SocketAddr>,
    /// The caller's mesh service name, from its certificate's SPIFFE id
    /// (`None` for a certificate of the CA without one).
    pub service: Option<String>,
}

impl PeerInfo {
    /// The peer of a request served through [`MeshStream`]s.
    #[must_use]
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

/// An accepted, authenticated TLS connection.
#[derive(Debug)]
pub struct MeshStream {
    inner: Coalesced<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    peer: PeerInfo,
}

impl MeshStream {
    /// Wraps a completed handshake, reading the peer's identity once.
    #[must_use]
    pub fn new(inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Self {
        let (tcp, session) = inner.get_ref();
        let service = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| service_identity(leaf));
        let peer = PeerInfo {
            remote_addr: tcp.peer_addr().ok(),
            service,
        };
        Self {
            inner: Coalesced::new(inner),
            peer,
        }
    }

    /// Who is on the other end.
    #[must_use]
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(feature = "server")]
impl tonic::transport::server::Connected for MeshStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes
/// concurrently (a slow or hostile client cannot stall the accept loop),
/// yielding only authenticated connections. Stops when the receiver is
/// dropped.
#[must_use]
pub fn accept(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
) -> tokio::sync::mpsc::Receiver<MeshStream> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (sender, receiver) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, remote)) => {
                    tcp.set_nodelay(true).ok();
                    let acceptor = acceptor.clone();
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                sender.send(MeshStream::new(stream)).await.ok();
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%remote, %error, "TLS handshake refused");
                            }
                            Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    receiver
}
