//! Resource names (AIP-122): `organizations/{id-or-slug}` and `users/{id}`.

use uuid::Uuid;

use super::Slug;
use super::org::looks_like_uuid;
use crate::error::{Error, Result};

/// How a request names an organization: by its id or by its slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgRef {
    Id(Uuid),
    Slug(Slug),
}

impl OrgRef {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let Some(key) = raw.strip_prefix("organizations/") else {
            return Err(if raw.is_empty() {
                Error::invalid(
                    field,
                    "an organization name is required: organizations/{id} or organizations/{slug}",
                )
            } else {
                Error::invalid(
                    field,
                    format!(
                        "'{raw}' is not an organization name: expected organizations/{{id}} or organizations/{{slug}}"
                    ),
                )
            });
        };
        if let Ok(id) = Uuid::try_parse(key) {
            return Ok(OrgRef::Id(id));
        }
        // Something UUID-like that fails to parse is a mistyped id, not a slug.
        if looks_like_uuid(key) {
            return Err(Error::invalid(
                field,
                format!("'{key}' is not a valid UUID"),
            ));
        }
        Slug::parse(field, key).map(OrgRef::Slug).map_err(|_| {
            Error::invalid(
                field,
                format!("'{key}' is neither an organization id (UUID) nor a valid slug"),
            )
        })
    }

    pub fn name_of(id: Uuid) -> String {
        format!("organizations/{id}")
    }
}

/// A user named as `users/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef(pub Uuid);

impl UserRef {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        let Some(key) = raw.strip_prefix("users/") else {
            return Err(Error::invalid(
                field,
                format!("'{raw}' is not a user name: expected users/{{id}}"),
            ));
        };
        Uuid::try_parse(key)
            .map(UserRef)
            .map_err(|_| Error::invalid(field, format!("'{key}' is not a valid UUID")))
    }

    pub fn name_of(id: Uuid) -> String {
        format!("users/{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_slugs() {
        let id = Uuid::now_v7();
        assert_eq!(
            OrgRef::parse("name", &format!("organizations/{id}")).unwrap(),
            OrgRef::Id(id)
        );
        assert!(matches!(
            OrgRef::parse("name", "organizations/acme").unwrap(),
            OrgRef::Slug(_)
        ));
        for bad in [
            "",
            "acme",
            "orgs/acme",
            "organizations/",
            "organizations/Acme!",
            "organizations/0190a9c2-zzzz-7000-8000-000000000000",
        ] {
            assert!(
                OrgRef::parse("name", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(UserRef::parse("user", "users/nope").is_err());
    }
}
