//! Deleting an account (Astra: the personal organization goes with the account,
//! and ownership must be passed on first): by the user themself or by a backend
//! service, refused while the user is the last owner of a team organization,
//! and otherwise leaving every organization, closing the personal one with its
//! final bill, and freeing the subject for a fresh start.

mod common;

use std::sync::Arc;

use common::*;
use orgd::pb::{self, token_service_client::TokenServiceClient};
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

fn delete_user(id: &str) -> pb::DeleteUserRequest {
    pb::DeleteUserRequest {
        name: format!("users/{id}"),
    }
}

fn transfer(org: &pb::Organization, user_id: &str) -> pb::TransferOwnershipRequest {
    pb::TransferOwnershipRequest {
        organization: org.name.clone(),
        new_owner: format!("{}/members/{user_id}", org.name),
    }
}

/// The id in a resource name such as `organizations/{id}`.
fn id_of(name: &str) -> Uuid {
    name.rsplit('/').next().unwrap().parse().unwrap()
}

/// The caller's WhoAmI.
async fn who_am_i(app: &TestApp, sub: &str) -> pb::WhoAmIResponse {
    app.orgs_as(sub)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The secret of a new viewer token `sub` creates in `org`.
async fn api_token(app: &TestApp, sub: &str, org: &pb::Organization) -> String {
    TokenServiceClient::with_interceptor(app.channel().await, Bearer::new(Some(&user_token(sub))))
        .create_api_token(pb::CreateApiTokenRequest {
            parent: org.name.clone(),
            api_token: Some(pb::ApiToken {
                display_name: "deploy".into(),
                roles: vec!["viewer".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_owner_passes_ownership_on_then_the_account_goes() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let acme = create_org(&mut alice, "Acme Rockets").await;
    let globex = create_org(&mut alice, "Globex").await;
    let bob = join(&app, "alice", &acme, "bob", &["admin"]).await.unwrap();
    let secret = api_token(&app, "alice", &acme).await;
    let before = who_am_i(&app, "alice").await.user.unwrap();
    let personal = id_of(&before.personal_organization);

    // The last owner of team organizations is refused, each organization named
    // by display name, slug and id, whether she or a service asks.
    let mut service = app.orgs_as_service().await;
    for (caller, account) in [
        (
            &mut alice,
            "your account cannot be deleted while you are".to_owned(),
        ),
        (
            &mut service,
            format!(
                "the account users/{} cannot be deleted while it is",
                before.uid
            ),
        ),
    ] {
        let status = expect_code(
            caller.delete_user(delete_user(&before.uid)).await,
            Code::FailedPrecondition,
        );
        let message = status.message();
        for expected in [
            account.as_str(),
            "the last owner of 2 team organizations:",
            "\"Acme Rockets\"",
            acme.slug.as_str(),
            acme.name.as_str(),
            "\"Globex\"",
            globex.slug.as_str(),
            globex.name.as_str(),
            "TransferOwnership",
        ] {
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(info.reason, "LAST_OWNER");
        let failure = tonic_types::StatusExt::get_details_precondition_failure(&status).unwrap();
        let mut subjects: Vec<&str> = failure
            .violations
            .iter()
            .map(|v| v.subject.as_str())
            .collect();
        subjects.sort();
        let mut expected = [acme.name.as_str(), globex.name.as_str()];
        expected.sort();
        assert_eq!(
            subjects, expected,
            "the personal organization is no obstacle"
        );
    }
    assert_eq!(activity_count(&app, "user.delete").await, 0);

    // Once Acme has another owner and Globex is deleted, the account goes.
    let bob_id = bob.name.rsplit('/').next().unwrap();
    app.members_as("alice")
        .await
        .transfer_ownership(transfer(&acme, bob_id))
        .await
        .unwrap();
    let status = expect_code(
        alice.delete_user(delete_user(&before.uid)).await,
        Code::FailedPrecondition,
    );
    assert!(
        status
            .message()
            .contains("the last owner of 1 team organization: \"Globex\""),
        "{status:?}"
    );
    alice.delete_organization(delete(&globex)).await.unwrap();
    alice.delete_user(delete_user(&before.uid)).await.unwrap();

    // Alice left Acme; her token there is deactivated, saying why.
    let members = app
        .members_as("bob")
        .await
        .list_members(pb::ListMembersRequest {
            parent: acme.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 1, "{members:?}");
    let alice_id: Uuid = before.uid.parse().unwrap();
    assert_eq!(
        app.count("SELECT 1 FROM memberships WHERE user_id = $1", &[&alice_id])
            .await,
        0
    );
    let status = expect_code(
        app.orgs(Some(&secret))
            .await
            .get_organization(get(&acme.name))
            .await,
        Code::Unauthenticated,
    );
    let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
    assert_eq!(info.reason, "TOKEN_DEACTIVATED");
    // Whoever holds the token may be no member: the id only, not the name.
    assert!(
        status.message().contains(&format!(
            "was deleted; a member of {} can create a new one",
            acme.name
        )) && !status.message().contains("Acme Rockets"),
        "{status:?}"
    );

    // Her personal organization is closed, billed to the end, purged later.
    let closed = app
        .db
        .query_one(
            "SELECT o.deleted_at IS NOT NULL AND o.purge_at > now(), s.status
             FROM organizations o JOIN subscriptions s ON s.org_id = o.id WHERE o.id = $1",
            &[&personal],
        )
        .await
        .unwrap();
    assert!(closed.get::<_, bool>(0), "closed, with a purge time ahead");
    assert_eq!(closed.get::<_, String>(1), "ended");
    assert_eq!(
        app.count("SELECT 1 FROM invoices WHERE org_id = $1", &[&personal])
            .await,
        1,
        "the final invoice"
    );

    // Each of her organizations records it; the personal one with its bill.
    let audited = app
        .db
        .query(
            "SELECT org_id, details->'closed'->>'final_invoice' FROM activity
             WHERE action = 'user.delete' AND target = $1 AND actor = $1 ORDER BY org_id",
            &[&format!("users/{alice_id}")],
        )
        .await
        .unwrap();
    let acme_id: Uuid = acme.uid.parse().unwrap();
    let recorded: Vec<(Uuid, Option<String>)> =
        audited.iter().map(|row| (row.get(0), row.get(1))).collect();
    let globex_id: Uuid = globex.uid.parse().unwrap();
    let mut expected = vec![acme_id, globex_id, personal];
    expected.sort();
    assert_eq!(
        recorded.iter().map(|(org, _)| *org).collect::<Vec<_>>(),
        expected
    );
    for (org, final_invoice) in &recorded {
        assert_eq!(
            final_invoice
                .as_deref()
                .is_some_and(|name| name.contains("/invoices/")),
            *org == personal,
            "{recorded:?}"
        );
    }

    // The same subject signs in afresh: a new user with nothing but a new
    // personal organization.
    let after = who_am_i(&app, "alice").await;
    let fresh = after.user.unwrap();
    assert_ne!(fresh.uid, before.uid);
    assert_ne!(fresh.personal_organization, before.personal_organization);
    let memberships: Vec<&str> = after
        .memberships
        .iter()
        .map(|m| m.organization.as_str())
        .collect();
    assert_eq!(memberships, [fresh.personal_organization.as_str()]);

    // The old account is gone, for the fresh user and for services alike.
    let status = expect_code(
        alice.delete_user(delete_user(&before.uid)).await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains(&fresh.uid), "{status:?}");
    expect_code(
        service.delete_user(delete_user(&before.uid)).await,
        Code::NotFound,
    );
    expect_code(
        service
            .list_user_organizations(pb::ListUserOrganizationsRequest {
                user: format!("users/{}", before.uid),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn services_delete_any_account_and_users_only_their_own() {
    let app = TestApp::spawn().await;
    let carol = app.user_id("carol").await;
    let dave = app.user_id("dave").await;
    let mut dave_client = app.orgs_as("dave").await;

    // Another user's account is refused alike whether it exists or not.
    let foreign = expect_code(
        dave_client.delete_user(delete_user(&carol)).await,
        Code::PermissionDenied,
    );
    let missing = expect_code(
        dave_client
            .delete_user(delete_user(&Uuid::now_v7().to_string()))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(foreign.message(), missing.message());
    expect_code(
        dave_client
            .delete_user(pb::DeleteUserRequest {
                name: "users/me".into(),
            })
            .await,
        Code::InvalidArgument,
    );

    // Nor is an API token enough, even for the account of its creator.
    let daves = pb::Organization {
        name: who_am_i(&app, "dave")
            .await
            .user
            .unwrap()
            .personal_organization,
        ..Default::default()
    };
    let secret = api_token(&app, "dave", &daves).await;
    expect_code(
        app.orgs(Some(&secret))
            .await
            .delete_user(delete_user(&dave))
            .await,
        Code::PermissionDenied,
    );

    // Resources left in the personal organization must go first.
    let personal = id_of(
        &who_am_i(&app, "carol")
            .await
            .user
            .unwrap()
            .personal_organization,
    );
    app.db
        .execute(
            "INSERT INTO org_resources (id, org_id, kind, external_id)
             VALUES (gen_random_uuid(), $1, 'app', 'blog')",
            &[&personal],
        )
        .await
        .unwrap();
    let mut service = app.orgs_as_service().await;
    let status = expect_code(
        service.delete_user(delete_user(&carol)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("app/blog"), "{status:?}");
    app.db
        .execute("DELETE FROM org_resources", &[])
        .await
        .unwrap();

    // A service deletes anyone's account, once.
    service.delete_user(delete_user(&carol)).await.unwrap();
    expect_code(
        service.delete_user(delete_user(&carol)).await,
        Code::NotFound,
    );
    expect_code(
        service
            .delete_user(delete_user(&Uuid::now_v7().to_string()))
            .await,
        Code::NotFound,
    );

    // A deleted user's token no longer reaches an account, and asking does
    // not make a new one.
    let status = expect_code(
        app.orgs_as("carol")
            .await
            .delete_user(delete_user(&carol))
            .await,
        Code::NotFound,
    );
    assert!(status.message().contains("no orgd account"), "{status:?}");
    assert_eq!(
        app.count("SELECT 1 FROM users WHERE subject = 'carol'", &[])
            .await,
        0
    );

    // A user deletes their own account.
    dave_client.delete_user(delete_user(&dave)).await.unwrap();
}

/// The account's tombstone goes with its personal organization, at the end of
/// the retention period, and the API tokens it created with it.
#[tokio::test(flavor = "multi_thread")]
async fn the_tombstone_is_purged_with_the_personal_organization() {
    let app =
        TestApp::spawn_with(&["--deleted-retention", "1s", "--purge-interval", "200ms"]).await;
    let acme = create_org(&mut app.orgs_as("bob").await, "Acme").await;
    join(&app, "bob", &acme, "alice", &["developer"])
        .await
        .unwrap();
    let secret = api_token(&app, "alice", &acme).await;
    let alice = app.user_id("alice").await;
    let personal = id_of(
        &who_am_i(&app, "alice")
            .await
            .user
            .unwrap()
            .personal_organization,
    );
    app.orgs_as("alice")
        .await
        .delete_user(delete_user(&alice))
        .await
        .unwrap();

    let alice: Uuid = alice.parse().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .count("SELECT 1 FROM users WHERE id = $1", &[&alice])
        .await
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "not purged in time");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count("SELECT 1 FROM organizations WHERE id = $1", &[&personal])
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT 1 FROM api_tokens WHERE creator_id = $1", &[&alice])
            .await,
        0
    );
    expect_code(
        app.orgs(Some(&secret))
            .await
            .get_organization(get(&acme.name))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(
        app.count(
            "SELECT 1 FROM activity WHERE action = 'organization.purge' AND details->>'account' = $1",
            &[&format!("users/{alice}")],
        )
        .await,
        1
    );
}

/// A deleted team organization does not hold its last owner back: it loses
/// that owner with the account, is purged in time, and can no longer be
/// restored, even by a member allowed to.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_organization_lets_its_last_owner_go_and_stays_deleted() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let old = create_org(&mut alice, "Old").await;
    let bob = app.user_id("bob").await;
    app.set_member(&old.uid, &bob, &["viewer"], &["org.delete"])
        .await;
    alice.delete_organization(delete(&old)).await.unwrap();
    let alice_id = app.user_id("alice").await;
    alice.delete_user(delete_user(&alice_id)).await.unwrap();

    let status = expect_code(
        app.orgs_as("bob")
            .await
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: old.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
    assert_eq!(info.reason, "NO_OWNER", "{status:?}");
}

/// The deletion reads the organization's owners under its lock: a transfer to
/// the user committed while the deletion waits for that lock makes them the
/// last owner, and the deletion is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_committed_while_the_deletion_waits_is_seen() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let alice = app.user_id("alice").await;
    let bob = app.user_id("bob").await;
    app.set_member(&acme.uid, &bob, &["admin"], &[]).await;
    let locker = lock_org_row(&app, &acme).await;
    let mut service = app.orgs_as_service().await;
    let request = delete_user(&bob);
    let deletion = tokio::spawn(async move { service.delete_user(request).await });
    assert_eq!(
        app.lock_waiters(1).await,
        1,
        "the deletion waits for the lock"
    );
    let (org_id, alice, bob): (Uuid, Uuid, Uuid) = (
        acme.uid.parse().unwrap(),
        alice.parse().unwrap(),
        bob.parse().unwrap(),
    );
    for (user, role) in [(bob, "owner"), (alice, "admin")] {
        locker
            .execute(
                "UPDATE membership_roles SET role = $3 WHERE org_id = $1 AND user_id = $2",
                &[&org_id, &user, &role],
            )
            .await
            .unwrap();
    }
    locker.batch_execute("COMMIT").await.unwrap();
    let status = expect_code(deletion.await.unwrap(), Code::FailedPrecondition);
    assert!(status.message().contains(&acme.name), "{status:?}");
}

/// Two replicas, one transferring ownership of an organization to a member
/// while the other deletes that member's account: one of the two wins, and the
/// organization always keeps an owner.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_racing_a_transfer_to_the_user_leaves_an_owner() {
    const ROUNDS: usize = 8;
    // Alice owns an organization per round.
    let limit = ["--max-orgs-per-user", "20"];
    let first = TestApp::spawn_with(&limit).await;
    let second = TestApp::spawn_on(&first.db_url, &limit).await;
    let mut orgs = first.orgs_as("alice").await;
    let transfers = first.members_as("alice").await;
    let mut service = second.orgs_as_service().await;
    for round in 0..ROUNDS {
        let org = create_org(&mut orgs, &format!("Race {round}")).await;
        let sub = format!("bob{round}");
        let member = join(&first, "alice", &org, &sub, &["admin"]).await.unwrap();
        let bob_id = member.name.rsplit('/').next().unwrap().to_owned();
        let barrier = Arc::new(Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let mut client = transfers.clone();
        let request = transfer(&org, &bob_id);
        let transferring = tokio::spawn(async move {
            a.wait().await;
            client.transfer_ownership(request).await.map(|_| ())
        });
        b.wait().await;
        let deleted = service.delete_user(delete_user(&bob_id)).await.map(|_| ());
        let transferred = transferring.await.unwrap();
        assert!(
            transferred.is_ok() != deleted.is_ok(),
            "round {round}: exactly one wins: {transferred:?} {deleted:?}"
        );
        let refused = transferred.err().or(deleted.err()).unwrap();
        assert!(
            matches!(refused.code(), Code::FailedPrecondition | Code::NotFound),
            "round {round}: {refused:?}"
        );
        let org_id: Uuid = org.uid.parse().unwrap();
        let owners = first
            .count(
                "SELECT 1 FROM membership_roles r JOIN users u ON u.id = r.user_id
                 WHERE r.org_id = $1 AND r.role = 'owner' AND u.deleted_at IS NULL",
                &[&org_id],
            )
            .await;
        assert_eq!(owners, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contact_email_change_the_deleted_user_asked_for_lapses() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    let bob_id = app.user_id("bob").await;
    app.set_member(&org.uid, &bob_id, &["admin"], &[]).await;
    let mut bob = app.orgs_as("bob").await;
    let mut change = org.clone();
    change.contact_email = "bob-private@example.com".into();
    let pending = bob
        .update_organization(update(change, &["contact_email"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.pending_contact_email, "bob-private@example.com");

    app.orgs_as("bob")
        .await
        .delete_user(delete_user(&bob_id))
        .await
        .unwrap();
    let after = alice
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.pending_contact_email, "",
        "the change lapsed with bob"
    );
    assert_eq!(
        app.count(
            "SELECT 1 FROM activity WHERE action = 'user.delete' \
             AND details->'cancelled_changes' ? 'contact_email'",
            &[],
        )
        .await,
        1
    );
}
