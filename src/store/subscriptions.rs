//! Plans and subscriptions. Every organization has one subscription, billed in
//! monthly periods; plan changes inside a period are kept as segments so that the
//! period's invoice can prorate them. Changes lock the organization row first (as
//! membership changes do), so a plan's member limit and a new member cannot race.

use chrono::{DateTime, Months, Utc};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::limits::Limited;
use super::org_row::OrgRow;
use super::proof::OrgAccess;
use super::schema::{
    credit_entries, memberships, org_resources, payment_methods, plans, subscription_segments,
    subscriptions,
};
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, Etag};
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

/// Refuses `plan` when the organization's members or resources exceed its limits,
/// saying how many must go.
async fn ensure_fits(conn: &mut Conn, org: &OrgRow, plan: &PlanRow) -> Result<()> {
    let members: i64 = memberships::table
        .filter(memberships::org_id.eq(org.id))
        .count()
        .get_result(conn)
        .await?;
    let resources: i64 = org_resources::table
        .filter(org_resources::org_id.eq(org.id))
        .count()
        .get_result(conn)
        .await?;
    for (what, used) in [(Limited::Members, members), (Limited::Resources, resources)] {
        if let Some(limit) = what.limit(plan)
            && used > limit
        {
            return Err(Error::precondition(
                "PLAN_LIMITS",
                org.name(),
                format!(
                    "{} has {} and the {} plan allows {}: {} first, or choose a larger plan",
                    org.described(),
                    what.count(used),
                    plan.display_name,
                    what.count(limit),
                    what.removal(used - limit)
                ),
            ));
        }
    }
    Ok(())
}

async fn has_default_payment_method(conn: &mut Conn, org_id: Uuid) -> Result<bool> {
    let query = payment_methods::table
        .filter(payment_methods::org_id.eq(org_id))
        .filter(payment_methods::is_default);
    Ok(diesel::select(diesel::dsl::exists(query))
        .get_result(conn)
        .await?)
}

async fn view(conn: &mut Conn, org_id: Uuid) -> Result<SubscriptionView> {
    let (row, plan): (SubscriptionRow, PlanRow) = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::org_id.eq(org_id))
        .select((SubscriptionRow::as_select(), PlanRow::as_select()))
        .first(conn)
        .await?;
    let credit_balance = credit_balance(conn, org_id, &plan.currency).await?;
    Ok(SubscriptionView {
        row,
        plan,
        credit_balance,
    })
}

/// How a subscription change is applied: each returns the audit action and details.
enum SubscriptionChange<'a> {
    Plan {
        plan_id: &'a str,
        etag: Option<Etag>,
    },
    Cancel,
    Resume,
}

impl Store {
    pub async fn list_plans(&self) -> Result<Vec<PlanRow>> {
        self.read(|conn| {
            async move {
                Ok(plans::table
                    .order(plans::tier)
                    .select(PlanRow::as_select())
                    .load(conn)
                    .await?)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn get_plan(&self, id: &str) -> Result<PlanRow> {
        self.read(|conn| find_plan(conn, id).scope_boxed()).await
    }

    pub async fn get_subscription(&self, org_id: Uuid) -> Result<SubscriptionView> {
        self.read(|conn| view(conn, org_id).scope_boxed()).await
    }

    pub async fn change_plan(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        plan_id: &str,
        etag: Option<Etag>,
    ) -> Result<SubscriptionView> {
        self.change_subscription(actor, access, SubscriptionChange::Plan { plan_id, etag })
            .await
    }

    pub async fn cancel_subscription(
        &self,
        actor: &Actor,
        access: &OrgAccess,
    ) -> Result<SubscriptionView> {
        self.change_subscription(actor, access, SubscriptionChange::Cancel)
            .await
    }

    pub async fn resume_subscription(
        &self,
        actor: &Actor,
        access: &OrgAccess,
    ) -> Result<SubscriptionView> {
        self.change_subscription(actor, access, SubscriptionChange::Resume)
            .await
    }

    /// Locks the organization, then its subscription, applies `change` and audits it.
    async fn change_subscription(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        change: SubscriptionChange<'_>,
    ) -> Result<SubscriptionView> {
        let change = &change;
        let org_id = access.org().id;
        self.change(access, actor, |conn, locked| {
            async move {
                let org = &locked.org;
                // A period that has ended is closed first, so a change never lands
                // in a period that is over.
                let sub = lock_subscription(conn, org_id).await?;
                let sub = if sub.period_end <= db_now(conn).await? {
                    super::invoices::close_period(conn, actor, org_id, sub.period_start, super::invoices::CloseReason::PeriodEnded).await?;
                    lock_subscription(conn, org_id).await?
                } else {
                    sub
                };
                let current = find_plan(conn, &sub.plan_id).await?;
                let name = format!("{}/subscription", org.name());
                let (action, details) = match change {
                    SubscriptionChange::Plan { plan_id, etag } => {
                        if let Some(etag) = etag
                            && *etag != sub.etag()
                        {
                            return Err(Error::Aborted(format!(
                                "{name} changed since etag {etag} was read (it is now {}); get it again and retry",
                                sub.etag()
                            )));
                        }
                        let plan = find_plan(conn, plan_id).await?;
                        if plan.id == current.id && !sub.cancel_at_period_end {
                            return view(conn, org_id).await;
                        }
                        if plan.currency != current.currency {
                            return Err(Error::precondition(
                                "PLAN_CURRENCY",
                                name,
                                format!("the {} plan bills in {}, this subscription in {}; contact support to change currency", plan.display_name, plan.currency, current.currency),
                            ));
                        }
                        ensure_fits(conn, org, &plan).await?;
                        if plan.is_paid() && !has_default_payment_method(conn, org_id).await? {
                            return Err(Error::precondition(
                                "PAYMENT_METHOD_REQUIRED",
                                name,
                                format!(
                                    "the {} plan is paid: add a payment method (AddPaymentMethod) first",
                                    plan.display_name
                                ),
                            ));
                        }
                        if plan.id != current.id {
                            let at = db_now(conn).await?;
                            start_segment(conn, org_id, at, &plan.id).await?;
                        }
                        diesel::update(subscriptions::table.find(org_id))
                            .set((
                                subscriptions::plan_id.eq(&plan.id),
                                // Choosing a plan takes back a pending cancellation.
                                subscriptions::cancel_at_period_end.eq(false),
                            ))
                            .prepared()
                            .execute(conn)
                            .await?;
                        (
                            Action::SubscriptionChangePlan,
                            serde_json::json!({ "from": current.id, "to": plan.id }),
                        )
                    }
                    SubscriptionChange::Cancel => {
                        if !current.is_paid() {
                            return Err(Error::precondition(
                                "FREE_PLAN",
                                name,
                                format!("{} is on the free {} plan: there is nothing to cancel", org.described(), current.display_name),
                            ));
                        }
                        if sub.cancel_at_period_end {
                            return view(conn, org_id).await;
                        }
                        diesel::update(subscriptions::table.find(org_id))
                            .set(subscriptions::cancel_at_period_end.eq(true))
                            .prepared()
                            .execute(conn)
                            .await?;
                        (
                            Action::SubscriptionCancel,
                            serde_json::json!({ "plan": current.id, "ends": sub.period_end }),
                        )
                    }
                    SubscriptionChange::Resume => {
                        if !sub.cancel_at_period_end {
                            return Err(Error::precondition(
                                "NOT_CANCELED",
                                name,
                                "the subscription is not canceled; there is nothing to resume",
                            ));
                        }
                        diesel::update(subscriptions::table.find(org_id))
                            .set(subscriptions::cancel_at_period_end.eq(false))
                            .prepared()
                            .execute(conn)
                            .await?;
                        (Action::SubscriptionResume, serde_json::json!({ "plan": current.id }))
                    }
                };
                diesel::update(subscriptions::table.find(org_id))
                    .set((
                        subscriptions::revision.eq(subscriptions::revision + 1),
                        subscriptions::updated_at.eq(diesel::dsl::now),
                    ))
                    .prepared()
                    .execute(conn)
                    .await?;
                audit::record(conn, actor, Some(org_id), action, &name, details).await?;
                view(conn, org_id).await
            }
            .scope_boxed()
        })
        .await
    }
}
