//! API tokens: scoped to one organization, limited to their grant and to their
//! creator's current standing, revocable, and stored only as a hash.

mod common;

use common::*;
use orgd::pb::{self, token_service_client::TokenServiceClient};
use tonic::Code;

fn new_token(org: &pb::Organization, roles: &[&str], extras: &[&str]) -> pb::CreateApiTokenRequest {
    pb::CreateApiTokenRequest {
        parent: org.name.clone(),
        api_token: Some(pb::ApiToken {
            display_name: "deploy bot".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            extra_permissions: extras.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_lives_and_dies_with_its_creator_and_its_revocation() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    let bob = join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    let mut bob_tokens = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("bob"))),
    );

    // No broader than the creator: an admin cannot mint an owner token.
    expect_code(
        bob_tokens
            .create_api_token(new_token(&org, &["owner"], &[]))
            .await,
        Code::PermissionDenied,
    );
    let created = bob_tokens
        .create_api_token(new_token(&org, &["viewer"], &["members.manage"]))
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    assert!(
        secret.starts_with("orgd_") && secret.len() >= 45,
        "{secret}"
    );
    let token = created.api_token.unwrap();
    assert!(secret.starts_with(&token.prefix));

    // Used: it acts as bob, in its organization, within its grant.
    let mut orgs = app.orgs(Some(&secret)).await;
    orgs.get_organization(get(&org.name)).await.unwrap();
    let me = orgs
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.token_organization, org.name);
    assert_eq!(me.memberships.len(), 1);
    assert_eq!(
        me.memberships[0].effective_permissions,
        [
            "members.manage",
            "members.read",
            "org.read",
            "subscription.read"
        ],
        "bob is admin; the token holds viewer plus members.manage"
    );
    expect_code(
        orgs.update_organization(update(org.clone(), &["description"]))
            .await,
        Code::PermissionDenied,
    );
    // Another organization (even one bob may see) is NOT_FOUND through it.
    expect_code(
        orgs.get_organization(get(&other.name)).await,
        Code::NotFound,
    );
    // Methods on a user's own account need their sign-in.
    expect_code(
        orgs.create_organization(new_org("Via token")).await,
        Code::PermissionDenied,
    );
    let mut members = pb::member_service_client::MemberServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&secret)),
    );
    members
        .create_invitation(invitation(&org, "carol@example.com", &["viewer"]))
        .await
        .unwrap();
    // Within the token's grant, not the creator's: no admins through a viewer token.
    expect_code(
        members
            .create_invitation(invitation(&org, "dan@example.com", &["admin"]))
            .await,
        Code::PermissionDenied,
    );
    let via_token = app
        .count(
            "SELECT 1 FROM activity WHERE action = 'invitation.create' AND details->>'api_token' = $1",
            &[&token.name.rsplit('/').next().unwrap().to_owned()],
        )
        .await;
    assert_eq!(via_token, 1, "the audit row names the token");

    // What a person does with their own sign-in, a token cannot: mint tokens,
    // leave, transfer ownership, or reach into another organization.
    let mut through_token =
        TokenServiceClient::with_interceptor(app.channel().await, Bearer::new(Some(&secret)));
    expect_code(
        through_token
            .create_api_token(new_token(&org, &["viewer"], &[]))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        members
            .leave_organization(pb::LeaveOrganizationRequest {
                organization: org.name.clone(),
            })
            .await,
        Code::PermissionDenied,
    );

    // The creator is removed: the token stops at once, and says why.
    app.members_as("alice")
        .await
        .remove_member(pb::RemoveMemberRequest {
            name: bob.name.clone(),
        })
        .await
        .unwrap();
    let refused = expect_code(
        orgs.get_organization(get(&org.name)).await,
        Code::Unauthenticated,
    );
    let info = tonic_types::StatusExt::get_details_error_info(&refused).unwrap();
    assert_eq!(info.reason, "TOKEN_DEACTIVATED", "{refused:?}");
    // Bob rejoins: it works again.
    let bob = join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    orgs.get_organization(get(&org.name)).await.unwrap();
    // Bob is made a viewer: the token's members.manage goes with his, at once.
    app.members_as("alice")
        .await
        .update_member(set_roles(&bob.name, &["viewer"]))
        .await
        .unwrap();
    expect_code(
        members
            .create_invitation(invitation(&org, "erin@example.com", &["viewer"]))
            .await,
        Code::PermissionDenied,
    );
    orgs.get_organization(get(&org.name)).await.unwrap();

    // Listed without its secret, with its last use; revoked, refused.
    let mut alice_tokens = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let listed = listed(&mut alice_tokens, &org).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_use_time.is_some());
    assert!(!format!("{listed:?}").contains(&secret));
    alice_tokens
        .revoke_api_token(pb::RevokeApiTokenRequest {
            name: token.name.clone(),
        })
        .await
        .unwrap();
    let refused = expect_code(
        orgs.get_organization(get(&org.name)).await,
        Code::Unauthenticated,
    );
    assert!(refused.message().contains("revoked"), "{refused:?}");
    expect_code(
        app.orgs(Some("orgd_not-a-real-token"))
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
    );

    // The secret is nowhere in the database, only its hash.
    let db = sql_client(&app.db_url).await;
    let tables = public_tables(&db).await;
    let body = &secret[5..];
    for table in tables {
        let found: i64 = db
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} t WHERE strpos(row_to_json(t)::text, $1) > 0"
                ),
                &[&body],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "the secret is in {table}");
    }
    assert_eq!(
        app.count(
            "SELECT 1 FROM api_tokens WHERE secret_hash = sha256(convert_to($1, 'UTF8'))",
            &[&secret]
        )
        .await,
        1
    );
}

/// A token is checked together with the organization its call names, after the
/// request is read; a caller with a bad token still hears about the token first.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_token_is_refused_before_its_request_is_judged() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    let created = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    )
    .create_api_token(new_token(&org, &["admin"], &[]))
    .await
    .unwrap()
    .into_inner();
    let secret = created.secret;
    let mut orgs = app.orgs(Some(&secret)).await;
    let with_card = |org: &pb::Organization| {
        let mut org = org.clone();
        org.description = "card 4111 1111 1111 1111".into();
        update(org, &["description"])
    };

    // A valid token: the request's own faults, and nothing outside its organization.
    expect_code(
        orgs.get_organization(get("organizations/")).await,
        Code::InvalidArgument,
    );
    expect_code(
        orgs.update_organization(with_card(&org)).await,
        Code::InvalidArgument,
    );
    expect_code(
        orgs.get_organization(get(&other.name)).await,
        Code::NotFound,
    );
    expect_code(
        orgs.get_organization(get("organizations/no-such-org"))
            .await,
        Code::NotFound,
    );
    let found = orgs.get_organization(get(&org.name)).await.unwrap();
    assert_eq!(found.into_inner().name, org.name);

    // Its own organization by slug too.
    let by_slug = orgs
        .get_organization(get(&format!("organizations/{}", org.slug)))
        .await
        .unwrap();
    assert_eq!(by_slug.into_inner().name, org.name);

    // An unknown token, of the right shape (looked up) or not (refused at once):
    // whatever the request, the token is what is wrong.
    let well_formed = format!("orgd_{}", "A".repeat(43));
    for token in [well_formed.as_str(), "orgd_not-a-real-token"] {
        let mut unknown = app.orgs(Some(token)).await;
        for refused in [
            unknown.get_organization(get("organizations/")).await,
            unknown.get_organization(get(&org.name)).await,
            unknown.get_organization(get(&other.name)).await,
        ] {
            let status = expect_code(refused, Code::Unauthenticated);
            assert!(
                status.message().contains("not valid"),
                "{token}: {status:?}"
            );
        }
        let status = expect_code(
            unknown.update_organization(with_card(&org)).await,
            Code::Unauthenticated,
        );
        assert!(!status.message().contains("card"), "{token}: {status:?}");
    }

    // Expired, in its own organization and outside it.
    let db = sql_client(&app.db_url).await;
    db.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 minute'",
        &[],
    )
    .await
    .unwrap();
    for refused in [
        orgs.get_organization(get(&org.name)).await,
        orgs.get_organization(get(&other.name)).await,
        orgs.get_organization(get("organizations/")).await,
    ] {
        let status = expect_code(refused, Code::Unauthenticated);
        assert!(status.message().contains("expired"), "{status:?}");
    }
}

/// A token whose creator left its organization does not work at all: every call
/// is UNAUTHENTICATED (TOKEN_DEACTIVATED) saying why, until the creator rejoins.
/// ListApiTokens shows each token's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_of_a_creator_who_left_is_deactivated_until_they_rejoin() {
    use pb::api_token::State;
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    let created = tokens_of(app.channel().await, "bob")
        .create_api_token(new_token(&org, &["viewer"], &[]))
        .await
        .unwrap()
        .into_inner();
    let bobs = created.api_token.unwrap();
    assert_eq!(bobs.state(), State::Active);
    let secret = created.secret;
    let mut alice_tokens = tokens_of(app.channel().await, "alice");
    let mut create = async || {
        alice_tokens
            .create_api_token(new_token(&org, &["viewer"], &[]))
            .await
            .unwrap()
            .into_inner()
            .api_token
            .unwrap()
    };
    let revoked = create().await;
    let expired = create().await;
    alice_tokens
        .revoke_api_token(pb::RevokeApiTokenRequest {
            name: revoked.name.clone(),
        })
        .await
        .unwrap();
    let expired_id: uuid::Uuid = expired.name.rsplit('/').next().unwrap().parse().unwrap();
    app.db
        .execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1",
            &[&expired_id],
        )
        .await
        .unwrap();

    app.members_as("bob")
        .await
        .leave_organization(pb::LeaveOrganizationRequest {
            organization: org.name.clone(),
        })
        .await
        .unwrap();
    let mut orgs = app.orgs(Some(&secret)).await;
    // Whatever the call: reading, changing, or naming another organization.
    let refusals = [
        orgs.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ()),
        orgs.get_organization(get(&org.name)).await.map(|_| ()),
        orgs.update_organization(update(org.clone(), &["description"]))
            .await
            .map(|_| ()),
        orgs.get_organization(get("organizations/no-such-org"))
            .await
            .map(|_| ()),
    ];
    for refusal in refusals {
        let status = expect_code(refusal, Code::Unauthenticated);
        let message = status.message();
        assert!(
            message.contains(&format!("is no longer a member of {};", org.name))
                && message.contains("it works again if they rejoin")
                // Whoever holds the token may be no member: no display name.
                && !message.contains("\"Acme\""),
            "{message}"
        );
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(info.reason, "TOKEN_DEACTIVATED");
    }
    let states = async |tokens: &mut TokenClient| {
        let listed = listed(tokens, &org).await;
        let state_of = |name: &str| {
            listed
                .iter()
                .find(|token| token.name == name)
                .map(pb::ApiToken::state)
        };
        [
            state_of(&bobs.name),
            state_of(&revoked.name),
            state_of(&expired.name),
        ]
    };
    assert_eq!(
        states(&mut alice_tokens).await,
        [
            Some(State::Deactivated),
            Some(State::Revoked),
            Some(State::Expired)
        ]
    );

    // Back in the organization, bob's token works again.
    join(&app, "alice", &org, "bob", &["admin"]).await.unwrap();
    orgs.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    assert_eq!(states(&mut alice_tokens).await[0], Some(State::Active));
}

type TokenClient = TokenServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

fn tokens_of(channel: tonic::transport::Channel, sub: &str) -> TokenClient {
    TokenServiceClient::with_interceptor(channel, Bearer::new(Some(&user_token(sub))))
}

/// The tokens of `org` that `client`'s caller may list (one page).
async fn listed(client: &mut TokenClient, org: &pb::Organization) -> Vec<pb::ApiToken> {
    client
        .list_api_tokens(pb::ListApiTokensRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_tokens
}

/// The names of the tokens `client`'s caller may list, sorted.
async fn listed_names(client: &mut TokenClient, org: &pb::Organization) -> Vec<String> {
    let mut names: Vec<String> = listed(client, org)
        .await
        .into_iter()
        .map(|token| token.name)
        .collect();
    names.sort();
    names
}

/// Koyeb: members create their own API tokens. `tokens.create_own` (developer
/// and above) creates, lists and revokes the caller's own tokens, never broader
/// than themselves; `tokens.manage` governs everyone's. Another member's token
/// is NOT_FOUND to a caller who may not list it, exactly like a missing one.
#[tokio::test(flavor = "multi_thread")]
async fn members_manage_their_own_tokens_and_tokens_manage_governs_all() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    for (sub, role) in [("dev", "developer"), ("adam", "admin"), ("vic", "viewer")] {
        app.set_member(&org.uid, &app.user_id(sub).await, &[role], &[])
            .await;
    }
    let mut alice = tokens_of(app.channel().await, "alice");
    let mut dev = tokens_of(app.channel().await, "dev");
    let mut adam = tokens_of(app.channel().await, "adam");
    let mut vic = tokens_of(app.channel().await, "vic");

    let alices = alice
        .create_api_token(new_token(&org, &["viewer"], &[]))
        .await
        .unwrap()
        .into_inner()
        .api_token
        .unwrap();
    // A developer creates their own, within what they hold.
    let devs = dev
        .create_api_token(new_token(&org, &[], &["projects.create"]))
        .await
        .unwrap()
        .into_inner()
        .api_token
        .unwrap();
    assert_eq!(devs.creator, format!("users/{}", app.user_id("dev").await));
    expect_code(
        dev.create_api_token(new_token(&org, &[], &["members.manage"]))
            .await,
        Code::PermissionDenied,
    );
    // They list their own only.
    assert_eq!(listed_names(&mut dev, &org).await, [devs.name.as_str()]);
    // Someone else's token looks missing to them, and stays active.
    let refused = expect_code(
        dev.revoke_api_token(pb::RevokeApiTokenRequest {
            name: alices.name.clone(),
        })
        .await,
        Code::NotFound,
    );
    assert!(
        refused.message().contains("tokens.manage"),
        "says what would reach others' tokens: {refused:?}"
    );
    let missing_name = format!("{}/apiTokens/{}", org.name, uuid::Uuid::now_v7());
    let missing = expect_code(
        dev.revoke_api_token(pb::RevokeApiTokenRequest {
            name: missing_name.clone(),
        })
        .await,
        Code::NotFound,
    );
    assert_eq!(
        refused.message().replace(&alices.name, "X"),
        missing.message().replace(&missing_name, "X"),
        "another member's token reads exactly like a missing one"
    );
    // Their own, they revoke.
    let revoked = dev
        .revoke_api_token(pb::RevokeApiTokenRequest {
            name: devs.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());

    // With tokens.manage: everyone's.
    let devs_second = dev
        .create_api_token(new_token(&org, &["viewer"], &[]))
        .await
        .unwrap()
        .into_inner()
        .api_token
        .unwrap();
    let mut all = vec![
        alices.name.clone(),
        devs.name.clone(),
        devs_second.name.clone(),
    ];
    all.sort();
    assert_eq!(listed_names(&mut adam, &org).await, all);
    assert_eq!(listed_names(&mut alice, &org).await, all);
    adam.revoke_api_token(pb::RevokeApiTokenRequest {
        name: devs_second.name.clone(),
    })
    .await
    .unwrap();
    let listed = listed(&mut alice, &org).await;
    let active: Vec<&str> = listed
        .iter()
        .filter(|t| t.state() == pb::api_token::State::Active)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(active, [alices.name.as_str()]);

    // A viewer holds neither: no tokens of their own.
    let refused = expect_code(
        vic.create_api_token(new_token(&org, &["viewer"], &[]))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        refused.message().contains("tokens.create_own"),
        "{refused:?}"
    );
    expect_code(
        vic.list_api_tokens(pb::ListApiTokensRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
    );
    // The activity log names each actor.
    assert_eq!(activity_count(&app, "api_token.revoke").await, 2);
}

/// A change made through a token that is revoked while the change waits for
/// the organization's lock is refused once it gets the lock, and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_while_its_change_waits_is_refused() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let created = TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    )
    .create_api_token(new_token(&org, &["admin"], &[]))
    .await
    .unwrap()
    .into_inner();
    let token_id: uuid::Uuid = created
        .api_token
        .unwrap()
        .name
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut orgs = app.orgs(Some(&created.secret)).await;

    // The lock is held, and the token revoked, in one uncommitted transaction.
    let locker = lock_org_row(&app, &org).await;
    locker
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1",
            &[&token_id],
        )
        .await
        .unwrap();
    let mut described = org.clone();
    described.description = "changed through a revoked token".into();
    let waiting = tokio::spawn(async move {
        orgs.update_organization(update(described, &["description"]))
            .await
    });
    assert_eq!(
        app.lock_waiters(1).await,
        1,
        "the update waits for the lock"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    let status = expect_code(waiting.await.unwrap(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());
    let description: String = app
        .db
        .query_one(
            "SELECT description FROM organizations WHERE slug = $1",
            &[&org.slug],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(description, org.description);
}
