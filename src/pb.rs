//! Types, servers and clients generated from `proto/orgd/v1`.

tonic::include_proto!("orgd.v1");

/// The encoded file descriptor set of every orgd proto, of the `google.rpc` error
/// model its errors carry (`google/rpc/status.proto`, `google/rpc/error_details.proto`)
/// and of their imports, custom options included: served by reflection and read by
/// the access-policy table. No Rust types are generated for `google.rpc`; they are
/// tonic-types' `tonic_types::pb`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orgd_descriptor.bin"));

/// The proto package of every orgd service.
pub const PACKAGE: &str = "orgd.v1";
