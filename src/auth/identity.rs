//! Bearer tokens: verification of identity-provider JWTs, and minting of
//! development tokens for `orgd token` and the tests.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

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
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired; get a new one",
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
