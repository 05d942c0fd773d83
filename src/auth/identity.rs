//! Bearer tokens: verification of identity-provider JWTs, and minting of
//! development tokens for `orgd token` and the tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::jwks::{self, Jwks, VerifyingKey};
use super::verified_tokens::{
    self, GENERATION_SIZE, KeyGeneration, MAX_REMEMBERED_TOKEN_BYTES, VerifiedTokens,
};
use crate::config::{JwtAlgorithm, JwtKey};
use crate::error::{Error, Result};
use crate::store::users::Identity;

/// The claims orgd reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    /// One audience or several; jsonwebtoken checks ours is among them.
    pub aud: Audience,
    pub exp: u64,
    /// Not valid before (seconds since the epoch), if the issuer says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The `aud` claim, which JWT allows as a string or a list of strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A key from the configuration, with the algorithm it is configured for.
fn fixed_key(key: &JwtKey, rules: &Validation) -> anyhow::Result<VerifyingKey> {
    let (decoding, algorithm) = match key {
        JwtKey::Secret(secret) | JwtKey::DevSecret(secret) => {
            (DecodingKey::from_secret(secret), Algorithm::HS256)
        }
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Es256,
            pem,
        } => (DecodingKey::from_ec_pem(pem)?, Algorithm::ES256),
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Rs256,
            pem,
        } => (DecodingKey::from_rsa_pem(pem)?, Algorithm::RS256),
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Hs256,
            ..
        } => anyhow::bail!("a public key file is for RS256 or ES256, not HS256"),
        JwtKey::Jwks(_) => unreachable!("JWKS keys are fetched, not configured"),
    };
    Ok(VerifyingKey::new(decoding, algorithm, rules))
}

/// The keys tokens are checked with.
enum Keys {
    /// One key from the configuration, for the life of the process, and what a
    /// token whose signature does not match it is told.
    Fixed(Box<VerifyingKey>, &'static str),
    /// The identity provider's keys, chosen by each token's `kid`.
    Jwks(Arc<Jwks>),
}

impl Keys {
    fn generation(&self) -> KeyGeneration {
        match self {
            Keys::Fixed(..) => 0,
            Keys::Jwks(jwks) => jwks.generation(),
        }
    }
}

/// Checks signature, `exp`, `nbf`, `iss` and `aud` of caller tokens.
pub struct JwtVerifier {
    keys: Keys,
    /// The rules of every token; each key adds its algorithm.
    rules: Validation,
    verified: VerifiedTokens,
}

/// Why an expired token is refused.
const EXPIRED: &str = "the token has expired; get a new one";

/// Why a token whose signature does not match is refused.
const BAD_SIGNATURE: &str = "the token's signature is not valid";

/// The same, when orgd checks tokens with its development secret: the usual
/// cause is a token minted with another data directory's secret.
const BAD_DEV_SIGNATURE: &str = "the token's signature is not valid: this orgd checks tokens with the development secret in its data directory; mint them with `orgd token` given the same --data-dir (or run it from the folder the server runs in)";

impl JwtVerifier {
    /// A verifier for tokens of `issuer` meant for `audience`; with a JWKS, once
    /// its keys are fetched.
    pub async fn new(key: &JwtKey, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        // The algorithm is each key's own.
        let mut rules = Validation::new(Algorithm::HS256);
        rules.set_issuer(&[issuer]);
        rules.set_audience(&[audience]);
        rules.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        rules.leeway = 30;
        rules.validate_nbf = true;
        let keys = match key {
            JwtKey::Jwks(source) => {
                Keys::Jwks(Jwks::fetch_first(source.clone(), rules.clone()).await?)
            }
            JwtKey::DevSecret(_) => {
                Keys::Fixed(Box::new(fixed_key(key, &rules)?), BAD_DEV_SIGNATURE)
            }
            fixed => Keys::Fixed(Box::new(fixed_key(fixed, &rules)?), BAD_SIGNATURE),
        };
        Ok(JwtVerifier {
            keys,
            rules,
            verified: VerifiedTokens::new(GENERATION_SIZE),
        })
    }

    /// With a JWKS, starts the task that keeps its keys current until `stop`
    /// changes.
    pub fn spawn_key_refresher(&self, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        match &self.keys {
            Keys::Fixed(..) => None,
            Keys::Jwks(jwks) => Some(jwks.clone().spawn_refresher(stop)),
        }
    }

    /// The token's claims, if its signature and claims are valid now; a token
    /// verified before is not checked again until it expires or the keys change.
    /// A token naming a key not yet known may wait for the JWKS to be fetched.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is set after 1970")
            .as_secs();
        self.verify_at(token, now).await
    }

    /// `verify` with the clock of remembered tokens at `now` (seconds since the
    /// epoch); a token checked afresh is checked by jsonwebtoken's own clock.
    async fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Claims>> {
        let digest =
            (token.len() <= MAX_REMEMBERED_TOKEN_BYTES).then(|| verified_tokens::digest(token));
        if let Some(digest) = &digest
            && let Some(claims) = self.verified.get(digest, self.keys.generation())
        {
            self.check_times(&claims, now)?;
            return Ok(claims);
        }
        let (claims, generation) = match &self.keys {
            Keys::Fixed(key, bad_signature) => {
                (check_signature_and_claims(token, key, bad_signature)?, 0)
            }
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
                let kid = header.kid.ok_or_else(|| {
                    Error::Unauthenticated("the token does not name its signing key (kid)".into())
                })?;
                let keys = jwks.keys_with(&kid).await?;
                let key = keys.get(&kid).ok_or_else(|| jwks::unknown_key(&kid))?;
                if header.alg != key.algorithm() {
                    return Err(Error::Unauthenticated(format!(
                        "the token is signed with {:?}, but its key is for {:?}",
                        header.alg,
                        key.algorithm()
                    )));
                }
                (
                    check_signature_and_claims(token, key, BAD_SIGNATURE)?,
                    keys.generation,
                )
            }
        };
        let claims = Arc::new(claims);
        if let Some(digest) = digest {
            self.verified.insert(digest, claims.clone(), generation);
        }
        Ok(claims)
    }

    /// jsonwebtoken's rules for `exp` and `nbf`, with the same settings, for
    /// remembered tokens.
    fn check_times(&self, claims: &Claims, now: u64) -> Result<()> {
        let rules = &self.rules;
        let expires = claims
            .exp
            .saturating_sub(rules.reject_tokens_expiring_in_less_than)
            .saturating_add(rules.leeway);
        if expires < now {
            return Err(Error::Unauthenticated(EXPIRED.into()));
        }
        match claims.nbf {
            Some(nbf) if nbf > now.saturating_add(rules.leeway) => Err(not_yet_valid(Some(nbf))),
            _ => Ok(()),
        }
    }
}

fn check_signature_and_claims(
    token: &str,
    key: &VerifyingKey,
    bad_signature: &'static str,
) -> Result<Claims> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
        .map(|data| data.claims)
        .map_err(|err| {
            let why = match err.kind() {
                ErrorKind::ExpiredSignature => EXPIRED,
                ErrorKind::ImmatureSignature => {
                    // Reported after the signature passed, so the claims are the issuer's.
                    let nbf = jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
                        .ok()
                        .and_then(|claims| claims.nbf);
                    return not_yet_valid(nbf);
                }
                ErrorKind::InvalidIssuer => {
                    "the token was issued by an issuer this server does not trust"
                }
                ErrorKind::InvalidAudience => "the token is meant for another audience",
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => bad_signature,
                ErrorKind::MissingRequiredClaim(_) => {
                    "the token lacks a required claim (sub, exp, iss, aud)"
                }
                _ => return malformed(),
            };
            Error::Unauthenticated(why.into())
        })
}

fn malformed() -> Error {
    Error::Unauthenticated("the bearer token is malformed".into())
}

/// Why a token whose `nbf` is still ahead is refused.
fn not_yet_valid(nbf: Option<u64>) -> Error {
    let when = nbf
        .and_then(|nbf| i64::try_from(nbf).ok())
        .and_then(|nbf| chrono::DateTime::from_timestamp(nbf, 0))
        .map_or_else(
            || "a later time".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    Error::Unauthenticated(format!(
        "the token is not valid before {when}; if it was just issued, check the clocks of the \
         identity provider and of this server"
    ))
}

impl Claims {
    /// The identity these claims describe, cleaned for storage: control
    /// characters (NUL included) in the subject are refused, elsewhere dropped.
    pub fn to_identity(&self) -> Result<Identity> {
        if !crate::domain::is_valid_subject(&self.sub) {
            return Err(Error::Unauthenticated(
                "the token's subject is empty, too long or contains control characters".into(),
            ));
        }
        let clean = |text: &Option<String>| -> String {
            text.as_deref()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_owned()
        };
        Ok(Identity {
            // ASCII only, as `Email` folds: see there.
            email: clean(&self.email).to_ascii_lowercase(),
            email_verified: self.email_verified,
            display_name: clean(&self.name).chars().take(200).collect(),
            subject: self.sub.clone(),
        })
    }

    /// Claims for `subject`, valid from now for `ttl`; set the profile fields after.
    pub fn new(issuer: &str, audience: &str, subject: &str, ttl: Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Claims {
            sub: subject.to_owned(),
            iss: issuer.to_owned(),
            aud: Audience::One(audience.to_owned()),
            iat: Some(now),
            nbf: None,
            exp: now + ttl.as_secs(),
            email: None,
            email_verified: false,
            name: None,
        }
    }
}

/// Signs `claims` with an HS256 secret (development and tests).
pub fn mint_token(secret: &[u8], claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )?)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

    async fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtKey::Secret(SECRET.to_vec()), "issuer", "audience")
            .await
            .unwrap()
    }

    fn claims(subject: &str) -> Claims {
        Claims::new("issuer", "audience", subject, Duration::from_secs(600))
    }

    fn token(claims: &Claims) -> String {
        mint_token(SECRET, claims).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn assert_refused(result: Result<Arc<Claims>>, why: &str) {
        match result {
            Err(Error::Unauthenticated(message)) => assert_eq!(message, why),
            other => panic!("expected UNAUTHENTICATED ({why}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_remembered_token_expires_on_time() {
        let verifier = verifier().await;
        let claims = claims("alice");
        let token = token(&claims);
        assert_eq!(
            verifier.verify_at(&token, now()).await.unwrap().sub,
            "alice"
        );
        assert!(verifier.verified.contains(&token));
        // Within the leeway jsonwebtoken allows, still valid; past it, expired,
        // although a fresh check (by the real clock) would pass.
        assert_eq!(
            verifier
                .verify_at(&token, claims.exp + 30)
                .await
                .unwrap()
                .sub,
            "alice"
        );
        assert_refused(verifier.verify_at(&token, claims.exp + 31).await, EXPIRED);
    }

    #[tokio::test]
    async fn a_remembered_token_is_not_checked_again() {
        let mut verifier = verifier().await;
        let first = token(&claims("alice"));
        verifier.verify(&first).await.unwrap();
        // With another key, only a remembered token still passes.
        verifier.keys = Keys::Fixed(
            Box::new(VerifyingKey::new(
                DecodingKey::from_secret(b"another secret, thirty-two bytes long"),
                Algorithm::HS256,
                &verifier.rules,
            )),
            BAD_SIGNATURE,
        );
        assert_eq!(verifier.verify(&first).await.unwrap().sub, "alice");
        assert_refused(
            verifier.verify(&token(&claims("bob"))).await,
            "the token's signature is not valid",
        );
    }

    #[tokio::test]
    async fn a_changed_token_is_checked_afresh() {
        let verifier = verifier().await;
        let token = token(&claims("alice"));
        verifier.verify(&token).await.unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let (header, payload, signature) = (parts[0], parts[1], parts[2]);
        let reencoded = |part: &str, edit: &dyn Fn(String) -> String| {
            let json = String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
            URL_SAFE_NO_PAD.encode(edit(json))
        };
        // Another subject under the remembered token's signature.
        let payload_of_mallory = reencoded(payload, &|json| json.replace("alice", "mallory"));
        // Another algorithm named in the header.
        let header_hs384 = reencoded(header, &|json| json.replace("HS256", "HS384"));
        // One character of the signature changed, away from its padding bits.
        let mut changed = signature.to_owned().into_bytes();
        changed[5] = if changed[5] == b'A' { b'B' } else { b'A' };
        let signature_changed = String::from_utf8(changed).unwrap();
        for forged in [
            format!("{header}.{payload_of_mallory}.{signature}"),
            format!("{header_hs384}.{payload}.{signature}"),
            format!("{header}.{payload}.{signature_changed}"),
        ] {
            assert!(verifier.verify(&forged).await.is_err(), "{forged} passed");
            assert!(!verifier.verified.contains(&forged));
        }
    }

    #[tokio::test]
    async fn long_tokens_are_checked_every_time() {
        let verifier = verifier().await;
        let mut claims = claims("alice");
        claims.name = Some("a".repeat(MAX_REMEMBERED_TOKEN_BYTES));
        let token = token(&claims);
        assert_eq!(verifier.verify(&token).await.unwrap().sub, "alice");
        assert!(!verifier.verified.contains(&token));
    }

    #[tokio::test]
    async fn a_token_is_refused_before_its_nbf() {
        let verifier = verifier().await;
        let mut claims = claims("alice");
        // Beyond the 30 s leeway.
        claims.nbf = Some(now() + 120);
        let early = token(&claims);
        match verifier.verify(&early).await {
            Err(Error::Unauthenticated(message)) => {
                assert!(
                    message.starts_with("the token is not valid before 20"),
                    "{message}"
                )
            }
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
        assert!(!verifier.verified.contains(&early));
        // Within the leeway, a token of a clock slightly ahead passes.
        claims.nbf = Some(now() + 20);
        assert_eq!(verifier.verify(&token(&claims)).await.unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn a_remembered_token_is_held_to_its_nbf() {
        let verifier = verifier().await;
        let mut claims = claims("alice");
        claims.nbf = Some(now());
        let token = token(&claims);
        verifier.verify(&token).await.unwrap();
        assert!(verifier.verified.contains(&token));
        // Checked against an earlier clock (as after the clock was set back),
        // the remembered token passes within the leeway and is refused past it.
        let nbf = claims.nbf.unwrap();
        assert_eq!(
            verifier.verify_at(&token, nbf - 30).await.unwrap().sub,
            "alice"
        );
        match verifier.verify_at(&token, nbf - 31).await {
            Err(Error::Unauthenticated(message)) => {
                assert!(message.contains("not valid before"), "{message}")
            }
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }
}
