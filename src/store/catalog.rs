//! The roles and permissions the database defines: what each role grants, what
//! each permission implies, and the refusal of a name it does not define.

use std::collections::{BTreeSet, HashMap};

use diesel::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;

use super::{Conn, KeepPrepared};
use crate::domain::{Names, unknown_name};
use crate::error::{Error, Result};

/// The roles and permissions the database defines, with what each role grants
/// and what each permission implies, read in one query once per transaction.
pub(super) struct Catalog {
    roles: Vec<String>,
    permissions: Vec<String>,
    role_permissions: HashMap<String, Vec<String>>,
    /// `permission_implications`, the closure: one level is all.
    implications: HashMap<String, Vec<String>>,
}

/// The catalog as one row: `granting`/`granted` are `role_permissions` as two
/// aligned arrays, `implying`/`implied` likewise `permission_implications`.
const CATALOG_QUERY: &str = "
    SELECT ARRAY(SELECT name FROM roles ORDER BY name) AS roles,
           ARRAY(SELECT name FROM permissions ORDER BY name) AS permissions,
           ARRAY(SELECT role FROM role_permissions ORDER BY role, permission) AS granting,
           ARRAY(SELECT permission FROM role_permissions ORDER BY role, permission) AS granted,
           ARRAY(SELECT permission FROM permission_implications
                 ORDER BY permission, implies) AS implying,
           ARRAY(SELECT implies FROM permission_implications
                 ORDER BY permission, implies) AS implied";

#[derive(QueryableByName)]
struct CatalogRow {
    #[diesel(sql_type = Array<Text>)]
    roles: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    permissions: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    granting: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    granted: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    implying: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    implied: Vec<String>,
}

/// Two aligned arrays as a map from each of `keys` to its values.
fn grouped(keys: Vec<String>, values: Vec<String>) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in keys.into_iter().zip(values) {
        map.entry(key).or_default().push(value);
    }
    map
}

impl Catalog {
    pub async fn load(conn: &Conn) -> Result<Self> {
        let row: CatalogRow = diesel::sql_query(CATALOG_QUERY)
            .prepared()
            .get_result(&mut &*conn)
            .await?;
        Ok(Catalog {
            roles: row.roles,
            permissions: row.permissions,
            role_permissions: grouped(row.granting, row.granted),
            implications: grouped(row.implying, row.implied),
        })
    }

    /// Everything `role_names` and `permission_names` allow together, with what
    /// that implies: what `standing::grant_columns!` adds up in SQL.
    pub fn effective<'n>(
        &'n self,
        role_names: impl IntoIterator<Item = &'n String>,
        permission_names: impl IntoIterator<Item = &'n String>,
    ) -> BTreeSet<String> {
        let held: BTreeSet<&String> = role_names
            .into_iter()
            .filter_map(|role| self.role_permissions.get(role))
            .flatten()
            .chain(permission_names)
            .collect();
        let implied = held
            .iter()
            .filter_map(|permission| self.implications.get(*permission))
            .flatten();
        held.iter().copied().chain(implied).cloned().collect()
    }

    /// Refuses names the database does not define, naming the request field
    /// (`{field}.roles`, `{field}.extra_permissions`).
    pub fn ensure_known(
        &self,
        field: &str,
        role_names: Option<&Names>,
        permission_names: Option<&Names>,
    ) -> Result<()> {
        let checks = [
            ("roles", "role", role_names, &self.roles),
            (
                "extra_permissions",
                "permission",
                permission_names,
                &self.permissions,
            ),
        ];
        for (subfield, kind, names, known) in checks {
            let unknown = names.and_then(|names| names.0.iter().find(|n| !known.contains(n)));
            if let Some(unknown) = unknown {
                return Err(Error::invalid(
                    format!("{field}.{subfield}"),
                    unknown_name(kind, unknown, known),
                ));
            }
        }
        Ok(())
    }

    /// The permissions the database defines, by name.
    pub fn permissions(&self) -> &[String] {
        &self.permissions
    }

    /// Whether the database defines permission `name`.
    pub fn defines_permission(&self, name: &str) -> bool {
        self.permissions.iter().any(|known| known == name)
    }

    /// The refusal of `name`, which is no permission the database defines.
    pub fn unknown_permission(&self, field: &str, name: &str) -> Error {
        Error::invalid(field, unknown_name("permission", name, &self.permissions))
    }
}
