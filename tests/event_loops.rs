//! orgd serves calls on several event loops, each with its own database pool
//! (`--event-loops`): every loop serves, and what one loop changes applies to
//! the very next call on any other.

mod common;

use common::{TestApp, create_org, join, set_roles, update};
use orgd::pb;
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
        current = client
            .update_organization(update(current, &["description"]))
            .await
            .unwrap_or_else(|status| panic!("connection {i}: {status:?}"))
            .into_inner();
        assert_eq!(
            current.description,
            format!("edited through connection {i}")
        );
    }

    app.members_as("alice")
        .await
        .update_member(set_roles(&bob.name, &["viewer"]))
        .await
        .unwrap();
    for (i, client) in bobs.iter_mut().enumerate() {
        let refused = client
            .update_organization(update(current.clone(), &["description"]))
            .await
            .expect_err("a viewer may not edit the organization");
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "connection {i}: {refused:?}"
        );
        let read = client
            .get_organization(pb::GetOrganizationRequest {
                name: org.name.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            read.into_inner().description,
            format!("edited through connection {}", LOOPS - 1)
        );
    }
}
