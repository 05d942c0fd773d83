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
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.time.timestamp_micros(), self.id))
    }

    fn decode(raw: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let (micros, id) = text.split_once(':')?;
        Some(PageToken {
            time: DateTime::from_timestamp_micros(micros.parse().ok()?)
                .filter(super::time::is_storable_time)?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// A validated page request; `limit` is the page size.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<PageToken>,
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self> {
        let limit = match i64::from(page_size) {
            n if n < 0 => return Err(Error::invalid("page_size", "page_size cannot be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match page_token {
            "" => None,
            raw => Some(PageToken::decode(raw).ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "the page token is invalid: pass next_page_token from the previous response",
                )
            })?),
        };
        Ok(PageRequest { limit, after })
    }

    /// The first page of at most `limit` items.
    pub fn first(limit: i64) -> Self {
        PageRequest { limit, after: None }
    }

    /// Splits one extra fetched row off `rows` (fetch `limit + 1`) into the next token.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> PageToken) -> (Vec<T>, String) {
        if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            let next = rows.last().map(|r| key(r).encode()).unwrap_or_default();
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
        let page = PageRequest::parse(0, &token.encode()).unwrap();
        assert_eq!(page.after, Some(token));
        assert_eq!(page.limit, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(10_000, "").unwrap().limit, MAX_PAGE_SIZE);
        assert!(PageRequest::parse(-1, "").is_err());
        assert!(PageRequest::parse(5, "garbage!").is_err());
    }
}
