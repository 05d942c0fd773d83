//! Closing a billing period: its invoice, prorated over the period's plan
//! segments, with the usage charges reported for the period, and less the
//! organization's credit, issued exactly once. The closer
//! locks the subscription row, and an invoice is keyed by (organization, period
//! start), so a second closer — a retry, another replica's job, an operator —
//! finds the period closed and gets the same invoice back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::invoices::{InvoiceRow, InvoiceView, OPEN, PAID, load_view};
use super::org_row::lock_org;
use super::schema::{
    billing_profiles, credit_entries, invoice_lines, invoices, subscription_segments, subscriptions,
};
use super::subscription_row::{
    ENDED, credit_balance, db_now, find_plan, free_plan, lock_subscription, period_end_after,
    start_segment,
};
use super::usage_charges::{self, UsageChargeRow};
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, prorate};
use crate::error::{Error, Result};
/// Why a period closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its end came (the background job).
    PeriodEnded,
    /// An operator closes it now.
    Operator,
    /// The organization is deleted: bill up to now and stop billing.
    OrganizationDeleted,
}

async fn invoice_of_period(
    conn: &mut Conn,
    org_id: Uuid,
    period_start: DateTime<Utc>,
) -> Result<Option<InvoiceRow>> {
    Ok(invoices::table
        .filter(invoices::org_id.eq(org_id))
        .filter(invoices::period_start.eq(period_start))
        .select(InvoiceRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The billing profile as printed on an invoice, frozen at issue time.
async fn bill_to(conn: &mut Conn, org_id: Uuid) -> Result<serde_json::Value> {
    type Profile = (
        String,
        String,
        String,
        Vec<String>,
        String,
        String,
        String,
        String,
    );
    let profile: Option<Profile> = billing_profiles::table
        .find(org_id)
        .select((
            billing_profiles::legal_name,
            billing_profiles::billing_email,
            billing_profiles::tax_id,
            billing_profiles::address_lines,
            billing_profiles::city,
            billing_profiles::postal_code,
            billing_profiles::region,
            billing_profiles::country,
        ))
        .first(conn)
        .await
        .optional()?;
    let (legal_name, email, tax_id, address_lines, city, postal_code, region, country) =
        profile.unwrap_or_default();
    Ok(serde_json::json!({
        "legal_name": legal_name, "billing_email": email, "tax_id": tax_id,
        "address_lines": address_lines, "city": city, "postal_code": postal_code,
        "region": region, "country": country,
    }))
}

/// What closing a period came to.
pub enum Closed {
    /// This call closed the period and issued its invoice.
    Issued(InvoiceView),
    /// The period had been closed before; its invoice.
    Before(InvoiceView),
    /// Nothing to close: the period has not ended (`PeriodEnded`), billing has
    /// ended, or no period of the organization starts at that time.
    Nothing,
}

/// Closes the period of `org_id` that starts at `period_start` and invoices it,
/// due `invoice_due` after it is issued.
pub(super) async fn close_period(
    conn: &mut Conn,
    actor: &Actor,
    org_id: Uuid,
    period_start: DateTime<Utc>,
    reason: CloseReason,
    invoice_due: Duration,
) -> Result<Closed> {
    // The organization first, then its subscription: the order of every change.
    let org = lock_org(conn, org_id).await?;
    let sub = lock_subscription(conn, org_id).await?;
    if sub.period_start != period_start {
        // Closed already (by a retry, another replica or an operator).
        return match invoice_of_period(conn, org_id, period_start).await? {
            Some(row) => Ok(Closed::Before(load_view(conn, row).await?)),
            None => Ok(Closed::Nothing),
        };
    }
    let now = db_now(conn).await?;
    if sub.is_ended() || (reason == CloseReason::PeriodEnded && sub.period_end > now) {
        return Ok(Closed::Nothing);
    }
    let end = match reason {
        CloseReason::PeriodEnded => sub.period_end,
        CloseReason::Operator | CloseReason::OrganizationDeleted => now.min(sub.period_end),
    };
    let current_plan = find_plan(conn, &sub.plan_id).await?;

    // One line per plan segment, prorated against the scheduled period length.
    let segments: Vec<(DateTime<Utc>, String)> = subscription_segments::table
        .filter(subscription_segments::org_id.eq(org_id))
        .filter(subscription_segments::starts_at.lt(end))
        .order(subscription_segments::starts_at)
        .select((
            subscription_segments::starts_at,
            subscription_segments::plan_id,
        ))
        .load(conn)
        .await?;
    let scheduled = (sub.period_end - sub.period_start)
        .num_milliseconds()
        .max(1);
    let mut lines = Vec::new();
    for (i, (starts_at, plan_id)) in segments.iter().enumerate() {
        let from = (*starts_at).max(sub.period_start);
        let until = segments.get(i + 1).map_or(end, |(next, _)| *next).min(end);
        let used = (until - from).num_milliseconds();
        if used <= 0 {
            continue;
        }
        let plan = find_plan(conn, plan_id).await?;
        let amount = prorate(plan.price_minor, used, scheduled);
        let share = if used >= scheduled {
            String::new()
        } else {
            format!(" (prorated: {} of {} days)", days(used), days(scheduled))
        };
        lines.push((
            format!(
                "{} plan, {} to {}{share}",
                plan.display_name,
                from.format("%Y-%m-%d %H:%M UTC"),
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            amount,
        ));
    }
    let currency = current_plan.currency.clone();
    // Then the usage the backend services reported: the charges whose usage
    // ended by the period's end. A deleted organization's final invoice takes
    // every pending one, since billing stops with it: all ended by now (usage
    // in the future is refused), even when the period ended before.
    let until = match reason {
        CloseReason::OrganizationDeleted => now,
        CloseReason::PeriodEnded | CloseReason::Operator => end,
    };
    let charges = usage_charges::take_pending(conn, org_id, &currency, until).await?;
    lines.extend(charges.iter().map(UsageChargeRow::line));
    let subtotal = lines
        .iter()
        .try_fold(0i64, |sum, (_, amount)| sum.checked_add(*amount))
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the invoice of {org_id}'s period from {} overflows",
                sub.period_start
            ))
        })?;
    let credit = credit_balance(conn, org_id, &currency)
        .await?
        .clamp(0, subtotal);
    let number: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "nextval('invoice_numbers')",
    ))
    .get_result(conn)
    .await?;
    let number = format!("INV-{}-{number:06}", end.format("%Y"));
    // Nothing to pay is paid when issued. Issue, due and payment times all
    // come from one reading of the database's clock, so they agree exactly.
    let total = subtotal - credit;
    let settled = total == 0;
    let due_at = now
        + chrono::Duration::from_std(invoice_due).map_err(|_| {
            Error::Internal(anyhow::anyhow!(
                "--invoice-due {invoice_due:?} is out of range"
            ))
        })?;
    let invoice: InvoiceRow = diesel::insert_into(invoices::table)
        .values((
            invoices::id.eq(Uuid::now_v7()),
            invoices::org_id.eq(org_id),
            invoices::number.eq(&number),
            invoices::org_name.eq(&org.display_name),
            invoices::period_start.eq(sub.period_start),
            invoices::period_end.eq(end),
            invoices::currency.eq(&currency),
            invoices::subtotal_minor.eq(subtotal),
            invoices::credit_minor.eq(credit),
            invoices::total_minor.eq(total),
            invoices::bill_to.eq(bill_to(conn, org_id).await?),
            invoices::created_at.eq(now),
            invoices::due_at.eq(due_at),
            invoices::state.eq(if settled { PAID } else { OPEN }),
            invoices::paid_at.eq(settled.then_some(now)),
        ))
        .returning(InvoiceRow::as_returning())
        .get_result(conn)
        .await?;
    let rows: Vec<_> = lines
        .iter()
        .enumerate()
        .map(|(position, (description, amount))| {
            (
                invoice_lines::invoice_id.eq(invoice.id),
                invoice_lines::position.eq(position as i32),
                invoice_lines::description.eq(description),
                invoice_lines::amount_minor.eq(amount),
            )
        })
        .collect();
    diesel::insert_into(invoice_lines::table)
        .values(rows)
        .execute(conn)
        .await?;
    usage_charges::mark_billed(conn, &charges, invoice.id).await?;
    if credit > 0 {
        diesel::insert_into(credit_entries::table)
            .values((
                credit_entries::id.eq(Uuid::now_v7()),
                credit_entries::org_id.eq(org_id),
                credit_entries::amount_minor.eq(-credit),
                credit_entries::currency.eq(&currency),
                credit_entries::source.eq(format!("invoice {number}")),
            ))
            .execute(conn)
            .await?;
    }

    // The next period: the same plan, the free plan after a cancellation, or none
    // for a deleted organization.
    diesel::delete(subscription_segments::table.filter(subscription_segments::org_id.eq(org_id)))
        .execute(conn)
        .await?;
    // A cancellation takes effect when its period closes, whatever closes it.
    let next_plan = if sub.cancel_at_period_end {
        free_plan(conn).await?.id
    } else {
        sub.plan_id.clone()
    };
    if reason == CloseReason::OrganizationDeleted {
        diesel::update(subscriptions::table.find(org_id))
            .set((
                subscriptions::plan_id.eq(&next_plan),
                subscriptions::status.eq(ENDED),
                subscriptions::period_start.eq(end),
                subscriptions::period_end.eq(period_end_after(end)),
                subscriptions::cancel_at_period_end.eq(false),
            ))
            .prepared()
            .execute(conn)
            .await?;
    } else {
        diesel::update(subscriptions::table.find(org_id))
            .set((
                subscriptions::plan_id.eq(&next_plan),
                subscriptions::period_start.eq(end),
                subscriptions::period_end.eq(period_end_after(end)),
                subscriptions::cancel_at_period_end.eq(false),
            ))
            .prepared()
            .execute(conn)
            .await?;
        start_segment(conn, org_id, end, &next_plan).await?;
    }
    diesel::update(subscriptions::table.find(org_id))
        .set((
            subscriptions::revision.eq(subscriptions::revision + 1),
            subscriptions::updated_at.eq(diesel::dsl::now),
        ))
        .prepared()
        .execute(conn)
        .await?;
    // One mutation, one activity: a deletion's final invoice is recorded in the
    // deletion's own activity row.
    if reason != CloseReason::OrganizationDeleted {
        audit::record(
            conn,
            actor,
            Some(org_id),
            Action::InvoiceCreate,
            &invoice.name(),
            // The plan of the period that starts now: a cancelled plan ends
            // here, and the change feed's readers adjust their quotas by it.
            // What a payment processor's side needs to charge it, too.
            serde_json::json!({
                "number": number, "reason": format!("{reason:?}"),
                "subtotal_minor": subtotal, "credit_minor": credit, "total_minor": total,
                "currency": currency, "state": invoice.state, "due_time": invoice.due_at,
                "next_plan": next_plan, "usage_charges": charges.len(),
            }),
        )
        .await?;
    }
    Ok(Closed::Issued(load_view(conn, invoice).await?))
}

/// Milliseconds as days with two decimals, e.g. "12.50" (integer arithmetic).
fn days(ms: i64) -> String {
    let hundredths = ms * 100 / 86_400_000;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

impl Store {
    /// Closes `org_id`'s period starting at `period_start` (the current one if
    /// `None`), for an operator: a service, which holds no standing to re-check.
    pub async fn close_period_now(
        &self,
        actor: &Actor,
        org_id: Uuid,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<InvoiceView> {
        self.write(|conn| {
            async move {
                let start = match period_start {
                    Some(start) => start,
                    None => {
                        subscriptions::table
                            .find(org_id)
                            .select(subscriptions::period_start)
                            .first(conn)
                            .await?
                    }
                };
                match close_period(
                    conn,
                    actor,
                    org_id,
                    start,
                    CloseReason::Operator,
                    self.invoice_due,
                )
                .await?
                {
                    Closed::Issued(invoice) | Closed::Before(invoice) => Ok(invoice),
                    Closed::Nothing if period_start.is_some() => Err(Error::NotFound(format!(
                        "no billing period of {} starts at {start}",
                        crate::domain::OrgRef::name_of(org_id)
                    ))),
                    Closed::Nothing => Err(Error::precondition(
                        "BILLING_ENDED",
                        crate::domain::OrgRef::name_of(org_id),
                        "billing has ended for this organization: it is deleted",
                    )),
                }
            }
            .scope_boxed()
        })
        .await
    }

    /// Closes every period that has ended, each in its own transaction; returns
    /// how many invoices were issued.
    pub async fn close_due_periods(&self, actor: &Actor, limit: i64) -> Result<usize> {
        let due: Vec<(Uuid, DateTime<Utc>)> = self
            .read(|conn| {
                async move {
                    Ok(subscriptions::table
                        .filter(subscriptions::status.ne(ENDED))
                        .filter(subscriptions::period_end.le(diesel::dsl::now))
                        .order(subscriptions::period_end)
                        .limit(limit)
                        .select((subscriptions::org_id, subscriptions::period_start))
                        .load(conn)
                        .await?)
                }
                .scope_boxed()
            })
            .await?;
        let mut issued = 0;
        for (org_id, start) in due {
            // One organization's failure must not hold up the others.
            let closed = self
                .write(|conn| {
                    close_period(
                        conn,
                        actor,
                        org_id,
                        start,
                        CloseReason::PeriodEnded,
                        self.invoice_due,
                    )
                    .scope_boxed()
                })
                .await;
            match closed {
                Ok(Closed::Issued(_)) => issued += 1,
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(%org_id, error = %err, "closing a billing period failed; will retry")
                }
            }
        }
        Ok(issued)
    }
}
