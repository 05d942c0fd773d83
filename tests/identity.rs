//! Identity-provider tokens signed with RS256 or ES256, verified with the
//! configured public key.

mod common;

use std::time::Duration;

use common::{AUDIENCE, Bearer, ISSUER, TestApp, expect_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orgd::auth::Claims;
use orgd::pb::{self, org_service_client::OrgServiceClient};
use tonic::Code;

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
        let mut claims = Claims::new(ISSUER, AUDIENCE, "idp-user", Duration::from_secs(600));
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
