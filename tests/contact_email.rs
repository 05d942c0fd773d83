//! Contact emails change only through a verified link; links are secrets. A
//! pending change of the contact or the billing email holds only while whoever
//! asked for it may still make it.

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
async fn an_unverified_token_email_is_only_a_pending_contact_address() {
    use orgd::auth::Claims;
    let app = TestApp::spawn().await;
    let mut claims = Claims::new(
        common::ISSUER,
        common::AUDIENCE,
        "mallory",
        Duration::from_secs(600),
    );
    claims.email = Some("CEO@victim.test".into());
    claims.email_verified = false;
    let mut mallory = app.orgs(Some(&common::token_for(&claims))).await;
    let org = create_org(&mut mallory, "Victim Corp").await;
    assert_eq!(org.contact_email, "");
    assert_eq!(org.pending_contact_email, "ceo@victim.test");
    // Its mailbox decides: here it confirms.
    let token = mailed_token(&app, "ceo@victim.test", "token=").await;
    let verified = mallory
        .verify_contact_email(pb::VerifyContactEmailRequest { token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.contact_email, "ceo@victim.test");

    // A personal organization is made on first sight, asked for by nobody.
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
    assert_eq!(personal.pending_contact_email, "");
}

/// `sub` asks for `email` as the contact email of `org`.
async fn ask_contact_email(app: &TestApp, sub: &str, org: &pb::Organization, email: &str) {
    let mut change = org.clone();
    change.contact_email = email.into();
    change.etag = String::new();
    app.orgs_as(sub)
        .await
        .update_organization(update(change, &["contact_email"]))
        .await
        .unwrap();
}

/// `sub` asks for `email` as the billing email of `org`.
async fn ask_billing_email(app: &TestApp, sub: &str, org: &pb::Organization, email: &str) {
    app.billing_as(sub)
        .await
        .update_billing_profile(pb::UpdateBillingProfileRequest {
            billing_profile: Some(pb::BillingProfile {
                name: format!("{}/billingProfile", org.name),
                billing_email: email.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["billing_email".into()],
            }),
        })
        .await
        .unwrap();
}

/// The pending contact and billing emails of `org`, as its owner alice sees them.
async fn pending(app: &TestApp, org: &pb::Organization) -> (String, String) {
    let contact = app
        .orgs_as("alice")
        .await
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner()
        .pending_contact_email;
    let billing = app
        .billing_as("alice")
        .await
        .get_billing_profile(pb::GetBillingProfileRequest {
            name: format!("{}/billingProfile", org.name),
        })
        .await
        .unwrap()
        .into_inner()
        .pending_billing_email;
    (contact, billing)
}

/// The outcome of confirming each of the links mailed to `contact` and `billing`.
async fn confirm(app: &TestApp, contact: &str, billing: &str) -> [tonic::Status; 2] {
    let contact_token = mailed_token(app, contact, "token=").await;
    let billing_token = mailed_token(app, billing, "token=").await;
    let contact = app
        .orgs_as("mallory")
        .await
        .verify_contact_email(pb::VerifyContactEmailRequest {
            token: contact_token,
        })
        .await
        .unwrap_err();
    let billing = app
        .billing_as("mallory")
        .await
        .verify_billing_email(pb::VerifyBillingEmailRequest {
            token: billing_token,
        })
        .await
        .unwrap_err();
    [contact, billing]
}

/// The `cancelled_changes` of the newest activity row of `action`.
async fn cancelled_by(app: &TestApp, action: &str) -> Option<String> {
    app.db
        .query_one(
            "SELECT (details->'cancelled_changes')::text FROM activity
              WHERE action = $1 ORDER BY created_at DESC LIMIT 1",
            &[&action],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_who_can_no_longer_make_an_email_change_cannot_finish_it() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    for way in ["removed", "left", "demoted"] {
        let org = create_org(&mut alice, &format!("Acme {way}")).await;
        let bob = join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
        // Bob, an admin, points notices and invoices at his own mailbox.
        let (contact, billing) = (
            format!("bob-{way}@own.test"),
            format!("bob-bills-{way}@own.test"),
        );
        ask_contact_email(&app, "bob", &org, &contact).await;
        ask_billing_email(&app, "bob", &org, &billing).await;
        assert_eq!(
            pending(&app, &org).await,
            (contact.clone(), billing.clone())
        );

        let action = match way {
            "removed" => {
                app.members_as("alice")
                    .await
                    .remove_member(pb::RemoveMemberRequest { name: bob.name })
                    .await
                    .unwrap();
                "member.remove"
            }
            "left" => {
                app.members_as("bob")
                    .await
                    .leave_organization(pb::LeaveOrganizationRequest {
                        organization: org.name.clone(),
                    })
                    .await
                    .unwrap();
                "member.leave"
            }
            _ => {
                app.members_as("alice")
                    .await
                    .update_member(set_roles(&bob.name, &["viewer"]))
                    .await
                    .unwrap();
                "member.update"
            }
        };

        // Both changes went with his standing, in the same transaction.
        assert_eq!(
            pending(&app, &org).await,
            (String::new(), String::new()),
            "{way}"
        );
        assert_eq!(
            cancelled_by(&app, action).await.as_deref(),
            Some(r#"["contact_email", "billing_email"]"#),
            "{way}"
        );
        for status in confirm(&app, &contact, &billing).await {
            assert_eq!(status.code(), Code::NotFound, "{way}: {status:?}");
            assert!(status.message().contains("cancelled"), "{way}: {status:?}");
        }
        let now = alice
            .get_organization(get(&org.name))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.contact_email, "alice@example.com", "{way}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_change_cancels_only_the_changes_of_who_lost_the_right() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let bob = join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    ask_contact_email(&app, "alice", &org, "ops@acme.test").await;
    ask_billing_email(&app, "bob", &org, "bob@own.test").await;
    // Taking away what billing needs does not touch the contact change.
    let mut no_billing = set_roles(&bob.name, &[]);
    no_billing.member.as_mut().unwrap().extra_permissions = vec!["org.update".into()];
    no_billing.update_mask.as_mut().unwrap().paths =
        vec!["roles".into(), "extra_permissions".into()];
    app.members_as("alice")
        .await
        .update_member(no_billing)
        .await
        .unwrap();
    assert_eq!(
        pending(&app, &org).await,
        ("ops@acme.test".to_owned(), String::new())
    );
    assert_eq!(
        cancelled_by(&app, "member.update").await.as_deref(),
        Some(r#"["billing_email"]"#)
    );
    // Alice's own change still goes through.
    let token = mailed_token(&app, "ops@acme.test", "token=").await;
    app.orgs_as("carol")
        .await
        .verify_contact_email(pb::VerifyContactEmailRequest { token })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn confirming_rechecks_under_the_lock_that_the_requester_still_may() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    ask_contact_email(&app, "bob", &org, "bob@own.test").await;
    ask_billing_email(&app, "bob", &org, "bob-bills@own.test").await;
    // A role that stops granting a permission (a later migration, say) changes
    // no member, so nothing cancels the changes: confirming them refuses.
    app.db
        .execute(
            "DELETE FROM role_permissions
              WHERE role = 'admin' AND permission IN ('org.update', 'billing.manage')",
            &[],
        )
        .await
        .unwrap();
    let [contact, billing] = confirm(&app, "bob@own.test", "bob-bills@own.test").await;
    for (status, permission) in [(contact, "org.update"), (billing, "billing.manage")] {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let details = tonic_types::StatusExt::get_details_precondition_failure(&status).unwrap();
        assert_eq!(details.violations[0].r#type, "REQUESTER_NOT_PERMITTED");
        assert!(
            status
                .message()
                .contains(&format!("no longer holds permission '{permission}'")),
            "{status:?}"
        );
        // The link's holder need not be a member: nothing names the organization.
        assert!(!status.message().contains("Acme"), "{status:?}");
    }
    let org = app
        .orgs_as("alice")
        .await
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.contact_email, "alice@example.com");
}
