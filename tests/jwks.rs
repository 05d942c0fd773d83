//! Keys from the identity provider's JWKS: rotation without a restart, removed
//! keys refused, RS256, ES256 and EdDSA keys, and what a caller is told when a
//! token's key or times do not fit or the JWKS cannot be fetched.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orgd::auth::{Claims, JwtVerifier};
use orgd::config::{JwksSource, JwtKey};
use orgd::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

/// The shortest time between two fetches, given to orgd: tests wait it out
/// before they expect a fetch.
const MIN_REFRESH: Duration = Duration::from_millis(300);

/// A private key of the identity provider, with its public JWK.
struct SigningKey {
    kid: &'static str,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// The committed test key pairs (tests/keys) for RS256 and ES256.
    fn from_file(kid: &'static str, algorithm: Algorithm, file: &str) -> Self {
        let pem =
            std::fs::read(format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        SigningKey {
            kid,
            algorithm,
            key,
        }
    }

    /// A new Ed25519 key.
    fn ed25519(kid: &'static str) -> Self {
        // PKCS #8 of an Ed25519 key is this header and the 32-byte seed (RFC 8410).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(rand::random::<[u8; 32]>());
        SigningKey {
            kid,
            algorithm: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(&der),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        jwk
    }

    /// A token for `claims`, naming this key in its header.
    fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn claims(sub: &str) -> Claims {
    let mut claims = Claims::new(ISSUER, AUDIENCE, sub, Duration::from_secs(600));
    claims.email = Some(format!("{sub}@example.com"));
    claims
}

/// A JWKS endpoint on loopback: answers every GET with the current key set (or
/// 503 while it is "down"), and counts the requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    requests: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            url: format!("http://{}/jwks.json", listener.local_addr().unwrap()),
            body: Arc::default(),
            requests: Arc::default(),
        };
        server.serve(keys);
        let (body, requests) = (server.body.clone(), server.requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (body, requests) = (body.clone(), requests.clone());
                tokio::spawn(async move {
                    // One request per connection; its head is all it needs.
                    let mut head = Vec::new();
                    let mut buf = [0; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = match body.lock().unwrap().clone() {
                        Some(body) => ("200 OK", body),
                        None => ("503 Service Unavailable", String::new()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        server
    }

    /// Serves a key set of exactly `keys` from now on.
    fn serve(&self, keys: &[&SigningKey]) {
        let set = JwkSet {
            keys: keys.iter().map(|key| key.jwk()).collect(),
        };
        *self.body.lock().unwrap() = Some(serde_json::to_string(&set).unwrap());
    }

    fn go_down(&self) {
        *self.body.lock().unwrap() = None;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn spawn_orgd(jwks: &JwksServer) -> TestApp {
    TestApp::spawn_with(&[
        "--jwt-jwks-url",
        &jwks.url,
        "--jwt-jwks-min-refresh",
        &humantime::format_duration(MIN_REFRESH).to_string(),
        // No periodic fetch during a test: only unknown keys make orgd fetch.
        "--jwt-jwks-refresh",
        "1h",
    ])
    .await
}

async fn who_am_i(app: &TestApp, token: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    app.orgs(Some(token))
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|response| response.into_inner())
}

async fn subject(app: &TestApp, token: &str) -> String {
    who_am_i(app, token).await.unwrap().user.unwrap().subject
}

/// Asserts the call is refused UNAUTHENTICATED with a message containing `says`.
async fn refused(app: &TestApp, token: &str, says: &str) {
    let status = expect_code(who_am_i(app, token).await, Code::Unauthenticated);
    assert!(status.message().contains(says), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_without_a_restart() {
    let rsa = SigningKey::from_file("rsa-1", Algorithm::RS256, "rs256.key");
    let ec = SigningKey::from_file("ec-2", Algorithm::ES256, "es256.key");
    let ed = SigningKey::ed25519("ed-3");
    let jwks = JwksServer::start(&[&rsa]).await;
    let app = spawn_orgd(&jwks).await;
    assert_eq!(jwks.requests(), 1, "fetched once at start-up");

    let rsa_token = rsa.sign(&claims("alice"));
    assert_eq!(subject(&app, &rsa_token).await, "alice");

    // The provider rotates to an ES256 key only: its first token makes orgd
    // fetch the set again.
    jwks.serve(&[&ec]);
    tokio::time::sleep(MIN_REFRESH).await;
    assert_eq!(subject(&app, &ec.sign(&claims("bob"))).await, "bob");
    assert_eq!(jwks.requests(), 2);
    // The RSA key is gone: its token, verified and remembered before, is refused.
    refused(&app, &rsa_token, "not among the identity provider's keys").await;

    // An EdDSA key joins.
    jwks.serve(&[&ec, &ed]);
    tokio::time::sleep(MIN_REFRESH).await;
    assert_eq!(subject(&app, &ed.sign(&claims("carol"))).await, "carol");
    assert_eq!(subject(&app, &ec.sign(&claims("bob"))).await, "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_that_do_not_fit_their_key_are_refused() {
    let ec = SigningKey::from_file("ec-1", Algorithm::ES256, "es256.key");
    let ed = SigningKey::ed25519("ed-2");
    let jwks = JwksServer::start(&[&ec, &ed]).await;
    let app = spawn_orgd(&jwks).await;

    // Signed by the EC key, but naming the Ed25519 key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(ed.kid.into());
    let confused = jsonwebtoken::encode(&header, &claims("mallory"), &ec.key).unwrap();
    refused(
        &app,
        &confused,
        "signed with ES256, but its key is for EdDSA",
    )
    .await;

    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims("x"), &ec.key).unwrap();
    refused(&app, &no_kid, "(kid)").await;

    // An HS256 token with a known kid, signed with the public key's bytes.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(ec.kid.into());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims("mallory"),
        &EncodingKey::from_secret(serde_json::to_string(&ec.jwk()).unwrap().as_bytes()),
    )
    .unwrap();
    refused(&app, &hs256, "signed with HS256").await;

    let mut early = claims("dave");
    early.nbf = Some(early.iat.unwrap() + 3600);
    refused(&app, &ed.sign(&early), "not valid before").await;
    assert_eq!(
        app.count("SELECT 1 FROM users", &[]).await,
        0,
        "no user from a refused token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_share_one_fetch_and_an_outage_is_reported() {
    let ec = SigningKey::from_file("ec-1", Algorithm::ES256, "es256.key");
    let jwks = JwksServer::start(&[&ec]).await;
    let app = spawn_orgd(&jwks).await;
    let stranger = SigningKey::ed25519("stranger");
    let token = stranger.sign(&claims("mallory"));

    // Many calls with an unknown key at once: one fetch serves them all.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(app.orgs(Some(&token)).await);
    }
    tokio::time::sleep(MIN_REFRESH).await;
    let calls = clients
        .iter_mut()
        .map(|client| client.who_am_i(pb::WhoAmIRequest {}));
    for result in futures_util::future::join_all(calls).await {
        let status = expect_code(result, Code::Unauthenticated);
        assert!(
            status.message().contains("\"stranger\" is not among"),
            "{status:?}"
        );
    }
    assert_eq!(
        jwks.requests(),
        2,
        "one fetch at start-up, one for the unknown key"
    );
    // Within the minimum interval, no fetch at all.
    refused(&app, &token, "not among").await;
    assert_eq!(jwks.requests(), 2);

    // The provider is down: the caller learns the keys could not be fetched,
    // and the keys fetched before still verify.
    jwks.go_down();
    tokio::time::sleep(MIN_REFRESH).await;
    refused(&app, &token, "could not be fetched").await;
    assert_eq!(jwks.requests(), 3);
    assert_eq!(subject(&app, &ec.sign(&claims("erin"))).await, "erin");
}

#[tokio::test]
async fn orgd_does_not_start_without_its_keys() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    // Nothing listens there any more.
    drop(listener);
    let source = JwksSource {
        url: url.parse().unwrap(),
        refresh: Duration::from_secs(300),
        min_refresh: Duration::from_secs(30),
    };
    let Err(err) = JwtVerifier::new(&JwtKey::Jwks(source), ISSUER, AUDIENCE).await else {
        panic!("started without its keys");
    };
    let message = format!("{err:#}");
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("error sending request"), "{message}");
}

/// Serves one response of `body_bytes` of JSON padding, with or without a
/// Content-Length, and returns its URL.
async fn oversized_jwks(body_bytes: usize, with_length: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0; 4096];
        let _ = stream.read(&mut buf).await;
        let body = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(body_bytes));
        let length = if with_length {
            format!("content-length: {}\r\n", body.len())
        } else {
            String::new()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body.as_bytes()).await;
    });
    url
}

#[tokio::test]
async fn an_oversized_key_set_is_refused_unread() {
    for with_length in [true, false] {
        let url = oversized_jwks(1 << 20, with_length).await;
        let source = JwksSource {
            url: url.parse().unwrap(),
            refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
        };
        let Err(err) = JwtVerifier::new(&JwtKey::Jwks(source), ISSUER, AUDIENCE).await else {
            panic!("started with a 1 MiB key set");
        };
        let message = format!("{err:#}");
        assert!(
            message.contains("larger than 256 KiB"),
            "with_length {with_length}: {message}"
        );
    }
}
