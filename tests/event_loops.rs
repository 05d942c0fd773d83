//! orgd serves calls on several event loops, each with its own database pool
//! (`--event-loops`): every loop serves, and what one loop changes applies to
//! the very next call on any other.

mod common;

use std::time::Duration;

use common::{TestApp, create_org, get, join, set_roles, update};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn every_event_loop_serves_and_sees_a_role_change_at_once() {
    const LOOPS: usize = 3;
    let app = TestApp::spawn_with(&["--event-loops", "3", "--pool-size", "3"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    let bob = join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();

    // Connections go to the loops in turn: LOOPS of them reach every loop.
    let mut bobs = Vec::new();
    for _ in 0..LOOPS {
        bobs.push(app.orgs_as("bob").await);
    }
    let mut current = org.clone();
    for (i, client) in bobs.iter_mut().enumerate() {
        current.description = format!("edited through connection {i}");
        current = within_seconds(client.update_organization(update(current, &["description"])))
            .await
            .unwrap_or_else(|status| panic!("connection {i}: {status:?}"))
            .into_inner();
        assert_eq!(
            current.description,
            format!("edited through connection {i}")
        );
    }

    // Each loop served through a pool of its own, which names its sessions.
    let rows = app
        .db
        .query(
            "SELECT DISTINCT application_name FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'orgd-loop-%'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let loops: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(loops, ["orgd-loop-0", "orgd-loop-1", "orgd-loop-2"]);

    app.members_as("alice")
        .await
        .update_member(set_roles(&bob.name, &["viewer"]))
        .await
        .unwrap();
    for (i, client) in bobs.iter_mut().enumerate() {
        let refused =
            within_seconds(client.update_organization(update(current.clone(), &["description"])))
                .await
                .expect_err("a viewer may not edit the organization");
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "connection {i}: {refused:?}"
        );
        let read = within_seconds(client.get_organization(get(&org.name)))
            .await
            .unwrap();
        assert_eq!(
            read.into_inner().description,
            format!("edited through connection {}", LOOPS - 1)
        );
    }
}

/// `call`'s outcome; a loop that took a connection and never served it fails
/// the test instead of hanging it.
async fn within_seconds<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("no answer within 10 s")
}
