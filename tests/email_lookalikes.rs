//! An invitation is for its address alone: addresses are folded to lower case
//! in ASCII only, so a verified address that merely looks like the invited one
//! (Kelvin sign, fullwidth or Cyrillic letters) neither sees nor accepts it.

mod common;

use std::time::Duration;

use common::*;
use orgd::auth::Claims;
use orgd::pb::{self, member_service_client::MemberServiceClient};
use tonic::Code;

/// A member client for `sub`, whose verified email is `email`.
async fn members_with_email(app: &TestApp, sub: &str, email: &str) -> MemberClient {
    let mut claims = Claims::new(ISSUER, AUDIENCE, sub, Duration::from_secs(600));
    claims.email = Some(email.into());
    claims.email_verified = true;
    MemberServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&token_for(&claims))),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn look_alike_addresses_are_not_the_invited_one() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    app.members_as("alice")
        .await
        .create_invitation(invitation(&org, "kate@example.com", &["viewer"]))
        .await
        .unwrap();
    let token = latest_token(&app, "kate@example.com").await;

    for (sub, look_alike) in [
        ("kelvin", "\u{212A}ate@example.com"),    // KELVIN SIGN
        ("fullwidth", "\u{FF4B}ate@example.com"), // FULLWIDTH LATIN SMALL LETTER K
        ("cyrillic", "k\u{0430}te@example.com"),  // CYRILLIC SMALL LETTER A
        ("upper-kelvin", "\u{212A}ATE@EXAMPLE.COM"),
    ] {
        let mut members = members_with_email(&app, sub, look_alike).await;
        let mine = members
            .list_my_invitations(pb::ListMyInvitationsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            mine.invitations.is_empty(),
            "{look_alike} sees kate's invitation"
        );
        let refused = members.accept_invitation(accept(&token)).await;
        assert!(
            matches!(
                refused.as_ref().map_err(tonic::Status::code),
                Err(Code::PermissionDenied | Code::FailedPrecondition | Code::NotFound)
            ),
            "{look_alike} accepted kate's invitation: {refused:?}"
        );
    }
    // Kate herself, writing her address in capitals, is kate.
    let mut kate = members_with_email(&app, "kate", "KATE@Example.com").await;
    let mine = kate
        .list_my_invitations(pb::ListMyInvitationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.invitations.len(), 1);
    kate.accept_invitation(accept(&token)).await.unwrap();
    // A look-alike address is stored as written, not folded into kate's.
    let stored = app
        .count("SELECT 1 FROM users WHERE email = 'kate@example.com'", &[])
        .await;
    assert_eq!(stored, 1);
}
