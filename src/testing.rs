//! Test-only contracts (`proto-test/`, feature `test-contracts`): the echo
//! service that exercises authorization, validation, streaming and deadlines
//! through the real server stack. Production never serves them.

use prost_reflect::DescriptorPool;

/// Generated code of the test packages (`safra.echo.v1`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/test/safra_test_proto.rs"));
}

pub use proto::safra::echo;

// Aliases for the generated code: prost cannot spell `r#type` in an extern path.
#[doc(hidden)]
pub use crate::proto::google::r#type as google_type;
#[doc(hidden)]
pub use crate::proto::safra::r#type as safra_type;

/// The descriptor set of `proto-test/`, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/safra_test_descriptor.bin"));

/// Decodes [`FILE_DESCRIPTOR_SET`].
///
/// # Errors
/// A corrupt embedded set.
pub fn pool() -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET)
}
