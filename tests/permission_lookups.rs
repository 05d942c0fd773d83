//! PermissionService's reverse lookups: where may a user do something
//! (LookupOrganizations), who may do it in an organization (LookupMembers),
//! page by page, with page tokens that serve only the list they came from.

mod common;

use common::*;
use orgd::pb;
use tonic::Code;

fn orgs_of(
    user: &str,
    permission: &str,
    page_size: i32,
    page_token: &str,
) -> pb::LookupOrganizationsRequest {
    pb::LookupOrganizationsRequest {
        user: user.into(),
        permission: permission.into(),
        page_size,
        page_token: page_token.into(),
    }
}

fn members_of(
    organization: &str,
    permission: &str,
    page_size: i32,
    page_token: &str,
) -> pb::LookupMembersRequest {
    pb::LookupMembersRequest {
        organization: organization.into(),
        permission: permission.into(),
        page_size,
        page_token: page_token.into(),
    }
}

/// Every page of LookupOrganizations, `page_size` at a time: the names in
/// order, and how many pages it took.
async fn all_orgs(
    client: &mut PermissionClient,
    user: &str,
    permission: &str,
    page_size: i32,
) -> (Vec<String>, usize) {
    let (mut names, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = client
            .lookup_organizations(orgs_of(user, permission, page_size, &token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.organizations.len() <= page_size as usize);
        names.extend(page.organizations.into_iter().map(|org| org.name));
        pages += 1;
        if page.next_page_token.is_empty() {
            return (names, pages);
        }
        token = page.next_page_token;
    }
}

/// Every page of LookupMembers, as `all_orgs`: the members' users.
async fn all_members(
    client: &mut PermissionClient,
    organization: &str,
    permission: &str,
    page_size: i32,
) -> (Vec<String>, usize) {
    let (mut users, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = client
            .lookup_members(members_of(organization, permission, page_size, &token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= page_size as usize);
        users.extend(page.members.into_iter().map(|member| member.user));
        pages += 1;
        if page.next_page_token.is_empty() {
            return (users, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn organizations_where_a_user_holds_a_permission_come_page_by_page() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "20"]).await;
    let bob_id = app.user_id("bob").await;
    let bob_personal = app
        .orgs_as("bob")
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .personal_organization;
    let mut alice = app.orgs_as("alice").await;
    // Bob joins eight organizations, in this order, with these roles.
    let roles: [&[&str]; 8] = [
        &["developer"],
        &["viewer"],
        &["admin"],
        &["developer"],
        &["billing"],
        &["developer"],
        &["viewer"],
        &["developer"],
    ];
    let mut orgs = Vec::new();
    for (i, roles) in roles.iter().enumerate() {
        let org = create_org(&mut alice, &format!("Team {i}")).await;
        app.set_member(&org.uid, &bob_id, roles, &[]).await;
        orgs.push(org);
    }
    let mut service = app.permissions_as_service().await;

    // projects.create: the developer and admin teams, and bob's personal
    // organization (joined first), in the order he joined them.
    let mut expected = vec![bob_personal.clone()];
    expected.extend(
        orgs.iter()
            .zip(roles)
            .filter(|(_, roles)| ["developer", "admin"].contains(&roles[0]))
            .map(|(org, _)| org.name.clone()),
    );
    let (found, pages) = all_orgs(&mut service, "subjects/bob", "projects.create", 2).await;
    assert_eq!(found, expected);
    assert_eq!(pages, 3);
    // The same by id, at another page size: the same order.
    let (by_id, _) = all_orgs(
        &mut service,
        &format!("users/{bob_id}"),
        "projects.create",
        4,
    )
    .await;
    assert_eq!(by_id, expected);
    // Every member reads their organization.
    let (readable, _) = all_orgs(&mut service, "subjects/bob", "org.read", 50).await;
    assert_eq!(readable.len(), 9);

    // A deleted organization grants nothing; an unknown user holds nothing.
    app.orgs_as("alice")
        .await
        .delete_organization(delete(&orgs[0]))
        .await
        .unwrap();
    let (found, _) = all_orgs(&mut service, "subjects/bob", "projects.create", 50).await;
    assert_eq!(
        found,
        expected[..1]
            .iter()
            .chain(&expected[2..])
            .cloned()
            .collect::<Vec<_>>()
    );
    for nobody in [
        "subjects/nobody",
        &format!("users/{}", uuid::Uuid::now_v7()),
    ] {
        assert_eq!(
            all_orgs(&mut service, nobody, "org.read", 50).await,
            (Vec::new(), 1),
            "{nobody}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_holding_a_permission_come_page_by_page() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let alice_id = app.user_id("alice").await;
    // Members beyond the plan's limit, straight into the database.
    let mut holders = vec![format!("users/{alice_id}")];
    for (i, (roles, grants)) in [
        (&["developer"][..], &[][..]),
        (&["billing"], &[]),
        (&["viewer"], &["billing.manage"]),
        (&["admin"], &[]),
        (&["viewer"], &["billing.read"]),
        (&["billing"], &[]),
        (&["developer"], &[]),
    ]
    .iter()
    .enumerate()
    {
        let id = app.user_id(&format!("member{i}")).await;
        app.set_member(&acme.uid, &id, roles, grants).await;
        if roles.contains(&"billing")
            || roles.contains(&"admin")
            || grants.contains(&"billing.manage")
        {
            holders.push(format!("users/{id}"));
        }
    }
    let mut service = app.permissions_as_service().await;

    let (found, pages) = all_members(&mut service, &acme.name, "billing.manage", 2).await;
    assert_eq!(found, holders);
    assert_eq!(pages, 3);
    let by_slug = format!("organizations/{}", acme.slug);
    assert_eq!(
        all_members(&mut service, &by_slug, "billing.manage", 3)
            .await
            .0,
        holders
    );
    // Implied: billing.read's holders include billing.manage's.
    let (readers, _) = all_members(&mut service, &acme.name, "billing.read", 50).await;
    assert_eq!(readers.len(), holders.len() + 1);
    assert!(holders.iter().all(|holder| readers.contains(holder)));
    assert_eq!(
        all_members(&mut service, &acme.name, "org.read", 50)
            .await
            .0
            .len(),
        8
    );

    // A member's page carries what ListMembers shows.
    let page = service
        .lookup_members(members_of(&acme.name, "org.delete", 10, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.members.len(), 1);
    assert_eq!(page.members[0].email, "alice@example.com");
    assert_eq!(page.members[0].roles, ["owner"]);

    // Nobody holds anything in a deleted organization; an unknown one is NOT_FOUND.
    app.orgs_as("alice")
        .await
        .delete_organization(delete(&acme))
        .await
        .unwrap();
    assert_eq!(
        all_members(&mut service, &acme.name, "org.read", 50).await,
        (Vec::new(), 1)
    );
    expect_code(
        service
            .lookup_members(members_of("organizations/nowhere", "org.read", 0, ""))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn page_tokens_read_on_only_in_their_own_list() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let acme = create_org(&mut alice, "Acme").await;
    create_org(&mut alice, "Globex").await;
    let bob_id = app.user_id("bob").await;
    app.set_member(&acme.uid, &bob_id, &["developer"], &[])
        .await;
    let carol_id = app.user_id("carol").await;
    app.set_member(&acme.uid, &carol_id, &["developer"], &[])
        .await;
    let mut service = app.permissions_as_service().await;

    let alices = service
        .lookup_organizations(orgs_of("subjects/alice", "org.read", 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let members = service
        .lookup_members(members_of(&acme.name, "org.read", 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!alices.is_empty() && !members.is_empty());
    let listed = app
        .orgs_as_service()
        .await
        .list_user_organizations(pb::ListUserOrganizationsRequest {
            user: "subjects/alice".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    // Another user, another permission, the same user by id, another list's
    // token, a made-up one: each refused, never read on in someone's list.
    for (user, permission, token) in [
        ("subjects/bob", "org.read", &alices),
        ("subjects/alice", "org.update", &alices),
        (
            &*format!("users/{}", app.user_id("alice").await),
            "org.read",
            &alices,
        ),
        ("subjects/alice", "org.read", &members),
        ("subjects/alice", "org.read", &listed),
        ("subjects/alice", "org.read", &"bm90IGEgdG9rZW4".to_owned()),
    ] {
        let status = expect_code(
            service
                .lookup_organizations(orgs_of(user, permission, 1, token))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), "page_token", "{user} {permission}");
    }
    for (organization, permission) in [
        ("organizations/acme", "org.read"),
        (&*acme.name, "org.update"),
    ] {
        let status = expect_code(
            service
                .lookup_members(members_of(organization, permission, 1, &members))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), "page_token");
    }
    // With its own list, the token reads on.
    let next = service
        .lookup_organizations(orgs_of("subjects/alice", "org.read", 1, &alices))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.organizations.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lookups_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut service = app.permissions_as_service().await;
    for (user, permission, field) in [
        ("subjects/alice", "org.fly", "permission"),
        ("subjects/alice", "", "permission"),
        ("alice", "org.read", "user"),
    ] {
        let status = expect_code(
            service
                .lookup_organizations(orgs_of(user, permission, 0, ""))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), field, "{status:?}");
    }
    for (organization, permission, field) in [
        (acme.name.as_str(), "org.fly", "permission"),
        ("acme", "org.read", "organization"),
    ] {
        let status = expect_code(
            service
                .lookup_members(members_of(organization, permission, 0, ""))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), field, "{status:?}");
    }
    expect_code(
        service
            .lookup_members(members_of(&acme.name, "org.read", -1, ""))
            .await,
        Code::InvalidArgument,
    );
    // Users are no services.
    let mut alice = app.permissions(&user_token("alice")).await;
    expect_code(
        alice
            .lookup_organizations(orgs_of("subjects/alice", "org.read", 0, ""))
            .await,
        Code::PermissionDenied,
    );
}
