//! buf.gen.yaml generates clients in other languages. Its plugins run on buf.build,
//! out of reach of tests; this runs the template's input and managed mode with a
//! local plugin that records what a plugin is given, and checks that every orgd
//! file gets the options Go and Java need while the .proto files set none.

mod common;

use std::path::Path;
use std::process::Command;

use prost::Message;
use prost_types::compiler::CodeGeneratorRequest;

/// buf.gen.yaml with its `plugins:` replaced by `plugin`.
fn with_plugin(template: &str, plugin: &str) -> String {
    let managed = template
        .split_once("\nplugins:\n")
        .expect("buf.gen.yaml lists plugins")
        .0;
    format!("{managed}\nplugins:\n{plugin}")
}

#[test]
fn managed_mode_gives_every_orgd_file_its_language_options() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let buf = common::buf(project);
    let dir = std::env::temp_dir().join(format!("orgd-buf-gen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let request = dir.join("request.binpb");
    // A protoc plugin that keeps its CodeGeneratorRequest and answers with no files,
    // declaring proto3 `optional` support (field 2 = 1).
    let plugin = dir.join("protoc-gen-record");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ncat > '{}'\nprintf '\\020\\001'\n",
            request.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let template = dir.join("buf.gen.yaml");
    std::fs::write(
        &template,
        with_plugin(
            &std::fs::read_to_string(project.join("buf.gen.yaml")).unwrap(),
            &format!(
                "  - local: {}\n    out: {}\n",
                plugin.display(),
                dir.join("out").display()
            ),
        ),
    )
    .unwrap();

    let generated = Command::new(&buf)
        .arg("generate")
        .arg("--template")
        .arg(&template)
        .current_dir(project)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "buf generate failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let request = CodeGeneratorRequest::decode(std::fs::read(&request).unwrap().as_slice())
        .expect("the plugin recorded its request");

    let mut orgd_files = 0;
    for file in request
        .proto_file
        .iter()
        .filter(|file| request.file_to_generate.contains(&file.name().to_owned()))
    {
        let name = file.name();
        assert!(
            name.starts_with("orgd/v1/"),
            "{name} generated: only orgd's module is"
        );
        let options = file.options.clone().unwrap_or_default();
        assert_eq!(
            options.go_package(),
            "example.com/orgd/gen/go/orgd/v1;orgdv1",
            "{name}"
        );
        assert_eq!(options.java_package(), "com.orgd.v1", "{name}");
        assert!(options.java_multiple_files(), "{name}");
        orgd_files += 1;
        // The options come from managed mode, not from the file.
        let source = std::fs::read_to_string(project.join("proto").join(name)).unwrap();
        assert!(!source.contains("option go_package"), "{name}");
    }
    assert!(orgd_files >= 7, "{orgd_files} orgd files generated");
    // The well-known types and the google.rpc error model keep their own packages.
    for (import, go_package) in [
        (
            "google/protobuf/timestamp.proto",
            "google.golang.org/protobuf/types/known/timestamppb",
        ),
        (
            "google/rpc/status.proto",
            "google.golang.org/genproto/googleapis/rpc/status;status",
        ),
    ] {
        let file = request
            .proto_file
            .iter()
            .find(|file| file.name() == import)
            .expect("imports are passed to the plugin");
        assert_eq!(
            file.options.clone().unwrap_or_default().go_package(),
            go_package
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
