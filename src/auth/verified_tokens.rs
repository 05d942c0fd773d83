//! Bearer tokens verified before, so that a caller's every call does not check the
//! same signature again: an HMAC costs microseconds, an RS256 or ES256 check tens
//! of them, and a caller sends one token until it expires.
//!
//! The verifier's rules are fixed for the process, and its keys change only with
//! the identity provider's key set (JWKS): each entry carries the generation of
//! the keys that verified it, and counts only while that generation is current,
//! so a token of a key since removed is checked afresh (and refused). Within a
//! generation a token that passed once passes while its `exp` and `nbf` allow,
//! which the verifier checks again on every hit. Entries are keyed by the token's
//! SHA-256, so the cache holds no usable token, and only tokens that passed are
//! entered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Claims;

/// A token's SHA-256.
pub(super) type TokenDigest = [u8; 32];

pub(super) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Two generations of at most `generation_size` tokens each, an approximation of
/// "least recently used" that costs one map operation a call: tokens enter the
/// young generation; when it is full it becomes the old one and the old one is
/// forgotten. A token found in the old generation moves back into the young, so
/// the tokens in use stay and the ones no longer sent (expired ones included)
/// go.
pub(super) struct VerifiedTokens {
    generation_size: usize,
    generations: Mutex<Generations>,
}

/// Changes whenever the verifier's keys do.
pub(super) type KeyGeneration = u64;

/// A verified token's claims, and the keys' generation that verified it.
type Entry = (Arc<Claims>, KeyGeneration);

#[derive(Default)]
struct Generations {
    young: HashMap<TokenDigest, Entry>,
    old: HashMap<TokenDigest, Entry>,
}

/// Tokens per generation. An entry holds the token's claims, about half a
/// kilobyte for an identity provider's usual token; the verifier enters no
/// token longer than `MAX_REMEMBERED_TOKEN_BYTES`, so two generations stay
/// under 2 × 4096 × 4 KiB whatever the tokens.
pub(super) const GENERATION_SIZE: usize = 4096;

/// Longer tokens are verified on every call rather than remembered.
pub(super) const MAX_REMEMBERED_TOKEN_BYTES: usize = 4096;

impl VerifiedTokens {
    pub(super) fn new(generation_size: usize) -> Self {
        VerifiedTokens {
            generation_size,
            generations: Mutex::new(Generations::default()),
        }
    }

    /// The claims of a token verified before with the keys of generation `keys`,
    /// if it is still remembered.
    pub(super) fn get(&self, digest: &TokenDigest, keys: KeyGeneration) -> Option<Arc<Claims>> {
        let mut generations = self.lock();
        if let Some((claims, verified_by)) = generations.young.get(digest) {
            return (*verified_by == keys).then(|| claims.clone());
        }
        let entry = generations.old.remove(digest)?;
        if entry.1 != keys {
            return None;
        }
        let claims = entry.0.clone();
        let forgotten = generations.admit(*digest, entry, self.generation_size);
        drop(generations);
        drop(forgotten);
        Some(claims)
    }

    /// Remembers a token verified with the keys of generation `keys`.
    pub(super) fn insert(&self, digest: TokenDigest, claims: Arc<Claims>, keys: KeyGeneration) {
        let forgotten = self
            .lock()
            .admit(digest, (claims, keys), self.generation_size);
        // Freed here, after the lock is released: other calls need not wait for it.
        drop(forgotten);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps are consistent after any panic: each change is one insert or swap.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    pub(super) fn contains(&self, token: &str) -> bool {
        let generations = self.lock();
        let digest = digest(token);
        generations.young.contains_key(&digest) || generations.old.contains_key(&digest)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let generations = self.lock();
        generations.young.len() + generations.old.len()
    }
}

impl Generations {
    /// Enters a token in the young generation, turning the generations first if it
    /// is full; returns the generation that turn forgot, to be freed by the caller.
    fn admit(
        &mut self,
        digest: TokenDigest,
        entry: Entry,
        generation_size: usize,
    ) -> HashMap<TokenDigest, Entry> {
        let mut forgotten = HashMap::new();
        if self.young.len() >= generation_size {
            let young = std::mem::replace(&mut self.young, HashMap::with_capacity(generation_size));
            forgotten = std::mem::replace(&mut self.old, young);
        }
        self.young.insert(digest, entry);
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(subject: &str) -> Arc<Claims> {
        Arc::new(Claims::new(
            "issuer",
            "audience",
            subject,
            std::time::Duration::from_secs(600),
        ))
    }

    #[test]
    fn tokens_in_use_stay_and_the_others_go() {
        let cache = VerifiedTokens::new(2);
        for token in ["a", "b"] {
            cache.insert(digest(token), claims(token), 0);
        }
        // The young generation is full: "c" turns it old.
        cache.insert(digest("c"), claims("c"), 0);
        // "a" is used again and moves back into the young generation.
        assert_eq!(cache.get(&digest("a"), 0).unwrap().sub, "a");
        // The young generation ("c", "a") is full: the old one ("b") is forgotten.
        cache.insert(digest("d"), claims("d"), 0);
        assert!(!cache.contains("b"));
        for token in ["a", "c", "d"] {
            assert!(cache.contains(token), "{token} should be remembered");
        }
        assert_eq!(cache.len(), 3);
        for token in ["e", "f", "g", "h", "i"] {
            cache.insert(digest(token), claims(token), 0);
            assert!(cache.len() <= 4);
        }
    }

    #[test]
    fn tokens_count_only_for_the_keys_that_verified_them() {
        let cache = VerifiedTokens::new(2);
        for token in ["a", "b", "c"] {
            cache.insert(digest(token), claims(token), 1);
        }
        // "a" and "b" are in the old generation, "c" in the young one.
        assert_eq!(cache.get(&digest("b"), 1).unwrap().sub, "b");
        for token in ["a", "c"] {
            assert!(cache.get(&digest(token), 2).is_none(), "{token} passed");
        }
    }
}
