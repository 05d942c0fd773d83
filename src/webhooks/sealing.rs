//! The key that endpoints' signing secrets are stored under (AES-256-GCM),
//! so that a copy of the database alone signs nothing. Each secret has a
//! random nonce and is bound to its endpoint's id.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::signing::SigningKey;
use crate::error::{Error, Result};
use crate::secret_file;

const NONCE_BYTES: usize = 12;

/// A loaded key.
pub struct SealingKey {
    cipher: Aes256Gcm,
    /// A fingerprint stored beside each secret, so that a replica with another
    /// key file says so instead of failing to decrypt.
    id: String,
}

impl SealingKey {
    /// The key derived from a key file's contents (surrounding whitespace,
    /// such as an editor's final newline, does not count).
    pub fn from_material(material: &str) -> Self {
        let key = Sha256::digest(material.trim().as_bytes());
        let fingerprint = Sha256::digest(key);
        SealingKey {
            cipher: Aes256Gcm::new_from_slice(&key).expect("SHA-256 gives 32 bytes"),
            id: fingerprint[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `key` sealed for the endpoint `endpoint_id`: nonce, then ciphertext.
    pub fn seal(&self, endpoint_id: Uuid, key: &SigningKey) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let payload = Payload {
            msg: key.bytes(),
            aad: endpoint_id.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce), payload)
            .expect("AES-GCM encrypts any short message");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The signing key `seal` sealed for `endpoint_id` under key `key_id`.
    pub fn open(&self, endpoint_id: Uuid, key_id: &str, sealed: &[u8]) -> Result<SigningKey> {
        if key_id != self.id {
            return Err(Error::Internal(anyhow::anyhow!(
                "the signing secret of webhook endpoint {endpoint_id} was sealed with key {key_id}, and this orgd has key {}: every replica needs the same --webhook-key-file",
                self.id
            )));
        }
        let opened = (sealed.len() > NONCE_BYTES)
            .then(|| {
                let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
                let payload = Payload {
                    msg: ciphertext,
                    aad: endpoint_id.as_bytes(),
                };
                let nonce = Nonce::<Aes256Gcm>::try_from(nonce).ok()?;
                self.cipher.decrypt(&nonce, payload).ok()
            })
            .flatten();
        opened.map(SigningKey::from_bytes).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the signing secret of webhook endpoint {endpoint_id} does not decrypt with key {key_id}: it was altered"
            ))
        })
    }
}

/// The key file, read when first needed: created with a random key if it is
/// the default one and missing, so that orgd without webhooks writes nothing.
pub struct Keyring {
    path: PathBuf,
    loaded: Mutex<Option<Arc<SealingKey>>>,
}

impl Keyring {
    /// The key in `path`; `explicit` (the operator named the file): read now,
    /// so that a wrong path stops start-up.
    pub fn new(path: PathBuf, explicit: bool) -> anyhow::Result<Self> {
        let keyring = Keyring {
            path,
            loaded: Mutex::new(None),
        };
        if explicit {
            keyring.load()?;
        }
        Ok(keyring)
    }

    /// The key, loaded (or created) on first use.
    pub fn key(&self) -> Result<Arc<SealingKey>> {
        self.load().map_err(|err| {
            Error::Unavailable(format!(
                "the webhook key file cannot be read ({err:#}); an operator must fix --webhook-key-file"
            ))
        })
    }

    fn load(&self) -> anyhow::Result<Arc<SealingKey>> {
        let mut loaded = self
            .loaded
            .lock()
            .expect("never poisoned: nothing panics holding it");
        if let Some(key) = loaded.as_ref() {
            return Ok(key.clone());
        }
        let material = secret_file::read_or_create(&self.path)?;
        let key = Arc::new(SealingKey::from_material(&material));
        tracing::info!(path = %self.path.display(), key_id = key.id(), "webhook signing secrets are sealed with this key file");
        *loaded = Some(key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_endpoint_and_key() {
        let key = SealingKey::from_material("a key file of more than thirty-two bytes\n");
        assert_eq!(
            key.id(),
            SealingKey::from_material("a key file of more than thirty-two bytes").id()
        );
        let (endpoint, other) = (Uuid::now_v7(), Uuid::now_v7());
        let secret = SigningKey::generate();
        let sealed = key.seal(endpoint, &secret);
        assert_ne!(
            key.seal(endpoint, &secret),
            sealed,
            "a fresh nonce each time"
        );
        assert!(
            !sealed
                .windows(8)
                .any(|w| secret.bytes().windows(8).any(|s| s == w))
        );
        let opened = key.open(endpoint, key.id(), &sealed).unwrap();
        assert_eq!(opened.bytes(), secret.bytes());
        assert!(key.open(other, key.id(), &sealed).is_err());
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert!(key.open(endpoint, key.id(), &altered).is_err());
        let stranger = SealingKey::from_material("another key file, also thirty-two bytes");
        assert!(stranger.open(endpoint, key.id(), &sealed).is_err());
    }
}
