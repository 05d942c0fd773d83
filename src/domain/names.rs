//! Resource names (AIP-122): `organizations/{id-or-slug}`, resources inside an
//! organization (`organizations/{id-or-slug}/members/{user_id}`, …), `users/{id}`
//! and `subjects/{subject}`.

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

/// How a request names a user: by orgd's id, `users/{id}`, or by the identity
/// provider's subject, `subjects/{subject}` — what a backend service knows its
/// callers by. The subject is percent-encoded (RFC 3986), so that one holding
/// `/` stays one segment of the name: `subjects/auth0%7C42` for `auth0|42`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserName {
    Id(Uuid),
    Subject(String),
}

const SUBJECT_PREFIX: &str = "subjects/";

/// The longest identity-provider subject orgd stores.
pub const MAX_SUBJECT_BYTES: usize = 255;

/// Whether orgd takes `subject` as a user's identity-provider subject: from a
/// token or from a request alike.
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_BYTES
        && !subject.chars().any(char::is_control)
}

impl UserName {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.starts_with("users/") {
            return UserRef::parse(field, raw).map(|user| UserName::Id(user.0));
        }
        let Some(encoded) = raw.strip_prefix(SUBJECT_PREFIX) else {
            let why = if raw.is_empty() {
                "a user is required".to_owned()
            } else {
                format!("{} is not a user name", super::quoted(raw))
            };
            return Err(Error::invalid(
                field,
                format!(
                    "{why}: expected users/{{id}} or subjects/{{subject}} (the identity provider's subject, percent-encoded)"
                ),
            ));
        };
        // A raw `/` would make the name two segments; its encoding is %2F.
        let subject = (!encoded.contains('/'))
            .then(|| percent_encoding::percent_decode_str(encoded).decode_utf8().ok())
            .flatten()
            .filter(|subject| is_valid_subject(subject))
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "{} is not a percent-encoded subject: 1 to {} bytes of UTF-8 without control characters, with '/' written %2F and '%' written %25",
                        super::quoted(encoded),
                        MAX_SUBJECT_BYTES
                    ),
                )
            })?;
        Ok(UserName::Subject(subject.into_owned()))
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
    fn users_are_named_by_id_or_by_subject() {
        let id = Uuid::now_v7();
        assert_eq!(
            UserName::parse("user", &format!("users/{id}")).unwrap(),
            UserName::Id(id)
        );
        for (raw, subject) in [
            ("subjects/alice", "alice"),
            ("subjects/auth0%7C42", "auth0|42"),
            ("subjects/auth0|42", "auth0|42"),
            (
                "subjects/https%3A%2F%2Fidp.example%2Fu%2F7",
                "https://idp.example/u/7",
            ),
            ("subjects/J%C3%BCrgen", "Jürgen"),
        ] {
            assert_eq!(
                UserName::parse("user", raw).unwrap(),
                UserName::Subject(subject.into()),
                "{raw}"
            );
        }
        let too_long = format!("subjects/{}", "a".repeat(MAX_SUBJECT_BYTES + 1));
        for bad in [
            "",
            "alice",
            "users/alice",
            "subjects/",
            "subjects/a/b",
            "subjects/%00",
            "subjects/%FF",
            too_long.as_str(),
        ] {
            let err = UserName::parse("checks[2].user", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { field, .. } if field == "checks[2].user"),
                "{bad:?}: {err:?}"
            );
        }
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
