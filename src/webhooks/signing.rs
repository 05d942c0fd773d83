//! Standard Webhooks signing: the `whsec_` secret an endpoint is given once,
//! and the `webhook-signature` of each delivery.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Every signing secret starts with this (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a signing secret (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing key: the bytes of its `whsec_` secret.
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::fill(bytes.as_mut_slice());
        SigningKey(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SigningKey(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as its endpoint's owner stores it: `whsec_` and base64.
    pub fn secret(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries (secret, id, timestamp, payload and signature).
    #[test]
    fn signs_as_the_reference_implementation() {
        let secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = SigningKey::from_bytes(STANDARD.decode(secret).unwrap());
        assert_eq!(key.secret(), format!("whsec_{secret}"));
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_random() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        assert_ne!(a.secret(), b.secret());
        assert!(a.secret().starts_with(SECRET_PREFIX));
        assert_eq!(
            STANDARD
                .decode(&a.secret()[SECRET_PREFIX.len()..])
                .unwrap()
                .len(),
            SECRET_BYTES
        );
    }
}
