//! Paying invoices: a backend service (the payment processor's webhook handler)
//! records the outcome of each attempt to charge one. An attempt is keyed by
//! the processor's reference (`invoice_payments`' primary key), so a webhook
//! delivered twice, or to two replicas at once, is recorded once; the invoice
//! row is locked while its state changes, and a unique index lets an invoice
//! be paid once.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::invoices::{INVOICES, InvoiceRow, InvoiceView, PAID, invoice_not_found, load_view};
use super::schema::{billing_profiles, invoice_payments, invoices, organizations};
use super::subscription_row::db_now;
use super::{Actor, Conn, KeepPrepared, Store, audit, outbox};
use crate::domain::{
    Action, ChildName, Currency, FailureMessage, Money, ProcessorReference, quoted,
};
use crate::error::{Error, Result};

/// The stored outcomes of an attempt.
const SUCCEEDED: &str = "succeeded";
const FAILED: &str = "failed";

/// What the processor reports of one attempt to charge an invoice.
pub struct PaymentAttempt {
    pub reference: ProcessorReference,
    /// `None`: the charge succeeded; else why it failed.
    pub failure: Option<FailureMessage>,
    /// What was charged, or tried.
    pub amount: Money,
}

impl PaymentAttempt {
    fn outcome(&self) -> &'static str {
        match self.failure {
            None => SUCCEEDED,
            Some(_) => FAILED,
        }
    }
}

/// An attempt recorded before, found by its reference.
#[derive(Queryable)]
struct Recorded {
    /// `invoices/…` it was recorded on, in whichever organization.
    invoice_id: Uuid,
    org_id: Uuid,
    outcome: String,
    recorded_at: DateTime<Utc>,
}

async fn lock_invoice(conn: &mut Conn, org_id: Uuid, id: Uuid) -> Result<InvoiceRow> {
    invoices::table
        .filter(invoices::org_id.eq(org_id))
        .filter(invoices::id.eq(id))
        .select(InvoiceRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| invoice_not_found(org_id, id))
}

/// A reference seen again: the same attempt replayed gets the invoice as it
/// stands now; another outcome, or another invoice, is refused, since one
/// reference is one attempt with one outcome.
fn replay(invoice: &InvoiceRow, earlier: &Recorded, attempt: &PaymentAttempt) -> Result<()> {
    let reference = attempt.reference.as_str();
    if earlier.invoice_id != invoice.id {
        return Err(Error::precondition(
            "PAYMENT_REFERENCE_USED",
            reference,
            format!(
                "processor reference {} was recorded at {} for another invoice, {}: each attempt has its own reference",
                quoted(reference),
                earlier.recorded_at,
                ChildName::name_of(earlier.org_id, INVOICES, earlier.invoice_id)
            ),
        ));
    }
    if earlier.outcome != attempt.outcome() {
        return Err(Error::precondition(
            "PAYMENT_REFERENCE_USED",
            reference,
            format!(
                "processor reference {} was recorded as {} at {} for {}; an attempt's outcome does not change: record a new attempt under its own reference",
                quoted(reference),
                earlier.outcome,
                earlier.recorded_at,
                invoice.described()
            ),
        ));
    }
    Ok(())
}

/// Where notices about `org_id`'s invoices go: the verified billing email, else
/// the organization's contact email; none once the organization is purged.
async fn billing_recipient(conn: &mut Conn, org_id: Uuid) -> Result<Option<String>> {
    let billing: Option<String> = billing_profiles::table
        .find(org_id)
        .select(billing_profiles::billing_email)
        .first(conn)
        .await
        .optional()?;
    if let Some(email) = billing.filter(|email| !email.is_empty()) {
        return Ok(Some(email));
    }
    Ok(organizations::table
        .find(org_id)
        .select(organizations::contact_email)
        .first::<String>(conn)
        .await
        .optional()?
        .filter(|email| !email.is_empty()))
}

/// Queues the notice of a failed charge, in the transaction that records it.
async fn notify_failure(conn: &mut Conn, invoice: &InvoiceRow, why: &str) -> Result<()> {
    let Some(recipient) = billing_recipient(conn, invoice.org_id).await? else {
        return Ok(());
    };
    let total = Money::new(
        invoice.total_minor,
        Currency::parse("currency", &invoice.currency)?,
    );
    let body = format!(
        "The payment of {total} for invoice {} of the organization \"{}\" failed.\n\
         The payment processor said: {why}\n\
         The invoice is due on {}. Please check the organization's payment method.",
        invoice.number,
        invoice.org_name,
        invoice.due_at.format("%Y-%m-%d"),
    );
    let subject = format!("Payment failed for invoice {}", invoice.number);
    outbox::enqueue(conn, &recipient, &subject, &body).await
}

impl Store {
    /// Records `attempt` on invoice `id` of `org_id`, for a backend service;
    /// returns the invoice as it stands afterwards.
    pub async fn record_invoice_payment(
        &self,
        actor: &Actor,
        org_id: Uuid,
        id: Uuid,
        attempt: &PaymentAttempt,
    ) -> Result<InvoiceView> {
        self.write(|conn| {
            async move {
                // Attempts on one invoice take turns; the row stays locked
                // until the state they leave is committed.
                let invoice = lock_invoice(conn, org_id, id).await?;
                let reference = attempt.reference.as_str();
                let earlier: Option<Recorded> = invoice_payments::table
                    .inner_join(invoices::table)
                    .filter(invoice_payments::processor_reference.eq(reference))
                    .select((
                        invoice_payments::invoice_id,
                        invoices::org_id,
                        invoice_payments::outcome,
                        invoice_payments::recorded_at,
                    ))
                    .first(conn)
                    .await
                    .optional()?;
                if let Some(earlier) = earlier {
                    replay(&invoice, &earlier, attempt)?;
                    return load_view(conn, invoice).await;
                }
                // A failure reported once the invoice is paid is an earlier
                // attempt's, its webhook overtaken by the success's: it is
                // recorded, changes nothing and sends no notice. A second
                // success would be a second charge, to refund.
                let paid_at = invoice.paid();
                let late_failure =
                    paid_at.is_some() && attempt.failure.is_some() && invoice.total_minor > 0;
                if let (Some(paid_at), false) = (paid_at, late_failure) {
                    let paid = load_view(conn, invoice.clone()).await?;
                    let how = paid
                        .paid_reference
                        .as_deref()
                        .map_or("its total is zero".to_owned(), |paid| {
                            format!("by processor reference {}", quoted(paid))
                        });
                    return Err(Error::precondition(
                        "INVOICE_PAID",
                        invoice.name(),
                        format!(
                            "{} was paid at {paid_at} ({how}): nothing is due, so the success of {} cannot be recorded on it; refund that charge",
                            invoice.described(),
                            quoted(reference)
                        ),
                    ));
                }
                let total = invoice.total()?;
                if attempt.amount != total {
                    return Err(Error::precondition(
                        "AMOUNT_MISMATCH",
                        invoice.name(),
                        format!(
                            "{} is for {}, and the attempt {} was for {}: only a charge of the whole total is recorded on it",
                            invoice.described(),
                            total.format(),
                            quoted(reference),
                            attempt.amount.format()
                        ),
                    ));
                }
                // After the wait for the row lock, not at transaction start.
                let at = db_now(conn).await?;
                let inserted = diesel::insert_into(invoice_payments::table)
                    .values((
                        invoice_payments::recorded_at.eq(at),
                        invoice_payments::processor_reference.eq(reference),
                        invoice_payments::invoice_id.eq(invoice.id),
                        invoice_payments::outcome.eq(attempt.outcome()),
                        invoice_payments::failure_message
                            .eq(attempt.failure.as_ref().map(FailureMessage::as_str)),
                        invoice_payments::recorded_by.eq(&actor.label),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    // The same reference committed meanwhile for another
                    // invoice: start again, and `replay` says so.
                    return Err(Error::SerializationConflict);
                }
                // A failure leaves the invoice open: the attempt's row is its record.
                let (updated, action) = match &attempt.failure {
                    None => (
                        diesel::update(invoices::table.find(invoice.id))
                            .set((
                                invoices::state.eq(PAID),
                                invoices::paid_at.eq(at),
                            ))
                            .returning(InvoiceRow::as_returning())
                            .prepared()
                            .get_result(conn)
                            .await?,
                        Action::InvoicePay,
                    ),
                    Some(_) => (invoice, Action::InvoicePaymentFail),
                };
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    action,
                    &updated.name(),
                    serde_json::json!({
                        "number": updated.number,
                        "processor_reference": reference,
                        "total_minor": updated.total_minor,
                        "currency": updated.currency,
                        "failure_message": attempt.failure.as_ref().map(FailureMessage::as_str),
                        "after_payment": late_failure,
                    }),
                )
                .await?;
                if let (Some(why), false) = (&attempt.failure, late_failure) {
                    notify_failure(conn, &updated, why.as_str()).await?;
                }
                load_view(conn, updated).await
            }
            .scope_boxed()
        })
        .await
    }
}
