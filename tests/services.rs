//! Backend services as callers: who they are (WhoAmI), what they may ask about
//! (`--service-permissions`), and users named by the identity provider's
//! subject wherever a request names a user.

mod common;

use clap::Parser;
use common::*;
use orgd::config::{Cli, Command};
use orgd::pb;
use tonic::Code;

async fn who_am_i(client: &mut OrgClient) -> pb::WhoAmIResponse {
    client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn memberships_of(user: &str) -> pb::ListUserOrganizationsRequest {
    pb::ListUserOrganizationsRequest {
        user: user.into(),
        page_size: 0,
        page_token: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_is_told_who_it_is_and_reads_memberships_by_subject() {
    let app = TestApp::spawn().await;
    let mut service = app.orgs_as_service().await;
    let me = who_am_i(&mut service).await;
    assert_eq!(me.user, None);
    assert!(me.memberships.is_empty());
    assert_eq!(
        me.service,
        Some(pb::BackendService {
            name: format!("services/{SERVICE_SUBJECT}"),
            subject: SERVICE_SUBJECT.into(),
            checks_every_permission: true,
            checkable_permissions: Vec::new(),
        })
    );
    // A user has no `service`.
    assert_eq!(
        who_am_i(&mut app.orgs_as("alice").await).await.service,
        None
    );

    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let by_subject = service
        .list_user_organizations(memberships_of("subjects/alice"))
        .await
        .unwrap()
        .into_inner()
        .memberships;
    let names: Vec<&str> = by_subject.iter().map(|m| m.organization.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&acme.name.as_str()));
    // A subject orgd has never seen belongs nowhere; an unknown id is an error.
    let nobody = service
        .list_user_organizations(memberships_of("subjects/nobody"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nobody, Default::default());
    expect_code(
        service
            .list_user_organizations(memberships_of(&format!("users/{}", uuid::Uuid::now_v7())))
            .await,
        Code::NotFound,
    );
    let status = expect_code(
        service
            .list_user_organizations(memberships_of("subjects/"))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&status), "user");
    // Still no human mutation for a service.
    expect_code(
        service.create_organization(new_org("Service Org")).await,
        Code::PermissionDenied,
    );
    // The organization-token check points a service to its own.
    let status = expect_code(
        service
            .check_permission(pb::CheckPermissionRequest {
                user: "subjects/alice".into(),
                organization: acme.name.clone(),
                permission: "org.read".into(),
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status
            .message()
            .contains("PermissionService/CheckPermission"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_asks_only_about_the_permissions_it_is_configured_for() {
    let app = TestApp::spawn_with(&[
        "--service-permissions",
        &format!("{SERVICE_SUBJECT}=billing.manage,org.read"),
    ])
    .await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut orgs = app.orgs_as_service().await;
    let me = who_am_i(&mut orgs).await.service.unwrap();
    assert!(!me.checks_every_permission);
    assert_eq!(me.checkable_permissions, ["billing.manage", "org.read"]);

    let mut service = app.permissions_as_service().await;
    let ask = |permission: &str| pb::CheckPermissionRequest {
        user: "subjects/alice".into(),
        organization: acme.name.clone(),
        permission: permission.into(),
    };
    assert!(
        service
            .check_permission(ask("billing.manage"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    let status = expect_code(
        service.check_permission(ask("projects.create")).await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("billing.manage, org.read only"),
        "{status:?}"
    );
    let results = service
        .check_permissions(pb::CheckPermissionsRequest {
            checks: ["org.read", "members.manage"]
                .iter()
                .map(|permission| pb::PermissionCheck {
                    correlation_id: permission.to_string(),
                    organization: acme.name.clone(),
                    user: "subjects/alice".into(),
                    permission: permission.to_string(),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    use pb::permission_check_result::Outcome;
    assert!(matches!(&results[0].outcome, Some(Outcome::Result(r)) if r.allowed));
    assert!(
        matches!(&results[1].outcome, Some(Outcome::Error(e))
            if e.code == Code::PermissionDenied as i32 && e.message.starts_with("checks[1].permission: ")),
        "{results:?}"
    );
    expect_code(
        service
            .lookup_members(pb::LookupMembersRequest {
                organization: acme.name.clone(),
                permission: "members.manage".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    // Every role and permission of a user is more than it may see.
    let status = expect_code(
        orgs.list_user_organizations(memberships_of("subjects/alice"))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("LookupOrganizations"),
        "{status:?}"
    );
    // Nor may it delete accounts: only a service that may ask about everything
    // (an identity provider's) acts on them.
    let alice = app.user_id("alice").await;
    let status = expect_code(
        orgs.delete_user(pb::DeleteUserRequest {
            name: format!("users/{alice}"),
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("--service-permissions"),
        "{status:?}"
    );
    assert!(
        app.orgs_as("alice")
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_ok()
    );
}

/// `orgd serve` with these flags, built on a fresh database.
async fn build(flags: &[&str]) -> anyhow::Result<orgd::server::App> {
    let argv = [
        "orgd",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
    ];
    let Command::Serve(args) = Cli::parse_from(argv.iter().chain(flags)).command else {
        unreachable!("argv starts with serve")
    };
    orgd::server::App::build(args, &fresh_database().await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn service_permissions_must_name_services_and_permissions_orgd_knows() {
    for (flags, says) in [
        (
            &[
                "--service-subjects",
                "deploy",
                "--service-permissions",
                "deploy=org.fly",
            ][..],
            "'org.fly'",
        ),
        (
            &[
                "--service-subjects",
                "deploy",
                "--service-permissions",
                "mailer=org.read",
            ],
            "'mailer'",
        ),
    ] {
        let refused = build(flags).await.err().expect("refused at start-up");
        assert!(refused.to_string().contains(says), "{refused:#}");
    }
    assert!(
        build(&[
            "--service-subjects",
            "deploy",
            "--service-permissions",
            "deploy=org.read"
        ])
        .await
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ownership_goes_to_a_member_named_by_user_or_subject() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let bob = join(&app, "alice", &acme, "bob", &["admin"]).await.unwrap();
    let transfer = |new_owner: &str| pb::TransferOwnershipRequest {
        organization: acme.name.clone(),
        new_owner: new_owner.into(),
    };
    let mut alice = app.members_as("alice").await;
    // Nobody by that subject is a member.
    let status = expect_code(
        alice.transfer_ownership(transfer("subjects/nobody")).await,
        Code::NotFound,
    );
    assert!(
        status
            .message()
            .contains("'subjects/nobody' is not a member"),
        "{status:?}"
    );
    expect_code(
        alice.transfer_ownership(transfer("bob")).await,
        Code::InvalidArgument,
    );
    let moved = alice
        .transfer_ownership(transfer("subjects/bob"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.new_owner.unwrap().name, bob.name);
    // And back, by user id.
    let alice_id = app.user_id("alice").await;
    let back = app
        .members_as("bob")
        .await
        .transfer_ownership(transfer(&format!("users/{alice_id}")))
        .await
        .unwrap()
        .into_inner();
    assert!(back.new_owner.unwrap().roles.contains(&"owner".to_owned()));
}
