//! Refusals a person can act on: unknown names come with the valid ones (and
//! the closest), organizations are named the same way everywhere, the caller is
//! "you", and counts agree with their numbers.

mod common;

use common::*;
use orgd::pb::{self, token_service_client::TokenServiceClient};
use tonic::Code;

/// The description of the one field violation of an INVALID_ARGUMENT.
fn violation(status: &tonic::Status) -> (String, String) {
    let details =
        tonic_types::StatusExt::get_details_bad_request(status).expect("a BadRequest detail");
    let violation = &details.field_violations[0];
    (violation.field.clone(), violation.description.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_unknown_permission_or_role_lists_the_valid_names_and_suggests_the_closest() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut alice = app.members_as("alice").await;

    // An invitation's grant: a typo, and another case, are suggested.
    let mut typo = invitation(&org, "x@example.com", &[]);
    typo.invitation.as_mut().unwrap().extra_permissions = vec!["members.mange".into()];
    let status = expect_code(alice.create_invitation(typo).await, Code::InvalidArgument);
    let (field, description) = violation(&status);
    assert_eq!(field, "invitation.extra_permissions");
    assert!(
        description.starts_with(
            "unknown permission 'members.mange': did you mean 'members.manage'? The permissions are: activity.read, billing.manage,"
        ),
        "{description}"
    );
    let shouted = expect_code(
        alice
            .create_invitation(invitation(&org, "x@example.com", &["Developer"]))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        shouted.message().contains(
            "unknown role 'Developer': did you mean 'developer'? The roles are: admin, billing, developer, owner, viewer"
        ),
        "{shouted:?}"
    );

    // A member's update: nothing close, so only the list.
    let bob = join(&app, "alice", &org, "bob", &["viewer"]).await.unwrap();
    let mut grant = set_roles(&bob.name, &[]);
    grant.member.as_mut().unwrap().extra_permissions = vec!["deploy".into()];
    grant.update_mask.as_mut().unwrap().paths = vec!["extra_permissions".into()];
    let status = expect_code(alice.update_member(grant).await, Code::InvalidArgument);
    let (field, description) = violation(&status);
    assert_eq!(field, "member.extra_permissions");
    assert!(!description.contains("did you mean"), "{description}");
    assert!(
        description.starts_with("unknown permission 'deploy': The permissions are: "),
        "{description}"
    );

    // A token's scope.
    let mut tokens = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let status = expect_code(
        tokens
            .create_api_token(pb::CreateApiTokenRequest {
                parent: org.name.clone(),
                api_token: Some(pb::ApiToken {
                    display_name: "checker".into(),
                    extra_permissions: vec!["permission.check".into()],
                    ..Default::default()
                }),
            })
            .await,
        Code::InvalidArgument,
    );
    let (field, description) = violation(&status);
    assert_eq!(field, "api_token.extra_permissions");
    assert!(
        description.contains("did you mean 'permissions.check'?"),
        "{description}"
    );

    // CheckPermission, asked by a backend service's token.
    let secret = checker_token(&app, "alice", &org).await;
    let status = expect_code(
        app.orgs(Some(&secret))
            .await
            .check_permission(pb::CheckPermissionRequest {
                user: bob
                    .name
                    .split("/members/")
                    .nth(1)
                    .map(|id| format!("users/{id}"))
                    .unwrap(),
                organization: org.name.clone(),
                permission: "billing.mange".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    let (field, description) = violation(&status);
    assert_eq!(field, "permission");
    assert!(
        description.contains("did you mean 'billing.manage'? The permissions are: "),
        "{description}"
    );
}

/// How every message names an organization to someone who may see it.
fn described(org: &pb::Organization) -> String {
    format!("\"{}\" ({}, {})", org.display_name, org.slug, org.name)
}

#[tokio::test(flavor = "multi_thread")]
async fn members_are_told_which_organization_and_strangers_only_what_they_sent() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme Corp").await;
    join(&app, "alice", &org, "bob", &["viewer"]).await.unwrap();

    // A member lacking a permission: what they need, where, and what they have.
    let mut renamed = org.clone();
    renamed.display_name = "Bob's".into();
    let status = expect_code(
        app.orgs_as("bob")
            .await
            .update_organization(update(renamed, &["display_name"]))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        status.message(),
        format!(
            "you need permission 'org.update' in {}; your roles there: viewer",
            described(&org)
        )
    );

    // A stranger: NOT_FOUND with the name they sent, by id or by slug, and
    // nothing of the organization.
    let mut carol = app.orgs_as("carol").await;
    for name in [org.name.clone(), format!("organizations/{}", org.slug)] {
        let status = expect_code(carol.get_organization(get(&name)).await, Code::NotFound);
        assert_eq!(status.message(), format!("organization {name} not found"));
    }

    // The last owner is "you".
    let status = expect_code(
        app.members_as("alice")
            .await
            .leave_organization(pb::LeaveOrganizationRequest {
                organization: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().starts_with(&format!(
            "you are the last owner of {}, and an organization keeps at least one: ",
            described(&org)
        )),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_agree_with_their_numbers() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    let mut resources = pb::resource_service_client::ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    resources
        .register_resource(pb::RegisterResourceRequest {
            parent: org.name.clone(),
            resource: Some(pb::Resource {
                kind: "app".into(),
                external_id: "web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let status = expect_code(
        alice.delete_organization(delete(&org)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        status.message(),
        format!(
            "{} still holds 1 resource (app/web): unregister or transfer it first",
            described(&org)
        )
    );
}
