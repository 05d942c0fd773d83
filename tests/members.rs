//! MemberService: invitations from both sides, member management, the grant
//! ceiling and the owner invariant, each failure with its status and no partial write.

mod common;

use std::time::Duration;

use common::*;
use orgd::auth::Claims;
use orgd::pb;
use prost_types::FieldMask;
use tonic::Code;

fn member_name(org: &pb::Organization, user_id: &str) -> String {
    format!("{}/members/{user_id}", org.name)
}

/// Row counts that a refused call must leave unchanged.
async fn snapshot(app: &TestApp) -> [i64; 5] {
    [
        app.count("SELECT 1 FROM memberships", &[]).await,
        app.count("SELECT 1 FROM membership_roles", &[]).await,
        app.count("SELECT 1 FROM invitations WHERE state = 'pending'", &[])
            .await,
        app.count("SELECT 1 FROM activity", &[]).await,
        app.count("SELECT 1 FROM outbox_messages", &[]).await,
    ]
}

async fn owners(app: &TestApp, org: &pb::Organization) -> i64 {
    let id: uuid::Uuid = org.uid.parse().unwrap();
    app.count(
        "SELECT 1 FROM membership_roles WHERE org_id = $1 AND role = 'owner'",
        &[&id],
    )
    .await
}

/// Every member of `org`, walking pages of `page_size`; no page is larger.
async fn every_member(
    client: &mut MemberClient,
    org: &pb::Organization,
    page_size: i32,
) -> Vec<pb::Member> {
    let mut members = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_members(pb::ListMembersRequest {
                parent: org.name.clone(),
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.members.len() <= page_size as usize);
        members.extend(page.members);
        token = page.next_page_token;
        if token.is_empty() {
            return members;
        }
    }
}

/// An organization of `owner` where each of `members` joined through an
/// invitation with `roles`; returns it with the members' user ids.
async fn team(
    app: &TestApp,
    owner: &str,
    members: &[(&str, &[&str])],
) -> (pb::Organization, Vec<String>) {
    let org = create_org(&mut app.orgs_as(owner).await, "Team").await;
    let mut ids = Vec::new();
    for (sub, roles) in members {
        let member = join(app, owner, &org, sub, roles).await.unwrap();
        ids.push(member.user.trim_start_matches("users/").to_owned());
    }
    (org, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_are_single_use_expire_and_belong_to_their_address() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut alice = app.members_as("alice").await;

    // Default role, normalized address, and the invitee's view of it.
    let sent = alice
        .create_invitation(invitation(&org, "Bob@Example.com", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.email, "bob@example.com");
    assert_eq!(sent.roles, ["developer"]);
    assert_eq!(sent.state(), pb::invitation::State::Pending);
    assert_eq!(sent.organization_display_name, "Acme");
    let mine = app
        .members_as("bob")
        .await
        .list_my_invitations(pb::ListMyInvitationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.invitations.len(), 1);
    assert_eq!(mine.invitations[0].name, sent.name);

    // Inviting the same address again, while pending: ALREADY_EXISTS.
    let before = snapshot(&app).await;
    let duplicate = expect_code(
        alice
            .create_invitation(invitation(&org, "bob@example.com", &["viewer"]))
            .await,
        Code::AlreadyExists,
    );
    assert!(
        duplicate.message().contains("resend or revoke"),
        "{duplicate:?}"
    );
    assert_eq!(snapshot(&app).await, before);

    // Resending at once is refused: one send a minute, so no inbox is flooded.
    let old_token = latest_token(&app, "bob@example.com").await;
    let resend = pb::ResendInvitationRequest {
        name: sent.name.clone(),
    };
    let before = snapshot(&app).await;
    let too_soon = expect_code(
        alice.resend_invitation(resend.clone()).await,
        Code::FailedPrecondition,
    );
    let details = tonic_types::StatusExt::get_details_precondition_failure(&too_soon).unwrap();
    assert_eq!(details.violations[0].r#type, "RESEND_TOO_SOON");
    assert!(
        too_soon.message().contains("can be sent again in"),
        "{too_soon:?}"
    );
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(latest_token(&app, "bob@example.com").await, old_token);

    // A minute later, resending replaces the link: the old token is dead.
    let_resend_interval_pass(&app).await;
    alice.resend_invitation(resend).await.unwrap();
    let token = latest_token(&app, "bob@example.com").await;
    assert_ne!(token, old_token);
    let resent = alice
        .get_invitation(pb::GetInvitationRequest {
            name: sent.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sent.send_count, resent.send_count), (1, 2));
    let mut bob = app.members_as("bob").await;
    expect_code(
        bob.accept_invitation(accept(&old_token)).await,
        Code::NotFound,
    );

    // A forwarded link is refused for another address, and stays pending.
    app.user_id("mallory").await;
    let mut claims = Claims::new(ISSUER, AUDIENCE, "bob-unverified", Duration::from_secs(600));
    claims.email = Some("bob@example.com".into());
    claims.email_verified = false;
    let mut unverified = pb::member_service_client::MemberServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&token_for(&claims))),
    );
    // Invitations are matched by verified address only.
    expect_code(
        unverified
            .list_my_invitations(pb::ListMyInvitationsRequest::default())
            .await,
        Code::FailedPrecondition,
    );
    let before = snapshot(&app).await;
    let forwarded = expect_code(
        app.members_as("mallory")
            .await
            .accept_invitation(accept(&token))
            .await,
        Code::PermissionDenied,
    );
    assert!(
        forwarded.message().contains("another email"),
        "{forwarded:?}"
    );
    // So is an unverified address, even the invited one.
    let refused = expect_code(
        unverified.accept_invitation(accept(&token)).await,
        Code::PermissionDenied,
    );
    assert!(refused.message().contains("not verified"), "{refused:?}");
    assert_eq!(snapshot(&app).await, before);

    // The invitee accepts once; a second use is refused.
    assert_eq!(
        app.count(
            "SELECT 1 FROM invitations WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
            &[&token]
        )
        .await,
        1,
        "the invitation holds the token's hash"
    );
    let joined = bob
        .accept_invitation(accept(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.roles, ["developer"]);
    assert_eq!(joined.email, "bob@example.com");
    assert!(joined.inviter.starts_with("users/"));
    let before = snapshot(&app).await;
    let reused = expect_code(
        bob.accept_invitation(accept(&token)).await,
        Code::FailedPrecondition,
    );
    assert!(reused.message().contains("already accepted"), "{reused:?}");
    assert_eq!(snapshot(&app).await, before);
    let accepted = alice
        .get_invitation(pb::GetInvitationRequest {
            name: sent.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state(), pb::invitation::State::Accepted);
    assert_eq!(accepted.member, joined.name);

    // Inviting a member: ALREADY_EXISTS.
    expect_code(
        alice
            .create_invitation(invitation(&org, "BOB@example.com", &[]))
            .await,
        Code::AlreadyExists,
    );

    // Expired and revoked tokens.
    let carol_invite = alice
        .create_invitation(invitation(&org, "carol@example.com", &["viewer"]))
        .await
        .unwrap()
        .into_inner();
    let carol_token = latest_token(&app, "carol@example.com").await;
    app.db
        .execute(
            "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = 'carol@example.com'",
            &[],
        )
        .await
        .unwrap();
    let mut carol = app.members_as("carol").await;
    app.user_id("carol").await;
    let before = snapshot(&app).await;
    let expired = expect_code(
        carol.accept_invitation(accept(&carol_token)).await,
        Code::FailedPrecondition,
    );
    assert!(expired.message().contains("expired"), "{expired:?}");
    assert_eq!(snapshot(&app).await, before);
    let listed = alice
        .list_invitations(pb::ListInvitationsRequest {
            parent: org.name.clone(),
            state: pb::invitation::State::Expired.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.invitations.len(), 1);
    assert_eq!(listed.invitations[0].name, carol_invite.name);
    // A lapsed invitation gives way to a new one, which can be revoked.
    let again = alice
        .create_invitation(invitation(&org, "carol@example.com", &["viewer"]))
        .await
        .unwrap()
        .into_inner();
    let new_token = latest_token(&app, "carol@example.com").await;
    let revoked = alice
        .revoke_invitation(pb::RevokeInvitationRequest {
            name: again.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state(), pb::invitation::State::Revoked);
    let refused = expect_code(
        carol.accept_invitation(accept(&new_token)).await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("revoked"), "{refused:?}");
    expect_code(
        alice
            .revoke_invitation(pb::RevokeInvitationRequest { name: again.name })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        app.count(
            "SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.subject = 'carol'",
            &[]
        )
        .await,
        1,
        "carol only has her personal organization"
    );
    for action in [
        "invitation.create",
        "invitation.resend",
        "invitation.accept",
        "invitation.revoke",
    ] {
        assert!(activity_count(&app, action).await >= 1, "{action} audited");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn declining_closes_the_invitation_and_tells_the_inviter() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut alice = app.members_as("alice").await;
    alice
        .create_invitation(invitation(&org, "dave@example.com", &[]))
        .await
        .unwrap();
    let token = latest_token(&app, "dave@example.com").await;
    let mut dave = app.members_as("dave").await;
    let declined = dave
        .decline_invitation(pb::DeclineInvitationRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.state(), pb::invitation::State::Declined);
    expect_code(
        dave.accept_invitation(accept(&token)).await,
        Code::FailedPrecondition,
    );
    let notice = app
        .count(
            "SELECT 1 FROM outbox_messages WHERE recipient = 'alice@example.com' AND subject LIKE '%declined%'",
            &[],
        )
        .await;
    assert_eq!(notice, 1);
    assert!(
        dave.list_my_invitations(pb::ListMyInvitationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .invitations
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_invalid_argument_and_write_nothing() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("bob", &["developer"])]).await;
    let mut alice = app.members_as("alice").await;
    let before = snapshot(&app).await;
    for (request, field) in [
        (invitation(&org, "not-an-email", &[]), "invitation.email"),
        (invitation(&org, "", &[]), "invitation.email"),
        (
            invitation(&org, "x@example.com", &[""]),
            "invitation.roles[0]",
        ),
        (
            invitation(&org, "x@example.com", &["wizard"]),
            "invitation.roles",
        ),
    ] {
        let status = expect_code(
            alice.create_invitation(request).await,
            Code::InvalidArgument,
        );
        assert!(status.message().starts_with(field), "{field}: {status:?}");
        let details =
            tonic_types::StatusExt::get_details_bad_request(&status).expect("a BadRequest detail");
        assert_eq!(details.field_violations[0].field, field);
    }
    let mut bad_permission = invitation(&org, "x@example.com", &[]);
    bad_permission
        .invitation
        .as_mut()
        .unwrap()
        .extra_permissions = vec!["org.fly".into()];
    let status = expect_code(
        alice.create_invitation(bad_permission).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("unknown permission 'org.fly'"),
        "{status:?}"
    );

    let bob = member_name(&org, &ids[0]);
    for (request, field) in [
        (set_roles(&bob, &[]), "member"),
        (
            set_roles("organizations/Nope!/members/x", &["viewer"]),
            "member.name",
        ),
        (
            pb::UpdateMemberRequest {
                update_mask: Some(FieldMask {
                    paths: vec!["email".into()],
                }),
                ..set_roles(&bob, &["viewer"])
            },
            "update_mask",
        ),
    ] {
        let status = expect_code(alice.update_member(request).await, Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    // A member name carries its organization: bob is not a member of `other`.
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    expect_code(
        alice
            .update_member(set_roles(&member_name(&other, &ids[0]), &["viewer"]))
            .await,
        Code::NotFound,
    );
    // A batch names its organization once; every item must lie in it.
    let status = expect_code(
        alice
            .batch_update_members(pb::BatchUpdateMembersRequest {
                parent: org.name.clone(),
                requests: vec![set_roles(&member_name(&other, &ids[0]), &["viewer"])],
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().starts_with("requests[0].member.name")
            && status.message().contains("not in the organization"),
        "{status:?}"
    );
    let status = expect_code(
        alice
            .batch_remove_members(pb::BatchRemoveMembersRequest {
                parent: org.name.clone(),
                names: vec![bob.clone(), bob.clone()],
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("more than once"), "{status:?}");
    expect_code(
        alice.accept_invitation(accept("")).await,
        Code::InvalidArgument,
    );
    // One more organization was created above; nothing else changed.
    let after = snapshot(&app).await;
    assert_eq!(after[2], before[2]);
    assert_eq!(
        app.count(
            "SELECT 1 FROM activity WHERE action LIKE 'member.%' OR action LIKE 'invitation.%'",
            &[]
        )
        .await,
        2,
        "only bob's invitation and its acceptance are audited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_checked_when_accepting() {
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "2"]).await;
    // New team organizations are on the Starter plan: three members.
    let (org, _) = team(&app, "alice", &[("bob", &["viewer"])]).await;
    let mut alice = app.members_as("alice").await;

    // Carol is invited while there is room; dan then fills the last place
    // (pending invitations reserve none), so she is refused when she accepts.
    alice
        .create_invitation(invitation(&org, "carol@example.com", &[]))
        .await
        .unwrap();
    let token = latest_token(&app, "carol@example.com").await;
    join(&app, "alice", &org, "dan", &["viewer"]).await.unwrap();
    let mut carol = app.members_as("carol").await;
    app.user_id("carol").await;
    let before = snapshot(&app).await;
    let full = expect_code(
        carol.accept_invitation(accept(&token)).await,
        Code::FailedPrecondition,
    );
    assert!(
        full.message()
            .contains("the Starter plan's limit of 3 members")
            && full
                .message()
                .contains("ChangePlan to Startup (plans/startup) for up to 6 members")
            && full.message().contains("then accept again"),
        "{full:?}"
    );
    let details = tonic_types::StatusExt::get_details_precondition_failure(&full).unwrap();
    assert_eq!(details.violations[0].r#type, "MEMBER_LIMIT");
    assert_eq!(snapshot(&app).await, before);

    // Inviting into the full organization is refused at once, saying how to make
    // room; nothing is stored or sent.
    let refused = expect_code(
        alice
            .create_invitation(invitation(&org, "erin@example.com", &[]))
            .await,
        Code::FailedPrecondition,
    );
    let details = tonic_types::StatusExt::get_details_precondition_failure(&refused).unwrap();
    assert_eq!(details.violations[0].r#type, "MEMBER_LIMIT");
    assert!(
        refused.message().contains("\"Team\"")
            && refused.message().contains("has reached the Starter plan's limit of 3 members: add a payment method (AddPaymentMethod), then ChangePlan to Startup (plans/startup) for up to 6 members, or remove 1 member, then invite again"),
        "{refused:?}"
    );
    assert_eq!(snapshot(&app).await, before);

    // Room made: now carol's own limit (personal + one more) is what stops her.
    alice
        .remove_member(pb::RemoveMemberRequest {
            name: member_name(&org, &app.user_id("bob").await),
        })
        .await
        .unwrap();
    create_org(&mut app.orgs_as("carol").await, "Carol's").await;
    let before = snapshot(&app).await;
    let too_many = expect_code(
        carol.accept_invitation(accept(&token)).await,
        Code::FailedPrecondition,
    );
    let details = tonic_types::StatusExt::get_details_precondition_failure(&too_many).unwrap();
    assert_eq!(details.violations[0].r#type, "ORGANIZATION_LIMIT");
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_grants_or_touches_more_than_they_hold() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(
        &app,
        "alice",
        &[("adam", &["admin"]), ("dora", &["developer"])],
    )
    .await;
    let alice_id = app.user_id("alice").await;
    let mut adam = app.members_as("adam").await;
    let before = snapshot(&app).await;

    // An admin cannot invite an owner, make someone owner, or hand out org.delete...
    let status = expect_code(
        adam.create_invitation(invitation(&org, "eve@example.com", &["owner"]))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("only an owner"), "{status:?}");
    // A role carrying permissions the admin lacks is refused, naming them.
    app.db
        .batch_execute(
            "INSERT INTO roles VALUES ('janitor', 'test role'); \
             INSERT INTO role_permissions VALUES ('janitor', 'org.delete')",
        )
        .await
        .unwrap();
    let status = expect_code(
        adam.create_invitation(invitation(&org, "eve@example.com", &["janitor"]))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("org.delete"), "{status:?}");
    expect_code(
        adam.update_member(set_roles(&member_name(&org, &ids[1]), &["owner"]))
            .await,
        Code::PermissionDenied,
    );
    let mut grant = set_roles(&member_name(&org, &ids[1]), &[]);
    grant.member.as_mut().unwrap().extra_permissions = vec!["org.delete".into()];
    grant.update_mask = Some(FieldMask {
        paths: vec!["extra_permissions".into()],
    });
    expect_code(adam.update_member(grant).await, Code::PermissionDenied);
    // ...nor demote or remove the owner.
    expect_code(
        adam.update_member(set_roles(&member_name(&org, &alice_id), &["viewer"]))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        adam.remove_member(pb::RemoveMemberRequest {
            name: member_name(&org, &alice_id),
        })
        .await,
        Code::PermissionDenied,
    );
    // Transfer is the owner's alone.
    expect_code(
        adam.transfer_ownership(pb::TransferOwnershipRequest {
            organization: org.name.clone(),
            new_owner: member_name(&org, &ids[0]),
        })
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(snapshot(&app).await, before);

    // Within their own permissions an admin manages freely.
    let promoted = adam
        .update_member(set_roles(
            &member_name(&org, &ids[1]),
            &["billing", "developer"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.roles, ["billing", "developer"]);
    assert!(
        promoted
            .effective_permissions
            .contains(&"plans.manage".to_owned())
    );
    // A developer manages nobody.
    expect_code(
        app.members_as("dora")
            .await
            .create_invitation(invitation(&org, "x@example.com", &[]))
            .await,
        Code::PermissionDenied,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_owner_cannot_leave_be_removed_or_demoted() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("bob", &["admin"])]).await;
    let alice_id = app.user_id("alice").await;
    let mut alice = app.members_as("alice").await;
    let alice_member = member_name(&org, &alice_id);
    let before = snapshot(&app).await;

    let refusals = [
        alice
            .leave_organization(pb::LeaveOrganizationRequest {
                organization: org.name.clone(),
            })
            .await
            .map(|_| ()),
        alice
            .remove_member(pb::RemoveMemberRequest {
                name: alice_member.clone(),
            })
            .await
            .map(|_| ()),
        alice
            .update_member(set_roles(&alice_member, &["admin"]))
            .await
            .map(|_| ()),
        alice
            .batch_remove_members(pb::BatchRemoveMembersRequest {
                parent: org.name.clone(),
                names: vec![alice_member.clone(), member_name(&org, &ids[0])],
            })
            .await
            .map(|_| ()),
    ];
    for refusal in refusals {
        let status = expect_code(refusal, Code::FailedPrecondition);
        assert!(
            status.message().contains("TransferOwnership")
                && status.message().contains("delete the organization"),
            "{status:?}"
        );
        let details = tonic_types::StatusExt::get_details_precondition_failure(&status).unwrap();
        assert_eq!(details.violations[0].r#type, "LAST_OWNER");
    }
    assert_eq!(snapshot(&app).await, before, "nothing half-written");

    // The database refuses it too, whoever writes.
    let id: uuid::Uuid = org.uid.parse().unwrap();
    let direct = app
        .db
        .execute(
            "DELETE FROM membership_roles WHERE org_id = $1 AND role = 'owner'",
            &[&id],
        )
        .await
        .unwrap_err();
    assert_eq!(
        direct.as_db_error().unwrap().constraint(),
        Some("organization_has_owner")
    );

    // Transfer: bob becomes owner, alice admin; then alice may leave.
    let transfer = alice
        .transfer_ownership(pb::TransferOwnershipRequest {
            organization: org.name.clone(),
            new_owner: member_name(&org, &ids[0]),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        transfer
            .new_owner
            .unwrap()
            .roles
            .contains(&"owner".to_owned())
    );
    assert_eq!(transfer.previous_owner.unwrap().roles, ["admin"]);
    assert_eq!(
        activity_count(&app, "organization.transfer_ownership").await,
        1
    );
    alice
        .leave_organization(pb::LeaveOrganizationRequest {
            organization: org.name.clone(),
        })
        .await
        .unwrap();
    expect_code(
        app.orgs_as("alice")
            .await
            .get_organization(get(&org.name))
            .await,
        Code::NotFound,
    );
    assert_eq!(owners(&app, &org).await, 1);
    // A personal organization cannot be left, and takes no invitations.
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
    let mut bob = app.members_as("bob").await;
    expect_code(
        bob.leave_organization(pb::LeaveOrganizationRequest {
            organization: bob_personal.clone(),
        })
        .await,
        Code::FailedPrecondition,
    );
    let status = expect_code(
        bob.create_invitation(pb::CreateInvitationRequest {
            parent: bob_personal,
            invitation: Some(pb::Invitation {
                email: "x@example.com".into(),
                ..Default::default()
            }),
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("personal"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_apply_all_or_nothing_and_members_page() {
    // The Team plan has room for everyone.
    let app = TestApp::spawn_with(&["--default-plan", "team"]).await;
    let subs = ["m1", "m2", "m3", "m4", "m5"];
    let members: Vec<(&str, &[&str])> = subs.iter().map(|s| (*s, &["viewer"][..])).collect();
    let (org, ids) = team(&app, "alice", &members).await;
    let mut alice = app.members_as("alice").await;

    // Pages of two, oldest first, with no member twice.
    let seen: Vec<String> = every_member(&mut alice, &org, 2)
        .await
        .into_iter()
        .map(|m| m.email)
        .collect();
    let expected: Vec<String> = std::iter::once("alice".to_owned())
        .chain(subs.iter().map(|s| s.to_string()))
        .map(|s| format!("{s}@example.com"))
        .collect();
    assert_eq!(seen, expected);

    // One bad update (a stale etag) fails the whole batch.
    let before = snapshot(&app).await;
    let mut stale = set_roles(&member_name(&org, &ids[1]), &["developer"]);
    stale.member.as_mut().unwrap().etag = "W/\"99\"".into();
    let batch = pb::BatchUpdateMembersRequest {
        parent: org.name.clone(),
        requests: vec![
            set_roles(&member_name(&org, &ids[0]), &["developer"]),
            stale,
        ],
    };
    expect_code(alice.batch_update_members(batch).await, Code::Aborted);
    assert_eq!(snapshot(&app).await, before);
    let updated = alice
        .batch_update_members(pb::BatchUpdateMembersRequest {
            parent: org.name.clone(),
            requests: vec![
                set_roles(&member_name(&org, &ids[0]), &["developer"]),
                set_roles(&member_name(&org, &ids[1]), &["billing"]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.members[0].roles, ["developer"]);
    assert_eq!(updated.members[1].roles, ["billing"]);
    assert_eq!(activity_count(&app, "member.batch_update").await, 1);

    // Removing a non-member among members removes nobody.
    let stranger = app.user_id("stranger").await;
    let before_stranger = snapshot(&app).await;
    expect_code(
        alice
            .batch_remove_members(pb::BatchRemoveMembersRequest {
                parent: org.name.clone(),
                names: vec![member_name(&org, &ids[2]), member_name(&org, &stranger)],
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(snapshot(&app).await, before_stranger);
    alice
        .batch_remove_members(pb::BatchRemoveMembersRequest {
            parent: org.name.clone(),
            names: vec![member_name(&org, &ids[2]), member_name(&org, &ids[3])],
        })
        .await
        .unwrap();
    let left = alice
        .list_members(pb::ListMembersRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.members.len(), 4);
    expect_code(
        app.orgs_as("m3")
            .await
            .get_organization(get(&org.name))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_grant_only_what_their_inviter_still_may() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("bob", &["admin"])]).await;
    let mut bob = app.members_as("bob").await;
    // Bob, an admin, invites an address he controls as admin, then is removed.
    bob.create_invitation(invitation(&org, "bobs-alt@example.com", &["admin"]))
        .await
        .unwrap();
    let token = latest_token(&app, "bobs-alt@example.com").await;
    // Only an owner invites owners.
    let status = expect_code(
        bob.create_invitation(invitation(&org, "x@example.com", &["owner"]))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("owner"), "{status:?}");
    app.members_as("alice")
        .await
        .remove_member(pb::RemoveMemberRequest {
            name: member_name(&org, &ids[0]),
        })
        .await
        .unwrap();
    app.user_id("bobs-alt").await;
    let before = snapshot(&app).await;
    let status = expect_code(
        app.members_as("bobs-alt")
            .await
            .accept_invitation(accept(&token))
            .await,
        Code::FailedPrecondition,
    );
    let details = tonic_types::StatusExt::get_details_precondition_failure(&status).unwrap();
    assert_eq!(details.violations[0].r#type, "INVITER_CANNOT_GRANT");
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_invitation_is_vouched_for_by_whoever_resent_it() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("bob", &["admin"])]).await;
    let sent = app
        .members_as("bob")
        .await
        .create_invitation(invitation(&org, "dana@example.com", &["developer"]))
        .await
        .unwrap()
        .into_inner();
    let mut alice = app.members_as("alice").await;
    alice
        .remove_member(pb::RemoveMemberRequest {
            name: member_name(&org, &ids[0]),
        })
        .await
        .unwrap();
    // Alice resends the invitation bob, now gone, had sent: she vouches for it.
    let_resend_interval_pass(&app).await;
    alice
        .resend_invitation(pb::ResendInvitationRequest {
            name: sent.name.clone(),
        })
        .await
        .unwrap();
    let token = latest_token(&app, "dana@example.com").await;
    app.user_id("dana").await;
    app.members_as("dana")
        .await
        .accept_invitation(accept(&token))
        .await
        .unwrap();
    let dana = app.user_id("dana").await;
    let member = alice
        .get_member(pb::GetMemberRequest {
            name: member_name(&org, &dana),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(member.roles, ["developer"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_owner_transfers_ownership_or_makes_owners() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let (bob, carol) = (app.user_id("bob").await, app.user_id("carol").await);
    // Holding every permission of an owner through grants is not being one.
    app.set_member(&org.uid, &bob, &["admin"], &["org.delete", "org.transfer"])
        .await;
    app.set_member(&org.uid, &carol, &["viewer"], &[]).await;
    let mut bob_client = app.members_as("bob").await;
    let before = snapshot(&app).await;
    expect_code(
        bob_client
            .transfer_ownership(pb::TransferOwnershipRequest {
                organization: org.name.clone(),
                new_owner: member_name(&org, &carol),
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        bob_client
            .update_member(set_roles(&member_name(&org, &carol), &["owner"]))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_link_reveals_nothing_about_a_deleted_organization() {
    let app = TestApp::spawn().await;
    let mut alice_orgs = app.orgs_as("alice").await;
    let org = create_org(&mut alice_orgs, "Secret Project").await;
    app.members_as("alice")
        .await
        .create_invitation(invitation(&org, "bob@example.com", &[]))
        .await
        .unwrap();
    let token = latest_token(&app, "bob@example.com").await;
    alice_orgs.delete_organization(delete(&org)).await.unwrap();
    let status = expect_code(
        app.members_as("mallory")
            .await
            .accept_invitation(accept(&token))
            .await,
        Code::PermissionDenied,
    );
    assert!(!status.message().contains(&org.slug), "{status:?}");
    assert!(!status.message().contains(&org.uid), "{status:?}");
    // The invitee is told the organization is gone.
    expect_code(
        app.members_as("bob")
            .await
            .accept_invitation(accept(&token))
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invitees_accepting_each_others_invitations_at_once_both_join() {
    // Each accept locks its invitee's user row while the membership row refers to
    // the inviter's: a lock order that must not deadlock.
    let app = TestApp::spawn_with(&["--max-orgs-per-user", "100"]).await;
    for round in 0..10 {
        let v_org = create_org(&mut app.orgs_as("vic").await, &format!("Vic {round}")).await;
        let w_org = create_org(&mut app.orgs_as("wen").await, &format!("Wen {round}")).await;
        let (mut vic, mut wen) = (app.members_as("vic").await, app.members_as("wen").await);
        vic.create_invitation(invitation(&v_org, "wen@example.com", &[]))
            .await
            .unwrap();
        wen.create_invitation(invitation(&w_org, "vic@example.com", &[]))
            .await
            .unwrap();
        let (to_wen, to_vic) = (
            latest_token(&app, "wen@example.com").await,
            latest_token(&app, "vic@example.com").await,
        );
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let (ba, bb) = (barrier.clone(), barrier);
        let a = tokio::spawn(async move {
            ba.wait().await;
            vic.accept_invitation(accept(&to_vic)).await
        });
        let b = tokio::spawn(async move {
            bb.wait().await;
            wen.accept_invitation(accept(&to_wen)).await
        });
        for joined in [a.await.unwrap(), b.await.unwrap()] {
            joined.unwrap_or_else(|status| panic!("round {round}: {status:?}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_exact_and_roles_default_to_developer() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut alice = app.members_as("alice").await;
    // An organization name with a trailing path is not an organization name.
    expect_code(
        orgs.get_organization(get(&format!("{}/members/whatever", org.name)))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        alice
            .list_members(pb::ListMembersRequest {
                parent: format!("{}/junk", org.name),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    // A member name must name a member.
    expect_code(
        alice
            .get_member(pb::GetMemberRequest {
                name: org.name.clone(),
            })
            .await,
        Code::InvalidArgument,
    );
    // Named permissions alone are the whole grant (Platform.sh's
    // `--permission=billing`); with neither, the invitee is a developer.
    let mut request = invitation(&org, "dan@example.com", &[]);
    request.invitation.as_mut().unwrap().extra_permissions = vec!["billing.read".into()];
    let sent = alice.create_invitation(request).await.unwrap().into_inner();
    assert!(sent.roles.is_empty(), "{sent:?}");
    assert_eq!(sent.extra_permissions, ["billing.read"]);
    let plain = alice
        .create_invitation(invitation(&org, "finn@example.com", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.roles, ["developer"]);
}

/// The members page gathers the grants of all its members at once; each member
/// must come out exactly as a query of that one membership reads it, whatever
/// mix of roles (one without permissions included) and extra grants it holds.
#[tokio::test(flavor = "multi_thread")]
async fn member_pages_carry_each_members_own_grants() {
    let app = TestApp::spawn_with(&["--default-plan", "team"]).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Grants").await;
    app.db
        .batch_execute("INSERT INTO roles (name, description) VALUES ('observer', 'holds nothing')")
        .await
        .unwrap();
    let holdings: [(&str, &[&str], &[&str]); 6] = [
        ("m1", &["developer", "billing"], &["tokens.manage"]),
        ("m2", &["viewer"], &[]),
        ("m3", &[], &["activity.read", "members.read"]),
        ("m4", &["observer"], &[]),
        (
            "m5",
            &["observer", "viewer"],
            &["org.read", "activity.read"],
        ),
        ("m6", &["admin", "developer"], &["org.read"]),
    ];
    for (sub, roles, grants) in holdings {
        app.set_member(&org.uid, &app.user_id(sub).await, roles, grants)
            .await;
    }

    let mut alice = app.members_as("alice").await;
    let listed = every_member(&mut alice, &org, 4).await;
    assert_eq!(listed.len(), 7, "alice and six members");

    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    for member in &listed {
        let user_id: uuid::Uuid = member.user.trim_start_matches("users/").parse().unwrap();
        let expected = app
            .db
            .query_one(
                "SELECT
                   ARRAY(SELECT role FROM membership_roles
                         WHERE org_id = $1 AND user_id = $2 ORDER BY 1),
                   ARRAY(SELECT permission FROM membership_permissions
                         WHERE org_id = $1 AND user_id = $2 ORDER BY 1),
                   ARRAY(WITH held AS (
                             SELECT rp.permission FROM membership_roles r
                               JOIN role_permissions rp ON rp.role = r.role
                              WHERE r.org_id = $1 AND r.user_id = $2
                             UNION
                             SELECT permission FROM membership_permissions
                              WHERE org_id = $1 AND user_id = $2)
                         SELECT permission FROM held
                         UNION
                         SELECT i.implies FROM held
                           JOIN permission_implications i USING (permission)
                         ORDER BY 1)",
                &[&org_id, &user_id],
            )
            .await
            .unwrap();
        let roles: Vec<String> = expected.get(0);
        let extra: Vec<String> = expected.get(1);
        let effective: Vec<String> = expected.get(2);
        let mut listed_effective = member.effective_permissions.clone();
        listed_effective.sort();
        assert_eq!(member.roles, roles, "{}", member.email);
        assert_eq!(member.extra_permissions, extra, "{}", member.email);
        assert_eq!(listed_effective, effective, "{}", member.email);

        let got = alice
            .get_member(pb::GetMemberRequest {
                name: member.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&got, member, "GetMember reads what ListMembers listed");
    }
    let observer = listed.iter().find(|m| m.email == "m4@example.com").unwrap();
    assert_eq!(observer.roles, ["observer"]);
    assert!(observer.effective_permissions.is_empty());
}

/// An update replaces exactly the sets its mask names, in one statement: the
/// other set, and rows that stay, are left as they were.
#[tokio::test(flavor = "multi_thread")]
async fn updates_replace_only_the_masked_sets() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("m1", &["developer"])]).await;
    app.set_member(
        &org.uid,
        &ids[0],
        &["developer", "billing"],
        &["tokens.manage"],
    )
    .await;
    let name = member_name(&org, &ids[0]);
    let mut alice = app.members_as("alice").await;
    let update = |roles: &[&str], extra: &[&str], paths: &[&str]| pb::UpdateMemberRequest {
        member: Some(pb::Member {
            name: name.clone(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            extra_permissions: extra.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let grants = |member: &pb::Member| (member.roles.clone(), member.extra_permissions.clone());

    let before = alice
        .get_member(pb::GetMemberRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let member = update_stored(
        &mut alice,
        update(&["billing", "viewer"], &[], &["roles"]),
        "the roles update",
    )
    .await;
    assert_eq!(
        grants(&member),
        (
            vec!["billing".into(), "viewer".into()],
            vec!["tokens.manage".into()]
        )
    );
    assert_ne!(member.etag, before.etag, "the revision moved");
    assert!(
        member
            .effective_permissions
            .contains(&"tokens.manage".to_owned())
    );
    assert!(
        !member
            .effective_permissions
            .contains(&"projects.create".to_owned())
    );

    let member = update_stored(
        &mut alice,
        update(&[], &["activity.read"], &["extra_permissions"]),
        "the permissions update",
    )
    .await;
    assert_eq!(
        grants(&member),
        (
            vec!["billing".into(), "viewer".into()],
            vec!["activity.read".into()]
        )
    );

    let member = update_stored(
        &mut alice,
        update(&["developer"], &[], &["roles", "extra_permissions"]),
        "the update of both",
    )
    .await;
    assert_eq!(grants(&member), (vec!["developer".into()], vec![]));
    assert_eq!(activity_count(&app, "member.update").await, 3);
}

/// UpdateMember's answer to `request`, checked to be what GetMember reads back
/// after `what`.
async fn update_stored(
    client: &mut MemberClient,
    request: pb::UpdateMemberRequest,
    what: &str,
) -> pb::Member {
    let member = client.update_member(request).await.unwrap().into_inner();
    let stored = client
        .get_member(pb::GetMemberRequest {
            name: member.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, member, "what {what} returned is what is stored");
    member
}

/// UpdateMember sends its grant and its audit record together. When the first
/// fails with a serialization failure, PostgreSQL refuses the second as part of
/// an aborted transaction; the caller must see the retryable cause (ABORTED,
/// after orgd's own retries), never that refusal as INTERNAL, and nothing stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_in_pipelined_writes_stays_retryable() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("m1", &["developer"])]).await;
    app.db
        .batch_execute(
            "CREATE FUNCTION conflict() RETURNS trigger AS $$
             BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = 'serialization_failure'; END
             $$ LANGUAGE plpgsql;
             CREATE TRIGGER conflict BEFORE INSERT ON membership_roles
                 FOR EACH ROW EXECUTE FUNCTION conflict();",
        )
        .await
        .unwrap();
    let before = snapshot(&app).await;
    let mut alice = app.members_as("alice").await;
    for _ in 0..10 {
        let status = expect_code(
            alice
                .update_member(set_roles(&member_name(&org, &ids[0]), &["viewer"]))
                .await,
            Code::Aborted,
        );
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("an ErrorInfo");
        assert_eq!(info.reason, "CONCURRENT_CHANGE", "{status:?}");
    }
    assert_eq!(snapshot(&app).await, before);
}

/// A write whose caller gives up while it waits for a lock is dropped in the
/// middle of its transaction, BEGIN already sent. Its connection must not go
/// back to the pool with that transaction open: it would keep the locks, and
/// the next call on it would run and commit inside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_dropped_midway_leaves_no_transaction_open() {
    let app = TestApp::spawn().await;
    let (org, ids) = team(&app, "alice", &[("m1", &["developer"])]).await;
    let update = |role: &str| pb::UpdateMemberRequest {
        member: Some(pb::Member {
            name: member_name(&org, &ids[0]),
            roles: vec![role.to_owned()],
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["roles".into()],
        }),
    };
    let mut alice = app.members_as("alice").await;
    let locker = lock_org_row(&app, &org).await;
    let mut waiting = tonic::Request::new(update("viewer"));
    waiting.set_timeout(Duration::from_secs(1));
    let mut caller = alice.clone();
    let call = tokio::spawn(async move { caller.update_member(waiting).await });
    assert_eq!(
        app.lock_waiters(1).await,
        1,
        "the call waits for the lock inside its transaction"
    );
    let status = call.await.unwrap().unwrap_err();
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    locker.batch_execute("COMMIT").await.unwrap();

    // The dropped call's backend gets the lock now and must find its client
    // gone; until then it waits on the lock, which counts too. Settled means
    // nothing found several times running.
    let unsettled = "SELECT 1 FROM pg_stat_activity
                      WHERE datname = current_database()
                        AND (state LIKE 'idle in transaction%' OR wait_event_type = 'Lock')";
    let mut quiet = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        quiet = if app.count(unsettled, &[]).await == 0 {
            quiet + 1
        } else {
            0
        };
        if quiet == 5 {
            break;
        }
    }
    assert_eq!(
        quiet, 5,
        "a pooled connection kept the dropped transaction open"
    );
    let member = alice
        .update_member(update("billing"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(member.roles, ["billing"]);
    assert_eq!(activity_count(&app, "member.update").await, 1);
}

/// A manager who may not manage a member learns nothing about that member from
/// a stale etag: the refusal is the permission, not the etag's (which would
/// show the member's current one).
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_etag_on_an_unmanageable_member_is_refused_for_permission() {
    let app = TestApp::spawn().await;
    let (org, _) = team(&app, "alice", &[("bob", &["admin"])]).await;
    let alice_id = app.user_id("alice").await;
    let mut bob = app.members_as("bob").await;
    let status = expect_code(
        bob.update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                name: member_name(&org, &alice_id),
                roles: vec!["viewer".into()],
                etag: "W/\"99\"".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["roles".into()],
            }),
        })
        .await,
        Code::PermissionDenied,
    );
    assert!(!status.message().contains("etag"), "{}", status.message());
}
