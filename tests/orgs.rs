//! OrgService basics, black-box over gRPC: create, get, list and update, with the
//! validation and concurrency rules users rely on.

mod common;

use common::*;
use orgd::pb::{self, organization::State};
use tonic::Code;

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
            request_id: String::new(),
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
                    request_id: String::new(),
                    organization: Some(org.clone()),
                })
                .await,
            code,
        );
        assert!(status.message().contains(mentions), "{org:?}: {status:?}");
    }
    let missing = expect_code(
        alice
            .create_organization(pb::CreateOrganizationRequest {
                request_id: String::new(),
                organization: None,
            })
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
        assert!(
            status
                .message()
                .contains("you already belong to 3 organizations"),
            "{status:?}"
        );
    }
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
    assert!(
        status
            .message()
            .contains("you already belong to 5 organizations"),
        "{status:?}"
    );
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
            request_id: String::new(),
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
    let no_fields = expect_code(
        alice
            .update_organization(update(updated.clone(), &[]))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        no_fields
            .message()
            .starts_with("update_mask: name the fields to change; updatable: display_name"),
        "{no_fields:?}"
    );
    let unknown = expect_code(
        alice
            .update_organization(update(updated.clone(), &["uid"]))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        unknown
            .message()
            .starts_with("update_mask: 'uid' cannot be updated; updatable: display_name"),
        "{unknown:?}"
    );
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
async fn awkward_names_still_give_reachable_slugs() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let hex = create_org(&mut alice, "deadbeefdeadbeefdeadbeefdeadbeef").await;
    assert_eq!(hex.slug, "org-deadbeefdeadbeefdeadbeefdeadb");
    // The same name again needs a suffix, which must still fit.
    let again = create_org(&mut alice, "deadbeefdeadbeefdeadbeefdeadbeef").await;
    assert!(
        again.slug.starts_with("org-deadbeef") && again.slug.len() <= 40,
        "{}",
        again.slug
    );
    for org in [&hex, &again] {
        let found = alice
            .get_organization(get(&format!("organizations/{}", org.slug)))
            .await
            .unwrap();
        assert_eq!(found.into_inner().uid, org.uid);
    }

    let mut control = pb::Organization {
        display_name: "Ok".into(),
        ..Default::default()
    };
    control.description = "nul\u{0}byte".into();
    let status = expect_code(
        alice
            .create_organization(pb::CreateOrganizationRequest {
                request_id: String::new(),
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
            request_id: String::new(),
            organization: Some(multiline),
        })
        .await
        .unwrap();
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

    // Without a request id, the server makes one (a UUIDv7) and returns it.
    let response = alice.get_organization(get(&org.name)).await.unwrap();
    let made = response.metadata().get("x-request-id").unwrap();
    let made = uuid::Uuid::parse_str(made.to_str().unwrap()).unwrap();
    assert_eq!(made.get_version_num(), 7);

    // One that would make a poor log field is replaced; a refused call has one too.
    let mut request = tonic::Request::new(get(&org.name));
    request
        .metadata_mut()
        .insert("x-request-id", "x".repeat(200).parse().unwrap());
    let response = alice.get_organization(request).await.unwrap();
    let replaced = response.metadata().get("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(replaced.to_str().unwrap()).is_ok());
    let refused = app
        .orgs_as("mallory")
        .await
        .get_organization(get(&org.name))
        .await
        .unwrap_err();
    assert!(refused.metadata().get("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_creates_with_a_request_id_create_once() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "2"]).await;
    let alice = app.orgs_as("alice").await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = |display_name: &str| {
        let mut request = new_org(display_name);
        request.request_id = request_id.clone();
        request
    };
    // Concurrent retries of one request: one organization, one audit row.
    let attempts = (0..4).map(|_| {
        let (mut client, request) = (alice.clone(), request("Once"));
        tokio::spawn(async move { client.create_organization(request).await })
    });
    let created: Vec<pb::Organization> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().into_inner())
        .collect();
    assert!(
        created.iter().all(|org| org.uid == created[0].uid),
        "{created:?}"
    );
    assert_eq!(
        activity_count(&app, "organization.create").await,
        2,
        "personal + one"
    );

    // A retry succeeds even at the organization limit; a new request does not.
    let mut alice = alice;
    let again = alice
        .create_organization(request("Once"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.uid, created[0].uid);
    let mut fresh = new_org("Another");
    fresh.request_id = uuid::Uuid::new_v4().to_string();
    expect_code(
        alice.create_organization(fresh).await,
        Code::FailedPrecondition,
    );

    let mut malformed = new_org("Bad");
    malformed.request_id = "retry-1".into();
    let status = expect_code(
        alice.create_organization(malformed).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("request_id"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_alike() {
    let app = TestApp::spawn_with(&["--max-request-bytes", "1024"]).await;
    let mut alice = app.orgs_as("alice").await;
    let huge = "x".repeat(4096);
    // Org-scoped methods are read by the policy layer, others only by tonic.
    let scoped = alice
        .get_organization(get(&format!("organizations/{huge}")))
        .await;
    expect_code(scoped, Code::OutOfRange);
    let mut create = new_org("Big");
    create.organization.as_mut().unwrap().description = huge;
    expect_code(alice.create_organization(create).await, Code::OutOfRange);
}

/// Every member reads the organization they belong to: whatever they hold,
/// `org.read` comes with it (an implication in the permission catalogue), so
/// GetOrganization, WhoAmI and CheckPermission agree.
#[tokio::test(flavor = "multi_thread")]
async fn every_member_reads_their_organization() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let bob = app.user_id("bob").await;
    // A permission a later migration adds implies org.read too.
    app.db
        .batch_execute(
            "INSERT INTO permissions (name, description) VALUES ('reports.read', 'See reports')",
        )
        .await
        .unwrap();
    // An individual grant, no role.
    for held in [
        "activity.read",
        "projects.create",
        "billing.manage",
        "reports.read",
    ] {
        app.set_member(&org.uid, &bob, &[], &[held]).await;
        let mut bobs = app.orgs_as("bob").await;
        let read = bobs
            .get_organization(get(&org.name))
            .await
            .unwrap_or_else(|status| panic!("a member holding {held}: {status:?}"))
            .into_inner();
        assert_eq!(read.name, org.name);
        let me = bobs
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        let acme = me
            .memberships
            .iter()
            .find(|m| m.organization == org.name)
            .unwrap();
        assert!(
            acme.effective_permissions.contains(&"org.read".to_owned()),
            "{held}: {:?}",
            acme.effective_permissions
        );
        // Still not more than that.
        expect_code(
            bobs.update_organization(update(read, &["description"]))
                .await,
            Code::PermissionDenied,
        );
    }
    // A stranger still learns nothing.
    expect_code(
        app.orgs_as("carol")
            .await
            .get_organization(get(&org.name))
            .await,
        Code::NotFound,
    );
}
