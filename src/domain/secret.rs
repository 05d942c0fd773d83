//! Random secrets handed to people (verification links, later API tokens and
//! invitations). Only their SHA-256 is stored, so a database leak reveals none.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A freshly generated secret: `token` goes to its holder once, `hash` to storage.
pub struct Secret {
    pub token: String,
    pub hash: Vec<u8>,
}

impl Secret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = Self::hash(&token);
        Secret { token, hash }
    }

    /// Whether `token` has the shape of one `generate` makes (32 bytes in
    /// unpadded base64url), so that a malformed one costs no lookup.
    pub fn is_well_formed(token: &str) -> bool {
        token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, Secret::hash(&a.token));
        assert_eq!(a.token.len(), 43);
        assert!(Secret::is_well_formed(&a.token));
        assert!(!Secret::is_well_formed(&a.token[1..]));
        assert!(!Secret::is_well_formed(&format!("{}=", &a.token[1..])));
    }
}
