//! Compiles `proto/orgd/v1/*.proto` with protox (pure Rust, no system `protoc`) into
//! tonic servers and clients, and writes the encoded file descriptor set that server
//! reflection and the access-policy table read at runtime. The encoded set keeps the
//! custom `(orgd.v1.policy)` method options, which `prost_types` would drop.
//!
//! The set also holds `google/rpc/status.proto` and `google/rpc/error_details.proto`
//! (vendored in `proto/google`), so that reflection clients can decode the error
//! details orgd sends. No Rust code is generated for them: orgd uses tonic-types'
//! `google.rpc` types, also where an orgd message holds a `google.rpc.Status`.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// The googleapis files under `proto/google`, served by reflection.
const ERROR_MODEL: [&str; 2] = ["google/rpc/status.proto", "google/rpc/error_details.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = fs::read_dir(proto_dir.join("orgd/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        compiler.open_file(file.strip_prefix(&proto_dir)?)?;
    }
    for file in ERROR_MODEL {
        compiler.open_file(file)?;
    }

    let encoded = compiler.encode_file_descriptor_set();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("orgd_descriptor.bin"), &encoded)?;

    let fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    tonic_prost_build::configure()
        // google.rpc's types are tonic-types' ones: none are generated here.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
