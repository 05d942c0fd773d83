//! Input the database cannot hold is the caller's mistake: a NUL character in
//! any text field, or a time outside years 1 to 9999 (in a field or a forged
//! page token), is INVALID_ARGUMENT naming the field, never INTERNAL, and
//! writes nothing; an error repeats at most a short part of a long value; and a
//! name that shows nothing (zero-width characters only) is no name.

mod common;

use common::*;
use orgd::pb::token_service_client::TokenServiceClient;
use orgd::pb::{self, activity_service_client::ActivityServiceClient};
use tonic::Code;

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = expect_code(result, Code::InvalidArgument);
    assert!(status.message().starts_with(field), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_characters_and_unstorable_times_are_invalid_arguments() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let before = app.count("SELECT 1 FROM organizations", &[]).await;

    expect_invalid(
        orgs.create_organization(new_org("Ac\0me")).await,
        "organization.display_name",
    );
    let mut activities = ActivityServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    expect_invalid(
        activities
            .list_activities(pb::ListActivitiesRequest {
                parent: org.name.clone(),
                actor: "users/\0".into(),
                ..Default::default()
            })
            .await,
        "actor",
    );

    // About 190,000 years before the common era: chrono holds it, PostgreSQL not.
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("-6000000000000000000:{}", uuid::Uuid::nil()))
    };
    expect_invalid(
        orgs.list_organizations(pb::ListOrganizationsRequest {
            page_token: forged,
            ..Default::default()
        })
        .await,
        "page_token",
    );
    let mut tokens = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    expect_invalid(
        tokens
            .create_api_token(pb::CreateApiTokenRequest {
                parent: org.name.clone(),
                api_token: Some(pb::ApiToken {
                    display_name: "bot".into(),
                    roles: vec!["viewer".into()],
                    expire_time: Some(prost_types::Timestamp {
                        seconds: -1_000_000_000_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            })
            .await,
        "api_token.expire_time",
    );
    // A long value is echoed cut short: the reply stays small.
    let status = expect_code(
        orgs.get_organization(get(&format!("organizations/{}", "x".repeat(5000))))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().len() < 400, "{}", status.message());
    assert!(
        status.message().contains("(5000 characters)"),
        "{}",
        status.message()
    );
    assert!(
        status.details().len() < 1000,
        "{} bytes of details",
        status.details().len()
    );

    assert_eq!(app.count("SELECT 1 FROM organizations", &[]).await, before);
    assert_eq!(app.count("SELECT 1 FROM api_tokens", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_made_only_of_zero_width_characters_are_refused() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut tokens = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let mut resources = pb::resource_service_client::ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    for blank in [
        "\u{200B}\u{200B}\u{200B}",         // zero-width spaces
        "\u{200C}\u{200D}\u{2060}\u{FEFF}", // joiners, word joiner, BOM
        " \u{200B} \u{3000}",               // mixed with spaces
    ] {
        expect_invalid(
            orgs.create_organization(new_org(blank)).await,
            "organization.display_name",
        );
        let mut renamed = org.clone();
        renamed.display_name = blank.into();
        expect_invalid(
            orgs.update_organization(update(renamed, &["display_name"]))
                .await,
            "organization.display_name",
        );
        expect_invalid(
            tokens
                .create_api_token(pb::CreateApiTokenRequest {
                    parent: org.name.clone(),
                    api_token: Some(pb::ApiToken {
                        display_name: blank.into(),
                        roles: vec!["viewer".into()],
                        ..Default::default()
                    }),
                })
                .await,
            "api_token.display_name",
        );
        expect_invalid(
            resources
                .register_resource(pb::RegisterResourceRequest {
                    parent: org.name.clone(),
                    resource: Some(pb::Resource {
                        kind: "app".into(),
                        external_id: "web".into(),
                        display_name: blank.into(),
                        ..Default::default()
                    }),
                })
                .await,
            "resource.display_name",
        );
    }
    // A bidirectional override makes a resource's name read otherwise than it
    // is written, as in every other name.
    expect_invalid(
        resources
            .register_resource(pb::RegisterResourceRequest {
                parent: org.name.clone(),
                resource: Some(pb::Resource {
                    kind: "app".into(),
                    external_id: "web".into(),
                    display_name: "invoice\u{202E}fdp.exe".into(),
                    ..Default::default()
                }),
            })
            .await,
        "resource.display_name",
    );
    // A legal name, required on the billing profile, is no name blank either.
    let mut billing = app.billing_as("alice").await;
    expect_invalid(
        billing
            .update_billing_profile(pb::UpdateBillingProfileRequest {
                billing_profile: Some(pb::BillingProfile {
                    name: format!("{}/billingProfile", org.name),
                    legal_name: "\u{200B}\u{200B}".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["legal_name".into()],
                }),
            })
            .await,
        "billing_profile.legal_name",
    );
    // Visible text around a zero-width character is a name.
    create_org(&mut orgs, "Ac\u{200B}me Labs").await;
    assert_eq!(app.count("SELECT 1 FROM api_tokens", &[]).await, 0);
    assert_eq!(app.count("SELECT 1 FROM org_resources", &[]).await, 0);
}
