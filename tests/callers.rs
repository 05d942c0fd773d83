//! Who calls: token verification (HS256, RS256, ES256), users created on first sight, role changes that
//! apply at once, and the backend-service methods.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orgd::pb;
use orgd::pb::org_service_client::OrgServiceClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified() {
    use orgd::auth::Claims;
    let app = TestApp::spawn().await;
    let claims = |issuer: &str, audience: &str, ttl: i64| {
        let mut c = Claims::new(issuer, audience, "mallory", Duration::from_secs(600));
        c.exp = (c.iat.unwrap() as i64 + ttl) as u64;
        c
    };
    let expired = common::token_for(&claims(common::ISSUER, common::AUDIENCE, -3600));
    let wrong_issuer = common::token_for(&claims("evil", common::AUDIENCE, 600));
    let wrong_audience = common::token_for(&claims(common::ISSUER, "other", 600));
    let wrong_key = orgd::auth::mint_token(
        b"another-secret",
        &claims(common::ISSUER, common::AUDIENCE, 600),
    )
    .unwrap();
    for (token, says) in [
        (expired, "expired"),
        (wrong_issuer, "issuer"),
        (wrong_audience, "audience"),
        (wrong_key, "signature"),
    ] {
        let status = expect_code(
            app.orgs(Some(&token))
                .await
                .who_am_i(pb::WhoAmIRequest {})
                .await,
            Code::Unauthenticated,
        );
        assert!(status.message().contains(says), "{status:?}");
    }
    let status = expect_code(
        app.orgs(None).await.who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("Bearer"));
    assert_eq!(
        app.count("SELECT 1 FROM users", &[]).await,
        0,
        "no user from a rejected token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_provider_claims_in_all_valid_shapes() {
    use orgd::auth::{Audience, Claims};
    let app = TestApp::spawn().await;
    // `aud` as a list, no `iat`, control characters in the name.
    let mut claims = Claims::new(
        common::ISSUER,
        common::AUDIENCE,
        "listy",
        Duration::from_secs(600),
    );
    claims.aud = Audience::Many(vec!["other".into(), common::AUDIENCE.into()]);
    claims.iat = None;
    claims.email = Some("listy@example.com".into());
    claims.name = Some("Lis\u{0}ty\n".into());
    let mut listy = app.orgs(Some(&common::token_for(&claims))).await;
    let me = listy
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().display_name, "Listy");

    // A changed profile is refreshed on the next call, and audited once.
    claims.name = Some("Listy Renamed".into());
    let mut renamed = app.orgs(Some(&common::token_for(&claims))).await;
    let me = renamed
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().display_name, "Listy Renamed");
    renamed.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    assert_eq!(activity_count(&app, "user.update").await, 1);

    claims.sub = "bad\u{0}subject".into();
    expect_code(
        app.orgs(Some(&common::token_for(&claims)))
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sight_creates_the_user_and_one_personal_organization() {
    let app = TestApp::spawn().await;
    let alice = app.orgs_as("alice").await;
    let calls = (0..6).map(|_| {
        let mut client = alice.clone();
        tokio::spawn(async move { client.who_am_i(pb::WhoAmIRequest {}).await })
    });
    let answers: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().into_inner())
        .collect();
    let me = &answers[0];
    assert!(answers.iter().all(|a| a.user == me.user));
    let user = me.user.as_ref().unwrap();
    assert_eq!(user.subject, "alice");
    assert_eq!(user.email, "alice@example.com");
    assert!(user.email_verified);
    assert_eq!(me.memberships.len(), 1);
    let personal = &me.memberships[0];
    assert!(personal.personal);
    assert_eq!(personal.display_name, "User alice");
    assert_eq!(personal.roles, ["owner"]);
    assert!(
        personal
            .effective_permissions
            .contains(&"org.delete".to_owned())
    );
    assert_eq!(me.token_organization, "");
    assert_eq!(app.count("SELECT 1 FROM users", &[]).await, 1);
    assert_eq!(
        app.count(
            "SELECT 1 FROM organizations WHERE personal_owner_id IS NOT NULL",
            &[]
        )
        .await,
        1
    );
    assert_eq!(activity_count(&app, "user.create").await, 1);

    // A personal organization has one member, enforced by the database itself.
    let bob_id = app.user_id("bob").await;
    let personal_id: uuid::Uuid = personal
        .organization
        .trim_start_matches("organizations/")
        .parse()
        .unwrap();
    let bob: uuid::Uuid = bob_id.parse().unwrap();
    let refused = app
        .db
        .execute(
            "INSERT INTO memberships (org_id, user_id) VALUES ($1, $2)",
            &[&personal_id, &bob],
        )
        .await;
    let error = refused.unwrap_err();
    assert!(
        error.as_db_error().unwrap().message().contains("personal"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn role_changes_take_effect_on_the_next_call() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    let bob_id = app.user_id("bob").await;
    let mut bob = app.orgs_as("bob").await;

    app.set_member(&org.uid, &bob_id, &["viewer"], &[]).await;
    bob.get_organization(get(&org.name)).await.unwrap();
    let mut change = org.clone();
    change.description = "by bob".into();
    change.etag = String::new();
    let denied = expect_code(
        bob.update_organization(update(change.clone(), &["description"]))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        denied.message().contains("org.update") && denied.message().contains("viewer"),
        "{denied:?}"
    );

    app.set_member(&org.uid, &bob_id, &["admin"], &[]).await;
    bob.update_organization(update(change.clone(), &["description"]))
        .await
        .unwrap();
    expect_code(
        bob.delete_organization(delete(&org)).await,
        Code::PermissionDenied,
    );

    // An individual grant works like a role's permission, and replacing it revokes.
    app.set_member(&org.uid, &bob_id, &["viewer"], &["org.update"])
        .await;
    bob.update_organization(update(change.clone(), &["description"]))
        .await
        .unwrap();
    app.set_member(&org.uid, &bob_id, &["viewer"], &[]).await;
    expect_code(
        bob.update_organization(update(change.clone(), &["description"]))
            .await,
        Code::PermissionDenied,
    );

    // Removed members are non-members at once.
    app.members_as("alice")
        .await
        .remove_member(pb::RemoveMemberRequest {
            name: format!("{}/members/{bob_id}", org.name),
        })
        .await
        .unwrap();
    expect_code(bob.get_organization(get(&org.name)).await, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_services_check_permissions_and_list_memberships() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let alice_id = app.user_id("alice").await;
    let bob_id = app.user_id("bob").await;
    let carol_id = app.user_id("carol").await;
    app.set_member(&org.uid, &bob_id, &["developer"], &["billing.read"])
        .await;
    // A backend service asks with an API token of the organization that holds
    // permissions.check (and nothing else).
    let secret = checker_token(&app, "alice", &org).await;
    let service = app.orgs(Some(&secret)).await;
    let check = |user: &str, organization: &str, permission: &str| pb::CheckPermissionRequest {
        user: format!("users/{user}"),
        organization: organization.into(),
        permission: permission.into(),
    };
    let allowed = |req| {
        let mut service = service.clone();
        async move {
            service
                .check_permission(req)
                .await
                .map(|r| r.into_inner().allowed)
        }
    };
    assert!(
        allowed(check(&alice_id, &org.name, "org.delete"))
            .await
            .unwrap()
    );
    assert!(
        allowed(check(&bob_id, "organizations/acme", "projects.create"))
            .await
            .unwrap()
    );
    assert!(
        allowed(check(&bob_id, &org.name, "billing.read"))
            .await
            .unwrap(),
        "individual grant"
    );
    assert!(
        !allowed(check(&bob_id, &org.name, "org.update"))
            .await
            .unwrap()
    );
    assert!(
        !allowed(check(&carol_id, &org.name, "org.read"))
            .await
            .unwrap(),
        "non-member"
    );
    // Implied permissions answer as held ones: managing billing includes
    // reading it, and every member reads the organization.
    app.set_member(&org.uid, &carol_id, &[], &["billing.manage"])
        .await;
    for (permission, held) in [
        ("billing.manage", true),
        ("billing.read", true),
        ("org.read", true),
        ("members.read", false),
        ("plans.manage", false),
    ] {
        assert_eq!(
            allowed(check(&carol_id, &org.name, permission))
                .await
                .unwrap(),
            held,
            "billing.manage alone, asked about {permission}"
        );
    }

    expect_code(
        allowed(check(&bob_id, &org.name, "org.fly")).await,
        Code::InvalidArgument,
    );
    expect_code(
        allowed(check("nope", &org.name, "org.read")).await,
        Code::InvalidArgument,
    );
    expect_code(
        allowed(check(&bob_id, "acme", "org.read")).await,
        Code::InvalidArgument,
    );
    assert!(
        !allowed(check(
            &uuid::Uuid::now_v7().to_string(),
            &org.name,
            "org.read",
        ))
        .await
        .unwrap(),
        "an unknown user is not allowed (and is not told apart from a non-member)"
    );
    expect_code(
        allowed(check(&bob_id, "organizations/nowhere", "org.read")).await,
        Code::NotFound,
    );

    // The token answers for its own organization only.
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    expect_code(
        allowed(check(&alice_id, &other.name, "org.read")).await,
        Code::NotFound,
    );

    let memberships = app
        .orgs_as_service()
        .await
        .list_user_organizations(pb::ListUserOrganizationsRequest {
            user: format!("users/{bob_id}"),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .memberships;
    let acme = memberships
        .iter()
        .find(|m| m.organization == org.name)
        .unwrap();
    assert_eq!(acme.roles, ["developer"]);
    assert_eq!(acme.extra_permissions, ["billing.read"]);
    assert_eq!(memberships.len(), 2);

    // Deleted organizations grant nothing.
    app.orgs_as("alice")
        .await
        .delete_organization(delete(&org))
        .await
        .unwrap();
    assert!(
        !allowed(check(&alice_id, &org.name, "org.read"))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_user_organizations_pages_and_rejects_bad_input() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    create_org(&mut alice, "One").await;
    create_org(&mut alice, "Two").await;
    let alice_id = app.user_id("alice").await;
    let mut service = app.orgs_as_service().await;
    let list =
        |user: String, page_size: i32, page_token: String| pb::ListUserOrganizationsRequest {
            user,
            page_size,
            page_token,
        };

    let first = service
        .list_user_organizations(list(format!("users/{alice_id}"), 2, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.memberships.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = service
        .list_user_organizations(list(format!("users/{alice_id}"), 2, first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.memberships.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.memberships[0].display_name, "Two");

    expect_code(
        service
            .list_user_organizations(list("alice".into(), 0, String::new()))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        service
            .list_user_organizations(list("users/not-a-uuid".into(), 0, String::new()))
            .await,
        Code::InvalidArgument,
    );
    let unknown = format!("users/{}", uuid::Uuid::now_v7());
    expect_code(
        service
            .list_user_organizations(list(unknown, 0, String::new()))
            .await,
        Code::NotFound,
    );
    expect_code(
        service
            .list_user_organizations(list(format!("users/{alice_id}"), 0, "nonsense".into()))
            .await,
        Code::InvalidArgument,
    );
}

async fn who_am_i(app: &TestApp, token: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let mut client =
        OrgServiceClient::with_interceptor(app.channel().await, Bearer::new(Some(token)));
    client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn public_key_algorithms_verify_and_refuse_others() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    for (algorithm, name, private_key, public_key) in [
        (Algorithm::ES256, "ES256", "es256.key", "es256.pub"),
        (Algorithm::RS256, "RS256", "rs256.key", "rs256.pub"),
    ] {
        let public_path = format!("{keys}/{public_key}");
        let app = TestApp::spawn_with(&[
            "--jwt-algorithm",
            name,
            "--jwt-public-key-file",
            &public_path,
        ])
        .await;
        let pem = std::fs::read(format!("{keys}/{private_key}")).unwrap();
        let signing = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let mut claims =
            orgd::auth::Claims::new(ISSUER, AUDIENCE, "idp-user", Duration::from_secs(600));
        claims.email = Some("idp@example.com".into());
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &signing).unwrap();

        let me = who_am_i(&app, &token).await.unwrap();
        assert_eq!(me.user.unwrap().subject, "idp-user", "{name}");

        // An HS256 token must not pass, whatever secret signed it (algorithm confusion).
        let hs256 = orgd::auth::mint_token(&std::fs::read(&public_path).unwrap(), &claims).unwrap();
        expect_code(who_am_i(&app, &hs256).await, Code::Unauthenticated);
        expect_code(
            who_am_i(&app, &common::user_token("x")).await,
            Code::Unauthenticated,
        );
    }
}
