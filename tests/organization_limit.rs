//! How many organizations a user may belong to: the service's
//! `--max-orgs-per-user`, or the user's own limit, which support tooling (a
//! backend service) sets with UpdateUser, as Koyeb raises it on request.

mod common;

use common::*;
use orgd::pb;
use prost_types::FieldMask;
use tonic::Code;

fn set_limit(user: &str, limit: i32) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User {
            name: user.into(),
            organization_limit: limit,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["organization_limit".into()],
        }),
    }
}

async fn me(client: &mut OrgClient) -> pb::WhoAmIResponse {
    client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn support_raises_a_users_limit_and_returns_it_to_the_service_s() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "2"]).await;
    let mut alice = app.orgs_as("alice").await;
    let alice_user = me(&mut alice).await.user.unwrap();
    assert_eq!(alice_user.organization_limit, 2);
    // The personal organization counts: one team organization fits.
    create_org(&mut alice, "First").await;
    let refused = expect_code(
        alice.create_organization(new_org("Second")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        refused.message(),
        "you already belong to 2 organizations, the most you may; leave or delete one \
         first, or ask support to raise your limit"
    );

    let mut support = app.orgs_as_service().await;
    let raised = support
        .update_user(set_limit("subjects/alice", 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (raised.name.as_str(), raised.organization_limit),
        (alice_user.name.as_str(), 3)
    );
    assert_eq!(me(&mut alice).await.user.unwrap().organization_limit, 3);
    create_org(&mut alice, "Second").await;
    let refused = expect_code(
        alice.create_organization(new_org("Third")).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused
            .message()
            .starts_with("you already belong to 3 organizations"),
        "{refused:?}"
    );
    // Accepting an invitation counts against the user's own limit too.
    let bobs = create_org(&mut app.orgs_as("bob").await, "Bobs").await;
    app.members_as("bob")
        .await
        .create_invitation(invitation(&bobs, "alice@example.com", &["viewer"]))
        .await
        .unwrap();
    let token = latest_token(&app, "alice@example.com").await;
    let refused = expect_code(
        app.members_as("alice")
            .await
            .accept_invitation(accept(&token))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused
            .message()
            .starts_with("you already belong to 3 organizations"),
        "{refused:?}"
    );

    // Back to the service's limit: the third membership stays, and no new one
    // is made until under the limit.
    let restored = support
        .update_user(set_limit(&alice_user.name, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.organization_limit, 2);
    assert_eq!(me(&mut alice).await.memberships.len(), 3);
    expect_code(
        alice.create_organization(new_org("Fourth")).await,
        Code::FailedPrecondition,
    );
    let audited = app
        .count(
            "SELECT 1 FROM activity WHERE action = 'user.update' AND target = $1 \
             AND actor = $2 AND org_id IS NULL",
            &[&alice_user.name, &format!("services/{SERVICE_SUBJECT}")],
        )
        .await;
    assert_eq!(audited, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_support_sets_a_limit_and_bad_requests_name_their_field() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let alice_user = me(&mut alice).await.user.unwrap();
    let bob = format!("users/{}", app.user_id("bob").await);

    // A user reads their own account, not another's, and sets no limit.
    let own = alice
        .get_user(pb::GetUserRequest {
            name: alice_user.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((own.uid, own.organization_limit), (alice_user.uid, 5));
    expect_code(
        alice
            .get_user(pb::GetUserRequest { name: bob.clone() })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        alice.update_user(set_limit(&alice_user.name, 50)).await,
        Code::PermissionDenied,
    );
    let mut support = app.orgs_as_service().await;
    let read = support
        .get_user(pb::GetUserRequest { name: bob.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.name, bob);

    let mut no_mask = set_limit(&bob, 3);
    no_mask.update_mask = None;
    let mut other_field = set_limit(&bob, 3);
    other_field.update_mask = Some(FieldMask {
        paths: vec!["email".into()],
    });
    let no_user = pb::UpdateUserRequest {
        user: None,
        update_mask: set_limit(&bob, 3).update_mask,
    };
    for (request, field, says) in [
        (no_mask, "update_mask", "updatable: organization_limit"),
        (other_field, "update_mask", "'email' cannot be updated"),
        (
            set_limit(&bob, 1001),
            "user.organization_limit",
            "use 1 to 1000, or 0 for the service's limit of 5",
        ),
        (
            set_limit(&bob, -1),
            "user.organization_limit",
            "-1 is not a limit",
        ),
        (no_user, "user", "required"),
        (set_limit("groups/x", 3), "user.name", ""),
    ] {
        let status = expect_code(support.update_user(request).await, Code::InvalidArgument);
        assert_eq!(violated_field(&status), field, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    let unseen = expect_code(
        support
            .update_user(set_limit("subjects/nobody-yet", 3))
            .await,
        Code::NotFound,
    );
    assert!(unseen.message().contains("has not seen"), "{unseen:?}");
    expect_code(
        support
            .update_user(set_limit("users/01a24303-07fa-76bc-902d-a0bcf00f0165", 3))
            .await,
        Code::NotFound,
    );
    assert_eq!(
        app.count(
            "SELECT 1 FROM users WHERE organization_limit IS NOT NULL",
            &[]
        )
        .await,
        0,
        "nothing was written"
    );

    // A service limited to some permissions does not act on accounts.
    let limited = TestApp::spawn_with(&[
        "--service-permissions",
        &format!("{SERVICE_SUBJECT}=org.read"),
    ])
    .await;
    let carol = format!("users/{}", limited.user_id("carol").await);
    let status = expect_code(
        limited
            .orgs_as_service()
            .await
            .update_user(set_limit(&carol, 10))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("--service-permissions"),
        "{status:?}"
    );
}
