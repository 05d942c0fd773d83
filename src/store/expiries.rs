//! Invitations and API tokens expire by the clock, without a change to their
//! rows; a background round records each expiry once, as an activity and an
//! event of the change feed, marking the row in the same transaction.

use diesel::sql_types::{BigInt, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::{Actor, KeepPrepared, Store, audit};
use crate::domain::{Action, OrgRef};
use crate::error::Result;

#[derive(diesel::QueryableByName)]
struct Expired {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    org_id: Uuid,
    /// The invitee's address, or the token's display name.
    #[diesel(sql_type = Text)]
    label: String,
    #[diesel(sql_type = Timestamptz)]
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Marks up to `$1` pending invitations past their expiry as recorded.
/// SKIP LOCKED: replicas running the round at once take different rows.
const EXPIRED_INVITATIONS: &str = "
    WITH due AS (
        SELECT id FROM invitations
        WHERE state = 'pending' AND expiry_recorded_at IS NULL AND expires_at <= now()
        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    UPDATE invitations i SET expiry_recorded_at = now() FROM due WHERE i.id = due.id
    RETURNING i.id, i.org_id, i.email AS label, i.expires_at";

/// The same for API tokens that expire and are not revoked.
const EXPIRED_TOKENS: &str = "
    WITH due AS (
        SELECT id FROM api_tokens
        WHERE revoked_at IS NULL AND expiry_recorded_at IS NULL AND expires_at <= now()
        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    UPDATE api_tokens t SET expiry_recorded_at = now() FROM due WHERE t.id = due.id
    RETURNING t.id, t.org_id, t.display_name AS label, t.expires_at";

impl Store {
    /// Records up to `batch` invitation and `batch` token expiries; returns
    /// how many.
    pub async fn record_expiries(&self, actor: &Actor, batch: i64) -> Result<usize> {
        self.write(|conn| {
            async move {
                let invitations: Vec<Expired> = diesel::sql_query(EXPIRED_INVITATIONS)
                    .bind::<BigInt, _>(batch)
                    .prepared()
                    .load(conn)
                    .await?;
                let tokens: Vec<Expired> = diesel::sql_query(EXPIRED_TOKENS)
                    .bind::<BigInt, _>(batch)
                    .prepared()
                    .load(conn)
                    .await?;
                for (rows, action, collection, field) in [
                    (
                        &invitations,
                        Action::InvitationExpire,
                        "invitations",
                        "email",
                    ),
                    (&tokens, Action::ApiTokenExpire, "apiTokens", "display_name"),
                ] {
                    for row in rows {
                        let target =
                            format!("{}/{collection}/{}", OrgRef::name_of(row.org_id), row.id);
                        let details = serde_json::json!({
                            field: row.label,
                            "expire_time": row.expires_at.to_rfc3339(),
                        });
                        audit::record(conn, actor, Some(row.org_id), action, &target, details)
                            .await?;
                    }
                }
                Ok(invitations.len() + tokens.len())
            }
            .scope_boxed()
        })
        .await
    }
}
