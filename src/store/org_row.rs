//! An organization's row, the lock every change of an organization starts
//! with and the revision bump it ends with. Below every other store module (it
//! depends on none), so that all of them can lock an organization without
//! depending on each other.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::organizations;
use super::{Conn, KeepPrepared};
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

    /// How a message names the organization to someone who may see it: display
    /// name, slug and resource name, `"Acme" (acme, organizations/…)`. Never in
    /// a refusal a stranger can get: they learn only the name they sent.
    pub fn described(&self) -> String {
        format!("\"{}\" ({}, {})", self.display_name, self.slug, self.name())
    }

    /// Refuses changes to a soft-deleted organization.
    pub fn ensure_live(&self) -> Result<()> {
        match self.deleted_at {
            None => Ok(()),
            Some(_) => Err(Error::precondition(
                "ORGANIZATION_DELETED",
                self.name(),
                format!(
                    "{} is deleted; restore it with UndeleteOrganization first",
                    self.described()
                ),
            )),
        }
    }

    pub(super) fn check_etag(&self, expected: Option<Etag>) -> Result<()> {
        match expected {
            Some(etag) if etag != self.etag() => Err(Error::Aborted(format!(
                "{} changed since etag {etag} was read (it is now {}); get it again and retry",
                self.described(),
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
        .ok_or_else(|| org_not_found(id))
}

/// Locks organization `id`'s row for share: holders run side by side, and a
/// change that locks it for update waits for them (and they for it).
pub(super) async fn share_org(conn: &mut Conn, id: Uuid) -> Result<OrgRow> {
    organizations::table
        .find(id)
        .select(OrgRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| org_not_found(id))
}

fn org_not_found(id: Uuid) -> Error {
    Error::NotFound(format!("organization {} not found", OrgRef::name_of(id)))
}

/// Bumps the revision (and so the etag) of a changed organization and returns it.
pub(super) async fn touch(conn: &mut Conn, id: Uuid) -> Result<OrgRow> {
    Ok(diesel::update(organizations::table.find(id))
        .set((
            organizations::revision.eq(organizations::revision + 1),
            organizations::updated_at.eq(diesel::dsl::now),
        ))
        .returning(OrgRow::as_returning())
        .prepared()
        .get_result(conn)
        .await?)
}
