//! The encoded descriptor set of every contract in `proto/`, with extension
//! options kept, so that reflection, the validator, the authorization layer
//! and the gateway read the contracts instead of repeating them in code.

use prost_reflect::DescriptorPool;

/// The `google.protobuf.FileDescriptorSet` of all of `proto/`, imports
/// included, as written by `build.rs`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/safra_descriptor.bin"));

/// The protobuf package prefix shared by every Safra contract.
pub const PACKAGE_PREFIX: &str = "safra.";

/// Decodes [`FILE_DESCRIPTOR_SET`] into a pool whose options (including
/// `google.api.http` and `safra.options.v1`) can be read as extensions.
///
/// # Errors
/// Only if the embedded set is corrupt, which the build makes impossible in
/// practice; callers still get an error rather than a panic.
pub fn pool() -> Result<DescriptorPool, prost_reflect::DescriptorError> {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET)
}
