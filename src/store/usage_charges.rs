//! Usage charges: what the backend services running an organization's apps
//! and databases report it owes for their use, in the manner of Stripe's
//! pending invoice items. A charge waits until the period its usage ended in
//! closes; `period_close` then takes it onto that period's invoice
//! (`take_pending`, `mark_billed`) in the invoice's transaction.
//!
//! Exactly once, however many replicas: a report is keyed by its reporter and
//! request id (a unique constraint), and the closer locks the pending charges
//! it bills, so a concurrent withdrawal or second closer waits and then finds
//! them billed. A report locks the organization's row for share, so that a
//! deletion (which locks it for update and bills what is pending) either sees
//! the new charge or is seen by it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::invoices::INVOICES;
use super::org_row::{OrgRow, share_org};
use super::paging::newest_first_after;
use super::resources::RESOURCES;
use super::schema::{org_resources, plans, subscriptions, usage_charges};
use super::subscription_row::db_now;
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{
    Action, ChargeDescription, ChildName, Currency, PageRequest, PageToken, UsageInterval, quoted,
};
use crate::error::{Error, Result};

pub const USAGE_CHARGES: &str = "usageCharges";

/// The fields of a report, as the API names them in refusals.
const FIELD: &str = "usage_charge";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_charges, check_for_backend(diesel::pg::Pg))]
pub struct UsageChargeRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub description: String,
    pub amount_minor: i64,
    pub currency: String,
    pub resource_id: Option<Uuid>,
    pub usage_start: DateTime<Utc>,
    pub usage_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub invoice_id: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl UsageChargeRow {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, USAGE_CHARGES, self.id)
    }

    pub fn resource(&self) -> Option<String> {
        self.resource_id
            .map(|id| ChildName::name_of(self.org_id, RESOURCES, id))
    }

    pub fn invoice(&self) -> Option<String> {
        self.invoice_id
            .map(|id| ChildName::name_of(self.org_id, INVOICES, id))
    }

    /// Its invoice line: what was used, and when.
    pub(super) fn line(&self) -> (String, i64) {
        (
            format!(
                "{}, {} to {}",
                self.description,
                self.usage_start.format("%Y-%m-%d %H:%M UTC"),
                self.usage_end.format("%Y-%m-%d %H:%M UTC")
            ),
            self.amount_minor,
        )
    }

    /// The differences between this charge and a report of `new`, by field.
    fn differences(&self, new: &NewUsageCharge) -> Vec<&'static str> {
        let checks = [
            (self.org_id != new.org_id, "parent"),
            (
                self.description != new.description.as_str(),
                "usage_charge.description",
            ),
            (
                self.amount_minor != new.amount_minor || self.currency != new.currency.as_str(),
                "usage_charge.amount",
            ),
            (self.resource_id != new.resource_id, "usage_charge.resource"),
            (
                self.usage_start != new.interval.start,
                "usage_charge.usage_start_time",
            ),
            (
                self.usage_end != new.interval.end,
                "usage_charge.usage_end_time",
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(differs, field)| differs.then_some(field))
            .collect()
    }
}

/// A report of usage, validated but for what only the database can tell
/// (the organization, its currency, the resource, the clock).
pub struct NewUsageCharge {
    pub org_id: Uuid,
    pub description: ChargeDescription,
    pub amount_minor: i64,
    pub currency: Currency,
    pub resource_id: Option<Uuid>,
    pub interval: UsageInterval,
    pub request_id: Uuid,
}

/// The charge `actor` reported before under `new`'s request id, if any. The
/// key holds the reporter, so a replay answers only the service that made
/// the report (and services may see every organization).
async fn reported_before(
    conn: &mut Conn,
    actor: &Actor,
    new: &NewUsageCharge,
) -> Result<Option<UsageChargeRow>> {
    let earlier: Option<UsageChargeRow> = usage_charges::table
        .filter(usage_charges::reported_by.eq(&actor.label))
        .filter(usage_charges::request_id.eq(new.request_id))
        .select(UsageChargeRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(earlier) = earlier else {
        return Ok(None);
    };
    let differences = earlier.differences(new);
    if !differences.is_empty() {
        return Err(Error::precondition(
            "REQUEST_ID_USED",
            "request_id",
            format!(
                "request_id {} already reported {}, with another {}: retry with the same content, or send a new request_id for a new charge",
                new.request_id,
                earlier.name(),
                differences.join(", ")
            ),
        ));
    }
    if let Some(deleted_at) = earlier.deleted_at {
        return Err(Error::precondition(
            "REQUEST_ID_USED",
            "request_id",
            format!(
                "request_id {} reported {}, which was withdrawn at {deleted_at}: send a new request_id to report it again",
                new.request_id,
                earlier.name()
            ),
        ));
    }
    Ok(Some(earlier))
}

/// Checks a new report against the organization as it stands: billing goes
/// on, the amount is in its currency, the resource is its own, the usage has
/// ended by the database's clock.
async fn check_report(conn: &mut Conn, org: &OrgRow, new: &NewUsageCharge) -> Result<()> {
    if org.deleted_at.is_some() {
        return Err(Error::precondition(
            "BILLING_ENDED",
            org.name(),
            format!(
                "{} is deleted: its billing ended with its final invoice, so no usage can be charged to it (restoring it with UndeleteOrganization starts billing again)",
                org.described()
            ),
        ));
    }
    let currency: String = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::org_id.eq(org.id))
        .select(plans::currency)
        .first(conn)
        .await?;
    if currency != new.currency.as_str() {
        return Err(Error::invalid(
            format!("{FIELD}.amount.currency_code"),
            format!(
                "{} is billed in {currency}, not {}: report the charge in {currency}",
                org.described(),
                new.currency
            ),
        ));
    }
    if let Some(resource_id) = new.resource_id {
        let registered = diesel::select(diesel::dsl::exists(
            org_resources::table
                .filter(org_resources::id.eq(resource_id))
                .filter(org_resources::org_id.eq(org.id)),
        ))
        .get_result::<bool>(conn)
        .await?;
        if !registered {
            return Err(Error::NotFound(format!(
                "{FIELD}.resource: resource {} is not registered in {}",
                ChildName::name_of(org.id, RESOURCES, resource_id),
                org.described()
            )));
        }
    }
    let now = db_now(conn).await?;
    if new.interval.end > now {
        return Err(Error::invalid(
            format!("{FIELD}.usage_end_time"),
            format!(
                "the usage ends in the future ({}; it is now {now}): report usage once it has been used",
                new.interval.end
            ),
        ));
    }
    Ok(())
}

/// The pending charges of `org_id` in `currency` whose usage ended by
/// `until`, oldest usage first, locked: the invoice being issued takes them.
pub(super) async fn take_pending(
    conn: &mut Conn,
    org_id: Uuid,
    currency: &str,
    until: DateTime<Utc>,
) -> Result<Vec<UsageChargeRow>> {
    Ok(usage_charges::table
        .filter(usage_charges::org_id.eq(org_id))
        .filter(usage_charges::invoice_id.is_null())
        .filter(usage_charges::deleted_at.is_null())
        .filter(usage_charges::currency.eq(currency))
        .filter(usage_charges::usage_end.le(until))
        .order((usage_charges::usage_start, usage_charges::id))
        .select(UsageChargeRow::as_select())
        .for_update()
        .load(conn)
        .await?)
}

/// Marks `charges` billed on `invoice_id`.
pub(super) async fn mark_billed(
    conn: &mut Conn,
    charges: &[UsageChargeRow],
    invoice_id: Uuid,
) -> Result<()> {
    if charges.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = charges.iter().map(|charge| charge.id).collect();
    diesel::update(usage_charges::table.filter(usage_charges::id.eq_any(ids)))
        .set(usage_charges::invoice_id.eq(invoice_id))
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Records a charge `actor` (a backend service) reports, or returns the
    /// one its request id reported before.
    pub async fn create_usage_charge(
        &self,
        actor: &Actor,
        new: NewUsageCharge,
    ) -> Result<UsageChargeRow> {
        let new = &new;
        self.write(|conn| {
            async move {
                if let Some(earlier) = reported_before(conn, actor, new).await? {
                    return Ok(earlier);
                }
                let org = share_org(conn, new.org_id).await?;
                check_report(conn, &org, new).await?;
                let inserted: Option<UsageChargeRow> = diesel::insert_into(usage_charges::table)
                    .values((
                        usage_charges::id.eq(Uuid::now_v7()),
                        usage_charges::org_id.eq(new.org_id),
                        usage_charges::description.eq(new.description.as_str()),
                        usage_charges::amount_minor.eq(new.amount_minor),
                        usage_charges::currency.eq(new.currency.as_str()),
                        usage_charges::resource_id.eq(new.resource_id),
                        usage_charges::usage_start.eq(new.interval.start),
                        usage_charges::usage_end.eq(new.interval.end),
                        usage_charges::reported_by.eq(&actor.label),
                        usage_charges::request_id.eq(new.request_id),
                    ))
                    .on_conflict_do_nothing()
                    .returning(UsageChargeRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?;
                let Some(row) = inserted else {
                    // The same report, sent twice at once: the other attempt
                    // committed it while this one waited on its key.
                    return reported_before(conn, actor, new).await?.ok_or_else(|| {
                        Error::Aborted(
                            "a concurrent report of this request_id was rolled back; retry".into(),
                        )
                    });
                };
                audit::record(
                    conn,
                    actor,
                    Some(row.org_id),
                    Action::UsageChargeCreate,
                    &row.name(),
                    serde_json::json!({
                        "description": row.description, "amount_minor": row.amount_minor,
                        "currency": row.currency, "resource": row.resource(),
                        "usage_start_time": row.usage_start, "usage_end_time": row.usage_end,
                    }),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }

    /// A page of `org_id`'s charges, pending and billed, newest first.
    pub async fn list_usage_charges(
        &self,
        org_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<UsageChargeRow>, String)> {
        let rows = self
            .read(|conn| {
                async move {
                    let mut query = usage_charges::table
                        .filter(usage_charges::org_id.eq(org_id))
                        .filter(usage_charges::deleted_at.is_null())
                        .order((usage_charges::created_at.desc(), usage_charges::id.desc()))
                        .limit(page.limit + 1)
                        .select(UsageChargeRow::as_select())
                        .into_boxed();
                    if let Some(after) = page.after {
                        query = query.filter(newest_first_after!(
                            usage_charges::created_at,
                            usage_charges::id,
                            after
                        ));
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |row: &UsageChargeRow| PageToken {
            time: row.created_at,
            id: row.id,
        }))
    }

    /// Withdraws `org_id`'s pending charge `id`, reported in error; a billed
    /// one stays on its invoice.
    pub async fn delete_usage_charge(
        &self,
        actor: &Actor,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<UsageChargeRow> {
        self.write(|conn| {
            async move {
                let name = ChildName::name_of(org_id, USAGE_CHARGES, id);
                // Locked: a closer billing it now finishes first (or waits).
                let charge: UsageChargeRow = usage_charges::table
                    .filter(usage_charges::org_id.eq(org_id))
                    .filter(usage_charges::id.eq(id))
                    .filter(usage_charges::deleted_at.is_null())
                    .select(UsageChargeRow::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| {
                        Error::NotFound(format!("usage charge {} not found", quoted(&name)))
                    })?;
                if let Some(invoice) = charge.invoice() {
                    return Err(Error::precondition(
                        "USAGE_CHARGE_BILLED",
                        &name,
                        format!(
                            "usage charge {name} is billed on invoice {invoice} and stays on it: credit the organization (a voucher) to make up for it"
                        ),
                    ));
                }
                let deleted: UsageChargeRow = diesel::update(usage_charges::table.find(id))
                    .set(usage_charges::deleted_at.eq(diesel::dsl::now))
                    .returning(UsageChargeRow::as_returning())
                    .prepared()
                    .get_result(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::UsageChargeDelete,
                    &name,
                    serde_json::json!({
                        "description": deleted.description, "amount_minor": deleted.amount_minor,
                        "currency": deleted.currency,
                    }),
                )
                .await?;
                Ok(deleted)
            }
            .scope_boxed()
        })
        .await
    }
}
