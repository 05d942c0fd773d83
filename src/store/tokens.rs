//! API tokens: created within their creator's grant, stored only as a hash,
//! resolved on every call to the creator plus the token's limit.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::catalog::Catalog;
use super::change::actor_id;
use super::org_row::OrgRow;
use super::paging::newest_first_after;
use super::proof::{OrgAccess, Reach};
use super::schema::{api_tokens, memberships};
use super::standing::MemberAccess;
use super::users::{PrefixedUser, User};
use super::{Actor, Conn, KeepPrepared, Store, TokenLimit, audit};
use crate::domain::{Action, ChildName, Names, PageRequest, PageToken, Secret, UserRef};
use crate::error::{Error, Result};

pub const API_TOKENS: &str = "apiTokens";
/// Every API token starts with this, so that it is recognisable (e.g. by secret
/// scanners) and told apart from identity-provider tokens.
pub const SECRET_PREFIX: &str = "orgd_";
/// How much of a secret is kept in clear to tell tokens apart.
const SHOWN_PREFIX_LEN: usize = SECRET_PREFIX.len() + 4;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg))]
pub struct ApiTokenRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub creator_id: Uuid,
    pub display_name: String,
    pub prefix: String,
    pub roles: Vec<String>,
    pub extra_permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiTokenRow {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, API_TOKENS, self.id)
    }
}

pub struct NewApiToken {
    pub display_name: String,
    pub roles: Names,
    pub permissions: Names,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A caller authenticated by an API token: its creator, and what it may do.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    pub user: User,
    pub org_id: Uuid,
    pub limit: TokenLimit,
}

/// How precisely a token's last use is recorded.
const LAST_USE_RESOLUTION: chrono::Duration = chrono::Duration::minutes(1);

/// A token `t` with its creator `u` (and their personal organization `p`):
/// `(columns)` are what decide whether the token may be used, the permissions
/// its roles and extra grants add up to, and the creator; `(tables)` joins them.
/// A macro so that queries can `concat!` it.
macro_rules! token_with_creator {
    (columns) => {
        concat!(
            "t.id AS token_id, t.org_id AS token_org_id, t.roles AS token_roles,
             ARRAY(",
            $crate::store::standing::with_implied!(
                "SELECT rp.permission FROM role_permissions rp WHERE rp.role = ANY (t.roles)
                 UNION ALL SELECT unnest(t.extra_permissions)"
            ),
            ") AS token_permissions,
             t.expires_at AS token_expires_at, t.last_used_at AS token_last_used_at,
             t.revoked_at AS token_revoked_at, ",
            $crate::store::users::prefixed_user_columns!()
        )
    };
    (tables) => {
        "api_tokens t
         JOIN users u ON u.id = t.creator_id
         JOIN organizations p ON p.personal_owner_id = u.id"
    };
}
pub(super) use token_with_creator;

/// The token part of a row's `token_with_creator!(columns)`. Its columns are
/// prefixed `token_`, as they share their rows with organizations' and users'.
#[derive(QueryableByName)]
struct TokenColumns {
    #[diesel(sql_type = diesel::sql_types::Uuid, column_name = token_id)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid, column_name = token_org_id)]
    org_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>, column_name = token_roles)]
    roles: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>, column_name = token_permissions)]
    permissions: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>, column_name = token_expires_at)]
    expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>, column_name = token_last_used_at)]
    last_used_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>, column_name = token_revoked_at)]
    revoked_at: Option<DateTime<Utc>>,
}

/// A row's `token_with_creator!(columns)`.
#[derive(QueryableByName)]
pub(super) struct TokenWithCreator {
    #[diesel(embed)]
    token: TokenColumns,
    #[diesel(embed)]
    creator: PrefixedUser,
}

/// Refuses at once, before any query, a bearer with the API token prefix whose
/// rest cannot be a secret orgd generated.
pub fn check_secret_shape(secret: &str) -> Result<()> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(random) if Secret::is_well_formed(random) => Ok(()),
        _ => Err(refused("is not valid")),
    }
}

pub(super) fn refused(why: &str) -> Error {
    Error::Unauthenticated(format!("this API token {why}"))
}

/// The caller a token found by its secret stands for, unless it was revoked or
/// has expired; records its use (at most once a minute).
pub(super) async fn admit_token(
    conn: &mut Conn,
    found: TokenWithCreator,
    org: &OrgRow,
    creator_access: Option<MemberAccess>,
) -> Result<(TokenCaller, MemberAccess)> {
    let TokenWithCreator { token, creator } = found;
    let creator = User::from(creator);
    if token.revoked_at.is_some() {
        return Err(refused("was revoked"));
    }
    let now = Utc::now();
    if token.expires_at.is_some_and(|at| at <= now) {
        return Err(refused("has expired"));
    }
    // Kept, not deleted: it works again if its creator rejoins (as on Koyeb),
    // unless their account was deleted (it has no subject any more). Whoever
    // holds it now may be no member: the organization is named by its id only.
    let Some(creator_access) = creator_access else {
        let creator_name = UserRef::name_of(creator.row.id);
        return Err(Error::TokenDeactivated(match creator.row.subject {
            Some(_) => format!(
                "this API token is deactivated: its creator, {creator_name}, is no longer a member of {}; it works again if they rejoin",
                org.name()
            ),
            None => format!(
                "this API token is deactivated for good: its creator's account, {creator_name}, was deleted; a member of {} can create a new one",
                org.name()
            ),
        }));
    };
    // Last use to the minute is enough, and saves a write per call.
    if token
        .last_used_at
        .is_none_or(|at| at < now - LAST_USE_RESOLUTION)
    {
        diesel::update(api_tokens::table.find(token.id))
            .filter(
                api_tokens::last_used_at
                    .is_null()
                    .or(api_tokens::last_used_at.lt(now - LAST_USE_RESOLUTION)),
            )
            .set(api_tokens::last_used_at.eq(diesel::dsl::now))
            .prepared()
            .execute(conn)
            .await?;
    }
    let caller = TokenCaller {
        user: creator,
        org_id: token.org_id,
        limit: TokenLimit {
            token_id: token.id,
            org_id: token.org_id,
            roles: token.roles.into_iter().collect(),
            permissions: token.permissions.into_iter().collect(),
        },
    };
    Ok((caller, creator_access))
}

/// The creator whose tokens alone the caller reaches: `None` for everyone's.
fn own_tokens_of(actor: &Actor, access: &OrgAccess) -> Result<Option<Uuid>> {
    match access.reach() {
        Reach::All => Ok(None),
        Reach::Own { .. } => Ok(Some(actor_id(actor)?)),
    }
}

impl Store {
    /// Creates a token within the creator's own grant; returns it with its secret.
    pub async fn create_api_token(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        new: NewApiToken,
    ) -> Result<(ApiTokenRow, String)> {
        let new = &new;
        let org_id = access.org().id;
        // A token minting tokens would outlive its own revocation.
        actor.ensure_signed_in("creating an API token")?;
        self.change_reading(
            access,
            actor,
            |conn| Catalog::load(conn).scope_boxed(),
            |conn, (change, catalog)| {
                async move {
                    catalog.ensure_known("api_token", Some(&new.roles), Some(&new.permissions))?;
                    change.ensure_can_grant_roles(&new.roles)?;
                    let granted = catalog.effective(&new.roles, &new.permissions);
                    change.ensure_can_grant(&granted, "this token")?;
                    let secret = format!("{SECRET_PREFIX}{}", Secret::generate().token);
                    let row: ApiTokenRow = diesel::insert_into(api_tokens::table)
                        .values((
                            api_tokens::id.eq(Uuid::now_v7()),
                            api_tokens::org_id.eq(org_id),
                            api_tokens::creator_id.eq(change.actor_id),
                            api_tokens::display_name.eq(&new.display_name),
                            api_tokens::prefix.eq(&secret[..SHOWN_PREFIX_LEN]),
                            api_tokens::secret_hash.eq(Secret::hash(&secret)),
                            api_tokens::roles.eq(new.roles.to_vec()),
                            api_tokens::extra_permissions.eq(new.permissions.to_vec()),
                            api_tokens::expires_at.eq(new.expires_at),
                        ))
                        .returning(ApiTokenRow::as_returning())
                        .get_result(conn)
                        .await?;
                    audit::record(
                        conn,
                        actor,
                        Some(org_id),
                        Action::ApiTokenCreate,
                        &row.name(),
                        serde_json::json!({
                            "display_name": row.display_name, "roles": row.roles,
                            "extra_permissions": row.extra_permissions,
                        }),
                    )
                    .await?;
                    Ok((row, secret))
                }
                .scope_boxed()
            },
        )
        .await
    }

    /// A page of the organization's tokens, newest first, each with whether its
    /// creator is still a member (a token works only while they are): every
    /// token, or with `Reach::Own` the caller's own.
    pub async fn list_api_tokens(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        page: PageRequest,
    ) -> Result<(Vec<(ApiTokenRow, bool)>, String)> {
        let org_id = access.org().id;
        let own = own_tokens_of(actor, access)?;
        let rows = self
            .read(|conn| {
                async move {
                    let creator_is_member = diesel::dsl::exists(
                        memberships::table
                            .filter(memberships::org_id.eq(api_tokens::org_id))
                            .filter(memberships::user_id.eq(api_tokens::creator_id)),
                    );
                    let mut query = api_tokens::table
                        .filter(api_tokens::org_id.eq(org_id))
                        .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
                        .limit(page.limit + 1)
                        .select((ApiTokenRow::as_select(), creator_is_member))
                        .into_boxed();
                    if let Some(creator) = own {
                        query = query.filter(api_tokens::creator_id.eq(creator));
                    }
                    if let Some(after) = page.after {
                        query = query.filter(newest_first_after!(
                            api_tokens::created_at,
                            api_tokens::id,
                            after
                        ));
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(
            page.finish(rows, |(row, _): &(ApiTokenRow, bool)| PageToken {
                time: row.created_at,
                id: row.id,
            }),
        )
    }

    pub async fn revoke_api_token(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
    ) -> Result<ApiTokenRow> {
        let org_id = access.org().id;
        let own = own_tokens_of(actor, access)?;
        self.change(access, actor, |conn, _| {
            async move {
                // Every token, or the caller's own.
                let reached = api_tokens::creator_id
                    .nullable()
                    .eq(own)
                    .or(own.is_none().into_sql::<Bool>());
                let existing: ApiTokenRow = api_tokens::table
                    .filter(api_tokens::id.eq(id))
                    .filter(api_tokens::org_id.eq(org_id))
                    .filter(reached)
                    .select(ApiTokenRow::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| {
                        let name = ChildName::name_of(org_id, API_TOKENS, id);
                        match access.reach() {
                            Reach::All => Error::NotFound(format!("API token {name} not found")),
                            // The same whether it is another member's or none:
                            // what the caller may not list, they cannot probe.
                            Reach::Own { broader } => Error::NotFound(format!(
                                "API token {name} not found among your own tokens; other members' tokens need permission '{broader}'"
                            )),
                        }
                    })?;
                // Revoking twice changes nothing and records nothing.
                if existing.revoked_at.is_some() {
                    return Ok(existing);
                }
                let row: ApiTokenRow = diesel::update(api_tokens::table.find(id))
                    .set(api_tokens::revoked_at.eq(diesel::dsl::now))
                    .returning(ApiTokenRow::as_returning())
                    .prepared()
                    .get_result(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::ApiTokenRevoke,
                    &row.name(),
                    serde_json::json!({ "display_name": row.display_name }),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }
}
