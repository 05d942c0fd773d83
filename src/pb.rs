//! Types, servers and clients generated from `proto/orgd/v1`.

tonic::include_proto!("orgd.v1");

/// The encoded file descriptor set of every orgd proto and its imports, custom
/// options included: served by reflection and read by the access-policy table.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orgd_descriptor.bin"));

/// The proto package of every orgd service.
pub const PACKAGE: &str = "orgd.v1";
