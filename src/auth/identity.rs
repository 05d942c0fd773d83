//! Bearer tokens: verification of identity-provider JWTs, and minting of
//! development tokens for `orgd token` and the tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Tokens verified before, so that a caller's every call does not check the same
/// signature again: an HMAC costs microseconds, an RS256 or ES256 check tens of
/// them, and a caller sends one token until it expires. The key and the rules are
/// fixed for the process, so a token verified once stays valid until its `exp`,
/// which is checked on every hit. Entries are keyed by the token's SHA-256, so the
/// cache holds no usable token; it never holds a token that failed.
struct VerifiedTokens {
    capacity: usize,
    leeway: u64,
    entries: Mutex<HashMap<[u8; 32], Claims>>,
}

/// Tokens remembered at most; about half a kilobyte each.
const VERIFIED_TOKENS: usize = 4096;

/// What the cache knows of a token.
enum Remembered {
    Valid(Claims),
    Expired,
    Unknown,
}

impl VerifiedTokens {
    fn new(capacity: usize, leeway: u64) -> Self {
        VerifiedTokens {
            capacity,
            leeway,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lookup(&self, digest: &[u8; 32], now: u64) -> Remembered {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(digest) {
            None => Remembered::Unknown,
            Some(claims) if self.is_live(claims, now) => Remembered::Valid(claims.clone()),
            Some(_) => {
                entries.remove(digest);
                Remembered::Expired
            }
        }
    }

    /// Remembers `claims`. A full cache starts over: expired tokens go with the
    /// rest, and a forgotten one is only verified again. The entries are freed
    /// after the lock is released, so that other calls do not wait for that.
    fn remember(&self, digest: [u8; 32], claims: &Claims) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let forgotten = if entries.len() >= self.capacity {
            std::mem::take(&mut *entries)
        } else {
            HashMap::new()
        };
        entries.insert(digest, claims.clone());
        drop(entries);
        drop(forgotten);
    }

    /// The rule jsonwebtoken applies to `exp`.
    fn is_live(&self, claims: &Claims, now: u64) -> bool {
        claims.exp.saturating_add(self.leeway) >= now
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

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
            verified: VerifiedTokens::new(VERIFIED_TOKENS, validation.leeway),
            validation,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// `verify` with the cache's clock at `now` (seconds since the epoch).
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.verified.lookup(&digest, now) {
            Remembered::Valid(claims) => return Ok(claims),
            Remembered::Expired => return Err(Error::Unauthenticated(EXPIRED.into())),
            Remembered::Unknown => {}
        }
        let claims = self.check_signature_and_claims(token)?;
        self.verified.remember(digest, &claims);
        Ok(claims)
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
    pub fn into_identity(self) -> Result<Identity> {
        if self.sub.is_empty() || self.sub.len() > 255 || self.sub.chars().any(char::is_control) {
            return Err(Error::Unauthenticated(
                "the token's subject is empty, too long or contains control characters".into(),
            ));
        }
        let clean = |text: Option<String>| -> String {
            text.unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_owned()
        };
        Ok(Identity {
            email: clean(self.email).to_lowercase(),
            email_verified: self.email_verified,
            display_name: clean(self.name).chars().take(200).collect(),
            subject: self.sub,
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
    use super::*;

    const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtKey::Secret(SECRET.to_vec()), "issuer", "audience").unwrap()
    }

    fn token(subject: &str, ttl: Duration) -> (String, u64) {
        let claims = Claims::new("issuer", "audience", subject, ttl);
        (mint_token(SECRET, &claims).unwrap(), claims.exp)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_remembered_token_expires_on_time() {
        let verifier = verifier();
        let (token, exp) = token("alice", Duration::from_secs(600));
        assert_eq!(verifier.verify_at(&token, now()).unwrap().sub, "alice");
        assert_eq!(verifier.verified.len(), 1);
        // Within the leeway jsonwebtoken allows, still valid; past it, expired,
        // although the signature check alone (by the real clock) would pass.
        assert_eq!(verifier.verify_at(&token, exp + 30).unwrap().sub, "alice");
        let err = verifier.verify_at(&token, exp + 31).unwrap_err();
        assert!(
            matches!(&err, Error::Unauthenticated(why) if why == EXPIRED),
            "{err:?}"
        );
        assert_eq!(verifier.verified.len(), 0);
    }

    #[test]
    fn a_tampered_token_is_checked_not_remembered() {
        let verifier = verifier();
        let (token, _) = token("alice", Duration::from_secs(600));
        verifier.verify(&token).unwrap();
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let err = verifier.verify(&tampered).unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
        assert_eq!(verifier.verified.len(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let mut verifier = verifier();
        verifier.verified = VerifiedTokens::new(3, 30);
        let tokens: Vec<String> = (0..4)
            .map(|i| token(&format!("user-{i}"), Duration::from_secs(600)).0)
            .collect();
        for token in &tokens[..3] {
            verifier.verify(token).unwrap();
        }
        assert_eq!(verifier.verified.len(), 3);
        verifier.verify(&tokens[3]).unwrap();
        assert_eq!(verifier.verified.len(), 1);
        // Forgotten tokens are verified again, and still pass.
        assert_eq!(verifier.verify(&tokens[0]).unwrap().sub, "user-0");
    }
}
