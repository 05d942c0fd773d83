//! Closing an organization: the end that DeleteOrganization and account
//! deletion (for the personal organization) share.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::org_row::{OrgRow, touch};
use super::period_close::{self, CloseReason, Closed};
use super::schema::{org_resources, organizations};
use super::{Actor, Conn, KeepPrepared, subscription_row};
use crate::domain::count;
use crate::error::{Error, Result};

/// An organization that `close` soft-deleted.
pub(super) struct ClosedOrg {
    pub org: OrgRow,
    /// When it is purged for good.
    pub purge_at: DateTime<Utc>,
    /// `invoices/…` of the final period, if one was billed.
    pub final_invoice: Option<String>,
}

impl ClosedOrg {
    /// What its audit record says about the closing.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({ "purge_time": self.purge_at, "final_invoice": self.final_invoice })
    }
}

/// Soft-deletes the locked `org`, to be purged after `retention`: refused
/// while resources remain registered in it (they would outlive it, unbilled);
/// billing stops with it, its period closing with a final invoice (due
/// `invoice_due` later). The caller audits it.
pub(super) async fn close(
    conn: &mut Conn,
    actor: &Actor,
    org: &OrgRow,
    retention: Duration,
    invoice_due: Duration,
) -> Result<ClosedOrg> {
    let org_id = org.id;
    let remaining: Vec<(String, String)> = org_resources::table
        .filter(org_resources::org_id.eq(org_id))
        .order(org_resources::created_at)
        .select((org_resources::kind, org_resources::external_id))
        .limit(6)
        .load(conn)
        .await?;
    if !remaining.is_empty() {
        let total: i64 = org_resources::table
            .filter(org_resources::org_id.eq(org_id))
            .count()
            .get_result(conn)
            .await?;
        let shown: Vec<String> = remaining
            .iter()
            .take(5)
            .map(|(k, id)| format!("{k}/{id}"))
            .collect();
        let more = if total > 5 {
            format!(" and {} more", total - 5)
        } else {
            String::new()
        };
        return Err(Error::precondition(
            "RESOURCES_REMAIN",
            org.name(),
            format!(
                "{} still holds {} ({}{more}): unregister or transfer {} first",
                org.described(),
                count(total, "resource"),
                shown.join(", "),
                if total == 1 { "it" } else { "them" }
            ),
        ));
    }
    let period_start = subscription_row::lock_subscription(conn, org_id)
        .await?
        .period_start;
    let final_invoice = match period_close::close_period(
        conn,
        actor,
        org_id,
        period_start,
        CloseReason::OrganizationDeleted,
        invoice_due,
    )
    .await?
    {
        Closed::Issued(invoice) | Closed::Before(invoice) => Some(invoice.row.name()),
        Closed::Nothing => None,
    };
    let purge_at = Utc::now() + retention;
    diesel::update(organizations::table.find(org_id))
        .set((
            organizations::deleted_at.eq(diesel::dsl::now),
            organizations::purge_at.eq(purge_at),
        ))
        .prepared()
        .execute(conn)
        .await?;
    Ok(ClosedOrg {
        org: touch(conn, org_id).await?,
        purge_at,
        final_invoice,
    })
}
