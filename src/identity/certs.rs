//! The development certificate authority and the leaf certificates of the
//! mesh (`safra certs init|issue`, `safra up`, tests).
//!
//! Every key is ECDSA P-256 (rustls is fastest with it). A leaf names its
//! owner three ways: a URI SAN `spiffe://safra.local/svc/<name>`, which mesh
//! peers check, and DNS/IP SANs (`<name>`, `localhost`, `127.0.0.1`) so that
//! standard clients (grpcurl, grpcio) can verify it too. Leaves carry both
//! server and client authentication usages, since every service is both.
//! In Kubernetes cert-manager issues the same shape of certificate.

use std::{
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

use crate::identity::tls::spiffe_id;

/// How long the development CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long a development leaf is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Every process that needs a certificate: the five services and the gateway.
pub const MESH_NAMES: [&str; 6] = crate::mesh::PROCESS_NAMES;

/// What can go wrong making certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// rcgen refused the parameters or a stored CA is unusable.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name that cannot be a SPIFFE path segment and DNS label.
    #[error("'{0}' is not a valid name (lower-case letters, digits and '-', at most 63)")]
    InvalidName(String),
}

/// Where the CA and leaves live (`$SAFRA_HOME/certs`).
#[derive(Debug, Clone)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// A certificate folder at `dir` (created when something is written).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `ca.pem`.
    #[must_use]
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca.key`.
    #[must_use]
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `<name>.pem` (the leaf only).
    #[must_use]
    pub fn leaf_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `<name>.key` (PKCS#8, mode 0600).
    #[must_use]
    pub fn leaf_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Makes the CA if it is missing, then a leaf for every mesh process
    /// that lacks one. Returns the names of what it created.
    ///
    /// # Errors
    /// [`CertError`].
    pub fn init(&self) -> Result<Vec<String>, CertError> {
        let mut created = Vec::new();
        if !self.ca_cert().exists() || !self.ca_key().exists() {
            self.create_ca(CA_VALIDITY)?;
            created.push("ca".to_owned());
        }
        for name in MESH_NAMES {
            if !self.leaf_cert(name).exists() || !self.leaf_key(name).exists() {
                self.issue(name, LEAF_VALIDITY)?;
                created.push(name.to_owned());
            }
        }
        Ok(created)
    }

    /// Makes a new CA, replacing any previous one.
    ///
    /// # Errors
    /// [`CertError`].
    pub fn create_ca(&self, validity: Duration) -> Result<(), CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Safra development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + validity;
        let cert = params.self_signed(&key)?;
        self.write(&self.ca_cert(), cert.pem().as_bytes(), 0o644)?;
        self.write(&self.ca_key(), key.serialize_pem().as_bytes(), 0o600)
    }

    /// Issues a leaf for `name`, valid from now for `validity`, signed by
    /// this folder's CA.
    ///
    /// # Errors
    /// [`CertError`].
    pub fn issue(&self, name: &str, validity: Duration) -> Result<(), CertError> {
        let now = OffsetDateTime::now_utc();
        self.issue_valid_between(name, now - time::Duration::minutes(5), now + validity)
    }

    /// Issues a leaf for `name` valid between two instants (tests use it
    /// for expired certificates).
    ///
    /// # Errors
    /// [`CertError`].
    pub fn issue_valid_between(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(), CertError> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(CertError::InvalidName(name.to_owned()));
        }
        let ca_pem = self.read(&self.ca_cert())?;
        let ca_key = KeyPair::from_pem(&self.read(&self.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::URI(spiffe_id(name).try_into()?),
            SanType::DnsName(name.try_into()?),
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer)?;
        // Key first: a reader that sees the new certificate finds its key.
        self.write(&self.leaf_key(name), key.serialize_pem().as_bytes(), 0o600)?;
        self.write(&self.leaf_cert(name), cert.pem().as_bytes(), 0o644)
    }

    fn read(&self, path: &Path) -> Result<String, CertError> {
        fs::read_to_string(path).map_err(|reason| CertError::Io {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Writes through a temporary file and a rename, so a reloading reader
    /// never sees half a file.
    fn write(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
        let io = |reason| CertError::Io {
            path: path.to_path_buf(),
            reason,
        };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let temporary = path.with_extension("tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(contents).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temporary, path).map_err(io)
    }
}
