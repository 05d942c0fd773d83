//! The team story of the seed platforms' docs, end to end over real gRPC with
//! real email: invite, accept from the mailbox, promote, delegate, remove.

mod common;

use std::time::Duration;

use common::smtp::{Mail, SmtpSink};
use common::*;
use orgd::pb;
use prost_types::FieldMask;
use tonic::Code;

const MAIL_TIMEOUT: Duration = Duration::from_secs(30);

/// The token of the accept link in an invitation email.
fn accept_token(mail: &Mail) -> String {
    let body = mail.body();
    body.split("/invitations/accept?token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no accept link in {body:?}"))
        .to_owned()
}

fn to(address: &str) -> impl Fn(&Mail) -> bool + '_ {
    move |mail: &Mail| mail.to.iter().any(|r| r == address)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_builds_a_team_by_email() {
    let sink = SmtpSink::start().await;
    let port = sink.port().to_string();
    let app = TestApp::spawn_with(&[
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
        "--outbox-interval",
        "100ms",
    ])
    .await;

    // The owner creates an organization and invites bob as a developer.
    let org = create_org(&mut app.orgs_as("owner").await, "Acme Cloud").await;
    let mut owner = app.members_as("owner").await;
    let invitation = owner
        .create_invitation(pb::CreateInvitationRequest {
            parent: org.name.clone(),
            invitation: Some(pb::Invitation {
                email: "bob@example.com".into(),
                roles: vec!["developer".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(invitation.state(), pb::invitation::State::Pending);

    // The email arrives with the accept link; the token is in no table.
    let mail = sink.wait_for(to("bob@example.com"), MAIL_TIMEOUT).await;
    assert!(mail.body().contains("Acme Cloud"), "{}", mail.body());
    let token = accept_token(&mail);
    let hashed = app
        .count(
            "SELECT 1 FROM invitations WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
            &[&token],
        )
        .await;
    assert_eq!(hashed, 1, "the invitation keeps the token's hash");
    // Delivery is recorded (and the body dropped) just after the sink got it.
    let deadline = tokio::time::Instant::now() + MAIL_TIMEOUT;
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
            "delivery not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leaked = app
        .count(
            "SELECT 1 FROM outbox_messages WHERE strpos(body, $1) > 0
             UNION ALL SELECT 1 FROM invitations WHERE strpos(encode(token_hash, 'hex'), $1) > 0",
            &[&token],
        )
        .await;
    assert_eq!(leaked, 0, "once sent, the token is nowhere in the database");

    // Bob signs in with that verified address and accepts.
    let mut bob = app.members_as("bob").await;
    let joined = bob
        .accept_invitation(pb::AcceptInvitationRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.roles, ["developer"]);
    // Both sides are told.
    sink.wait_for(
        |m| to("owner@example.com")(m) && m.body().contains("accepted your invitation"),
        MAIL_TIMEOUT,
    )
    .await;
    sink.wait_for(
        |m| to("bob@example.com")(m) && m.body().contains("You are now a member"),
        MAIL_TIMEOUT,
    )
    .await;

    // Bob sees the team but cannot invite.
    let members = bob
        .list_members(pb::ListMembersRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let emails: Vec<&str> = members.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(emails, ["owner@example.com", "bob@example.com"]);
    let carol_invitation = pb::CreateInvitationRequest {
        parent: org.name.clone(),
        invitation: Some(pb::Invitation {
            email: "carol@example.com".into(),
            ..Default::default()
        }),
    };
    let denied = expect_code(
        bob.create_invitation(carol_invitation.clone()).await,
        Code::PermissionDenied,
    );
    assert!(denied.message().contains("members.manage"), "{denied:?}");

    // The owner promotes bob to admin; now bob invites carol.
    let promoted = owner
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                name: joined.name.clone(),
                roles: vec!["admin".into()],
                etag: joined.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["roles".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.roles, ["admin"]);
    assert_ne!(promoted.etag, joined.etag);
    bob.create_invitation(carol_invitation).await.unwrap();
    let carol_mail = sink.wait_for(to("carol@example.com"), MAIL_TIMEOUT).await;
    assert!(
        carol_mail.body().contains("bob@example.com"),
        "{}",
        carol_mail.body()
    );

    // Carol, who had no account when invited, signs up and accepts bob's invitation.
    let carol = app
        .members_as("carol")
        .await
        .accept_invitation(pb::AcceptInvitationRequest {
            token: accept_token(&carol_mail),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(carol.roles, ["developer"]);

    // The owner removes bob: his very next call on the organization is NOT_FOUND.
    owner
        .remove_member(pb::RemoveMemberRequest {
            name: joined.name.clone(),
        })
        .await
        .unwrap();
    expect_code(
        bob.list_members(pb::ListMembersRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        app.orgs_as("bob")
            .await
            .get_organization(get(&org.name))
            .await,
        Code::NotFound,
    );

    // Every step is in the activity trail.
    for (action, times) in [
        ("invitation.create", 2),
        ("invitation.accept", 2),
        ("member.update", 1),
        ("member.remove", 1),
    ] {
        assert_eq!(
            activity_count(&app, action).await,
            times,
            "{action} audited"
        );
    }
}
