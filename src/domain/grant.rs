//! What a member holds in an organization: roles and individual permissions.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use super::quoted;
use crate::error::{Error, Result};

/// The role invitations grant when none is given (API guide §4).
pub const DEFAULT_ROLE: &str = "developer";

/// Role or permission names, deduplicated, each 1 to 64 characters. Whether they
/// exist is the database's to say (they are rows there), so that a refusal of
/// any name it does not know can list the names it does (`unknown_name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub BTreeSet<String>);

impl<'a> IntoIterator for &'a Names {
    type Item = &'a String;
    type IntoIter = std::collections::btree_set::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Longest role or permission name.
const MAX_NAME_CHARS: usize = 64;

impl Names {
    /// Role names, e.g. `developer`.
    pub fn roles(field: &str, raw: &[String]) -> Result<Self> {
        Self::parse(field, raw, "role")
    }

    /// Permission names, e.g. `members.manage`.
    pub fn permissions(field: &str, raw: &[String]) -> Result<Self> {
        Self::parse(field, raw, "permission")
    }

    fn parse(field: &str, raw: &[String], kind: &str) -> Result<Self> {
        let mut names = BTreeSet::new();
        for (i, name) in raw.iter().enumerate() {
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!(
                        "{} is not a {kind} name: expected 1 to {MAX_NAME_CHARS} characters",
                        quoted(name)
                    ),
                ));
            }
            names.insert(name.clone());
        }
        Ok(Names(names))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

/// The refusal of `name`, a `kind` ("role", "permission") that is none of
/// `known`: it suggests the closest known name when one is near (a typo, another
/// case) and lists them all, e.g. "unknown permission 'org.updte': did you mean
/// 'org.update'? The permissions are: …".
pub fn unknown_name(kind: &str, name: &str, known: &[String]) -> String {
    let folded = name.to_lowercase();
    let closest = known
        .iter()
        .map(|candidate| (strsim::levenshtein(&folded, candidate), candidate))
        .min()
        // Near: at most a third of the name differs.
        .filter(|(distance, _)| distance * 3 <= folded.chars().count().max(3));
    let suggestion = closest
        .map(|(_, candidate)| format!(" did you mean '{candidate}'?"))
        .unwrap_or_default();
    format!(
        "unknown {kind} {}:{suggestion} The {} are: {}",
        quoted(name),
        super::plural(kind),
        known.join(", ")
    )
}

/// Roles plus individual permissions.
#[derive(Debug, Clone)]
pub struct Grant {
    pub roles: Names,
    pub permissions: Names,
}

/// The name of a permission a method requires, as its proto policy declares it.
/// Shared, not copied: it travels with every authorized call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission(Arc<str>);

/// A name, readable wherever a `&str` is.
impl std::ops::Deref for Permission {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Permission {
    /// A permission a request asks about; whether orgd defines it is the
    /// database's to say.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid(
                field,
                "a permission is required, e.g. members.manage",
            ));
        }
        // Whether orgd defines it (and which it may have meant) is the catalogue's to say.
        if raw.chars().count() > MAX_NAME_CHARS {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is not a permission name: expected 1 to {MAX_NAME_CHARS} characters",
                    super::quoted(raw)
                ),
            ));
        }
        Ok(raw.into())
    }
}

impl From<String> for Permission {
    fn from(name: String) -> Self {
        Permission(name.into())
    }
}

impl From<&str> for Permission {
    fn from(name: &str) -> Self {
        Permission(name.into())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_deduplicated() {
        let roles = Names::roles("roles", &["viewer".into(), "viewer".into()]).unwrap();
        assert_eq!(roles.to_vec(), vec!["viewer".to_owned()]);
        assert!(Names::permissions("p", &["members.manage".into()]).is_ok());
        for bad in [String::new(), "x".repeat(65)] {
            let err = Names::permissions("p", &["org.read".into(), bad.clone()]).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "p[1]"));
            let err = Permission::parse("checks[1].permission", &bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { ref field, .. } if field == "checks[1].permission")
            );
        }
        assert_eq!(
            &*Permission::parse("permission", "tokens.create_own").unwrap(),
            "tokens.create_own"
        );
        assert!(Permission::parse("permission", "").is_err());
    }

    #[test]
    fn unknown_names_suggest_the_closest_and_list_the_rest() {
        let known: Vec<String> = ["billing.manage", "members.manage", "org.read", "org.update"]
            .map(String::from)
            .into();
        let typo = unknown_name("permission", "org.updte", &known);
        assert_eq!(
            typo,
            "unknown permission 'org.updte': did you mean 'org.update'? The permissions are: \
             billing.manage, members.manage, org.read, org.update"
        );
        assert!(
            unknown_name("permission", "Members.Manage", &known)
                .contains("did you mean 'members.manage'?")
        );
        let far = unknown_name("permission", "deploy", &known);
        assert!(!far.contains("did you mean"), "{far}");
        assert!(
            far.starts_with("unknown permission 'deploy': The permissions are: billing.manage"),
            "{far}"
        );
        let roles = unknown_name("role", "ownr", &["admin".into(), "owner".into()]);
        assert!(
            roles.contains("did you mean 'owner'? The roles are: admin, owner"),
            "{roles}"
        );
    }
}
