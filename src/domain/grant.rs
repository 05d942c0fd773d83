//! What a member holds in an organization: roles and individual permissions.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The role invitations grant when none is given (API guide §4).
pub const DEFAULT_ROLE: &str = "developer";

/// Role or permission names, syntactically valid and deduplicated. Whether they
/// exist is the database's to say (they are rows there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub BTreeSet<String>);

impl<'a> IntoIterator for &'a Names {
    type Item = &'a String;
    type IntoIter = std::collections::btree_set::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Names {
    /// Role names: lowercase letters and underscores.
    pub fn roles(field: &str, raw: &[String]) -> Result<Self> {
        Self::parse(field, raw, "role", |name| {
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }

    /// Permission names: `area.action`, e.g. `members.manage`.
    pub fn permissions(field: &str, raw: &[String]) -> Result<Self> {
        Self::parse(field, raw, "permission", is_permission_name)
    }

    fn parse(
        field: &str,
        raw: &[String],
        kind: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let mut names = BTreeSet::new();
        for (i, name) in raw.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_NAME_LEN || !valid(name) {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("'{name}' is not a valid {kind} name"),
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

/// The longest role or permission name.
const MAX_NAME_LEN: usize = 64;

/// Whether `name` is shaped like a permission: `area.action`.
fn is_permission_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.split_once('.').is_some_and(|(area, action)| {
            !area.is_empty()
                && !action.is_empty()
                && area.bytes().all(|b| b.is_ascii_lowercase())
                && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
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
    /// A permission a request asks about, shaped `area.action`; whether orgd
    /// defines it is the database's to say.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid(
                field,
                "a permission is required, e.g. members.manage",
            ));
        }
        if !is_permission_name(raw) {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is not a permission name: expected area.action in lowercase, e.g. members.manage",
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
        assert!(Names::roles("roles", &["Owner".into()]).is_err());
        assert!(Names::roles("roles", &[String::new()]).is_err());
        assert!(Names::permissions("p", &["members.manage".into()]).is_ok());
        for bad in ["members", ".x", "a.", "a.b.c", "A.b", "a b.c"] {
            let err = Names::permissions("p", &["org.read".into(), bad.into()]).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
            assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "p[1]"));
            let err = Permission::parse("checks[1].permission", bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        assert_eq!(
            &*Permission::parse("permission", "tokens.create_own").unwrap(),
            "tokens.create_own"
        );
        assert!(Permission::parse("permission", "").is_err());
    }
}
