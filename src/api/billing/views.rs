//! BillingService's resources as the proto shows them, and an invoice as the
//! document DownloadInvoice returns.

use crate::api::{optional, timestamp};
use crate::auth::OrgAccess;
use crate::domain::{Currency, Money, OrgRef, Permission};
use crate::error::Result;
use crate::invoice_doc::{self, BillTo, DocLine, InvoiceDocument, Payment};
use crate::pb;
use crate::store::billing_profiles::{PaymentMethodRow, ProfileRow};
use crate::store::invoices::{InvoiceView, VoucherRow};
use crate::store::subscription_row::{PlanRow, SubscriptionView};
use crate::store::usage_charges::UsageChargeRow;

pub(super) fn money(amount_minor: i64, currency: &str) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

pub(super) fn plan(row: &PlanRow) -> pb::Plan {
    pb::Plan {
        name: row.name(),
        display_name: row.display_name.clone(),
        monthly_price: money(row.price_minor, &row.currency),
        max_members: row.max_members,
        max_resources: row.max_resources,
    }
}

/// The subscription as `access` may see it: the credit balance is billing data,
/// for who holds `reads_billing`.
pub(super) fn subscription(
    view: &SubscriptionView,
    access: &OrgAccess,
    reads_billing: &Permission,
) -> pb::Subscription {
    use pb::subscription::Status;
    // Past due outranks a cancellation, which `cancel_at_period_end` still
    // shows; a deleted organization's subscription has ended, paid or not.
    let status = if view.row.is_ended() {
        Status::Ended
    } else if view.past_due {
        Status::PastDue
    } else if view.row.cancel_at_period_end {
        Status::Canceling
    } else {
        Status::Active
    };
    pb::Subscription {
        name: format!("{}/subscription", OrgRef::name_of(view.row.org_id)),
        plan: view.plan.name(),
        status: status.into(),
        current_period_start: Some(timestamp(view.row.period_start)),
        current_period_end: Some(timestamp(view.row.period_end)),
        cancel_at_period_end: view.row.cancel_at_period_end,
        credit_balance: access
            .member()
            .allows(reads_billing)
            .then(|| money(view.credit_balance, &view.plan.currency))
            .flatten(),
        etag: view.row.etag().to_string(),
    }
}

pub(super) fn profile(row: &ProfileRow) -> pb::BillingProfile {
    pb::BillingProfile {
        name: row.name(),
        legal_name: row.legal_name.clone(),
        billing_email: row.billing_email.clone(),
        pending_billing_email: row.pending_billing_email.clone().unwrap_or_default(),
        tax_id: row.tax_id.clone(),
        address: Some(pb::PostalAddress {
            address_lines: row.address_lines.clone(),
            city: row.city.clone(),
            postal_code: row.postal_code.clone(),
            region: row.region.clone(),
            country: row.country.clone(),
        }),
        etag: row.etag().to_string(),
        update_time: Some(timestamp(row.updated_at)),
    }
}

pub(super) fn payment_method(row: &PaymentMethodRow) -> pb::PaymentMethod {
    pb::PaymentMethod {
        name: row.name(),
        processor_token: row.processor_token.clone(),
        brand: row.brand.clone(),
        last4: row.last4.clone(),
        exp_month: row.exp_month,
        exp_year: row.exp_year,
        default: row.is_default,
        create_time: Some(timestamp(row.created_at)),
    }
}

pub(super) fn invoice(view: &InvoiceView) -> pb::Invoice {
    let row = &view.row;
    pb::Invoice {
        name: row.name(),
        number: row.number.clone(),
        period_start: Some(timestamp(row.period_start)),
        period_end: Some(timestamp(row.period_end)),
        lines: view
            .lines
            .iter()
            .map(|(description, amount)| pb::InvoiceLine {
                description: description.clone(),
                amount: money(*amount, &row.currency),
            })
            .collect(),
        subtotal: money(row.subtotal_minor, &row.currency),
        credit: money(row.credit_minor, &row.currency),
        total: money(row.total_minor, &row.currency),
        create_time: Some(timestamp(row.created_at)),
        state: match row.paid() {
            Some(_) => pb::invoice::State::Paid,
            None => pb::invoice::State::Open,
        }
        .into(),
        due_time: Some(timestamp(row.due_at)),
        paid_time: row.paid().map(timestamp),
        paid_processor_reference: view.paid_reference.clone().unwrap_or_default(),
        last_payment_failure: view.last_failure.as_ref().map(|failure| {
            pb::invoice::PaymentFailure {
                message: failure.message.clone(),
                time: Some(timestamp(failure.at)),
                processor_reference: failure.reference.clone(),
            }
        }),
    }
}

pub(super) fn voucher(row: &VoucherRow) -> pb::Voucher {
    pb::Voucher {
        code: row.code.clone(),
        amount: money(row.amount_minor, &row.currency),
        expire_time: row.expires_at.map(timestamp),
        max_redemptions: row.max_redemptions,
        redemptions: row.redemptions,
    }
}

pub(super) fn usage_charge(row: &UsageChargeRow) -> pb::UsageCharge {
    use pb::usage_charge::State;
    let state = match (row.deleted_at, row.invoice_id) {
        (Some(_), _) => State::Deleted,
        (None, Some(_)) => State::Billed,
        (None, None) => State::Pending,
    };
    pb::UsageCharge {
        name: row.name(),
        description: row.description.clone(),
        amount: money(row.amount_minor, &row.currency),
        resource: row.resource().unwrap_or_default(),
        usage_start_time: Some(timestamp(row.usage_start)),
        usage_end_time: Some(timestamp(row.usage_end)),
        state: state.into(),
        invoice: row.invoice().unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        delete_time: row.deleted_at.map(timestamp),
    }
}

/// The invoice as a self-contained HTML document.
pub(super) fn render(view: &InvoiceView) -> Result<String> {
    let row = &view.row;
    let currency = Currency::parse("currency", &row.currency)?;
    let text = |key: &str| {
        row.bill_to
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let address_lines: Vec<String> = row
        .bill_to
        .get("address_lines")
        .and_then(|v| v.as_array())
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (legal_name, email, tax_id, city, postal_code, region, country) = (
        text("legal_name"),
        text("billing_email"),
        text("tax_id"),
        text("city"),
        text("postal_code"),
        text("region"),
        text("country"),
    );
    let doc = InvoiceDocument {
        number: &row.number,
        issued: row.created_at,
        period_start: row.period_start,
        period_end: row.period_end,
        organization: &row.org_name,
        bill_to: BillTo {
            legal_name: &legal_name,
            email: &email,
            tax_id: optional(&tax_id),
            address_lines: &address_lines,
            city: &city,
            postal_code: &postal_code,
            region: &region,
            country: &country,
        },
        lines: view
            .lines
            .iter()
            .map(|(description, amount)| DocLine {
                description,
                amount: Money::new(*amount, currency),
            })
            .collect(),
        subtotal: Money::new(row.subtotal_minor, currency),
        // The document shows credit as a deduction: subtotal + credit = total.
        credit: Money::new(-row.credit_minor, currency),
        total: Money::new(row.total_minor, currency),
        payment: match row.paid() {
            Some(paid_at) => Payment::Paid(paid_at),
            None => Payment::Due(row.due_at),
        },
    };
    Ok(invoice_doc::render_html(&doc))
}
