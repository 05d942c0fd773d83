//! AIP-158 pagination: `page_size` and an opaque keyset `page_token`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;

/// A position in a list ordered by (time, id): the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub time: DateTime<Utc>,
    pub id: Uuid,
}

impl PageToken {
    /// The token of this position in a list with `scope`.
    fn encode(&self, scope: Option<Scope>) -> String {
        let position = format!("{}:{}", self.time.timestamp_micros(), self.id);
        URL_SAFE_NO_PAD.encode(match scope {
            None => position,
            Some(scope) => format!("{position}:{}", hex(&scope)),
        })
    }

    /// The position in `raw`, a token of a list with `scope`.
    fn decode(raw: &str, scope: Option<Scope>) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let mut parts = text.split(':');
        let (micros, id) = (parts.next()?, parts.next()?);
        if parts.next() != scope.map(|scope| hex(&scope)).as_deref() || parts.next().is_some() {
            return None;
        }
        Some(PageToken {
            time: DateTime::from_timestamp_micros(micros.parse().ok()?)
                .filter(super::time::is_storable_time)?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A validated page request; `limit` is the page size.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<PageToken>,
    /// The fingerprint of the list's parameters that its tokens carry, if it
    /// has parameters (see `parse_scoped`).
    scope: Option<Scope>,
}

/// The first bytes of the SHA-256 of a list's parameters.
type Scope = [u8; 8];

fn scope_of(parameters: &[&str]) -> Scope {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for parameter in parameters {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hash.update((parameter.len() as u64).to_be_bytes());
        hash.update(parameter.as_bytes());
    }
    let digest = hash.finalize();
    digest[..8].try_into().expect("SHA-256 has 32 bytes")
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self> {
        Self::parse_in(page_size, page_token, None)
    }

    /// `parse`, for a list whose other request fields are `parameters` (e.g.
    /// a user and a permission): its tokens carry their fingerprint, and a
    /// token of a list with other parameters is refused (AIP-158), so that no
    /// token reads on in another user's list.
    pub fn parse_scoped(page_size: i32, page_token: &str, parameters: &[&str]) -> Result<Self> {
        Self::parse_in(page_size, page_token, Some(scope_of(parameters)))
    }

    fn parse_in(page_size: i32, page_token: &str, scope: Option<Scope>) -> Result<Self> {
        let limit = match i64::from(page_size) {
            n if n < 0 => return Err(Error::invalid("page_size", "page_size cannot be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match page_token {
            "" => None,
            raw => Some(PageToken::decode(raw, scope).ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "the page token is invalid: pass next_page_token from the previous response, with the same request fields",
                )
            })?),
        };
        Ok(PageRequest {
            limit,
            after,
            scope,
        })
    }

    /// The first page of at most `limit` items.
    pub fn first(limit: i64) -> Self {
        PageRequest {
            limit,
            after: None,
            scope: None,
        }
    }

    /// Splits one extra fetched row off `rows` (fetch `limit + 1`) into the next token.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> PageToken) -> (Vec<T>, String) {
        if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            let next = rows
                .last()
                .map(|r| key(r).encode(self.scope))
                .unwrap_or_default();
            (rows, next)
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sizes_clamp() {
        let token = PageToken {
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let page = PageRequest::parse(0, &token.encode(None)).unwrap();
        assert_eq!(page.after, Some(token));
        assert_eq!(page.limit, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(10_000, "").unwrap().limit, MAX_PAGE_SIZE);
        assert!(PageRequest::parse(-1, "").is_err());
        assert!(PageRequest::parse(5, "garbage!").is_err());
    }

    #[test]
    fn scoped_tokens_serve_only_their_own_list() {
        let token = PageToken {
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let alice = ["subjects/alice", "org.read"];
        let alices = PageRequest::parse_scoped(2, "", &alice).unwrap();
        let (_, next) = alices.finish(vec![token, token, token], |t| *t);
        let page = PageRequest::parse_scoped(2, &next, &alice).unwrap();
        assert_eq!(page.after, Some(token));
        // Another user's list, another permission, parameters run together
        // differently, an unscoped list: refused.
        for other in [
            &["subjects/bob", "org.read"][..],
            &["subjects/alice", "org.update"],
            &["subjects/aliceorg.read", ""],
        ] {
            assert!(
                PageRequest::parse_scoped(2, &next, other).is_err(),
                "{other:?}"
            );
        }
        assert!(PageRequest::parse(2, &next).is_err());
        assert!(PageRequest::parse_scoped(2, &token.encode(None), &alice).is_err());
    }
}
