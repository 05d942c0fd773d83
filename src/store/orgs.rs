//! Organizations: create, list and update (deleting one is `org_deletion`'s,
//! the contact email's verification `contact_email`'s). Each mutation locks the
//! rows its invariant depends on and writes its audit record in the same
//! transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::contact_email::{set_pending_contact_email, start_contact_email_change};
use super::org_row::{OrgRow, lock_org};
use super::paging::oldest_first_after;
use super::proof::OrgAccess;
use super::schema::{create_requests, membership_roles, memberships, organizations, users};
use super::verification::Requester;
use super::{Actor, Conn, KeepPrepared, Store, audit, billing_profiles, both, subscription_row};
use crate::domain::{
    Action, Description, DisplayName, Email, Etag, PageRequest, PageToken, Permission, Slug,
    UserRef, count,
};
use crate::error::{Error, Result};

/// How many derived-slug suffixes to try before giving up.
const SLUG_ATTEMPTS: usize = 8;

/// Its home before billing profiles shared it; the server still names it here.
pub use super::verification::ContactVerification;

/// Limits that creating and restoring organizations must respect.
#[derive(Debug, Clone, Copy)]
pub struct OrgLimits {
    pub max_orgs_per_user: i64,
}

pub struct NewOrg {
    pub slug: Slug,
    /// An explicit slug must be free; a derived one gets a suffix until it is.
    pub slug_is_explicit: bool,
    pub display_name: DisplayName,
    pub description: Option<Description>,
    pub contact_email: String,
    pub personal_owner_id: Option<Uuid>,
    /// The plan to subscribe to; `None` for the free plan.
    pub plan: Option<String>,
}

/// The fields an update changes; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct OrgChanges {
    pub display_name: Option<DisplayName>,
    pub description: Option<Description>,
    pub slug: Option<Slug>,
    pub contact_email: Option<Email>,
}

impl OrgChanges {
    fn field_names(&self) -> Vec<&'static str> {
        [
            ("display_name", self.display_name.is_some()),
            ("description", self.description.is_some()),
            ("slug", self.slug.is_some()),
            ("contact_email", self.contact_email.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Inserts an organization with `actor` as its owner and audits it.
pub async fn insert_with_owner(conn: &mut Conn, actor: &Actor, new: NewOrg) -> Result<OrgRow> {
    let owner_id = actor.user_id.expect("organizations are created by users");
    let mut slug = new.slug.clone();
    let org = loop {
        let inserted: Option<OrgRow> = diesel::insert_into(organizations::table)
            .values((
                organizations::id.eq(Uuid::now_v7()),
                organizations::slug.eq(slug.as_str()),
                organizations::display_name.eq(new.display_name.as_str()),
                organizations::description.eq(new.description.as_ref().map_or("", |d| d.as_str())),
                organizations::contact_email.eq(&new.contact_email),
                organizations::personal_owner_id.eq(new.personal_owner_id),
            ))
            .on_conflict(organizations::slug)
            .do_nothing()
            .returning(OrgRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        match inserted {
            Some(org) => break org,
            None if new.slug_is_explicit => return Err(slug_taken(&slug)),
            None => slug = free_slug_candidate(conn, &new.slug).await?,
        }
    };
    diesel::insert_into(memberships::table)
        .values((
            memberships::org_id.eq(org.id),
            memberships::user_id.eq(owner_id),
        ))
        .execute(conn)
        .await?;
    diesel::insert_into(membership_roles::table)
        .values((
            membership_roles::org_id.eq(org.id),
            membership_roles::user_id.eq(owner_id),
            membership_roles::role.eq("owner"),
        ))
        .execute(conn)
        .await?;
    subscription_row::open_subscription(conn, org.id, new.plan.as_deref()).await?;
    billing_profiles::create_profile(conn, org.id).await?;
    audit::record(
        conn,
        actor,
        Some(org.id),
        Action::OrganizationCreate,
        &org.name(),
        serde_json::json!({ "slug": org.slug, "display_name": org.display_name, "personal": org.personal_owner_id.is_some() }),
    )
    .await?;
    Ok(org)
}

/// A random-suffixed variant of `base` that is not taken right now.
async fn free_slug_candidate(conn: &mut Conn, base: &Slug) -> Result<Slug> {
    for _ in 0..SLUG_ATTEMPTS {
        let candidate = base.with_suffix(&Uuid::new_v4().simple().to_string()[..6]);
        if !slug_in_use(conn, &candidate).await? {
            return Ok(candidate);
        }
    }
    Err(Error::Internal(anyhow::anyhow!(
        "no free slug found for {base}"
    )))
}

async fn slug_in_use(conn: &mut Conn, slug: &Slug) -> Result<bool> {
    let query = organizations::table.filter(organizations::slug.eq(slug.as_str()));
    Ok(diesel::select(diesel::dsl::exists(query))
        .get_result(conn)
        .await?)
}

fn slug_taken(slug: &Slug) -> Error {
    Error::AlreadyExists(format!(
        "the slug '{slug}' is already taken by another organization; choose another"
    ))
}

/// How many live organizations a user belongs to, and the most they may.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrgRoom {
    pub held: i64,
    pub most: i64,
}

impl OrgRoom {
    pub fn is_full(self) -> bool {
        self.held >= self.most
    }
}

/// Locks a user's row so concurrent membership changes of that user serialize,
/// then counts the live organizations they belong to, against their own limit
/// if support set one, else the service's. `NO KEY UPDATE` does not conflict
/// with the `KEY SHARE` locks that foreign keys to the user take (e.g.
/// `memberships.invited_by`), which would otherwise order user locks by whoever
/// invited whom and deadlock.
pub(super) async fn lock_org_room(
    conn: &mut Conn,
    user_id: Uuid,
    limits: OrgLimits,
) -> Result<OrgRoom> {
    // A deleted account joins nothing, even if it was deleted while this waited.
    let own_limit: Option<i32> = users::table
        .find(user_id)
        .filter(users::deleted_at.is_null())
        .select(users::organization_limit)
        .for_no_key_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{} not found: the account was deleted",
                UserRef::name_of(user_id)
            ))
        })?;
    let held = memberships::table
        .inner_join(organizations::table)
        .filter(memberships::user_id.eq(user_id))
        .filter(organizations::deleted_at.is_null())
        .count()
        .get_result(conn)
        .await?;
    Ok(OrgRoom {
        held,
        most: own_limit.map_or(limits.max_orgs_per_user, i64::from),
    })
}

/// Whose organization limit `too_many_orgs` refuses to exceed.
#[derive(Clone, Copy)]
pub(super) enum Whose {
    /// The caller's: they are about to create or join one more.
    Yours,
    /// Another member's, whom restoring an organization would bring back.
    Members,
}

pub(super) fn too_many_orgs(whose: Whose, user_id: Uuid, room: OrgRoom) -> Error {
    let most = count(room.most, "organization");
    let message = match whose {
        Whose::Yours => format!(
            "you already belong to {most}, the most you may; leave or delete one first, \
             or ask support to raise your limit"
        ),
        Whose::Members => format!(
            "restoring it would bring back users/{user_id}, who already belongs to {most}, \
             the most they may; they must leave or delete one first"
        ),
    };
    Error::precondition(
        "ORGANIZATION_LIMIT",
        crate::domain::UserRef::name_of(user_id),
        message,
    )
}

pub struct CreateOrg {
    /// Idempotency key: a retry with the same id returns the first result.
    pub request_id: Option<Uuid>,
    /// The plan a new team organization subscribes to (None: the free plan).
    pub plan: Option<String>,
    pub display_name: DisplayName,
    pub slug: Option<Slug>,
    pub description: Option<Description>,
    pub contact_email: Option<Email>,
    /// What changing the contact email takes (UpdateOrganization's policy): a
    /// pending one the creator asks for holds while they hold it.
    pub contact_permission: Permission,
}

/// An organization in a listing, with when the listed user joined it.
pub struct ListedOrg {
    pub org: OrgRow,
    pub joined_at: DateTime<Utc>,
}

impl Store {
    /// Creates an organization owned by `actor`. The contact email defaults to
    /// the creator's verified email, if any; any other address is pending until
    /// verified, asked for by the creator.
    pub async fn create_org(
        &self,
        actor: &Actor,
        creator_email: Option<&Email>,
        input: CreateOrg,
        limits: OrgLimits,
        verification: &ContactVerification,
    ) -> Result<OrgRow> {
        let owner_id = actor.user_id.expect("organizations are created by users");
        let input = &input;
        self.write(|conn| {
            async move {
                let room = lock_org_room(conn, owner_id, limits).await?;
                if let Some(request_id) = input.request_id {
                    // A replay answers with the organization as it is now, so
                    // only to a caller who may still see it.
                    let still_member = diesel::dsl::exists(
                        memberships::table
                            .filter(memberships::org_id.eq(create_requests::org_id))
                            .filter(memberships::user_id.eq(owner_id)),
                    );
                    let earlier: Option<(OrgRow, bool)> = create_requests::table
                        .inner_join(
                            organizations::table.on(organizations::id.eq(create_requests::org_id)),
                        )
                        .filter(create_requests::user_id.eq(owner_id))
                        .filter(create_requests::request_id.eq(request_id))
                        .select((OrgRow::as_select(), still_member))
                        .first(conn)
                        .await
                        .optional()?;
                    match earlier {
                        Some((org, true)) => return Ok(org),
                        Some((_, false)) => {
                            return Err(Error::precondition(
                                "REQUEST_ID_USED",
                                "request_id",
                                "this request_id already created an organization you are no longer a member of; send a new request_id to create another",
                            ));
                        }
                        None => {}
                    }
                }
                if room.is_full() {
                    return Err(too_many_orgs(Whose::Yours, owner_id, room));
                }
                let org = insert_with_owner(
                    conn,
                    actor,
                    NewOrg {
                        slug: input
                            .slug
                            .clone()
                            .unwrap_or_else(|| Slug::derive(input.display_name.as_str())),
                        slug_is_explicit: input.slug.is_some(),
                        display_name: input.display_name.clone(),
                        description: input.description.clone(),
                        contact_email: creator_email
                            .map_or_else(String::new, |e| e.as_str().to_owned()),
                        personal_owner_id: None,
                        plan: input.plan.clone(),
                    },
                )
                .await?;
                if let Some(request_id) = input.request_id {
                    diesel::insert_into(create_requests::table)
                        .values((
                            create_requests::user_id.eq(owner_id),
                            create_requests::request_id.eq(request_id),
                            create_requests::org_id.eq(org.id),
                        ))
                        .execute(conn)
                        .await?;
                }
                match &input.contact_email {
                    Some(email) if Some(email) != creator_email => {
                        let requester = Requester {
                            user_id: owner_id,
                            permission: input.contact_permission.clone(),
                        };
                        start_contact_email_change(conn, &org, email, &requester, verification)
                            .await?;
                        lock_org(conn, org.id).await
                    }
                    _ => Ok(org),
                }
            }
            .scope_boxed()
        })
        .await
    }

    /// The organizations `user_id` belongs to, oldest membership first.
    pub async fn list_orgs_of_user(
        &self,
        user_id: Uuid,
        page: PageRequest,
        show_deleted: bool,
    ) -> Result<(Vec<ListedOrg>, String)> {
        let rows: Vec<(OrgRow, DateTime<Utc>)> = self
            .read(|conn| {
                async move {
                    let mut query = memberships::table
                        .inner_join(organizations::table)
                        .filter(memberships::user_id.eq(user_id))
                        .select((OrgRow::as_select(), memberships::created_at))
                        .order((memberships::created_at, memberships::org_id))
                        .limit(page.limit + 1)
                        .into_boxed();
                    if !show_deleted {
                        query = query.filter(organizations::deleted_at.is_null());
                    }
                    if let Some(after) = page.after {
                        query = query.filter(oldest_first_after!(
                            memberships::created_at,
                            memberships::org_id,
                            after
                        ));
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        let rows = rows
            .into_iter()
            .map(|(org, joined_at)| ListedOrg { org, joined_at })
            .collect();
        Ok(page.finish(rows, |r: &ListedOrg| PageToken {
            time: r.joined_at,
            id: r.org.id,
        }))
    }

    pub async fn update_org(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        changes: OrgChanges,
        etag: Option<Etag>,
        verification: &ContactVerification,
    ) -> Result<OrgRow> {
        let changes = &changes;
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let org = &change.org;
                org.check_etag(etag)?;
                if let Some(slug) = &changes.slug
                    && slug.as_str() != org.slug
                    && slug_in_use(conn, slug).await?
                {
                    return Err(slug_taken(slug));
                }
                match &changes.contact_email {
                    Some(email) if email.as_str() == org.contact_email => {
                        set_pending_contact_email(conn, org_id, None).await?
                    }
                    Some(email) => {
                        let requester = Requester::of(&change, access)?;
                        start_contact_email_change(conn, org, email, &requester, verification)
                            .await?
                    }
                    None => {}
                }
                // Each set of changed fields is its own statement text, kept prepared.
                let update = diesel::update(organizations::table.find(org_id))
                    .set((
                        changes
                            .display_name
                            .as_ref()
                            .map(|v| organizations::display_name.eq(v.as_str())),
                        changes
                            .description
                            .as_ref()
                            .map(|v| organizations::description.eq(v.as_str())),
                        changes
                            .slug
                            .as_ref()
                            .map(|v| organizations::slug.eq(v.as_str())),
                        organizations::revision.eq(organizations::revision + 1),
                        organizations::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(OrgRow::as_returning())
                    .prepared()
                    .get_result::<OrgRow>(&mut &*conn);
                // The audit record needs nothing from the update: both go out together.
                let (updated, ()) = both(
                    async {
                        update.await.map_err(|err| match (err, &changes.slug) {
                            // A concurrent rename took the slug after our check.
                            (
                                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _),
                                Some(slug),
                            ) => slug_taken(slug),
                            (other, _) => other.into(),
                        })
                    },
                    audit::record(
                        conn,
                        actor,
                        Some(org_id),
                        Action::OrganizationUpdate,
                        &org.name(),
                        serde_json::json!({ "fields": changes.field_names() }),
                    ),
                )
                .await?;
                Ok(updated)
            }
            .scope_boxed()
        })
        .await
    }
}
