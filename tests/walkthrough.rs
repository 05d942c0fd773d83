//! The README's operator walkthrough, run verbatim with `buf curl` against the
//! real binary: if the documentation drifts from the service, this fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{buf, fresh_database};

/// The shell block between the walkthrough markers of README.md.
fn walkthrough(readme: &str) -> String {
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("README.md marks its walkthrough");
    let end = readme[start..]
        .find("<!-- walkthrough:end -->")
        .expect("the walkthrough ends")
        + start;
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```sh block")
        .0;
    body.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_runs_as_written() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = walkthrough(&std::fs::read_to_string(project.join("README.md")).unwrap());
    let buf = buf(project);
    let data_dir = std::env::temp_dir().join(format!("orgd-walkthrough-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let addr = common::free_local_addr();
    let orgd = env!("CARGO_BIN_EXE_orgd");
    let log_path = data_dir.join("orgd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let db_url = fresh_database().await;
    let mut server = Command::new(orgd)
        .args(["serve", "--listen", &addr])
        .env("DATABASE_URL", &db_url)
        .env("ORGD_DATA_DIR", &data_dir)
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "orgd did not start listening");

    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("ORGD", orgd)
        .env("ORGD_DATA_DIR", &data_dir)
        .env("ADDR", &addr)
        .env("BUF", &buf)
        .output()
        .unwrap();
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();
    // The API token's secret went to the script, and nowhere else: not into the
    // debug log, not into the database (which keeps a short prefix and a hash).
    let secret_shape = |text: &str| {
        text.match_indices("orgd_").any(|(at, _)| {
            text[at + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .count()
                >= 20
        })
    };
    let server_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        server_log.contains("call finished"),
        "the debug log was captured"
    );
    assert!(
        !secret_shape(&server_log),
        "an API token secret is in the log"
    );
    let db = common::sql_client(&db_url).await;
    let dump: Vec<String> = db
        .query(
            "SELECT row_to_json(t)::text FROM api_tokens t
             UNION ALL SELECT row_to_json(a)::text FROM activity a
             UNION ALL SELECT row_to_json(o)::text FROM outbox_messages o",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(dump.len() > 3, "rows were written");
    assert!(
        !dump.iter().any(|row| secret_shape(row)),
        "a secret is stored"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The last call listed the activity through the API token, newest first.
    let listing = &stdout[stdout
        .rfind("\"activities\"")
        .expect("the activity listing")..];
    let order: Vec<usize> = [
        "api_token.create",
        "invitation.create",
        "subscription.change_plan",
        "payment_method.add",
        "organization.create",
    ]
    .iter()
    .map(|action| {
        listing
            .find(&format!("\"action\": \"{action}\""))
            .unwrap_or_else(|| panic!("{action} missing from {listing}"))
    })
    .collect();
    assert!(order.is_sorted(), "newest first: {listing}");
    assert!(stdout.contains("\"slug\": \"acme-corp\""));
}
