//! Users, created on first sight of an identity-provider subject together with
//! their personal organization.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::orgs::{self, NewOrg};
use super::schema::{organizations, users};
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, DisplayName, Email, Slug, UserRef};
use crate::error::{Error, Result};

/// What the identity provider says about a subject.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub display_name: String,
}

impl Identity {
    /// The email address, if the identity provider verified it and it is valid.
    pub fn verified_email(&self) -> Option<Email> {
        verified(&self.email, self.email_verified)
    }
}

fn verified(email: &str, email_verified: bool) -> Option<Email> {
    email_verified
        .then(|| Email::parse("email", email).ok())
        .flatten()
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: Uuid,
    /// `None` once the account is deleted: the subject is detached, so that a
    /// later sign-in with it starts a fresh user.
    pub subject: Option<String>,
    pub email: String,
    pub email_verified: bool,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    /// How many organizations support lets this user belong to, if not the
    /// service's `--max-orgs-per-user`.
    pub organization_limit: Option<i32>,
}

/// A user and their personal organization.
#[derive(Debug, Clone)]
pub struct User {
    pub row: UserRow,
    pub personal_org_id: Uuid,
}

impl User {
    /// The user's email address, if verified and valid.
    pub fn verified_email(&self) -> Option<Email> {
        verified(&self.row.email, self.row.email_verified)
    }

    pub(super) fn matches(&self, identity: &Identity) -> bool {
        self.row.email == identity.email
            && self.row.email_verified == identity.email_verified
            && self.row.display_name == identity.display_name
    }
}

/// The columns of a user `u` and their personal organization `p`, named
/// `user_*` so that a query can read them beside another table's `id`. A macro
/// so that queries can `concat!` it.
macro_rules! prefixed_user_columns {
    () => {
        "u.id AS user_id, u.subject AS user_subject, u.email AS user_email,
         u.email_verified AS user_email_verified, u.display_name AS user_display_name,
         u.created_at AS user_created_at, u.organization_limit AS user_organization_limit,
         p.id AS personal_org_id"
    };
}
pub(super) use prefixed_user_columns;

/// A row's `prefixed_user_columns!()`.
#[derive(QueryableByName)]
pub(super) struct PrefixedUser {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    user_subject: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_email: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    user_email_verified: bool,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_display_name: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    user_created_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    user_organization_limit: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    personal_org_id: Uuid,
}

impl From<PrefixedUser> for User {
    fn from(user: PrefixedUser) -> Self {
        User {
            row: UserRow {
                id: user.user_id,
                subject: user.user_subject,
                email: user.user_email,
                email_verified: user.user_email_verified,
                display_name: user.user_display_name,
                created_at: user.user_created_at,
                organization_limit: user.user_organization_limit,
            },
            personal_org_id: user.personal_org_id,
        }
    }
}

/// How a user is looked up.
pub(super) enum UserKey<'a> {
    Subject(&'a str),
    Id(Uuid),
}

/// A user with their personal organization; a deleted account is no user.
pub(super) async fn find_user(conn: &mut Conn, key: UserKey<'_>) -> Result<Option<User>> {
    let query = users::table
        .inner_join(
            organizations::table.on(organizations::personal_owner_id.eq(users::id.nullable())),
        )
        .filter(users::deleted_at.is_null())
        .select((UserRow::as_select(), organizations::id))
        .into_boxed();
    let query = match key {
        UserKey::Subject(subject) => query.filter(users::subject.eq(subject)),
        UserKey::Id(id) => query.filter(users::id.eq(id)),
    };
    let found: Option<(UserRow, Uuid)> = query.first(conn).await.optional()?;
    Ok(found.map(|(row, personal_org_id)| User {
        row,
        personal_org_id,
    }))
}

impl Store {
    /// Returns the user of `identity`, creating it and its personal organization on
    /// first sight and refreshing its profile when the identity provider changed it.
    pub async fn ensure_user(&self, identity: &Identity, request_id: &str) -> Result<User> {
        let known = self.known_user(identity).await?;
        if let Some(user) = &known
            && user.matches(identity)
        {
            return Ok(user.clone());
        }
        self.write(|conn| async move { upsert(conn, identity, request_id).await }.scope_boxed())
            .await
    }

    /// The user of `identity`, if orgd knows them; never creates one.
    pub async fn known_user(&self, identity: &Identity) -> Result<Option<User>> {
        self.read(|conn| {
            async move { find_user(conn, UserKey::Subject(&identity.subject)).await }.scope_boxed()
        })
        .await
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        self.read(|conn| find_user(conn, UserKey::Id(id)).scope_boxed())
            .await
    }

    pub async fn user_by_subject(&self, subject: &str) -> Result<Option<User>> {
        self.read(|conn| find_user(conn, UserKey::Subject(subject)).scope_boxed())
            .await
    }

    /// Sets how many organizations `user_id` may belong to (`None`: the
    /// service's limit), audited. Memberships beyond a lowered limit are kept;
    /// the user joins or creates no more until under it. Takes the user's row
    /// lock, as joining does, so no join slips past a limit being lowered.
    pub async fn set_organization_limit(
        &self,
        actor: &Actor,
        user_id: Uuid,
        limit: Option<i32>,
    ) -> Result<User> {
        self.write(|conn| {
            async move {
                let updated = diesel::update(
                    users::table
                        .find(user_id)
                        .filter(users::deleted_at.is_null()),
                )
                .set((
                    users::organization_limit.eq(limit),
                    users::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
                if updated == 0 {
                    return Err(Error::NotFound(format!(
                        "user {} not found",
                        UserRef::name_of(user_id)
                    )));
                }
                audit::record(
                    conn,
                    actor,
                    None,
                    Action::UserUpdate,
                    &UserRef::name_of(user_id),
                    serde_json::json!({
                        "fields": ["organization_limit"],
                        "organization_limit": limit,
                    }),
                )
                .await?;
                Ok(find_user(conn, UserKey::Id(user_id))
                    .await?
                    .expect("the user row was just updated"))
            }
            .scope_boxed()
        })
        .await
    }
}

async fn upsert(conn: &mut Conn, identity: &Identity, request_id: &str) -> Result<User> {
    let inserted: Option<UserRow> = diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::subject.eq(&identity.subject),
            users::email.eq(&identity.email),
            users::email_verified.eq(identity.email_verified),
            users::display_name.eq(&identity.display_name),
        ))
        .on_conflict(users::subject)
        .do_nothing()
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;

    let Some(row) = inserted else {
        return refresh_profile(conn, identity, request_id).await;
    };

    let actor = Actor {
        user_id: Some(row.id),
        label: UserRef::name_of(row.id),
        request_id: request_id.to_owned(),
        token: None,
    };
    audit::record(
        conn,
        &actor,
        None,
        Action::UserCreate,
        &actor.label,
        serde_json::json!({ "subject": row.subject }),
    )
    .await?;

    let display_name = personal_org_name(identity);
    let org = orgs::insert_with_owner(
        conn,
        &actor,
        NewOrg {
            slug: Slug::derive(display_name.as_str()),
            slug_is_explicit: false,
            display_name,
            description: None,
            contact_email: identity
                .verified_email()
                .map_or_else(String::new, |e| e.as_str().to_owned()),
            personal_owner_id: Some(row.id),
            plan: None,
        },
    )
    .await?;
    Ok(User {
        row,
        personal_org_id: org.id,
    })
}

/// Brings a known user's profile in line with the identity provider's, auditing
/// what changed. The row lock makes concurrent refreshes write (and audit) once.
async fn refresh_profile(conn: &mut Conn, identity: &Identity, request_id: &str) -> Result<User> {
    let row: UserRow = users::table
        .filter(users::subject.eq(&identity.subject))
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .await?;
    let changed: Vec<&str> = [
        ("email", row.email != identity.email),
        (
            "email_verified",
            row.email_verified != identity.email_verified,
        ),
        ("display_name", row.display_name != identity.display_name),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    if !changed.is_empty() {
        diesel::update(users::table.find(row.id))
            .set((
                users::email.eq(&identity.email),
                users::email_verified.eq(identity.email_verified),
                users::display_name.eq(&identity.display_name),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .prepared()
            .execute(conn)
            .await?;
        let actor = Actor {
            user_id: Some(row.id),
            label: UserRef::name_of(row.id),
            request_id: request_id.to_owned(),
            token: None,
        };
        let details = serde_json::json!({ "fields": changed });
        audit::record(
            conn,
            &actor,
            None,
            Action::UserUpdate,
            &actor.label,
            details,
        )
        .await?;
    }
    Ok(find_user(conn, UserKey::Subject(&identity.subject))
        .await?
        .expect("the user row exists"))
}

/// The personal organization is named after its user.
fn personal_org_name(identity: &Identity) -> DisplayName {
    let local_part = identity.email.split('@').next().unwrap_or_default();
    [
        identity.display_name.as_str(),
        local_part,
        identity.subject.as_str(),
    ]
    .into_iter()
    .find_map(|candidate| {
        DisplayName::parse("name", &candidate.chars().take(100).collect::<String>()).ok()
    })
    .unwrap_or_else(|| DisplayName::parse("name", "Personal").expect("a valid name"))
}
