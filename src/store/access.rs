//! What a user may do in an organization: memberships, roles, individual grants,
//! and the permissions they add up to. Read from the database on every call, so a
//! role change takes effect on the very next request.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::org_row::{OrgRow, org_columns};
use super::orgs::ListedOrg;
use super::schema::organizations;
use super::standing::{Grants, MemberAccess, access_in, grant_columns};
use super::tokens::{TokenCaller, TokenWithCreator, admit_token, refused, token_with_creator};
use super::users::{Identity, PrefixedUser, User, prefixed_user_columns};
use super::{Conn, KeepPrepared, Prepared, Store};
use crate::domain::{OrgRef, PageRequest, Secret};
use crate::error::Result;

/// A membership with its organization, for listings.
pub struct MembershipView {
    pub org: OrgRow,
    pub access: MemberAccess,
}

fn org_filter(
    org_ref: &OrgRef,
) -> Box<
    dyn BoxableExpression<organizations::table, diesel::pg::Pg, SqlType = diesel::sql_types::Bool>,
> {
    match org_ref {
        OrgRef::Id(id) => Box::new(organizations::id.eq(*id)),
        OrgRef::Slug(slug) => Box::new(organizations::slug.eq(slug.as_str().to_owned())),
    }
}

pub(super) async fn find_org(conn: &mut Conn, org_ref: &OrgRef) -> Result<Option<OrgRow>> {
    Ok(organizations::table
        .filter(org_filter(org_ref))
        .select(OrgRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// An organization `o` with the columns of `m`, the membership of the user in
/// question if there is one. A macro so that queries can `concat!` it.
macro_rules! org_access_columns {
    () => {
        concat!(
            org_columns!(),
            ", m.created_at AS joined_at, ",
            grant_columns!()
        )
    };
}

/// `$sql` completed by each of the two ways a request names an organization
/// `o`: by id, by slug (see `org_keyed`).
macro_rules! by_org_key {
    ($sql:expr) => {
        [concat!($sql, "o.id = $2"), concat!($sql, "o.slug = $2")]
    };
}

/// An organization with user `$1`'s membership, by id or slug `$2`.
const ORG_ACCESS: [&str; 2] = by_org_key!(concat!(
    "SELECT ",
    org_access_columns!(),
    " FROM organizations o
      LEFT JOIN memberships m ON m.org_id = o.id AND m.user_id = $1
      WHERE "
));

/// The same for the user with identity-provider subject `$1`, with the user:
/// authentication and authorization of a signed-in caller in one round trip.
/// No row when the user or the organization is unknown.
const SIGNED_IN_ACCESS: [&str; 2] = by_org_key!(concat!(
    "SELECT ",
    org_access_columns!(),
    ", ",
    prefixed_user_columns!(),
    " FROM users u
     JOIN organizations p ON p.personal_owner_id = u.id
     CROSS JOIN organizations o
     LEFT JOIN memberships m ON m.org_id = o.id AND m.user_id = u.id
     WHERE u.subject = $1 AND "
));

/// The API token whose secret hashes to `$1` with its creator, its
/// organization and the creator's membership there: everything a token's call
/// needs, read from the call's headers alone (a token acts in its own
/// organization only), before its request is read.
const TOKEN_SESSION: &str = concat!(
    "SELECT ",
    org_access_columns!(),
    ", ",
    token_with_creator!(columns),
    " FROM ",
    token_with_creator!(tables),
    " JOIN organizations o ON o.id = t.org_id
     LEFT JOIN memberships m ON m.org_id = o.id AND m.user_id = u.id
     WHERE t.secret_hash = $1"
);

/// One row of `ORG_ACCESS`.
#[derive(QueryableByName)]
struct OrgAccessRow {
    #[diesel(embed)]
    org: OrgRow,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    joined_at: Option<DateTime<Utc>>,
    #[diesel(embed)]
    grants: Grants,
}

impl OrgAccessRow {
    fn split(self) -> (OrgRow, Option<MemberAccess>) {
        let grants = self.grants;
        (
            self.org,
            self.joined_at.map(|joined_at| grants.access(joined_at)),
        )
    }
}

/// One row of `SIGNED_IN_ACCESS`.
#[derive(QueryableByName)]
struct SignedInAccessRow {
    #[diesel(embed)]
    access: OrgAccessRow,
    #[diesel(embed)]
    user: PrefixedUser,
}

/// One row of `TOKEN_SESSION`.
#[derive(QueryableByName)]
struct TokenAccessRow {
    #[diesel(embed)]
    access: OrgAccessRow,
    #[diesel(embed)]
    token: TokenWithCreator,
}

/// `sql` (one of a `by_org_key!` pair) with `first` as `$1` and the key of
/// `org_ref` as `$2`, kept prepared.
fn org_keyed<'a>(
    sql: [&'static str; 2],
    org_ref: &OrgRef,
    first: impl FnOnce(BoxedSqlQuery<'a, Pg, SqlQuery>) -> BoxedSqlQuery<'a, Pg, SqlQuery>,
) -> Prepared<BoxedSqlQuery<'a, Pg, SqlQuery>> {
    let query = match org_ref {
        OrgRef::Id(id) => {
            first(diesel::sql_query(sql[0]).into_boxed()).bind::<diesel::sql_types::Uuid, _>(*id)
        }
        OrgRef::Slug(slug) => first(diesel::sql_query(sql[1]).into_boxed())
            .bind::<diesel::sql_types::Text, _>(slug.as_str().to_owned()),
    };
    query.prepared()
}

impl Store {
    /// The organization `org_ref` names, with `user_id`'s access if a member, in
    /// one query; for trusted callers only, as it tells a missing organization
    /// from a foreign one.
    pub async fn org_and_access(
        &self,
        org_ref: &OrgRef,
        user_id: Uuid,
    ) -> Result<Option<(OrgRow, Option<MemberAccess>)>> {
        self.read(|conn| {
            async move {
                let query = org_keyed(ORG_ACCESS, org_ref, |q| {
                    q.bind::<diesel::sql_types::Uuid, _>(user_id)
                });
                let row: Option<OrgAccessRow> = query.get_result(conn).await.optional()?;
                Ok(row.map(OrgAccessRow::split))
            }
            .scope_boxed()
        })
        .await
    }

    /// The known user of `identity` with the organization `org_ref` names and
    /// their access to it, in one query — the common case of every call a
    /// signed-in user makes in an organization. `None` when the user is new,
    /// their profile changed or the organization is unknown: then
    /// `ensure_user` and `org_and_access` take over.
    pub async fn signed_in_access(
        &self,
        identity: &Identity,
        org_ref: &OrgRef,
    ) -> Result<Option<(User, OrgRow, Option<MemberAccess>)>> {
        let row: Option<SignedInAccessRow> = self
            .read(|conn| {
                async move {
                    let query = org_keyed(SIGNED_IN_ACCESS, org_ref, |q| {
                        q.bind::<diesel::sql_types::Text, _>(identity.subject.clone())
                    });
                    Ok(query.get_result(conn).await.optional()?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(row.and_then(|row| {
            let user = User::from(row.user);
            let (org, access) = row.access.split();
            user.matches(identity).then_some((user, org, access))
        }))
    }

    /// The caller behind an API token's `secret`, with the token's organization
    /// and its creator's access there, in one query. UNAUTHENTICATED for an
    /// unknown, revoked, expired or deactivated (its creator left) token.
    pub async fn token_session(&self, secret: &str) -> Result<(TokenCaller, OrgRow, MemberAccess)> {
        let hash = Secret::hash(secret);
        let hash = &hash;
        self.read(|conn| {
            async move {
                let row: TokenAccessRow = diesel::sql_query(TOKEN_SESSION)
                    .bind::<diesel::sql_types::Bytea, _>(hash.as_slice())
                    .prepared()
                    .get_result(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| refused("is not valid"))?;
                let (org, access) = row.access.split();
                let (caller, access) = admit_token(conn, row.token, &org, access).await?;
                Ok((caller, org, access))
            }
            .scope_boxed()
        })
        .await
    }

    /// The organization `org_ref` names; for trusted callers only.
    pub async fn find_org(&self, org_ref: &OrgRef) -> Result<Option<OrgRow>> {
        self.read(|conn| find_org(conn, org_ref).scope_boxed())
            .await
    }

    /// A page of `user_id`'s live memberships with their roles and permissions.
    pub async fn memberships_of_user(
        &self,
        user_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<MembershipView>, String)> {
        let (orgs, next) = self.list_orgs_of_user(user_id, page, false).await?;
        let org_ids: Vec<Uuid> = orgs.iter().map(|listed| listed.org.id).collect();
        let mut access = self
            .read(|conn| async move { access_in(conn, user_id, &org_ids).await }.scope_boxed())
            .await?;
        let views = orgs
            .into_iter()
            .map(|ListedOrg { org, joined_at }| {
                let access = access.remove(&org.id).unwrap_or(MemberAccess {
                    joined_at,
                    ..Default::default()
                });
                MembershipView { org, access }
            })
            .collect();
        Ok((views, next))
    }
}
