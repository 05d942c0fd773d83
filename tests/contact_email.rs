//! Contact emails change only through a verified link; links are secrets.

mod common;

use std::time::Duration;

use common::*;
use orgd::pb;
use tonic::Code;

/// The token in the newest message queued for `recipient`, right after `prefix`.
async fn mailed_token(app: &TestApp, recipient: &str, prefix: &str) -> String {
    let body: String = app
        .db
        .query_one(
            "SELECT body FROM outbox_messages WHERE recipient = $1 ORDER BY created_at DESC LIMIT 1",
            &[&recipient],
        )
        .await
        .unwrap()
        .get(0);
    let link = body
        .split(prefix)
        .nth(1)
        .unwrap_or_else(|| panic!("no '{prefix}' in {body:?}"));
    link.split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn contact_email_changes_only_when_verified() {
    let app =
        TestApp::spawn_with(&["--verify-link-prefix", "https://console.test/verify?token="]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    let mut change = org.clone();
    change.contact_email = "Billing@Acme.test".into();
    let pending = alice
        .update_organization(update(change, &["contact_email"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.contact_email, "alice@example.com");
    assert_eq!(pending.pending_contact_email, "billing@acme.test");

    let token = mailed_token(
        &app,
        "billing@acme.test",
        "https://console.test/verify?token=",
    )
    .await;
    let stored: i64 = app
        .db
        .query_one("SELECT count(*) FROM contact_email_verifications WHERE token_hash = sha256($1::text::bytea)", &[&token])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "only the token's hash is stored");
    let raw: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM contact_email_verifications WHERE token_hash = convert_to($1, 'UTF8')",
            &[&token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 0, "the token itself is not stored");

    let mut carol = app.orgs_as("carol").await; // whoever holds the link may confirm it
    expect_code(
        carol
            .verify_contact_email(pb::VerifyContactEmailRequest {
                token: "wrong".into(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        carol
            .verify_contact_email(pb::VerifyContactEmailRequest {
                token: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    let verified = carol
        .verify_contact_email(pb::VerifyContactEmailRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.contact_email, "billing@acme.test");
    assert_eq!(verified.organization, org.name);
    let now = alice
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.contact_email, "billing@acme.test");
    assert_eq!(now.pending_contact_email, "");
    expect_code(
        carol
            .verify_contact_email(pb::VerifyContactEmailRequest { token })
            .await,
        Code::NotFound,
    );

    // A newer request supersedes the older link; expired links are refused.
    let mut first = now.clone();
    first.contact_email = "one@acme.test".into();
    first.etag = String::new();
    alice
        .update_organization(update(first.clone(), &["contact_email"]))
        .await
        .unwrap();
    let first_token_hash: Vec<u8> = app
        .db
        .query_one("SELECT token_hash FROM contact_email_verifications", &[])
        .await
        .unwrap()
        .get(0);
    first.contact_email = "two@acme.test".into();
    alice
        .update_organization(update(first, &["contact_email"]))
        .await
        .unwrap();
    assert_eq!(
        app.count(
            "SELECT 1 FROM contact_email_verifications WHERE token_hash = $1",
            &[&first_token_hash]
        )
        .await,
        0
    );
    app.db
        .execute(
            "UPDATE contact_email_verifications SET expires_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    let token = mailed_token(&app, "two@acme.test", "token=").await;
    let expired = expect_code(
        carol
            .verify_contact_email(pb::VerifyContactEmailRequest { token })
            .await,
        Code::FailedPrecondition,
    );
    assert!(expired.message().contains("expired"));

    // Creating with another contact address also needs verification.
    let created = alice
        .create_organization(pb::CreateOrganizationRequest {
            request_id: String::new(),
            organization: Some(pb::Organization {
                display_name: "Beta".into(),
                contact_email: "ops@beta.test".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.contact_email, "alice@example.com");
    assert_eq!(created.pending_contact_email, "ops@beta.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_messages_no_longer_hold_their_links() {
    let app = TestApp::spawn_with(&["--outbox-interval", "100ms"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    let mut change = org.clone();
    change.contact_email = "ops@acme.test".into();
    alice
        .update_organization(update(change, &["contact_email"]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app
        .count(
            "SELECT 1 FROM outbox_messages WHERE delivered_at IS NULL",
            &[],
        )
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body: String = app
        .db
        .query_one(
            "SELECT body FROM outbox_messages WHERE recipient = 'ops@acme.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!body.contains("token="), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unverified_token_emails_never_become_contact_addresses() {
    use orgd::auth::Claims;
    let app = TestApp::spawn().await;
    let mut claims = Claims::new(
        common::ISSUER,
        common::AUDIENCE,
        "mallory",
        Duration::from_secs(600),
    );
    claims.email = Some("ceo@victim.test".into());
    claims.email_verified = false;
    let mut mallory = app.orgs(Some(&common::token_for(&claims))).await;
    let org = create_org(&mut mallory, "Victim Corp").await;
    assert_eq!(org.contact_email, "");
    let me = mallory
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let personal = mallory
        .get_organization(get(&me.user.unwrap().personal_organization))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(personal.contact_email, "");
}
