//! Deleting organizations: guarded, soft, restorable within the retention window,
//! then purged; safe against concurrent changes.

mod common;

use std::time::Duration;

use common::*;
use orgd::pb::{self, organization::State};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_guarded_soft_and_restorable() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    // The personal organization cannot be deleted.
    let me = alice
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let personal = alice
        .get_organization(get(&me.user.unwrap().personal_organization))
        .await
        .unwrap()
        .into_inner();
    let status = expect_code(
        alice.delete_organization(delete(&personal)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("personal"), "{status:?}");

    // Confirmation and etag.
    let mut unconfirmed = delete(&org);
    unconfirmed.confirmation = String::new();
    let status = expect_code(
        alice.delete_organization(unconfirmed).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("\"Acme\""), "{status:?}");
    let mut wrong = delete(&org);
    wrong.confirmation = "acme".into();
    expect_code(
        alice.delete_organization(wrong).await,
        Code::InvalidArgument,
    );
    let mut stale = delete(&org);
    stale.etag = "W/\"999\"".into();
    expect_code(alice.delete_organization(stale).await, Code::Aborted);

    // Remaining resources block deletion, named in the message.
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    app.db
        .execute("INSERT INTO org_resources (id, org_id, kind, external_id) VALUES (gen_random_uuid(), $1, 'app', 'web-frontend')", &[&org_id])
        .await
        .unwrap();
    let status = expect_code(
        alice.delete_organization(delete(&org)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("app/web-frontend"), "{status:?}");
    assert_eq!(activity_count(&app, "organization.delete").await, 0);
    app.db
        .execute("DELETE FROM org_resources", &[])
        .await
        .unwrap();

    // Soft delete: still readable, not listed by default, not changeable.
    let mut with_etag = delete(&org);
    with_etag.etag = org.etag.clone();
    let deleted = alice
        .delete_organization(with_etag)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state(), State::Deleted);
    let (delete_time, purge_time) = (deleted.delete_time.unwrap(), deleted.purge_time.unwrap());
    assert!(
        (purge_time.seconds - delete_time.seconds - 30 * 24 * 3600).abs() <= 2,
        "default retention is 30 days"
    );
    assert_eq!(
        alice
            .get_organization(get(&org.name))
            .await
            .unwrap()
            .into_inner()
            .state(),
        State::Deleted
    );
    let listed = alice
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.organizations.iter().all(|o| o.uid != org.uid));
    let with_deleted = alice
        .list_organizations(pb::ListOrganizationsRequest {
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(with_deleted.organizations.iter().any(|o| o.uid == org.uid));
    let mut change = deleted.clone();
    change.description = "zombie".into();
    let status = expect_code(
        alice
            .update_organization(update(change, &["description"]))
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("Undelete"), "{status:?}");
    expect_code(
        alice.delete_organization(delete(&org)).await,
        Code::FailedPrecondition,
    );

    // Undelete restores it; undeleting a live organization is refused.
    let restored = alice
        .undelete_organization(pb::UndeleteOrganizationRequest {
            name: org.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state(), State::Active);
    assert!(restored.delete_time.is_none() && restored.purge_time.is_none());
    expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(activity_count(&app, "organization.delete").await, 1);
    assert_eq!(activity_count(&app, "organization.undelete").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_organizations_are_purged_after_retention() {
    let app =
        TestApp::spawn_with(&["--deleted-retention", "1s", "--purge-interval", "200ms"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Ephemeral").await;
    alice.delete_organization(delete(&org)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match alice.get_organization(get(&org.name)).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(found) => assert_eq!(found.into_inner().state(), State::Deleted),
            Err(other) => panic!("{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "not purged in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(activity_count(&app, "organization.purge").await, 1);
    // The slug is free again.
    alice
        .create_organization(new_org("Ephemeral"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn undelete_respects_the_organization_limit() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "2"]).await;
    let mut alice = app.orgs_as("alice").await;
    let first = create_org(&mut alice, "First").await;
    alice.delete_organization(delete(&first)).await.unwrap();
    alice.create_organization(new_org("Second")).await.unwrap();
    let status = expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest { name: first.name })
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status
            .message()
            .starts_with("you already belong to 2 organizations, the most you may"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undelete_is_refused_once_the_restore_window_has_passed() {
    let app = TestApp::spawn_with(&["--purge-interval", "1h"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Late").await;
    alice.delete_organization(delete(&org)).await.unwrap();
    app.db
        .execute(
            "UPDATE organizations SET purge_at = now() - interval '1 second' WHERE deleted_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let status = expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("restore window"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_committed_meanwhile_stops_updates_and_second_deletes() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    // Both calls pass the policy check, then wait for the row while a delete commits.
    let locker = lock_org_row(&app, &org).await;
    let mut change = org.clone();
    change.description = "after the delete".into();
    change.etag = String::new();
    let (mut a, mut b) = (alice.clone(), alice.clone());
    let update_call = tokio::spawn(async move {
        a.update_organization(update(change, &["description"]))
            .await
    });
    let target = org.clone();
    let delete_call = tokio::spawn(async move { b.delete_organization(delete(&target)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id: uuid::Uuid = org.uid.parse().unwrap();
    locker
        .execute("UPDATE organizations SET deleted_at = now(), purge_at = now() + interval '1 day' WHERE id = $1", &[&id])
        .await
        .unwrap();
    locker.batch_execute("COMMIT").await.unwrap();

    let status = expect_code(update_call.await.unwrap(), Code::FailedPrecondition);
    assert!(status.message().contains("deleted"), "{status:?}");
    expect_code(delete_call.await.unwrap(), Code::FailedPrecondition);
    assert_eq!(activity_count(&app, "organization.update").await, 0);
    assert_eq!(activity_count(&app, "organization.delete").await, 0);
    let now = alice
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.description, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_organizations_take_no_new_resources() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    alice.delete_organization(delete(&org)).await.unwrap();
    let id: uuid::Uuid = org.uid.parse().unwrap();
    let refused = app
        .db
        .execute(
            "INSERT INTO org_resources (id, org_id, kind, external_id) VALUES (gen_random_uuid(), $1, 'app', 'late')",
            &[&id],
        )
        .await
        .unwrap_err();
    assert!(
        refused.as_db_error().unwrap().message().contains("deleted"),
        "{refused:?}"
    );
}
