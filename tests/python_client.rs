//! A Python client generated from `proto/` at test time (grpcio-tools) drives a
//! team scenario against a real orgd: tests/python/scenario.py. What a client team
//! in another language sees — names, status codes, google.rpc error details — is
//! checked by that client itself. This test gives it a Python environment, an
//! orgd, the users' tokens and the emailed invitation token, and fails when it does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestApp, latest_token, user_token};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);
/// What the scenario prints on stdout when it wants the token emailed to an address.
const TOKEN_REQUEST: &str = "need-invitation-token ";
/// The scenario's last stdout line when every assertion held.
const COMPLETE: &str = "scenario-complete";

/// Runs `command`, panicking with its output unless it succeeds.
fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Python of a venv at `python-client` in cargo's target directory
/// (`CARGO_TARGET_DIR` when set) with tests/python/requirements.txt installed, made
/// with the machine's python3 when missing or out of date (.ci/run makes the same
/// one up front).
fn python_env(project: &Path) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    let venv = project.join(target).join("python-client");
    let python = venv.join("bin/python");
    let requirements = project.join("tests/python/requirements.txt");
    // The requirements the venv was last completed with.
    let stamp = venv.join("orgd-requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if !python.exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "creating the Python venv (this test needs python3 with venv and pip, e.g. \
             `apt-get install python3-venv`)",
        );
    }
    let importable = Command::new(&python)
        .args(["-c", "import grpc_tools, grpc_status"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !importable || std::fs::read_to_string(&stamp).ok().as_ref() != Some(&wanted) {
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
            "installing tests/python/requirements.txt from PyPI",
        );
        std::fs::write(&stamp, &wanted).unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_python_client_runs_the_team_scenario() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = tokio::task::spawn_blocking({
        let project = project.to_owned();
        move || python_env(&project)
    })
    .await
    .unwrap();
    let app = TestApp::spawn().await;

    let mut child = tokio::process::Command::new(&python)
        .arg(project.join("tests/python/scenario.py"))
        .arg("--proto-dir")
        .arg(project.join("proto"))
        .env("ORGD_ADDR", app.addr.to_string())
        .env("ORGD_ALICE_TOKEN", user_token("alice"))
        .env("ORGD_BOB_TOKEN", user_token("bob"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", python.display()));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    // Answer the scenario's token requests until it closes its stdout.
    let conversation = async {
        let mut transcript = Vec::new();
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(email) = line.strip_prefix(TOKEN_REQUEST) {
                let token = latest_token(&app, email.trim()).await;
                stdin
                    .write_all(format!("{token}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
            }
            transcript.push(line);
        }
        let status = child.wait().await.unwrap();
        (status, transcript)
    };
    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, conversation).await;
    let (status, transcript) = match outcome {
        Ok(finished) => finished,
        Err(_) => {
            let _ = child.kill().await;
            let stderr = stderr.await.unwrap();
            panic!("the Python scenario did not finish within {SCENARIO_TIMEOUT:?}:\n{stderr}");
        }
    };
    let stderr = stderr.await.unwrap();
    let stdout = transcript.join("\n");
    assert!(
        status.success() && transcript.last().map(String::as_str) == Some(COMPLETE),
        "the Python scenario failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert_eq!(
        transcript
            .iter()
            .filter(|line| line.starts_with(TOKEN_REQUEST))
            .count(),
        1,
        "one invitation token was asked for: {stdout}"
    );
}
