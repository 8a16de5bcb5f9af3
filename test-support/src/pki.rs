//! A throw-away development CA with a certificate for every mesh process,
//! in a temporary folder, for tests that run servers over mutual TLS.

use std::sync::Arc;

use safra::{
    identity::certs::{CertDir, LEAF_VALIDITY},
    identity::tls::{MeshTls, TlsPaths},
};

/// A CA and its leaves in a temporary folder, removed on drop.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    certs: CertDir,
}

impl TestPki {
    /// A fresh CA with a leaf for each service and the gateway.
    ///
    /// # Panics
    /// When the temporary folder or the certificates cannot be made: the test
    /// cannot run without them.
    #[must_use]
    pub fn new() -> Self {
        safra::identity::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("a temporary folder for certificates");
        let certs = CertDir::new(dir.path());
        certs.init().expect("the development CA and leaves");
        Self { dir, certs }
    }

    /// The certificate folder, to issue more leaves.
    #[must_use]
    pub fn certs(&self) -> &CertDir {
        &self.certs
    }

    /// The files of `name`, issuing its leaf first if it has none.
    ///
    /// # Panics
    /// When the leaf cannot be issued.
    #[must_use]
    pub fn paths(&self, name: &str) -> TlsPaths {
        if !self.certs.leaf_cert(name).exists() {
            self.certs
                .issue(name, LEAF_VALIDITY)
                .expect("a leaf certificate");
        }
        TlsPaths::in_dir(self.dir.path(), name)
    }

    /// The loaded TLS material of `name`.
    ///
    /// # Panics
    /// When it cannot be loaded.
    #[must_use]
    pub fn tls(&self, name: &str) -> Arc<MeshTls> {
        MeshTls::load(self.paths(name)).expect("loadable TLS material")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
