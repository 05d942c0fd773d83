//! Invoices as issued (`period_close` issues them), and vouchers: credits an
//! operator creates and an organization redeems.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::paging::newest_first_after;
use super::proof::OrgAccess;
use super::schema::{
    credit_entries, invoice_lines, invoice_payments, invoices, voucher_redemptions, vouchers,
};
use super::subscription_row::{credit_balance, find_plan, lock_subscription};
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, ChildName, Currency, Money, PageRequest, PageToken};
use crate::error::{Error, Result};

pub const INVOICES: &str = "invoices";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invoices, check_for_backend(diesel::pg::Pg))]
pub struct InvoiceRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub number: String,
    pub org_name: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    pub subtotal_minor: i64,
    pub credit_minor: i64,
    pub total_minor: i64,
    pub bill_to: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// `open` or `paid` (`invoice_payments` holds the attempts to charge it).
    pub state: String,
    pub due_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

/// The stored states of an invoice.
pub const OPEN: &str = "open";
pub const PAID: &str = "paid";

impl InvoiceRow {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, INVOICES, self.id)
    }

    /// When it was paid, if it is.
    pub fn paid(&self) -> Option<DateTime<Utc>> {
        self.paid_at.filter(|_| self.state == PAID)
    }

    /// How it is described to people: its number and resource name.
    pub fn described(&self) -> String {
        format!("invoice {} ({})", self.number, self.name())
    }

    /// The amount due.
    pub fn total(&self) -> Result<Money> {
        let currency = Currency::parse("currency", &self.currency).map_err(|_| {
            Error::Internal(anyhow::anyhow!(
                "{} is in {}, which orgd does not bill in",
                self.name(),
                self.currency
            ))
        })?;
        Ok(Money::new(self.total_minor, currency))
    }
}

/// An invoice with its lines (description, amount in minor units) and the
/// attempts to charge it that it shows.
#[derive(Debug, Clone)]
pub struct InvoiceView {
    pub row: InvoiceRow,
    pub lines: Vec<(String, i64)>,
    /// The processor's reference of the payment that paid it.
    pub paid_reference: Option<String>,
    pub last_failure: Option<PaymentFailure>,
}

/// A failed attempt to charge an invoice.
#[derive(Debug, Clone)]
pub struct PaymentFailure {
    pub message: String,
    pub at: DateTime<Utc>,
    pub reference: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = vouchers, check_for_backend(diesel::pg::Pg))]
pub struct VoucherRow {
    pub code: String,
    pub amount_minor: i64,
    pub currency: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_redemptions: i32,
    pub redemptions: i32,
}

pub struct NewVoucher {
    pub code: String,
    pub amount_minor: i64,
    pub currency: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_redemptions: i32,
}

/// The refusal of an invoice `org_id` does not have.
pub(super) fn invoice_not_found(org_id: Uuid, id: Uuid) -> Error {
    Error::NotFound(format!(
        "invoice {} not found",
        ChildName::name_of(org_id, INVOICES, id)
    ))
}

pub(super) async fn load_view(conn: &mut Conn, row: InvoiceRow) -> Result<InvoiceView> {
    let lines = invoice_lines::table
        .filter(invoice_lines::invoice_id.eq(row.id))
        .order(invoice_lines::position)
        .select((invoice_lines::description, invoice_lines::amount_minor))
        .load(conn)
        .await?;
    // The attempts, newest first: at most one succeeded (a unique index), and
    // processors give up after a handful of failures.
    let attempts: Vec<(String, Option<String>, DateTime<Utc>)> = invoice_payments::table
        .filter(invoice_payments::invoice_id.eq(row.id))
        .order((
            invoice_payments::recorded_at.desc(),
            invoice_payments::processor_reference.desc(),
        ))
        .select((
            invoice_payments::processor_reference,
            invoice_payments::failure_message,
            invoice_payments::recorded_at,
        ))
        .load(conn)
        .await?;
    let mut view = InvoiceView {
        row,
        lines,
        paid_reference: None,
        last_failure: None,
    };
    for (reference, failure, at) in attempts {
        match failure {
            None => view.paid_reference = Some(reference),
            Some(message) if view.last_failure.is_none() => {
                view.last_failure = Some(PaymentFailure {
                    message,
                    at,
                    reference,
                })
            }
            Some(_) => {}
        }
    }
    Ok(view)
}

/// Whether `org_id` has an invoice open past its due time, by the database's
/// clock. Read when asked (no job flips a flag), so paying the invoice or the
/// due time passing shows in the very next answer.
pub(super) async fn past_due(conn: &mut Conn, org_id: Uuid) -> Result<bool> {
    let overdue = invoices::table
        .filter(invoices::org_id.eq(org_id))
        .filter(invoices::state.eq(OPEN))
        // Nothing to pay is never overdue (an invoice a replica of the
        // previous version issued for nothing is left open).
        .filter(invoices::total_minor.gt(0))
        .filter(invoices::due_at.le(diesel::dsl::now));
    Ok(diesel::select(diesel::dsl::exists(overdue))
        .get_result(conn)
        .await?)
}

impl Store {
    pub async fn list_invoices(
        &self,
        org_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<InvoiceView>, String)> {
        let views = self
            .read(|conn| {
                async move {
                    let mut query = invoices::table
                        .filter(invoices::org_id.eq(org_id))
                        .order((invoices::period_start.desc(), invoices::id.desc()))
                        .limit(page.limit + 1)
                        .select(InvoiceRow::as_select())
                        .into_boxed();
                    if let Some(after) = page.after {
                        query = query.filter(newest_first_after!(
                            invoices::period_start,
                            invoices::id,
                            after
                        ));
                    }
                    let mut views = Vec::new();
                    for row in query.load(conn).await? {
                        views.push(load_view(conn, row).await?);
                    }
                    Ok(views)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(views, |v: &InvoiceView| PageToken {
            time: v.row.period_start,
            id: v.row.id,
        }))
    }

    pub async fn get_invoice(&self, org_id: Uuid, id: Uuid) -> Result<InvoiceView> {
        self.read(|conn| {
            async move {
                let row = invoices::table
                    .filter(invoices::org_id.eq(org_id))
                    .filter(invoices::id.eq(id))
                    .select(InvoiceRow::as_select())
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| invoice_not_found(org_id, id))?;
                load_view(conn, row).await
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn create_voucher(&self, actor: &Actor, new: NewVoucher) -> Result<VoucherRow> {
        let new = &new;
        self.write(|conn| {
            async move {
                let voucher: VoucherRow = diesel::insert_into(vouchers::table)
                    .values((
                        vouchers::code.eq(&new.code),
                        vouchers::amount_minor.eq(new.amount_minor),
                        vouchers::currency.eq(&new.currency),
                        vouchers::expires_at.eq(new.expires_at),
                        vouchers::max_redemptions.eq(new.max_redemptions),
                        vouchers::created_by.eq(&actor.label),
                    ))
                    .on_conflict_do_nothing()
                    .returning(VoucherRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| {
                        Error::AlreadyExists(format!("voucher code {} already exists", new.code))
                    })?;
                audit::record(
                    conn,
                    actor,
                    None,
                    Action::VoucherCreate,
                    &format!("vouchers/{}", voucher.code),
                    serde_json::json!({
                        "amount_minor": voucher.amount_minor, "currency": voucher.currency,
                        "max_redemptions": voucher.max_redemptions,
                    }),
                )
                .await?;
                Ok(voucher)
            }
            .scope_boxed()
        })
        .await
    }

    /// Redeems `code` for `org_id` once; returns the credit added and the balance.
    pub async fn redeem_voucher(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        code: &str,
    ) -> Result<(VoucherRow, i64)> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let org = &change.org;
                let sub = lock_subscription(conn, org_id).await?;
                let currency = find_plan(conn, &sub.plan_id).await?.currency;
                let unknown = || Error::NotFound(format!("voucher code {code} is not valid"));
                // The row lock makes concurrent redemptions of the last use take turns.
                let voucher: VoucherRow = vouchers::table
                    .find(code)
                    .select(VoucherRow::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(unknown)?;
                let refuse = |kind: &'static str, message: String| {
                    Err(Error::precondition(kind, format!("vouchers/{code}"), message))
                };
                if voucher.expires_at.is_some_and(|at| at <= Utc::now()) {
                    return refuse("VOUCHER_EXPIRED", format!("voucher code {code} has expired"));
                }
                if voucher.currency != currency {
                    return refuse(
                        "VOUCHER_CURRENCY",
                        format!(
                            "voucher code {code} is in {}, and {} is billed in {currency}",
                            voucher.currency,
                            org.described()
                        ),
                    );
                }
                let inserted = diesel::insert_into(voucher_redemptions::table)
                    .values((
                        voucher_redemptions::code.eq(code),
                        voucher_redemptions::org_id.eq(org_id),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    return Err(Error::AlreadyExists(format!(
                        "{} already redeemed voucher code {code}",
                        org.described()
                    )));
                }
                if voucher.redemptions >= voucher.max_redemptions {
                    return refuse(
                        "VOUCHER_USED_UP",
                        format!("voucher code {code} has been redeemed the maximum number of times"),
                    );
                }
                diesel::update(vouchers::table.find(code))
                    .set(vouchers::redemptions.eq(vouchers::redemptions + 1))
                    .prepared()
                    .execute(conn)
                    .await?;
                diesel::insert_into(credit_entries::table)
                    .values((
                        credit_entries::id.eq(Uuid::now_v7()),
                        credit_entries::org_id.eq(org_id),
                        credit_entries::amount_minor.eq(voucher.amount_minor),
                        credit_entries::currency.eq(&voucher.currency),
                        credit_entries::source.eq(format!("voucher {code}")),
                    ))
                    .execute(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::VoucherRedeem,
                    &format!("vouchers/{code}"),
                    serde_json::json!({ "amount_minor": voucher.amount_minor, "currency": voucher.currency }),
                )
                .await?;
                let balance = credit_balance(conn, org_id, &currency).await?;
                Ok((voucher, balance))
            }
            .scope_boxed()
        })
        .await
    }
}
