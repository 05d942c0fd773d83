//! An organization's row, and the lock every change of an organization starts
//! with. Below every other store module (it depends on none), so that all of
//! them can lock an organization without depending on each other.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::organizations;
use crate::domain::{Etag, OrgRef};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = organizations, check_for_backend(diesel::pg::Pg))]
pub struct OrgRow {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub description: String,
    pub contact_email: String,
    pub pending_contact_email: Option<String>,
    pub personal_owner_id: Option<Uuid>,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_at: Option<DateTime<Utc>>,
}

/// The columns of an organization `o`, as `OrgRow` reads them. A macro so that
/// queries can `concat!` it. The columns are named: with `o.*`, a migration
/// adding a column would break the statements that running replicas keep
/// prepared.
macro_rules! org_columns {
    () => {
        "o.id, o.slug, o.display_name, o.description, o.contact_email,
         o.pending_contact_email, o.personal_owner_id, o.revision, o.created_at,
         o.updated_at, o.deleted_at, o.purge_at"
    };
}
pub(super) use org_columns;

impl OrgRow {
    pub fn etag(&self) -> Etag {
        Etag(self.revision)
    }

    pub fn name(&self) -> String {
        OrgRef::name_of(self.id)
    }

    /// Refuses changes to a soft-deleted organization.
    pub fn ensure_live(&self) -> Result<()> {
        match self.deleted_at {
            None => Ok(()),
            Some(_) => Err(Error::precondition(
                "ORGANIZATION_DELETED",
                self.name(),
                format!(
                    "organization {} is deleted; restore it with UndeleteOrganization first",
                    self.slug
                ),
            )),
        }
    }

    pub(super) fn check_etag(&self, expected: Option<Etag>) -> Result<()> {
        match expected {
            Some(etag) if etag != self.etag() => Err(Error::Aborted(format!(
                "organization {} changed since etag {etag} was read (it is now {}); get it again and retry",
                self.slug,
                self.etag()
            ))),
            _ => Ok(()),
        }
    }
}

/// Locks the organization, live or not: each caller says whether a deleted one
/// will do (a caller's change, through `change::recheck`, once it knows the
/// caller is a member).
pub(super) async fn lock_org(conn: &Conn, id: Uuid) -> Result<OrgRow> {
    organizations::table
        .find(id)
        .select(OrgRow::as_select())
        .for_update()
        .first(&mut &*conn)
        .await
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("organization {} not found", OrgRef::name_of(id))))
}
