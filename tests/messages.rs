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
    let secret = tokens
        .create_api_token(pb::CreateApiTokenRequest {
            parent: org.name.clone(),
            api_token: Some(pb::ApiToken {
                display_name: "checker".into(),
                extra_permissions: vec!["permissions.check".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
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
