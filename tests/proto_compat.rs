//! `.ci/run` fails on wire-incompatible proto changes with `buf breaking`; this
//! shows the check does catch one, so a green CI means something.

mod common;

use std::path::Path;
use std::process::Command;

/// A copy of the project's protos with `from` replaced by `to` in `file`.
fn changed_protos(project: &Path, file: &str, from: &str, to: &str) -> std::path::PathBuf {
    let copy = std::env::temp_dir().join(format!("orgd-protos-{}", uuid::Uuid::new_v4()));
    let status = Command::new("cp")
        .arg("-r")
        .arg(project.join("proto"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let path = copy.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} no longer contains {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    copy
}

#[test]
fn buf_breaking_refuses_a_renumbered_field_and_accepts_an_added_one() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let buf = common::buf(project);
    let breaking = |protos: &Path| {
        Command::new(&buf)
            .arg("breaking")
            .arg(protos)
            .arg("--against")
            .arg(project.join("proto"))
            .output()
            .unwrap()
    };

    let renumbered = changed_protos(
        project,
        "orgd/v1/org.proto",
        "string permission = 3;",
        "string permission = 4;",
    );
    let refused = breaking(&renumbered);
    let report = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "buf breaking accepted: {report}");
    assert!(report.contains("permission"), "{report}");

    let added = changed_protos(
        project,
        "orgd/v1/org.proto",
        "string permission = 3;",
        "string permission = 3;\n  // A field added later.\n  string reason = 4;",
    );
    let accepted = breaking(&added);
    assert!(
        accepted.status.success(),
        "buf breaking refused a compatible change: {}",
        String::from_utf8_lossy(&accepted.stdout)
    );

    let _ = std::fs::remove_dir_all(renumbered);
    let _ = std::fs::remove_dir_all(added);
}
