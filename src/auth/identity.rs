//! Bearer tokens: verification of identity-provider JWTs, and minting of
//! development tokens for `orgd token` and the tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::verified_tokens::{self, GENERATION_SIZE, MAX_REMEMBERED_TOKEN_BYTES, VerifiedTokens};
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

fn algorithm(key: &JwtKey) -> Algorithm {
    match key {
        JwtKey::Secret(_) => Algorithm::HS256,
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Rs256,
            ..
        } => Algorithm::RS256,
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Es256,
            ..
        } => Algorithm::ES256,
        JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Hs256,
            ..
        } => Algorithm::HS256,
    }
}

/// Checks signature, `exp`, `iss` and `aud` of caller tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    verified: VerifiedTokens,
}

/// Why an expired token is refused.
const EXPIRED: &str = "the token has expired; get a new one";

impl JwtVerifier {
    pub fn new(key: &JwtKey, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let decoding = match key {
            JwtKey::Secret(secret) => DecodingKey::from_secret(secret),
            JwtKey::PublicKeyPem {
                algorithm: JwtAlgorithm::Es256,
                pem,
            } => DecodingKey::from_ec_pem(pem)?,
            JwtKey::PublicKeyPem { pem, .. } => DecodingKey::from_rsa_pem(pem)?,
        };
        let mut validation = Validation::new(algorithm(key));
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(JwtVerifier {
            key: decoding,
            validation,
            verified: VerifiedTokens::new(GENERATION_SIZE),
        })
    }

    /// The token's claims, if its signature and claims are valid now; a token
    /// verified before is not checked again until it expires.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is set after 1970")
            .as_secs();
        self.verify_at(token, now)
    }

    /// `verify` with the clock of remembered tokens at `now` (seconds since the
    /// epoch); a token checked afresh is checked by jsonwebtoken's own clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Claims>> {
        if token.len() > MAX_REMEMBERED_TOKEN_BYTES {
            return self.check_signature_and_claims(token).map(Arc::new);
        }
        let digest = verified_tokens::digest(token);
        if let Some(claims) = self.verified.get(&digest) {
            return if self.is_unexpired(&claims, now) {
                Ok(claims)
            } else {
                Err(Error::Unauthenticated(EXPIRED.into()))
            };
        }
        let claims = Arc::new(self.check_signature_and_claims(token)?);
        self.verified.insert(digest, claims.clone());
        Ok(claims)
    }

    /// jsonwebtoken's rule for `exp`, with the same settings.
    fn is_unexpired(&self, claims: &Claims, now: u64) -> bool {
        claims
            .exp
            .saturating_sub(self.validation.reject_tokens_expiring_in_less_than)
            .saturating_add(self.validation.leeway)
            >= now
    }

    fn check_signature_and_claims(&self, token: &str) -> Result<Claims> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => EXPIRED,
                    ErrorKind::InvalidIssuer => {
                        "the token was issued by an issuer this server does not trust"
                    }
                    ErrorKind::InvalidAudience => "the token is meant for another audience",
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        "the token's signature is not valid"
                    }
                    ErrorKind::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (sub, exp, iss, aud)"
                    }
                    _ => "the bearer token is malformed",
                };
                Error::Unauthenticated(why.into())
            })
    }
}

impl Claims {
    /// The identity these claims describe, cleaned for storage: control
    /// characters (NUL included) in the subject are refused, elsewhere dropped.
    pub fn to_identity(&self) -> Result<Identity> {
        if self.sub.is_empty() || self.sub.len() > 255 || self.sub.chars().any(char::is_control) {
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
            email: clean(&self.email).to_lowercase(),
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

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtKey::Secret(SECRET.to_vec()), "issuer", "audience").unwrap()
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

    #[test]
    fn a_remembered_token_expires_on_time() {
        let verifier = verifier();
        let claims = claims("alice");
        let token = token(&claims);
        assert_eq!(verifier.verify_at(&token, now()).unwrap().sub, "alice");
        assert!(verifier.verified.contains(&token));
        // Within the leeway jsonwebtoken allows, still valid; past it, expired,
        // although a fresh check (by the real clock) would pass.
        assert_eq!(
            verifier.verify_at(&token, claims.exp + 30).unwrap().sub,
            "alice"
        );
        assert_refused(verifier.verify_at(&token, claims.exp + 31), EXPIRED);
    }

    #[test]
    fn a_remembered_token_is_not_checked_again() {
        let mut verifier = verifier();
        let first = token(&claims("alice"));
        verifier.verify(&first).unwrap();
        // With another key, only a remembered token still passes.
        verifier.key = DecodingKey::from_secret(b"another secret, thirty-two bytes long");
        assert_eq!(verifier.verify(&first).unwrap().sub, "alice");
        assert_refused(
            verifier.verify(&token(&claims("bob"))),
            "the token's signature is not valid",
        );
    }

    #[test]
    fn a_changed_token_is_checked_afresh() {
        let verifier = verifier();
        let token = token(&claims("alice"));
        verifier.verify(&token).unwrap();
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
            assert!(verifier.verify(&forged).is_err(), "{forged} passed");
            assert!(!verifier.verified.contains(&forged));
        }
    }

    #[test]
    fn long_tokens_are_checked_every_time() {
        let verifier = verifier();
        let mut claims = claims("alice");
        claims.name = Some("a".repeat(MAX_REMEMBERED_TOKEN_BYTES));
        let token = token(&claims);
        assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
        assert!(!verifier.verified.contains(&token));
    }
}
