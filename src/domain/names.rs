//! Resource names (AIP-122): `organizations/{id-or-slug}`, resources inside an
//! organization (`organizations/{id-or-slug}/members/{user_id}`, …) and `users/{id}`.

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
                        "{} is not an organization name: expected organizations/{{id}} or organizations/{{slug}}",
                        super::quoted(raw)
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
                format!("{} is not a valid UUID", super::quoted(key)),
            ));
        }
        Slug::parse(field, key).map(OrgRef::Slug).map_err(|_| {
            Error::invalid(
                field,
                format!(
                    "{} is neither an organization id (UUID) nor a valid slug",
                    super::quoted(key)
                ),
            )
        })
    }

    /// The organization holding the resource `raw` names,
    /// `organizations/{org}/{rest}`; `rest` is the handler's to check.
    pub fn parse_scope(field: &str, raw: &str) -> Result<Self> {
        let key = raw
            .strip_prefix(ORG_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, rest)| !rest.is_empty())
            .map(|(key, _)| key)
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "{} does not name a resource in an organization: expected organizations/{{organization}}/…", super::quoted(raw)
                    ),
                )
            })?;
        Self::parse(field, &raw[..ORG_PREFIX.len() + key.len()])
    }

    /// The resource name as the caller wrote it: by id or by slug.
    pub fn name(&self) -> String {
        match self {
            OrgRef::Id(id) => Self::name_of(*id),
            OrgRef::Slug(slug) => format!("{ORG_PREFIX}{slug}"),
        }
    }

    /// Whether this reference names the organization with `id` and `slug`.
    pub fn names(&self, id: Uuid, slug: &str) -> bool {
        match self {
            OrgRef::Id(own) => *own == id,
            OrgRef::Slug(own) => own.as_str() == slug,
        }
    }

    pub fn name_of(id: Uuid) -> String {
        format!("{ORG_PREFIX}{id}")
    }
}

const ORG_PREFIX: &str = "organizations/";

/// A resource inside an organization, `organizations/{org}/{collection}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildName {
    pub org: OrgRef,
    pub id: Uuid,
}

impl ChildName {
    pub const MEMBERS: &str = "members";
    pub const INVITATIONS: &str = "invitations";

    pub fn parse(field: &str, raw: &str, collection: &str) -> Result<Self> {
        let expected = || {
            Error::invalid(
                field,
                format!(
                    "{} is not a {collection} name: expected organizations/{{organization}}/{collection}/{{id}}",
                    super::quoted(raw)
                ),
            )
        };
        let rest = raw.strip_prefix(ORG_PREFIX).ok_or_else(expected)?;
        let (key, rest) = rest.split_once('/').ok_or_else(expected)?;
        let id = rest
            .strip_prefix(collection)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(expected)?;
        let org = OrgRef::parse(field, &raw[..ORG_PREFIX.len() + key.len()])?;
        let id = Uuid::try_parse(id).map_err(|_| {
            Error::invalid(field, format!("{} is not a valid UUID", super::quoted(id)))
        })?;
        Ok(ChildName { org, id })
    }

    pub fn name_of(org_id: Uuid, collection: &str, id: Uuid) -> String {
        format!("{ORG_PREFIX}{org_id}/{collection}/{id}")
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
                format!(
                    "{} is not a user name: expected users/{{id}}",
                    super::quoted(raw)
                ),
            ));
        };
        Uuid::try_parse(key).map(UserRef).map_err(|_| {
            Error::invalid(field, format!("{} is not a valid UUID", super::quoted(key)))
        })
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

    #[test]
    fn parses_resources_inside_organizations() {
        let (org, user) = (Uuid::now_v7(), Uuid::now_v7());
        let member = ChildName::name_of(org, ChildName::MEMBERS, user);
        assert_eq!(
            ChildName::parse("name", &member, ChildName::MEMBERS).unwrap(),
            ChildName {
                org: OrgRef::Id(org),
                id: user
            }
        );
        assert_eq!(
            OrgRef::parse_scope("name", &member).unwrap(),
            OrgRef::Id(org)
        );
        for not_inside in [
            "organizations/acme",
            "organizations/acme/",
            "acme/members/x",
        ] {
            assert!(
                OrgRef::parse_scope("name", not_inside).is_err(),
                "{not_inside}"
            );
        }
        for bad in [
            format!("organizations/{org}"),
            format!("organizations/{org}/members"),
            format!("organizations/{org}/members/"),
            format!("organizations/{org}/invitations/{user}"),
            format!("organizations/{org}/members/{user}/x"),
            format!("organizations/Bad!/members/{user}"),
            format!("members/{user}"),
        ] {
            assert!(
                ChildName::parse("name", &bad, ChildName::MEMBERS).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
