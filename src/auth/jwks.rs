//! The identity provider's key set (JWKS): fetched at start-up, again every
//! refresh interval, and on demand when a token names a key orgd does not know
//! (at most once per minimum interval). One background task does every fetch, so
//! calls that miss a key at once share one fetch, and a call that goes away does
//! not cancel it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::verified_tokens::KeyGeneration;
use crate::config::JwksSource;
use crate::error::{Error, Result};

/// How long one fetch of the JWKS may take, and so how long a call with an
/// unknown `kid` waits for it at most.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS response read. Real key sets are a few kilobytes (a 4096-bit
/// RSA key is under 1 KiB of JSON); a provider that sends more is broken or
/// hostile, and reading on would hold that much memory per fetch.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A key and the rules of the tokens it verifies, its algorithm among them.
pub(super) struct VerifyingKey {
    pub key: DecodingKey,
    pub validation: Validation,
}

impl VerifyingKey {
    pub fn new(key: DecodingKey, algorithm: Algorithm, rules: &Validation) -> Self {
        let mut validation = rules.clone();
        validation.algorithms = vec![algorithm];
        VerifyingKey { key, validation }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }
}

/// The usable keys of one JWKS, by `kid`.
pub(super) struct KeySet {
    pub generation: KeyGeneration,
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

/// What the fetches so far left.
struct Fetched {
    /// The key set as last fetched successfully.
    set: JwkSet,
    keys: Arc<KeySet>,
    /// When the last fetch ended, whether it succeeded or not.
    last_fetch: Instant,
    failed: bool,
    /// When the periodic fetch is due.
    due: Instant,
}

/// The identity provider's keys, kept current.
pub(super) struct Jwks {
    source: JwksSource,
    client: reqwest::Client,
    rules: Validation,
    /// Written by the refresher only; every fetch, failed ones included, wakes
    /// the calls waiting for it.
    fetched: watch::Sender<Fetched>,
    /// Wakes the refresher for a token whose `kid` is unknown.
    wanted: Notify,
}

impl Jwks {
    /// Fetches the key set once: orgd does not start without it. `rules` are
    /// those of every token, to which each key adds its algorithm.
    pub async fn fetch_first(source: JwksSource, rules: Validation) -> anyhow::Result<Arc<Self>> {
        if source.url.scheme() == "http" && !is_loopback(&source.url) {
            tracing::warn!(url = %source.url, "the JWKS is fetched over plain http: whoever can change it on the way can sign tokens orgd accepts; use https unless the provider is on a network you trust");
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("orgd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match redirect_refusal(attempt.previous(), attempt.url()) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                },
            ))
            .build()?;
        let (set, max_age) = fetch(&client, &source.url)
            .await
            .with_context(|| format!("fetching the JWKS from {}", source.url))?;
        let keys = key_set(&set, &rules, 0);
        anyhow::ensure!(
            !keys.keys.is_empty(),
            "the JWKS at {} has no key orgd can use (one with a kid, for RS256, ES256 or EdDSA)",
            source.url
        );
        tracing::info!(url = %source.url, kids = ?keys.keys.keys(), "fetched the identity provider's keys");
        let now = Instant::now();
        let fetched = Fetched {
            set,
            keys: Arc::new(keys),
            last_fetch: now,
            failed: false,
            due: now + source.interval(max_age),
        };
        Ok(Arc::new(Jwks {
            source,
            client,
            rules,
            fetched: watch::Sender::new(fetched),
            wanted: Notify::new(),
        }))
    }

    pub fn generation(&self) -> KeyGeneration {
        self.fetched.borrow().keys.generation
    }

    /// The keys, once they include `kid`: an unknown `kid` makes orgd fetch the
    /// set again and wait for it, unless it did so less than the minimum
    /// interval ago.
    pub async fn keys_with(&self, kid: &str) -> Result<Arc<KeySet>> {
        let mut fetched = self.fetched.subscribe();
        let last_fetch = {
            let fetched = fetched.borrow_and_update();
            if fetched.keys.get(kid).is_some() {
                return Ok(fetched.keys.clone());
            }
            fetched.last_fetch
        };
        if last_fetch.elapsed() < self.source.min_refresh {
            return Err(unknown_key(kid));
        }
        self.wanted.notify_one();
        if tokio::time::timeout(FETCH_TIMEOUT, fetched.changed())
            .await
            .is_err()
        {
            return Err(unavailable(kid));
        }
        let fetched = fetched.borrow();
        match fetched.keys.get(kid) {
            Some(_) => Ok(fetched.keys.clone()),
            None if fetched.failed => Err(unavailable(kid)),
            None => Err(unknown_key(kid)),
        }
    }

    /// Fetches the key set when it is due or wanted, until `stop` changes.
    pub fn spawn_refresher(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let (due, last_fetch) = {
                    let fetched = self.fetched.borrow();
                    (fetched.due, fetched.last_fetch)
                };
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = self.wanted.notified() => {
                        // A wake-up left over from calls that a fetch since
                        // served, or one too soon after the last fetch.
                        if last_fetch.elapsed() < self.source.min_refresh {
                            continue;
                        }
                    }
                    _ = stop.changed() => return,
                }
                self.refresh().await;
            }
        })
    }

    async fn refresh(&self) {
        let result = fetch(&self.client, &self.source.url).await;
        let now = Instant::now();
        let (set, max_age) = match result {
            Ok(fetched) => fetched,
            Err(err) => {
                tracing::warn!(
                    url = %self.source.url,
                    error = format!("{err:#}"),
                    "fetching the JWKS failed; the keys fetched before stay in use"
                );
                self.fetched.send_modify(|fetched| {
                    fetched.last_fetch = now;
                    fetched.failed = true;
                    fetched.due = now + self.source.min_refresh;
                });
                return;
            }
        };
        // Built outside the lock that calls read the keys under.
        let changed = {
            let fetched = self.fetched.borrow();
            (fetched.set != set).then(|| key_set(&set, &self.rules, fetched.keys.generation + 1))
        };
        if let Some(keys) = &changed {
            tracing::info!(url = %self.source.url, kids = ?keys.keys.keys(), "the identity provider's keys changed");
        }
        self.fetched.send_modify(|fetched| {
            if let Some(keys) = changed {
                fetched.set = set;
                fetched.keys = Arc::new(keys);
            }
            fetched.last_fetch = now;
            fetched.failed = false;
            fetched.due = now + self.source.interval(max_age);
        });
    }
}

impl JwksSource {
    /// Time to the next periodic fetch: the response's max-age within the
    /// configured bounds, else the refresh interval.
    fn interval(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.refresh)
            .min(self.refresh)
            .max(self.min_refresh)
    }
}

/// The key set at `url`, and how long its response says it may be cached.
async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> anyhow::Result<(JwkSet, Option<Duration>)> {
    let response = client.get(url.clone()).send().await?.error_for_status()?;
    let max_age = response
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| directive.trim().strip_prefix("max-age="))
        .and_then(|seconds| seconds.parse().ok())
        .map(Duration::from_secs);
    let body = read_bounded(response, MAX_JWKS_BYTES).await?;
    let set = serde_json::from_slice(&body).context("the response is not a JWK set")?;
    Ok((set, max_age))
}

/// The body of `response`, refused once it passes `limit` bytes (by its
/// Content-Length before reading, or as it arrives).
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> anyhow::Result<Vec<u8>> {
    let too_large = || anyhow::anyhow!("the response is larger than {} KiB", limit / 1024);
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Redirects followed at most when fetching the JWKS.
const MAX_REDIRECTS: usize = 5;

/// Why the JWKS fetch must not follow a redirect to `next` after `previous`:
/// from https to plain http (whoever can change the keys on the way could sign
/// tokens), or one too many.
fn redirect_refusal(previous: &[reqwest::Url], next: &reqwest::Url) -> Option<&'static str> {
    if next.scheme() != "https" && previous.iter().any(|url| url.scheme() == "https") {
        return Some("the JWKS URL redirects from https to plain http");
    }
    (previous.len() > MAX_REDIRECTS).then_some("the JWKS URL redirects too many times")
}

/// Whether `url` names this host (a loopback address or `localhost`).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The keys of `set` that can verify tokens; the others are logged and skipped.
fn key_set(set: &JwkSet, rules: &Validation, generation: KeyGeneration) -> KeySet {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let Some(kid) = &jwk.common.key_id else {
            tracing::warn!(
                "ignoring a key of the JWKS without a kid: tokens name their key by kid"
            );
            continue;
        };
        let key = algorithm(jwk).and_then(|algorithm| {
            let key = DecodingKey::from_jwk(jwk).map_err(|err| err.to_string())?;
            Ok(VerifyingKey::new(key, algorithm, rules))
        });
        match key {
            Ok(key) => {
                keys.insert(kid.clone(), key);
            }
            Err(why) => tracing::warn!(kid, why, "ignoring a key of the JWKS"),
        }
    }
    KeySet { generation, keys }
}

/// The algorithm a key verifies: what its type and curve imply, which its `alg`
/// may confirm but not change.
fn algorithm(jwk: &Jwk) -> std::result::Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return Err("only RSA, EC P-256 and OKP Ed25519 keys are supported".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(implied),
        Some(named) if named == KeyAlgorithm::from(implied) => Ok(implied),
        Some(named) => Err(format!(
            "alg {named} is not supported for this key (only {implied:?} is)"
        )),
    }
}

/// A caller's `kid`, safe to show and log.
fn shown(kid: &str) -> String {
    format!("{:?}", kid.chars().take(64).collect::<String>())
}

pub(super) fn unknown_key(kid: &str) -> Error {
    Error::Unauthenticated(format!(
        "the token's signing key {} is not among the identity provider's keys (JWKS)",
        shown(kid)
    ))
}

fn unavailable(kid: &str) -> Error {
    Error::Unauthenticated(format!(
        "the token's signing key {} is not among the identity provider's keys orgd knows, \
         and their key set (JWKS) could not be fetched just now; try again later",
        shown(kid)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_key_verifies_the_algorithm_its_type_implies() {
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"});
        let p256 =
            serde_json::json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"});
        let ed25519 = serde_json::json!({"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "AA"});
        for (json, expected) in [
            (&rsa, Algorithm::RS256),
            (&p256, Algorithm::ES256),
            (&ed25519, Algorithm::EdDSA),
        ] {
            assert_eq!(algorithm(&jwk(json.clone())), Ok(expected));
            let mut named = json.clone();
            named["alg"] = format!("{expected:?}").into();
            assert_eq!(algorithm(&jwk(named)), Ok(expected));
        }
        let mut rs384 = rsa.clone();
        rs384["alg"] = "RS384".into();
        let mut hs256 = p256.clone();
        hs256["alg"] = "HS256".into();
        let mut p384 = p256.clone();
        p384["crv"] = "P-384".into();
        let secret = serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        for refused in [rs384, hs256, p384, secret] {
            assert!(
                algorithm(&jwk(refused.clone())).is_err(),
                "{refused} accepted"
            );
        }
    }

    #[test]
    fn only_signing_keys_with_a_kid_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "kid": "signs", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "kid": "encrypts", "use": "enc", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        ]}))
        .unwrap();
        let keys = key_set(&set, &Validation::default(), 7);
        assert_eq!(keys.generation, 7);
        assert_eq!(keys.keys.keys().collect::<Vec<_>>(), ["signs"]);
        assert_eq!(keys.get("signs").unwrap().algorithm(), Algorithm::EdDSA);
    }

    #[test]
    fn a_redirect_never_leaves_https() {
        let url = |raw: &str| raw.parse::<reqwest::Url>().unwrap();
        let https = url("https://idp.example/jwks");
        assert!(
            redirect_refusal(
                std::slice::from_ref(&https),
                &url("http://idp.example/jwks")
            )
            .is_some()
        );
        assert!(
            redirect_refusal(
                std::slice::from_ref(&https),
                &url("https://keys.example/jwks")
            )
            .is_none()
        );
        // A provider configured on plain http may move on plain http.
        let http = url("http://127.0.0.1:8080/jwks");
        assert!(
            redirect_refusal(
                std::slice::from_ref(&http),
                &url("http://127.0.0.1:8080/v2")
            )
            .is_none()
        );
        let hops = vec![https.clone(); MAX_REDIRECTS + 1];
        assert!(redirect_refusal(&hops, &https).is_some());
    }

    #[test]
    fn only_this_host_counts_as_loopback() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080/jwks", true),
            ("http://127.9.9.9/jwks", true),
            ("http://[::1]:8080/jwks", true),
            ("http://LocalHost/jwks", true),
            ("http://idp.internal/jwks", false),
            ("http://10.0.0.1/jwks", false),
            ("http://[::ffff:10.0.0.1]/jwks", false),
        ] {
            let parsed: reqwest::Url = url.parse().unwrap();
            assert_eq!(is_loopback(&parsed), loopback, "{url}");
        }
    }

    #[test]
    fn the_interval_follows_max_age_within_bounds() {
        let source = JwksSource {
            url: "https://idp.example/jwks".parse().unwrap(),
            refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
        };
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(source.interval(None), Duration::from_secs(300));
        assert_eq!(source.interval(secs(60)), Duration::from_secs(60));
        assert_eq!(source.interval(secs(5)), Duration::from_secs(30));
        assert_eq!(source.interval(secs(86400)), Duration::from_secs(300));
    }
}
