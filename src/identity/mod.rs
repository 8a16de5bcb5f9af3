//! Who is calling: the mesh's mutual TLS (certificates whose SPIFFE ids
//! name services), access tokens (Ed25519 JWTs signed by accounts and
//! verified everywhere) and, for development and tests, a CA that makes
//! the certificates.

pub mod auth;
#[cfg(feature = "dev-certs")]
pub mod certs;
pub mod tls;
