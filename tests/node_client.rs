//! A Node.js backend service (@grpc/grpc-js, stubs from proto/ at run time)
//! drives the service-facing surface against a real orgd: tests/node/scenario.js.
//! A service token checks users named by subject in organizations it holds no
//! token for, in one call and in a batch, looks up where a user holds a
//! permission page by page, and decodes a refusal's google.rpc error details.
//! This test installs the packages (pinned by tests/node/package-lock.json),
//! seeds the organizations, and fails when the scenario does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestApp, create_org, service_token};

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// The scenario's last stdout line when every assertion held.
const COMPLETE: &str = "scenario-complete";

/// `node-client` in cargo's target directory with tests/node's locked packages
/// installed (`npm ci`), redone when the lock file changes; .ci/run makes the
/// same one up front.
fn node_modules(project: &Path) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let dir = project.join(target).join("node-client");
    let lock = std::fs::read_to_string(project.join("tests/node/package-lock.json")).unwrap();
    let stamp = dir.join("orgd-package-lock.json");
    if std::fs::read_to_string(&stamp).ok().as_ref() != Some(&lock) {
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(project.join("tests/node").join(file), dir.join(file)).unwrap();
        }
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|err| panic!("this test needs npm (Node.js 18 or later): {err}"));
        assert!(
            output.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp, &lock).unwrap();
    }
    dir.join("node_modules")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_backend_service_checks_and_looks_up_by_subject() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = tokio::task::spawn_blocking({
        let project = project.to_owned();
        move || node_modules(&project)
    })
    .await
    .unwrap();
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let first = create_org(&mut alice, "Node One").await;
    let second = create_org(&mut alice, "Node Two").await;
    let bob = app.user_id("bob").await;
    app.set_member(&first.uid, &bob, &["developer"], &[]).await;

    let run = tokio::process::Command::new("node")
        .arg(project.join("tests/node/scenario.js"))
        .env("NODE_PATH", &modules)
        .env("ORGD_ADDR", app.addr.to_string())
        .env("ORGD_SERVICE_TOKEN", service_token())
        .env("ORGD_FIRST_ORG", &first.name)
        .env("ORGD_SECOND_ORG", &second.name)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, run)
        .await
        .expect("the Node scenario finishes within its timeout")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().last() == Some(COMPLETE),
        "the Node scenario failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}
