//! The subscription record and its plan, as plan changes (`subscriptions`),
//! period closing (`invoices`) and the plan limits (`limits`) all read and
//! write it: plans, the subscription row and its lock, periods by the
//! database's clock, the plan segments of a period, the credit balance, and
//! whether a paid plan has a payment method to charge.

use chrono::{DateTime, Months, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{credit_entries, payment_methods, plans, subscription_segments, subscriptions};
use super::{Conn, KeepPrepared};
use crate::domain::Etag;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = plans, check_for_backend(diesel::pg::Pg))]
pub struct PlanRow {
    pub id: String,
    pub display_name: String,
    pub price_minor: i64,
    pub currency: String,
    pub max_members: Option<i32>,
    pub max_resources: Option<i32>,
    pub tier: i32,
}

impl PlanRow {
    pub fn name(&self) -> String {
        format!("plans/{}", self.id)
    }

    pub fn is_paid(&self) -> bool {
        self.price_minor > 0
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions, check_for_backend(diesel::pg::Pg))]
pub struct SubscriptionRow {
    pub org_id: Uuid,
    pub plan_id: String,
    pub status: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub revision: i64,
}

/// The stored status of a subscription whose organization is deleted.
pub(super) const ENDED: &str = "ended";
const ACTIVE: &str = "active";

impl SubscriptionRow {
    pub fn is_ended(&self) -> bool {
        self.status == ENDED
    }

    pub fn etag(&self) -> Etag {
        Etag(self.revision)
    }
}

/// A subscription with its plan and the organization's unused credit.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub row: SubscriptionRow,
    pub plan: PlanRow,
    pub credit_balance: i64,
    /// Whether an invoice of the organization is open past its due time.
    pub past_due: bool,
}

/// The database's clock, read now (not at transaction start): every replica
/// times billing periods by the same clock, after the locks it waited for.
pub(super) async fn db_now(conn: &mut Conn) -> Result<DateTime<Utc>> {
    Ok(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
            "clock_timestamp()",
        ))
        .prepared()
        .get_result(conn)
        .await?,
    )
}

/// The end of a monthly period that starts at `start`.
pub(super) fn period_end_after(start: DateTime<Utc>) -> DateTime<Utc> {
    start
        .checked_add_months(Months::new(1))
        .expect("dates stay far from the end of time")
}

pub(super) async fn find_plan(conn: &mut Conn, id: &str) -> Result<PlanRow> {
    plans::table
        .find(id)
        .select(PlanRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("plan plans/{id} not found")))
}

/// The plan an organization falls back to when a paid one ends.
pub(super) async fn free_plan(conn: &mut Conn) -> Result<PlanRow> {
    Ok(plans::table
        .filter(plans::price_minor.eq(0))
        .order(plans::tier)
        .select(PlanRow::as_select())
        .first(conn)
        .await?)
}

/// Starts a new organization's subscription on `plan` (the free plan if `None`).
pub(super) async fn open_subscription(
    conn: &mut Conn,
    org_id: Uuid,
    plan: Option<&str>,
) -> Result<()> {
    let plan = match plan {
        Some(id) => find_plan(conn, id).await?,
        None => free_plan(conn).await?,
    };
    let start = db_now(conn).await?;
    diesel::insert_into(subscriptions::table)
        .values((
            subscriptions::org_id.eq(org_id),
            subscriptions::plan_id.eq(&plan.id),
            subscriptions::period_start.eq(start),
            subscriptions::period_end.eq(period_end_after(start)),
        ))
        .execute(conn)
        .await?;
    start_segment(conn, org_id, start, &plan.id).await
}

/// Restarts the subscription of a restored organization with a fresh period.
pub(super) async fn reopen_subscription(conn: &mut Conn, org_id: Uuid) -> Result<()> {
    let sub = lock_subscription(conn, org_id).await?;
    if !sub.is_ended() {
        return Ok(());
    }
    let start = db_now(conn).await?;
    diesel::update(subscriptions::table.find(org_id))
        .set((
            subscriptions::status.eq(ACTIVE),
            subscriptions::period_start.eq(start),
            subscriptions::period_end.eq(period_end_after(start)),
            subscriptions::cancel_at_period_end.eq(false),
            subscriptions::revision.eq(subscriptions::revision + 1),
            subscriptions::updated_at.eq(diesel::dsl::now),
        ))
        .prepared()
        .execute(conn)
        .await?;
    start_segment(conn, org_id, start, &sub.plan_id).await
}

/// Records that `plan_id` applies from `at` on, within the current period.
pub(super) async fn start_segment(
    conn: &mut Conn,
    org_id: Uuid,
    at: DateTime<Utc>,
    plan_id: &str,
) -> Result<()> {
    diesel::insert_into(subscription_segments::table)
        .values((
            subscription_segments::org_id.eq(org_id),
            subscription_segments::starts_at.eq(at),
            subscription_segments::plan_id.eq(plan_id),
        ))
        .on_conflict((
            subscription_segments::org_id,
            subscription_segments::starts_at,
        ))
        .do_update()
        .set(subscription_segments::plan_id.eq(plan_id))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn lock_subscription(conn: &mut Conn, org_id: Uuid) -> Result<SubscriptionRow> {
    Ok(subscriptions::table
        .find(org_id)
        .select(SubscriptionRow::as_select())
        .for_update()
        .first(conn)
        .await?)
}

/// The organization's unused credit in `currency`.
pub(super) async fn credit_balance(conn: &mut Conn, org_id: Uuid, currency: &str) -> Result<i64> {
    let entries: Vec<i64> = credit_entries::table
        .filter(credit_entries::org_id.eq(org_id))
        .filter(credit_entries::currency.eq(currency))
        .select(credit_entries::amount_minor)
        .load(conn)
        .await?;
    entries
        .iter()
        .try_fold(0i64, |sum, amount| sum.checked_add(*amount))
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the credit balance of {org_id} overflows")))
}

/// Whether `org_id` has a default payment method, which a paid plan needs.
pub(super) async fn has_default_payment_method(conn: &mut Conn, org_id: Uuid) -> Result<bool> {
    let query = payment_methods::table
        .filter(payment_methods::org_id.eq(org_id))
        .filter(payment_methods::is_default);
    Ok(diesel::select(diesel::dsl::exists(query))
        .get_result(conn)
        .await?)
}
