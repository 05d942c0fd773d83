//! Plans and subscriptions. Every organization has one subscription, billed in
//! monthly periods; plan changes inside a period are kept as segments so that the
//! period's invoice can prorate them. Changes lock the organization row first (as
//! membership changes do), so a plan's member limit and a new member cannot race.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::invoices::past_due;
use super::limits::Limited;
use super::org_row::OrgRow;
use super::proof::OrgAccess;
use super::schema::{memberships, org_resources, plans, subscriptions};
use super::subscription_row::{
    PlanRow, SubscriptionRow, SubscriptionView, credit_balance, db_now, find_plan,
    has_default_payment_method, lock_subscription, start_segment,
};
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, Etag};
use crate::error::{Error, Result};

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
        past_due: past_due(conn, org_id).await?,
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
        let invoice_due = self.invoice_due;
        self.change(access, actor, |conn, locked| {
            async move {
                let org = &locked.org;
                // A period that has ended is closed first, so a change never lands
                // in a period that is over.
                let sub = lock_subscription(conn, org_id).await?;
                let sub = if sub.period_end <= db_now(conn).await? {
                    super::period_close::close_period(conn, actor, org_id, sub.period_start, super::period_close::CloseReason::PeriodEnded, invoice_due).await?;
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
