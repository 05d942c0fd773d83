//! A retried CreateOrganization (same `request_id`) answers with the
//! organization as it is now, so only to a caller who still belongs to it.

mod common;

use common::*;
use orgd::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_shows_nothing_to_a_creator_who_left() {
    let app = TestApp::spawn().await;
    let mut bob = app.orgs_as("bob").await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = || pb::CreateOrganizationRequest {
        request_id: request_id.clone(),
        ..new_org("Bob's Team")
    };
    let org = bob
        .create_organization(create())
        .await
        .unwrap()
        .into_inner();
    // The retry is answered with the same organization while bob belongs to it.
    let again = bob
        .create_organization(create())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.uid, org.uid);

    // Alice joins as an owner and removes bob.
    join(&app, "bob", &org, "alice", &["owner"]).await.unwrap();
    let bob_member = format!("{}/members/{}", org.name, app.user_id("bob").await);
    app.members_as("alice")
        .await
        .remove_member(pb::RemoveMemberRequest { name: bob_member })
        .await
        .unwrap();
    let status = expect_code(
        bob.create_organization(create()).await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("no longer a member"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(&org.uid), "{}", status.message());
}
