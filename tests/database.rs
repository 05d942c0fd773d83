//! orgd keeps its hot queries prepared on pooled connections; what happens to
//! the database underneath must not turn into failed calls.

mod common;

use std::time::Duration;

use common::{TestApp, create_org, get};

/// Enough calls to reach every pooled connection several times.
const CALLS: usize = 40;

/// `CALLS` reads of `org`, each of which must succeed.
async fn read_repeatedly(client: &mut common::OrgClient, org: &orgd::pb::Organization) {
    for _ in 0..CALLS {
        client.get_organization(get(&org.name)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_adding_a_column_does_not_break_prepared_queries() {
    let app = TestApp::spawn_with(&["--pool-size", "4"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    read_repeatedly(&mut alice, &org).await;
    // What a newer replica's migration may do while this one serves.
    app.db
        .batch_execute(
            "ALTER TABLE organizations ADD COLUMN added_later text;
             ALTER TABLE memberships ADD COLUMN added_later text;
             ALTER TABLE users ADD COLUMN added_later text;
             ALTER TABLE api_tokens ADD COLUMN added_later text",
        )
        .await
        .unwrap();
    read_repeatedly(&mut alice, &org).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_the_server_closed_are_replaced_without_failing_calls() {
    let app = TestApp::spawn_with(&["--pool-size", "4"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    read_repeatedly(&mut alice, &org).await;
    // A restart, a failover or an idle-session killer ends orgd's sessions.
    let ended = app
        .db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(ended >= 1, "orgd had no session to end");
    tokio::time::sleep(Duration::from_millis(200)).await;
    read_repeatedly(&mut alice, &org).await;
}
