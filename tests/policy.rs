//! The access policy covers every RPC: enumerated from the descriptor, each method
//! is refused without a token, refused for a caller lacking exactly its
//! permission, NOT_FOUND for non-members, PERMISSION_DENIED for another user's
//! account — and reachable for the right caller.

mod common;

use common::{TestApp, create_org, raw, raw::request, user_token};
use orgd::auth::{OrgPolicy, Policy, PolicyTable};
use orgd::pb;
use prost_reflect::DescriptorPool;
use tonic::Code;

/// Whether a call got past the policy into a working handler (which may still
/// reject the deliberately empty request, e.g. with INVALID_ARGUMENT).
fn reached_handler(code: Code) -> bool {
    !matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::Internal
            | Code::Unimplemented
            | Code::Unknown
    )
}

fn code(result: &Result<Vec<u8>, tonic::Status>) -> Code {
    result
        .as_ref()
        .map_or_else(|status| status.code(), |_| Code::Ok)
}

/// What a request names: the organization, or a resource inside it.
fn target(org_name: &str, child_resource: bool) -> String {
    if child_resource {
        format!("{org_name}/things/{}", uuid::Uuid::now_v7())
    } else {
        org_name.to_owned()
    }
}

/// Non-members cannot tell a foreign organization from a missing one.
async fn assert_non_members_see_nothing(
    channel: &tonic::transport::Channel,
    path: &str,
    method: &prost_reflect::MethodDescriptor,
    scope: &OrgPolicy,
    org_name: &str,
    outsider_token: &str,
) {
    let org_field = &scope.org_field;
    let foreign = raw::call(
        channel,
        path,
        request(
            &method.input(),
            org_field,
            &target(org_name, scope.child_resource),
        ),
        Some(outsider_token),
    )
    .await;
    assert_eq!(code(&foreign), Code::NotFound, "{path} for a non-member");
    let missing_name = format!("organizations/{}", uuid::Uuid::now_v7());
    let missing = raw::call(
        channel,
        path,
        request(
            &method.input(),
            org_field,
            &target(&missing_name, scope.child_resource),
        ),
        Some(outsider_token),
    )
    .await;
    assert_eq!(
        code(&missing),
        Code::NotFound,
        "{path} for a missing organization"
    );
    assert_eq!(
        foreign.unwrap_err().message().replace(org_name, "X"),
        missing.unwrap_err().message().replace(&missing_name, "X"),
        "{path}: a foreign organization must look exactly like a missing one"
    );
}

/// The permissions that grant one of `permissions`: themselves and those that
/// imply them.
async fn granting(app: &TestApp, permissions: &[String]) -> Vec<String> {
    app.db
        .query(
            "SELECT unnest($1::text[])
             UNION
             SELECT permission FROM permission_implications WHERE implies = ANY ($1)",
            &[&permissions],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_declares_and_enforces_its_policy() {
    // A second service, limited to asking about one permission.
    let app = TestApp::spawn_with(&[
        "--service-subjects",
        "narrow",
        "--service-permissions",
        "narrow=org.read",
    ])
    .await;
    let org = create_org(&mut app.orgs_as("owner").await, "Guarded").await;
    let member_id = app.user_id("member").await;
    app.user_id("outsider").await;
    let all_permissions: Vec<String> = app
        .db
        .query("SELECT name FROM permissions", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();

    let channel = app.channel().await;
    let service_token = common::token_for(&orgd::auth::Claims::new(
        common::ISSUER,
        common::AUDIENCE,
        common::SERVICE_SUBJECT,
        std::time::Duration::from_secs(600),
    ));
    let limited_token = common::token_for(&orgd::auth::Claims::new(
        common::ISSUER,
        common::AUDIENCE,
        "narrow",
        std::time::Duration::from_secs(600),
    ));
    let (owner_token, member_token, outsider_token) = (
        user_token("owner"),
        user_token("member"),
        user_token("outsider"),
    );
    // An API token holding every permission its creator has.
    let api_token = pb::token_service_client::TokenServiceClient::with_interceptor(
        channel.clone(),
        common::Bearer::new(Some(&owner_token)),
    )
    .create_api_token(pb::CreateApiTokenRequest {
        parent: org.name.clone(),
        api_token: Some(pb::ApiToken {
            display_name: "everything".into(),
            roles: vec!["owner".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .secret;
    let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();

    let mut checked = Vec::new();
    for service in pool.services().filter(|s| s.package_name() == pb::PACKAGE) {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let policy = table
                .get(&path)
                .and_then(|entry| entry.policy.clone())
                .unwrap_or_else(|| panic!("{path} declares no (orgd.v1.policy)"));
            let (org_field, child_resource) = match &policy {
                Policy::Org(scope) => (scope.org_field.clone(), scope.child_resource),
                _ => (Vec::new(), false),
            };
            let body = request(
                &method.input(),
                &org_field,
                &target(&org.name, child_resource),
            );

            let anonymous = raw::call(&channel, &path, body.clone(), None).await;
            assert_eq!(
                code(&anonymous),
                Code::Unauthenticated,
                "{path} without a token"
            );
            let forged = raw::call(&channel, &path, body.clone(), Some("not.a.jwt")).await;
            assert_eq!(
                code(&forged),
                Code::Unauthenticated,
                "{path} with a forged token"
            );

            match &policy {
                Policy::Org(scope) => {
                    match &scope.permission {
                        Some(permission) => {
                            // Every permission but those that grant the one
                            // required (itself, what implies it, and the
                            // narrower own-resources permission): refused.
                            let mut admitting = vec![permission.to_string()];
                            admitting.extend(scope.own_permission.iter().map(|p| p.to_string()));
                            let admitted = granting(&app, &admitting).await;
                            let others: Vec<&str> = all_permissions
                                .iter()
                                .filter(|p| !admitted.contains(p))
                                .map(String::as_str)
                                .collect();
                            app.set_member(&org.uid, &member_id, &[], &others).await;
                            let lacking =
                                raw::call(&channel, &path, body.clone(), Some(&member_token)).await;
                            assert_eq!(
                                code(&lacking),
                                Code::PermissionDenied,
                                "{path} for a member lacking {permission}: {lacking:?}"
                            );
                            // The narrower permission alone: past the policy,
                            // for the caller's own resources.
                            if let Some(own) = &scope.own_permission {
                                app.set_member(&org.uid, &member_id, &[], &[own]).await;
                                let narrowed =
                                    raw::call(&channel, &path, body.clone(), Some(&member_token))
                                        .await;
                                assert!(
                                    reached_handler(code(&narrowed)),
                                    "{path} for a member holding {own}: {narrowed:?}"
                                );
                            }
                            // Each permission implying it (the catalogue's
                            // implications), held alone: past the policy.
                            let required = permission.to_string();
                            for implying in granting(&app, std::slice::from_ref(&required))
                                .await
                                .into_iter()
                                .filter(|p| *p != required)
                            {
                                app.set_member(&org.uid, &member_id, &[], &[&implying])
                                    .await;
                                let implied =
                                    raw::call(&channel, &path, body.clone(), Some(&member_token))
                                        .await;
                                assert!(
                                    reached_handler(code(&implied)),
                                    "{path} for a member holding {implying}, which implies {permission}: {implied:?}"
                                );
                            }
                            // Exactly the permission required: past the policy.
                            app.set_member(&org.uid, &member_id, &[], &[permission])
                                .await;
                        }
                        // Membership alone, without any role or permission, suffices.
                        None => app.set_member(&org.uid, &member_id, &[], &[]).await,
                    }
                    let allowed =
                        raw::call(&channel, &path, body.clone(), Some(&member_token)).await;
                    assert!(
                        reached_handler(code(&allowed)),
                        "{path} for a member holding {:?}: {allowed:?}",
                        scope.permission
                    );
                    assert_non_members_see_nothing(
                        &channel,
                        &path,
                        &method,
                        scope,
                        &org.name,
                        &outsider_token,
                    )
                    .await;
                }
                Policy::Authenticated { services, .. } => {
                    let as_service =
                        raw::call(&channel, &path, body.clone(), Some(&service_token)).await;
                    if *services {
                        assert!(
                            reached_handler(code(&as_service)),
                            "{path} for a service: {as_service:?}"
                        );
                    } else {
                        assert_eq!(
                            code(&as_service),
                            Code::PermissionDenied,
                            "{path} for a service"
                        );
                    }
                    let as_user =
                        raw::call(&channel, &path, body.clone(), Some(&outsider_token)).await;
                    assert!(
                        reached_handler(code(&as_user)),
                        "{path} for a user: {as_user:?}"
                    );
                }
                Policy::Account { user_field } => {
                    // Its own user and any service get past the policy, each
                    // with an account to act on; another user is refused, the
                    // same for an existing account as for a missing one.
                    let naming =
                        |id: &str| request(&method.input(), user_field, &format!("users/{id}"));
                    let own_id = app.user_id("account-holder").await;
                    let other_id = app.user_id("account-other").await;
                    let foreign =
                        raw::call(&channel, &path, naming(&own_id), Some(&outsider_token)).await;
                    assert_eq!(
                        code(&foreign),
                        Code::PermissionDenied,
                        "{path} for another user"
                    );
                    let missing = raw::call(
                        &channel,
                        &path,
                        naming(&uuid::Uuid::now_v7().to_string()),
                        Some(&outsider_token),
                    )
                    .await;
                    assert_eq!(
                        foreign.unwrap_err().message(),
                        missing.unwrap_err().message(),
                        "{path}: another user's account must look exactly like a missing one"
                    );
                    let as_holder = raw::call(
                        &channel,
                        &path,
                        naming(&own_id),
                        Some(&user_token("account-holder")),
                    )
                    .await;
                    assert!(
                        reached_handler(code(&as_holder)),
                        "{path} for its own user: {as_holder:?}"
                    );
                    let as_service =
                        raw::call(&channel, &path, naming(&other_id), Some(&service_token)).await;
                    assert!(
                        reached_handler(code(&as_service)),
                        "{path} for a service: {as_service:?}"
                    );
                }
                Policy::Service { limited_services } => {
                    // The layer's refusal of a limited service names the flag;
                    // a method open to it decides in its handler.
                    let as_limited =
                        raw::call(&channel, &path, body.clone(), Some(&limited_token)).await;
                    let refused_by_layer = as_limited.as_ref().is_err_and(|status| {
                        status.code() == Code::PermissionDenied
                            && status.message().contains("may ask about every permission")
                    });
                    assert_eq!(
                        refused_by_layer, !limited_services,
                        "{path} for a service limited to org.read: {as_limited:?}"
                    );
                    let as_owner =
                        raw::call(&channel, &path, body.clone(), Some(&owner_token)).await;
                    assert_eq!(code(&as_owner), Code::PermissionDenied, "{path} for a user");
                    let as_api_token =
                        raw::call(&channel, &path, body.clone(), Some(&api_token)).await;
                    assert_eq!(
                        code(&as_api_token),
                        Code::PermissionDenied,
                        "{path} for an API token"
                    );
                    let as_service =
                        raw::call(&channel, &path, body.clone(), Some(&service_token)).await;
                    assert!(
                        reached_handler(code(&as_service)),
                        "{path} for a service: {as_service:?}"
                    );
                }
            }
            checked.push(path);
        }
    }
    let declared: usize = pool
        .services()
        .filter(|s| s.package_name() == pb::PACKAGE)
        .map(|s| s.methods().len())
        .sum();
    assert_eq!(checked.len(), declared);
    for service in [
        "OrgService",
        "MemberService",
        "BillingService",
        "ActivityService",
        "PermissionService",
    ] {
        assert!(
            checked
                .iter()
                .any(|path| path.starts_with(&format!("/orgd.v1.{service}/"))),
            "expected {service} among {checked:?}"
        );
    }
    assert!(declared >= 58, "expected every method, found {checked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_methods_are_refused() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let result = raw::call(
        &channel,
        "/orgd.v1.OrgService/DropAllTables",
        Vec::new(),
        Some(&user_token("x")),
    )
    .await;
    assert_eq!(code(&result), Code::Unimplemented);
    let info = tonic_types::StatusExt::get_details_error_info(&result.unwrap_err())
        .expect("an ErrorInfo detail, as on every refusal");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("UNKNOWN_METHOD", "orgd")
    );
    let result = raw::call(&channel, "/orgd.v1.NoSuchService/Get", Vec::new(), None).await;
    assert_eq!(code(&result), Code::Unimplemented);
}
