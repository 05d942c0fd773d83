//! PermissionService's checks: a backend service asks, for any organization,
//! whether a user (by id or by the identity provider's subject) may do
//! something there, one question at a time or up to 100 at once, and hears why.

mod common;

use common::*;
use orgd::pb;
use orgd::pb::check_permission_response::Reason;
use orgd::pb::permission_check_result::Outcome;
use prost::Message;
use tonic::Code;

fn question(user: &str, organization: &str, permission: &str) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        user: user.into(),
        organization: organization.into(),
        permission: permission.into(),
    }
}

/// `allowed` and `reason` of one CheckPermission.
async fn ask(
    client: &mut PermissionClient,
    user: &str,
    organization: &str,
    permission: &str,
) -> Result<(bool, Reason), tonic::Status> {
    let answer = client
        .check_permission(question(user, organization, permission))
        .await?
        .into_inner();
    Ok((answer.allowed, answer.reason()))
}

fn check(id: &str, organization: &str, user: &str, permission: &str) -> pb::PermissionCheck {
    pb::PermissionCheck {
        correlation_id: id.into(),
        organization: organization.into(),
        user: user.into(),
        permission: permission.into(),
    }
}

async fn batch(
    client: &mut PermissionClient,
    checks: Vec<pb::PermissionCheck>,
) -> Result<Vec<pb::PermissionCheckResult>, tonic::Status> {
    Ok(client
        .check_permissions(pb::CheckPermissionsRequest { checks })
        .await?
        .into_inner()
        .results)
}

/// A batch item's error as the status a call failing with it would have.
fn item_error(result: &pb::PermissionCheckResult) -> tonic::Status {
    match &result.outcome {
        Some(Outcome::Error(status)) => tonic::Status::with_details(
            Code::from(status.code),
            status.message.clone(),
            status.encode_to_vec().into(),
        ),
        other => panic!(
            "{}: expected an error, got {other:?}",
            result.correlation_id
        ),
    }
}

fn item_answer(result: &pb::PermissionCheckResult) -> (bool, Reason) {
    match &result.outcome {
        Some(Outcome::Result(answer)) => (answer.allowed, answer.reason()),
        other => panic!(
            "{}: expected an answer, got {other:?}",
            result.correlation_id
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_checks_a_user_by_subject_in_organizations_it_holds_no_token_for() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let globex = create_org(&mut app.orgs_as("alice").await, "Globex").await;
    let bob = join(&app, "alice", &acme, "bob", &["developer"])
        .await
        .unwrap();
    join(&app, "alice", &globex, "bob", &["billing"])
        .await
        .unwrap();
    // The service holds no API token anywhere: its own sign-in is enough.
    assert_eq!(app.count("SELECT 1 FROM api_tokens", &[]).await, 0);
    let mut service = app.permissions_as_service().await;

    for (organization, permission) in [
        (&acme.name, "projects.create"),
        (&globex.name, "billing.manage"),
    ] {
        assert_eq!(
            ask(&mut service, "subjects/bob", organization, permission)
                .await
                .unwrap(),
            (true, Reason::Allowed),
            "{organization} {permission}"
        );
    }

    // The very next check after a removal or a role change sees it.
    app.members_as("alice")
        .await
        .remove_member(pb::RemoveMemberRequest {
            name: bob.name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        ask(&mut service, "subjects/bob", &acme.name, "projects.create")
            .await
            .unwrap(),
        (false, Reason::NotMember)
    );
    let bob_in_globex = format!("{}/members/{}", globex.name, app.user_id("bob").await);
    app.members_as("alice")
        .await
        .update_member(set_roles(&bob_in_globex, &["viewer"]))
        .await
        .unwrap();
    assert_eq!(
        ask(&mut service, "subjects/bob", &globex.name, "billing.manage")
            .await
            .unwrap(),
        (false, Reason::LacksPermission)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_say_why() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let alice_id = app.user_id("alice").await;
    // A subject holding characters that must be percent-encoded in a name.
    let carol_id = app.user_id("auth0|carol/7").await;
    app.set_member(&acme.uid, &carol_id, &[], &["billing.manage"])
        .await;
    let mut service = app.permissions_as_service().await;

    for (user, organization, permission, expected) in [
        (
            format!("users/{alice_id}"),
            acme.name.clone(),
            "org.delete",
            (true, Reason::Allowed),
        ),
        (
            "subjects/alice".into(),
            format!("organizations/{}", acme.slug),
            "org.delete",
            (true, Reason::Allowed),
        ),
        // An individual grant, and what it implies.
        (
            "subjects/auth0%7Ccarol%2F7".into(),
            acme.name.clone(),
            "billing.read",
            (true, Reason::Allowed),
        ),
        (
            "subjects/auth0%7Ccarol%2F7".into(),
            acme.name.clone(),
            "members.read",
            (false, Reason::LacksPermission),
        ),
        // Users orgd never saw hold nothing; neither is an error.
        (
            "subjects/never-signed-in".into(),
            acme.name.clone(),
            "org.read",
            (false, Reason::NotMember),
        ),
        (
            format!("users/{}", uuid::Uuid::now_v7()),
            acme.name.clone(),
            "org.read",
            (false, Reason::NotMember),
        ),
        (
            "subjects/alice".into(),
            "organizations/nowhere".into(),
            "org.read",
            (false, Reason::OrganizationNotFound),
        ),
    ] {
        assert_eq!(
            ask(&mut service, &user, &organization, permission)
                .await
                .unwrap(),
            expected,
            "{user} {organization} {permission}"
        );
    }
    assert_eq!(
        app.count("SELECT 1 FROM users WHERE subject = 'never-signed-in'", &[])
            .await,
        0,
        "asking about a subject does not create its user"
    );

    app.orgs_as("alice")
        .await
        .delete_organization(delete(&acme))
        .await
        .unwrap();
    assert_eq!(
        ask(&mut service, "subjects/alice", &acme.name, "org.read")
            .await
            .unwrap(),
        (false, Reason::OrganizationDeleted)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_questions_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut service = app.permissions_as_service().await;
    for (user, organization, permission, field, says) in [
        (
            "subjects/alice",
            acme.name.as_str(),
            "org.fly",
            "permission",
            "'org.fly'",
        ),
        ("subjects/alice", &acme.name, "", "permission", "required"),
        (
            "subjects/alice",
            &acme.name,
            "Org Read",
            "permission",
            "'Org Read'",
        ),
        (
            "alice",
            &acme.name,
            "org.read",
            "user",
            "subjects/{subject}",
        ),
        ("users/alice", &acme.name, "org.read", "user", "UUID"),
        ("subjects/a/b", &acme.name, "org.read", "user", "%2F"),
        (
            "subjects/alice",
            "acme",
            "org.read",
            "organization",
            "'acme'",
        ),
    ] {
        let status = expect_code(
            ask(&mut service, user, organization, permission).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), field, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_services_ask_permission_service_and_api_tokens_keep_their_own_check() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    join(&app, "alice", &acme, "bob", &["developer"])
        .await
        .unwrap();
    let secret = checker_token(&app, "alice", &acme).await;

    for token in [user_token("alice"), secret.clone()] {
        let mut client = app.permissions(&token).await;
        let status = expect_code(
            ask(&mut client, "subjects/bob", &acme.name, "org.read").await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("backend services"), "{status:?}");
        expect_code(
            batch(
                &mut client,
                vec![check("1", &acme.name, "subjects/bob", "org.read")],
            )
            .await,
            Code::PermissionDenied,
        );
    }

    // The organization's API token still asks OrgService, in its own
    // organization, naming users by subject too, and hears why.
    let mut token = app.orgs(Some(&secret)).await;
    for (user, permission, expected) in [
        ("subjects/bob", "projects.create", (true, Reason::Allowed)),
        (
            "subjects/bob",
            "org.update",
            (false, Reason::LacksPermission),
        ),
        ("subjects/nobody", "org.read", (false, Reason::NotMember)),
    ] {
        let answer = token
            .check_permission(question(user, &acme.name, permission))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (answer.allowed, answer.reason()),
            expected,
            "{user} {permission}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answers_up_to_100_checks_each_on_its_own() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let globex = create_org(&mut app.orgs_as("alice").await, "Globex").await;
    let bob_id = app.user_id("bob").await;
    app.set_member(&acme.uid, &bob_id, &["developer"], &[])
        .await;
    let mut service = app.permissions_as_service().await;

    // Exactly 100: every answer in the request's order, with its correlation
    // id, agreeing with the single check.
    let users = [
        "subjects/alice".to_owned(),
        format!("users/{bob_id}"),
        "subjects/ghost".into(),
    ];
    let orgs = [acme.name.clone(), format!("organizations/{}", globex.slug)];
    let permissions = ["org.delete", "projects.create", "billing.read", "org.read"];
    let checks: Vec<pb::PermissionCheck> = (0..100)
        .map(|i| {
            check(
                &format!("c{i}"),
                &orgs[i % orgs.len()],
                &users[i % users.len()],
                permissions[i % permissions.len()],
            )
        })
        .collect();
    let results = batch(&mut service, checks.clone()).await.unwrap();
    assert_eq!(results.len(), 100);
    for (check, result) in checks.iter().zip(&results) {
        assert_eq!(result.correlation_id, check.correlation_id);
        let single = ask(
            &mut service,
            &check.user,
            &check.organization,
            &check.permission,
        )
        .await
        .unwrap();
        assert_eq!(item_answer(result), single, "{check:?}");
    }
    assert!(results.iter().any(|r| item_answer(r).0));
    assert!(results.iter().any(|r| !item_answer(r).0));

    // 101, or none: the whole call is refused.
    let mut too_many = checks.clone();
    too_many.push(check("c100", &acme.name, "subjects/alice", "org.read"));
    for checks in [too_many, Vec::new()] {
        let status = expect_code(batch(&mut service, checks).await, Code::InvalidArgument);
        assert_eq!(violated_field(&status), "checks");
        assert!(status.message().contains("1 to 100"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_check_is_its_own_error_and_the_others_are_answered() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut service = app.permissions_as_service().await;
    let results = batch(
        &mut service,
        vec![
            check("fine", &acme.name, "subjects/alice", "org.update"),
            check("unknown", &acme.name, "subjects/alice", "org.fly"),
            check("malformed user", &acme.name, "alice", "org.read"),
            check("malformed org", "acme", "subjects/alice", "org.read"),
            check(
                "missing org",
                "organizations/nowhere",
                "subjects/alice",
                "org.read",
            ),
            // Correlation ids are the caller's: repeated, or empty, as it likes.
            check("fine", &acme.name, "subjects/bob", "org.update"),
            check("", &acme.name, "subjects/alice", "members.fly"),
        ],
    )
    .await
    .unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r.correlation_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "fine",
            "unknown",
            "malformed user",
            "malformed org",
            "missing org",
            "fine",
            ""
        ]
    );
    assert_eq!(item_answer(&results[0]), (true, Reason::Allowed));
    assert_eq!(
        item_answer(&results[4]),
        (false, Reason::OrganizationNotFound)
    );
    assert_eq!(item_answer(&results[5]), (false, Reason::NotMember));
    for (index, field, says) in [
        (1, "checks[1].permission", "'org.fly'"),
        (2, "checks[2].user", "'alice'"),
        (3, "checks[3].organization", "'acme'"),
        (6, "checks[6].permission", "'members.fly'"),
    ] {
        let status = item_error(&results[index]);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_field(&status), field);
        assert!(status.message().contains(says), "{status:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_FIELD", "orgd")
        );
    }
}
