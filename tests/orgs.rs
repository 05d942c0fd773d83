//! OrgService, black-box over gRPC: each scenario is a behaviour users rely on.

mod common;

use std::time::Duration;

use common::{TestApp, create_org, expect_code};
use orgd::pb::{self, organization::State};
use prost_types::FieldMask;
use tonic::Code;

fn new_org(display_name: &str) -> pb::CreateOrganizationRequest {
    pb::CreateOrganizationRequest {
        organization: Some(pb::Organization {
            display_name: display_name.into(),
            ..Default::default()
        }),
    }
}

fn get(name: &str) -> pb::GetOrganizationRequest {
    pb::GetOrganizationRequest { name: name.into() }
}

fn update(org: pb::Organization, paths: &[&str]) -> pb::UpdateOrganizationRequest {
    pb::UpdateOrganizationRequest {
        organization: Some(org),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    }
}

fn delete(org: &pb::Organization) -> pb::DeleteOrganizationRequest {
    pb::DeleteOrganizationRequest {
        name: org.name.clone(),
        confirmation: org.display_name.clone(),
        etag: String::new(),
    }
}

async fn activity_count(app: &TestApp, action: &str) -> i64 {
    app.count("SELECT 1 FROM activity WHERE action = $1", &[&action])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_and_list() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let created = create_org(&mut alice, "  Acme Corp. ").await;
    assert_eq!(created.display_name, "Acme Corp.");
    assert_eq!(created.slug, "acme-corp");
    assert_eq!(created.contact_email, "alice@example.com");
    assert_eq!(created.state(), State::Active);
    assert!(!created.personal);
    assert_eq!(created.name, format!("organizations/{}", created.uid));
    assert!(!created.etag.is_empty());

    let by_id = alice
        .get_organization(get(&created.name))
        .await
        .unwrap()
        .into_inner();
    let by_slug = alice
        .get_organization(get("organizations/acme-corp"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id, created);
    assert_eq!(by_slug, created);

    // The same display name again gets a free, derived slug.
    let twin = create_org(&mut alice, "Acme Corp").await;
    assert!(
        twin.slug.starts_with("acme-corp-") && twin.slug != created.slug,
        "{}",
        twin.slug
    );

    // Personal organization + 2, walked one per page.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = alice
            .list_organizations(pb::ListOrganizationsRequest {
                page_size: 1,
                page_token,
                show_deleted: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.organizations.len() <= 1);
        seen.extend(page.organizations.into_iter().map(|o| o.slug));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(&seen[1..], [created.slug.clone(), twin.slug.clone()]);

    // Bob sees only his own personal organization.
    let bobs = app
        .orgs_as("bob")
        .await
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs.organizations.len(), 1);
    assert!(bobs.organizations[0].personal);

    let bad_token = alice
        .list_organizations(pb::ListOrganizationsRequest {
            page_token: "bogus".into(),
            ..Default::default()
        })
        .await;
    expect_code(bad_token, Code::InvalidArgument);
    let negative = alice
        .list_organizations(pb::ListOrganizationsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await;
    expect_code(negative, Code::InvalidArgument);
    assert_eq!(
        activity_count(&app, "organization.create").await,
        4,
        "two personal orgs and two created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_rejects_bad_input_without_writing() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    alice
        .create_organization(pb::CreateOrganizationRequest {
            organization: Some(pb::Organization {
                display_name: "Taken".into(),
                slug: "taken".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let orgs_before = app.count("SELECT 1 FROM organizations", &[]).await;
    let activity_before = app.count("SELECT 1 FROM activity", &[]).await;

    let cases: Vec<(pb::Organization, Code, &str)> = vec![
        (
            pb::Organization {
                display_name: "   ".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "display_name",
        ),
        (
            pb::Organization {
                display_name: "x".repeat(101),
                ..Default::default()
            },
            Code::InvalidArgument,
            "display_name",
        ),
        (
            pb::Organization {
                display_name: "Ok".into(),
                slug: "Bad Slug!".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "slug",
        ),
        (
            pb::Organization {
                display_name: "Ok".into(),
                slug: "a--b".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "slug",
        ),
        (
            pb::Organization {
                display_name: "Ok".into(),
                slug: "0190a9c2-1111-7000-8000-000000000000".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "slug",
        ),
        (
            pb::Organization {
                display_name: "Ok".into(),
                contact_email: "not-an-email".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "contact_email",
        ),
        (
            pb::Organization {
                display_name: "Ok".into(),
                slug: "taken".into(),
                ..Default::default()
            },
            Code::AlreadyExists,
            "taken",
        ),
    ];
    for (org, code, mentions) in cases {
        let status = expect_code(
            alice
                .create_organization(pb::CreateOrganizationRequest {
                    organization: Some(org.clone()),
                })
                .await,
            code,
        );
        assert!(status.message().contains(mentions), "{org:?}: {status:?}");
    }
    let missing = expect_code(
        alice
            .create_organization(pb::CreateOrganizationRequest { organization: None })
            .await,
        Code::InvalidArgument,
    );
    assert!(missing.message().contains("organization"));

    assert_eq!(
        app.count("SELECT 1 FROM organizations", &[]).await,
        orgs_before
    );
    assert_eq!(
        app.count("SELECT 1 FROM activity", &[]).await,
        activity_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_argument_carries_bad_request_details() {
    use tonic_types::StatusExt;
    let app = TestApp::spawn().await;
    let status = expect_code(
        app.orgs_as("alice")
            .await
            .create_organization(new_org(""))
            .await,
        Code::InvalidArgument,
    );
    let details = status
        .get_details_bad_request()
        .expect("google.rpc.BadRequest details");
    assert_eq!(
        details.field_violations[0].field,
        "organization.display_name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn organization_limit_holds_under_concurrency() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "3"]).await;
    let alice = app.orgs_as("alice").await;
    // The personal organization counts: two more fit. Five race for them.
    let attempts = (0..5).map(|i| {
        let mut client = alice.clone();
        tokio::spawn(async move {
            client
                .create_organization(new_org(&format!("Race {i}")))
                .await
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let (ok, refused): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|r| r.unwrap())
        .partition(|r| r.is_ok());
    assert_eq!(ok.len(), 2);
    for result in refused {
        let status = expect_code(result, Code::FailedPrecondition);
        assert!(status.message().contains("maximum of 3"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_distinguishes_malformed_from_missing_and_hides_foreign() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let bobs = create_org(&mut app.orgs_as("bob").await, "Bob Inc").await;

    for malformed in [
        "",
        "acme",
        "organizations/",
        "organizations/NOT_A_SLUG",
        "organizations/0190a9c2-zzzz-7000-8000-000000000000",
        "users/abc",
    ] {
        expect_code(
            alice.get_organization(get(malformed)).await,
            Code::InvalidArgument,
        );
    }
    let missing = expect_code(
        alice
            .get_organization(get(&format!("organizations/{}", uuid::Uuid::now_v7())))
            .await,
        Code::NotFound,
    );
    let foreign = expect_code(
        alice.get_organization(get(&bobs.name)).await,
        Code::NotFound,
    );
    let foreign_slug = expect_code(
        alice.get_organization(get("organizations/bob-inc")).await,
        Code::NotFound,
    );
    assert!(missing.message().starts_with("organization organizations/"));
    assert_eq!(
        foreign.message(),
        format!("organization {} not found", bobs.name)
    );
    assert_eq!(
        foreign_slug.message(),
        "organization organizations/bob-inc not found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_with_field_mask_and_etag() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;
    app.orgs_as("bob")
        .await
        .create_organization(pb::CreateOrganizationRequest {
            organization: Some(pb::Organization {
                display_name: "Bob".into(),
                slug: "bobs".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    let mut change = org.clone();
    change.display_name = "Acme Industries".into();
    change.description = "Rockets".into();
    change.slug = "ignored-because-not-in-mask".into();
    let updated = alice
        .update_organization(update(change, &["display_name", "description"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Acme Industries");
    assert_eq!(updated.description, "Rockets");
    assert_eq!(updated.slug, "acme");
    assert_ne!(updated.etag, org.etag);

    // The first etag is stale now: ABORTED, and nothing changes.
    let mut stale = org.clone();
    stale.display_name = "Lost update".into();
    let status = expect_code(
        alice
            .update_organization(update(stale, &["display_name"]))
            .await,
        Code::Aborted,
    );
    assert!(status.message().contains("changed since"), "{status:?}");
    assert_eq!(
        alice
            .get_organization(get(&org.name))
            .await
            .unwrap()
            .into_inner(),
        updated
    );

    let mut bad = updated.clone();
    bad.etag = "garbage".into();
    expect_code(
        alice
            .update_organization(update(bad, &["display_name"]))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        alice
            .update_organization(update(updated.clone(), &[]))
            .await,
        Code::InvalidArgument,
    );
    let unknown = expect_code(
        alice
            .update_organization(update(updated.clone(), &["uid"]))
            .await,
        Code::InvalidArgument,
    );
    assert!(unknown.message().contains("updatable"), "{unknown:?}");
    let mut empty_name = updated.clone();
    empty_name.display_name = String::new();
    expect_code(
        alice
            .update_organization(update(empty_name, &["display_name"]))
            .await,
        Code::InvalidArgument,
    );

    // Slugs: taken → ALREADY_EXISTS; renamed → old slug no longer resolves.
    let mut taken = updated.clone();
    taken.slug = "bobs".into();
    expect_code(
        alice.update_organization(update(taken, &["slug"])).await,
        Code::AlreadyExists,
    );
    let mut renamed = updated.clone();
    renamed.slug = "acme-industries".into();
    let renamed = alice
        .update_organization(update(renamed, &["slug"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        alice
            .get_organization(get("organizations/acme-industries"))
            .await
            .unwrap()
            .into_inner()
            .uid,
        org.uid
    );
    expect_code(
        alice.get_organization(get("organizations/acme")).await,
        Code::NotFound,
    );

    // An empty etag skips the check (AIP-154).
    let mut no_etag = renamed.clone();
    no_etag.etag = String::new();
    no_etag.description = "Still rockets".into();
    alice
        .update_organization(update(no_etag, &["description"]))
        .await
        .unwrap();
    assert_eq!(activity_count(&app, "organization.update").await, 3);
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
    app.db
        .execute(
            "DELETE FROM memberships WHERE user_id = $1::text::uuid",
            &[&bob_id],
        )
        .await
        .unwrap();
    expect_code(bob.get_organization(get(&org.name)).await, Code::NotFound);
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

    let message = app
        .db
        .query_one("SELECT body FROM outbox_messages WHERE recipient = 'billing@acme.test' ORDER BY created_at DESC LIMIT 1", &[])
        .await
        .unwrap();
    let body: String = message.get(0);
    let token = body
        .split("https://console.test/verify?token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
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
    let body: String = app
        .db
        .query_one(
            "SELECT body FROM outbox_messages WHERE recipient = 'two@acme.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let token = body
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
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
async fn delete_is_guarded_soft_and_restorable() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    // The personal organization cannot be deleted.
    let me = alice
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let personal = alice
        .get_organization(get(&me.user.unwrap().personal_organization))
        .await
        .unwrap()
        .into_inner();
    let status = expect_code(
        alice.delete_organization(delete(&personal)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("personal"), "{status:?}");

    // Confirmation and etag.
    let mut unconfirmed = delete(&org);
    unconfirmed.confirmation = String::new();
    let status = expect_code(
        alice.delete_organization(unconfirmed).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("\"Acme\""), "{status:?}");
    let mut wrong = delete(&org);
    wrong.confirmation = "acme".into();
    expect_code(
        alice.delete_organization(wrong).await,
        Code::InvalidArgument,
    );
    let mut stale = delete(&org);
    stale.etag = "W/\"999\"".into();
    expect_code(alice.delete_organization(stale).await, Code::Aborted);

    // Remaining resources block deletion, named in the message.
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    app.db
        .execute("INSERT INTO org_resources (id, org_id, kind, external_id) VALUES (gen_random_uuid(), $1, 'app', 'web-frontend')", &[&org_id])
        .await
        .unwrap();
    let status = expect_code(
        alice.delete_organization(delete(&org)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("app/web-frontend"), "{status:?}");
    assert_eq!(activity_count(&app, "organization.delete").await, 0);
    app.db
        .execute("DELETE FROM org_resources", &[])
        .await
        .unwrap();

    // Soft delete: still readable, not listed by default, not changeable.
    let mut with_etag = delete(&org);
    with_etag.etag = org.etag.clone();
    let deleted = alice
        .delete_organization(with_etag)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state(), State::Deleted);
    let (delete_time, purge_time) = (deleted.delete_time.unwrap(), deleted.purge_time.unwrap());
    assert!(
        (purge_time.seconds - delete_time.seconds - 30 * 24 * 3600).abs() <= 2,
        "default retention is 30 days"
    );
    assert_eq!(
        alice
            .get_organization(get(&org.name))
            .await
            .unwrap()
            .into_inner()
            .state(),
        State::Deleted
    );
    let listed = alice
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.organizations.iter().all(|o| o.uid != org.uid));
    let with_deleted = alice
        .list_organizations(pb::ListOrganizationsRequest {
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(with_deleted.organizations.iter().any(|o| o.uid == org.uid));
    let mut change = deleted.clone();
    change.description = "zombie".into();
    let status = expect_code(
        alice
            .update_organization(update(change, &["description"]))
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("Undelete"), "{status:?}");
    expect_code(
        alice.delete_organization(delete(&org)).await,
        Code::FailedPrecondition,
    );

    // Undelete restores it; undeleting a live organization is refused.
    let restored = alice
        .undelete_organization(pb::UndeleteOrganizationRequest {
            name: org.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state(), State::Active);
    assert!(restored.delete_time.is_none() && restored.purge_time.is_none());
    expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(activity_count(&app, "organization.delete").await, 1);
    assert_eq!(activity_count(&app, "organization.undelete").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_organizations_are_purged_after_retention() {
    let app =
        TestApp::spawn_with(&["--deleted-retention", "1s", "--purge-interval", "200ms"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Ephemeral").await;
    alice.delete_organization(delete(&org)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match alice.get_organization(get(&org.name)).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(found) => assert_eq!(found.into_inner().state(), State::Deleted),
            Err(other) => panic!("{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "not purged in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(activity_count(&app, "organization.purge").await, 1);
    // The slug is free again.
    alice
        .create_organization(new_org("Ephemeral"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn undelete_respects_the_organization_limit() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "2"]).await;
    let mut alice = app.orgs_as("alice").await;
    let first = create_org(&mut alice, "First").await;
    alice.delete_organization(delete(&first)).await.unwrap();
    alice.create_organization(new_org("Second")).await.unwrap();
    let status = expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest { name: first.name })
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("maximum of 2"), "{status:?}");
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
async fn backend_services_check_permissions_and_list_memberships() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let alice_id = app.user_id("alice").await;
    let bob_id = app.user_id("bob").await;
    let carol_id = app.user_id("carol").await;
    app.set_member(&org.uid, &bob_id, &["developer"], &["billing.read"])
        .await;
    let service = app.orgs_as_service().await;
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
    expect_code(
        allowed(check(
            &uuid::Uuid::now_v7().to_string(),
            &org.name,
            "org.read",
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        allowed(check(&bob_id, "organizations/nowhere", "org.read")).await,
        Code::NotFound,
    );

    let memberships = service
        .clone()
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
async fn every_mutation_is_audited_with_its_request_id() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let mut request = tonic::Request::new(new_org("Audited"));
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let response = alice.create_organization(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-42");
    let org = response.into_inner();
    let row = app
        .db
        .query_one("SELECT actor, target, request_id FROM activity WHERE action = 'organization.create' AND target = $1", &[&org.name])
        .await
        .unwrap();
    let alice_id = app.user_id("alice").await;
    assert_eq!(row.get::<_, String>(0), format!("users/{alice_id}"));
    assert_eq!(row.get::<_, String>(2), "req-42");

    // Without a request id, the server makes one and returns it.
    let response = alice.get_organization(get(&org.name)).await.unwrap();
    assert!(!response.metadata().get("x-request-id").unwrap().is_empty());
}

/// Holds a row lock on `org` from SQL, so a call that changes it waits in flight.
async fn lock_org_row(app: &TestApp, org: &pb::Organization) -> tokio_postgres::Client {
    let locker = common::sql_client(&app.db_url).await;
    let id: uuid::Uuid = org.uid.parse().unwrap();
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .unwrap();
    locker
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_committed_meanwhile_stops_updates_and_second_deletes() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    // Both calls pass the policy check, then wait for the row while a delete commits.
    let locker = lock_org_row(&app, &org).await;
    let mut change = org.clone();
    change.description = "after the delete".into();
    change.etag = String::new();
    let (mut a, mut b) = (alice.clone(), alice.clone());
    let update_call = tokio::spawn(async move {
        a.update_organization(update(change, &["description"]))
            .await
    });
    let target = org.clone();
    let delete_call = tokio::spawn(async move { b.delete_organization(delete(&target)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id: uuid::Uuid = org.uid.parse().unwrap();
    locker
        .execute("UPDATE organizations SET deleted_at = now(), purge_at = now() + interval '1 day' WHERE id = $1", &[&id])
        .await
        .unwrap();
    locker.batch_execute("COMMIT").await.unwrap();

    let status = expect_code(update_call.await.unwrap(), Code::FailedPrecondition);
    assert!(status.message().contains("deleted"), "{status:?}");
    expect_code(delete_call.await.unwrap(), Code::FailedPrecondition);
    assert_eq!(activity_count(&app, "organization.update").await, 0);
    assert_eq!(activity_count(&app, "organization.delete").await, 0);
    let now = alice
        .get_organization(get(&org.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.description, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn undelete_is_refused_once_the_restore_window_has_passed() {
    let app = TestApp::spawn_with(&["--purge-interval", "1h"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Late").await;
    alice.delete_organization(delete(&org)).await.unwrap();
    app.db
        .execute(
            "UPDATE organizations SET purge_at = now() - interval '1 second' WHERE deleted_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let status = expect_code(
        alice
            .undelete_organization(pb::UndeleteOrganizationRequest {
                name: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("restore window"), "{status:?}");
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
async fn awkward_names_still_give_reachable_slugs() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let hex = create_org(&mut alice, "deadbeefdeadbeefdeadbeefdeadbeef").await;
    assert_eq!(hex.slug, "deadbeefdeadbeefdeadbeefdeadbeef-org");
    alice
        .get_organization(get(&format!("organizations/{}", hex.slug)))
        .await
        .unwrap();

    let mut control = pb::Organization {
        display_name: "Ok".into(),
        ..Default::default()
    };
    control.description = "nul\u{0}byte".into();
    let status = expect_code(
        alice
            .create_organization(pb::CreateOrganizationRequest {
                organization: Some(control),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("control characters"),
        "{status:?}"
    );
    let mut multiline = pb::Organization {
        display_name: "Multi".into(),
        ..Default::default()
    };
    multiline.description = "line one\n\tline two".into();
    alice
        .create_organization(pb::CreateOrganizationRequest {
            organization: Some(multiline),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_limit_is_five_organizations_per_user() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    for i in 0..4 {
        create_org(&mut alice, &format!("Org {i}")).await;
    }
    let status = expect_code(
        alice.create_organization(new_org("One too many")).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("maximum of 5"), "{status:?}");
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
