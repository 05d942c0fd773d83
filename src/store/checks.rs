//! Backend services' questions about permissions: may this user do that there
//! (one question or a batch of them, in one statement), where may they do it,
//! who may do it there. Each is answered from the database when it is asked,
//! so a role change or a removal shows in the very next answer; each reads
//! through indexes, at a cost independent of the number of organizations.

use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::access::find_org;
use super::catalog::Catalog;
use super::members::{MemberView, Selection, load_members};
use super::org_row::{OrgRow, org_columns};
use super::schema::permissions;
use super::standing::holds;
use super::{Conn, KeepPrepared, Store, both};
use crate::domain::{OrgRef, PageRequest, PageToken, Permission, UserName, unknown_name};
use crate::error::{Error, Result};

/// "May `user` do `permission` in `org`?"
#[derive(Debug, Clone)]
pub struct Question {
    pub org: OrgRef,
    pub user: UserName,
    pub permission: Permission,
}

/// An answer and why it is what it is, from most to least decisive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    OrganizationNotFound,
    OrganizationDeleted,
    NotMember,
    LacksPermission,
    Allowed,
}

/// One row of `CHECKS`: what decides an answer, read together.
#[derive(QueryableByName)]
struct Facts {
    #[diesel(sql_type = Bool)]
    org_found: bool,
    #[diesel(sql_type = Bool)]
    org_deleted: bool,
    #[diesel(sql_type = Bool)]
    permission_exists: bool,
    #[diesel(sql_type = Bool)]
    member: bool,
    #[diesel(sql_type = Bool)]
    allowed: bool,
}

impl Facts {
    /// `None` when orgd defines no such permission: a mistake, not an answer.
    fn verdict(&self) -> Option<Verdict> {
        if !self.permission_exists {
            return None;
        }
        Some(if !self.org_found {
            Verdict::OrganizationNotFound
        } else if self.org_deleted {
            Verdict::OrganizationDeleted
        } else if !self.member {
            Verdict::NotMember
        } else if !self.allowed {
            Verdict::LacksPermission
        } else {
            Verdict::Allowed
        })
    }
}

/// The facts of each question of `$source`, a relation `x` of the
/// organization's id or slug, the user's id or subject (the other one NULL),
/// the permission and the question's position. Each question is looked up
/// through the unique indexes of organizations and users, the memberships'
/// primary key and `holds!`. A user orgd does not know is simply no member.
macro_rules! checks {
    ($source:literal) => {
        concat!(
            "SELECT o.id IS NOT NULL AS org_found,
                    o.deleted_at IS NOT NULL AS org_deleted,
                    EXISTS (SELECT 1 FROM permissions p WHERE p.name = x.permission) AS permission_exists,
                    m.user_id IS NOT NULL AS member, ",
            holds!("x.permission"),
            " AS allowed
               FROM ",
            $source,
            " AS x (org_id, slug, user_id, subject, permission, position)
               LEFT JOIN organizations o
                 ON o.id = COALESCE(x.org_id, (SELECT s.id FROM organizations s WHERE s.slug = x.slug))
               LEFT JOIN memberships m
                 ON m.org_id = o.id
                AND m.user_id = COALESCE(x.user_id, (SELECT u.id FROM users u WHERE u.subject = x.subject))
              ORDER BY x.position"
        )
    };
}

/// Any number of questions, as five aligned arrays: one statement whatever
/// their number.
const CHECKS: &str =
    checks!("unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[]) WITH ORDINALITY");

/// One question, as five scalars. Asked as one-element arrays, it was planned
/// afresh at every execution (0.4 ms of planning for 0.07 ms of execution):
/// a custom plan knows the arrays' length, so it always looks cheaper than the
/// generic one and the plan cache never settles. With scalars, the two cost the
/// same and the generic plan is kept after the fifth execution (BENCHMARKS.md,
/// item 29).
const CHECK_ONE: &str =
    checks!("(VALUES ($1::uuid, $2::text, $3::uuid, $4::text, $5::text, 1::bigint))");

/// The live organizations `o` where the user with id `$1` or subject `$2`
/// holds permission `$3`, in the order the user joined them, from the
/// user's memberships (`memberships_user`). `$filter` narrows them to a page.
macro_rules! orgs_holding {
    ($filter:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            org_columns!(),
            ", m.created_at AS joined_at
               FROM memberships m
               JOIN organizations o ON o.id = m.org_id
              WHERE m.user_id = COALESCE($1, (SELECT u.id FROM users u WHERE u.subject = $2))
                AND o.deleted_at IS NULL AND ",
            holds!("$3"),
            $filter,
            " ORDER BY m.created_at, m.org_id ",
            $limit
        )
    };
}

/// The first `$4` organizations of `orgs_holding!`.
const FIRST_ORGS_HOLDING: &str = orgs_holding!("", "LIMIT $4");
/// The `$6` organizations of `orgs_holding!` after keyset position (`$4`, `$5`).
const ORGS_HOLDING_AFTER: &str =
    orgs_holding!(" AND (m.created_at, m.org_id) > ($4, $5)", "LIMIT $6");

/// One row of `orgs_holding!`.
#[derive(QueryableByName)]
struct HoldingOrg {
    #[diesel(embed)]
    org: OrgRow,
    #[diesel(sql_type = Timestamptz)]
    joined_at: chrono::DateTime<chrono::Utc>,
}

/// The refusal of a question about `name`, a permission orgd does not define:
/// read only on this rare path, it lists the ones it does, and the closest.
pub fn unknown_permission(field: &str, name: &str, defined: &[String]) -> Error {
    Error::invalid(field, unknown_name("permission", name, defined))
}

/// Whether orgd defines permission `name`.
async fn permission_defined(conn: &Conn, name: &str) -> Result<bool> {
    Ok(
        diesel::select(diesel::dsl::exists(permissions::table.find(name)))
            .get_result(&mut &*conn)
            .await?,
    )
}

/// The id and the subject of `user`, one of them `None`, as the queries bind them.
fn user_key(user: &UserName) -> (Option<Uuid>, Option<&str>) {
    match user {
        UserName::Id(id) => (Some(*id), None),
        UserName::Subject(subject) => (None, Some(subject)),
    }
}

impl Store {
    /// Whether orgd defines permission `name`.
    pub async fn permission_exists(&self, name: &str) -> Result<bool> {
        self.read(|conn| permission_defined(conn, name).scope_boxed())
            .await
    }

    /// The permissions orgd defines, by name.
    pub async fn permission_names(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            async move { Ok(Catalog::load(conn).await?.permissions().to_vec()) }.scope_boxed()
        })
        .await
    }

    /// The verdict on each of `questions`, in their order, from one statement:
    /// `None` where the permission is one orgd does not define.
    pub async fn check_permissions(&self, questions: &[&Question]) -> Result<Vec<Option<Verdict>>> {
        let mut org_ids = Vec::with_capacity(questions.len());
        let mut slugs = Vec::with_capacity(questions.len());
        let mut user_ids = Vec::with_capacity(questions.len());
        let mut subjects = Vec::with_capacity(questions.len());
        let mut names = Vec::with_capacity(questions.len());
        for question in questions {
            let (org_id, slug) = match &question.org {
                OrgRef::Id(id) => (Some(*id), None),
                OrgRef::Slug(slug) => (None, Some(slug.as_str())),
            };
            let (user_id, subject) = user_key(&question.user);
            org_ids.push(org_id);
            slugs.push(slug);
            user_ids.push(user_id);
            subjects.push(subject);
            names.push(&*question.permission);
        }
        let facts: Vec<Facts> = self
            .read(|conn| {
                async move {
                    let query = if names.len() == 1 {
                        diesel::sql_query(CHECK_ONE)
                            .into_boxed()
                            .bind::<Nullable<SqlUuid>, _>(org_ids[0])
                            .bind::<Nullable<Text>, _>(slugs[0])
                            .bind::<Nullable<SqlUuid>, _>(user_ids[0])
                            .bind::<Nullable<Text>, _>(subjects[0])
                            .bind::<Text, _>(names[0])
                    } else {
                        diesel::sql_query(CHECKS)
                            .into_boxed()
                            .bind::<Array<Nullable<SqlUuid>>, _>(&org_ids)
                            .bind::<Array<Nullable<Text>>, _>(&slugs)
                            .bind::<Array<Nullable<SqlUuid>>, _>(&user_ids)
                            .bind::<Array<Nullable<Text>>, _>(&subjects)
                            .bind::<Array<Text>, _>(&names)
                    };
                    Ok(query.prepared().load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(facts.iter().map(Facts::verdict).collect())
    }

    /// A page of the live organizations where `user` holds `permission`.
    pub async fn lookup_orgs(
        &self,
        user: &UserName,
        permission: &Permission,
        page: PageRequest,
    ) -> Result<(Vec<OrgRow>, String)> {
        let (user_id, subject) = user_key(user);
        let rows: Vec<HoldingOrg> = self
            .read(|conn| {
                async move {
                    let query = |sql| {
                        diesel::sql_query(sql)
                            .into_boxed()
                            .bind::<Nullable<SqlUuid>, _>(user_id)
                            .bind::<Nullable<Text>, _>(subject)
                            .bind::<Text, _>(&**permission)
                    };
                    let query = match page.after {
                        None => query(FIRST_ORGS_HOLDING),
                        Some(after) => query(ORGS_HOLDING_AFTER)
                            .bind::<Timestamptz, _>(after.time)
                            .bind::<SqlUuid, _>(after.id),
                    }
                    .bind::<Int8, _>(page.limit + 1)
                    .prepared();
                    let mut shared: &Conn = conn;
                    // Both go out together: one round trip.
                    let (defined, rows) = both(permission_defined(conn, permission), async {
                        Ok(query.load(&mut shared).await?)
                    })
                    .await?;
                    if !defined {
                        let catalog = Catalog::load(conn).await?;
                        return Err(catalog.unknown_permission("permission", permission));
                    }
                    Ok(rows)
                }
                .scope_boxed()
            })
            .await?;
        let (rows, next) = page.finish(rows, |row: &HoldingOrg| PageToken {
            time: row.joined_at,
            id: row.org.id,
        });
        Ok((rows.into_iter().map(|row| row.org).collect(), next))
    }

    /// A page of the members of the organization `org_ref` names who hold
    /// `permission`: none while it is soft-deleted, as it grants nothing then.
    pub async fn lookup_members(
        &self,
        org_ref: &OrgRef,
        permission: &Permission,
        page: PageRequest,
    ) -> Result<(Vec<MemberView>, String)> {
        let members = self
            .read(|conn| {
                async move {
                    let org = find_org(conn, org_ref).await?.ok_or_else(|| {
                        Error::NotFound(format!("organization {} not found", org_ref.name()))
                    })?;
                    let selection = Selection::Page {
                        after: page.after,
                        limit: page.limit + 1,
                        holding: Some(permission),
                    };
                    let (members, catalog) = load_members(conn, org.id, selection).await?;
                    if !catalog.defines_permission(permission) {
                        return Err(catalog.unknown_permission("permission", permission));
                    }
                    Ok(if org.deleted_at.is_some() {
                        Vec::new()
                    } else {
                        members
                    })
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(members, |m: &MemberView| PageToken {
            time: m.access.joined_at,
            id: m.user_id,
        }))
    }
}
