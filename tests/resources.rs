//! ResourceService: the registry other services write to, its plan limits, its
//! hold on deletion, and transfers between organizations owned by the caller.

mod common;

use common::*;
use orgd::pb::{self, resource_service_client::ResourceServiceClient};
use tonic::Code;

type Client = ResourceServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

async fn resources_as(app: &TestApp, sub: &str) -> Client {
    ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token(sub))),
    )
}

fn register(org: &str, kind: &str, external_id: &str) -> pb::RegisterResourceRequest {
    pb::RegisterResourceRequest {
        parent: org.into(),
        resource: Some(pb::Resource {
            kind: kind.into(),
            external_id: external_id.into(),
            display_name: format!("{kind} {external_id}"),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_hold_deletion_and_move_only_between_owned_organizations() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let (source, target) = (
        create_org(&mut orgs, "Source").await,
        create_org(&mut orgs, "Target").await,
    );
    let mut alice = resources_as(&app, "alice").await;
    let app_resource = alice
        .register_resource(register(&source.name, "app", "app-123"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        app_resource
            .name
            .starts_with(&format!("{}/resources/", source.name))
    );
    let duplicate = expect_code(
        alice
            .register_resource(register(&target.name, "app", "app-123"))
            .await,
        Code::AlreadyExists,
    );
    assert!(duplicate.message().contains("app-123"), "{duplicate:?}");
    expect_code(
        alice
            .register_resource(register(&source.name, "Bad Kind", "x"))
            .await,
        Code::InvalidArgument,
    );

    // Deletion is refused while the resource is registered, and names it.
    let refused = expect_code(
        orgs.delete_organization(delete(&source)).await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("app/app-123"), "{refused:?}");

    // An admin of the source who owns the target may not move it: owners only.
    join(&app, "alice", &source, "bob", &["admin"])
        .await
        .unwrap();
    let bobs = create_org(&mut app.orgs_as("bob").await, "Bob's").await;
    let mut bob = resources_as(&app, "bob").await;
    let status = expect_code(
        bob.transfer_resource(pb::TransferResourceRequest {
            name: app_resource.name.clone(),
            destination: bobs.name.clone(),
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("owner"), "{status:?}");
    // Alice may not move it into an organization she does not belong to.
    expect_code(
        alice
            .transfer_resource(pb::TransferResourceRequest {
                name: app_resource.name.clone(),
                destination: bobs.name.clone(),
            })
            .await,
        Code::NotFound,
    );

    // Nor into a deleted one she is not in: NOT_FOUND, nothing about its state.
    let mut bob_orgs = app.orgs_as("bob").await;
    let gone = create_org(&mut bob_orgs, "Gone").await;
    bob_orgs.delete_organization(delete(&gone)).await.unwrap();
    let status = expect_code(
        alice
            .transfer_resource(pb::TransferResourceRequest {
                name: app_resource.name.clone(),
                destination: gone.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert!(!status.message().contains(&gone.slug), "{status:?}");
    // An owner token of the source reaches no other organization.
    let owner_token = pb::token_service_client::TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    )
    .create_api_token(pb::CreateApiTokenRequest {
        parent: source.name.clone(),
        api_token: Some(pb::ApiToken {
            display_name: "mover".into(),
            roles: vec!["owner".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .secret;
    expect_code(
        ResourceServiceClient::with_interceptor(
            app.channel().await,
            Bearer::new(Some(&owner_token)),
        )
        .transfer_resource(pb::TransferResourceRequest {
            name: app_resource.name.clone(),
            destination: target.name.clone(),
        })
        .await,
        Code::NotFound,
    );

    // Owner of both: the move is atomic and audited in both organizations.
    let moved = alice
        .transfer_resource(pb::TransferResourceRequest {
            name: app_resource.name.clone(),
            destination: target.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        moved
            .name
            .starts_with(&format!("{}/resources/", target.name))
    );
    expect_code(
        alice
            .get_resource(pb::GetResourceRequest {
                name: app_resource.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    let listed = alice
        .list_resources(pb::ListResourcesRequest {
            parent: target.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert_eq!(listed, std::slice::from_ref(&moved));
    for (org, action) in [
        (&source, "resource.transfer_out"),
        (&target, "resource.transfer_in"),
    ] {
        let id: uuid::Uuid = org.uid.parse().unwrap();
        assert_eq!(
            app.count(
                "SELECT 1 FROM activity WHERE org_id = $1 AND action = $2",
                &[&id, &action]
            )
            .await,
            1,
            "{action}"
        );
    }

    // With nothing left, the source can be deleted.
    orgs.delete_organization(delete(&source)).await.unwrap();
    alice
        .unregister_resource(pb::UnregisterResourceRequest { name: moved.name })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plans_limit_how_many_resources_an_organization_holds() {
    let app = TestApp::spawn().await;
    let personal = app
        .orgs_as("alice")
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .personal_organization;
    let mut alice = resources_as(&app, "alice").await;
    // The free plan holds three.
    for n in 0..3 {
        alice
            .register_resource(register(&personal, "app", &format!("a{n}")))
            .await
            .unwrap();
    }
    let full = expect_code(
        alice
            .register_resource(register(&personal, "app", "a3"))
            .await,
        Code::FailedPrecondition,
    );
    assert!(full.message().contains("Hobby"), "{full:?}");
    // Nor can one be moved in.
    let team = create_org(&mut app.orgs_as("alice").await, "Team").await;
    let extra = alice
        .register_resource(register(&team.name, "app", "b0"))
        .await
        .unwrap()
        .into_inner();
    expect_code(
        alice
            .transfer_resource(pb::TransferResourceRequest {
                name: extra.name,
                destination: personal,
            })
            .await,
        Code::FailedPrecondition,
    );
}
