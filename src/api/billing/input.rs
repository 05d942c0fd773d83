//! BillingService's requests read and checked: names, codes, a payment
//! method's display data, a billing profile's update mask.

use crate::api::{datetime, mask_paths, not_updatable, request_id};
use crate::auth::OrgAccess;
use crate::domain::{
    ChargeDescription, ChildName, Currency, Email, FailureMessage, LegalName, MAX_AMOUNT_MINOR,
    Money, OrgRef, PostalAddress, ProcessorReference, TaxId, UsageInterval, quoted,
};
use crate::error::{Error, Result};
use crate::pb;
use crate::store::billing_profiles::{AddressFields, NewPaymentMethod, ProfileChanges};
use crate::store::invoice_payments::PaymentAttempt;
use crate::store::org_row::OrgRow;
use crate::store::resources::RESOURCES;
use crate::store::usage_charges::NewUsageCharge;

/// Fields UpdateBillingProfile can change.
const UPDATABLE_FIELDS: &str = "legal_name, billing_email, tax_id, address";

pub(super) fn ensure_singleton(
    field: &str,
    raw: &str,
    singleton: &str,
    access: &OrgAccess,
) -> Result<()> {
    let org = raw
        .strip_suffix(singleton)
        .and_then(|rest| rest.strip_suffix('/'))
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!("{} is not a {singleton} name: expected organizations/{{organization}}/{singleton}", quoted(raw)),
            )
        })?;
    let org = OrgRef::parse(field, org)?;
    if !org.names(access.org().id, &access.org().slug) {
        return Err(Error::invalid(
            field,
            format!("{} names another organization", quoted(raw)),
        ));
    }
    Ok(())
}

pub(super) fn plan_id(field: &str, raw: &str) -> Result<String> {
    raw.strip_prefix("plans/")
        .filter(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!(
                    "{} is not a plan name: expected plans/{{id}}, e.g. plans/startup",
                    quoted(raw)
                ),
            )
        })
}

/// A voucher code, normalized to upper case.
pub(super) fn voucher_code(field: &str, raw: &str) -> Result<String> {
    let code = raw.trim().to_ascii_uppercase();
    let valid = (4..=40).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !code.starts_with('-');
    if !valid {
        return Err(Error::invalid(
            field,
            "a voucher code is 4 to 40 letters, digits and hyphens",
        ));
    }
    Ok(code)
}

/// A payment method from the request.
pub(super) fn new_payment_method(given: &pb::PaymentMethod) -> Result<NewPaymentMethod> {
    let token = given.processor_token.trim();
    if !(token.starts_with("pm_")
        && (6..=103).contains(&token.len())
        && token[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(Error::invalid(
            "payment_method.processor_token",
            "expected the payment processor's token, e.g. pm_1NvXyz…",
        ));
    }
    let brand = given.brand.trim().to_ascii_lowercase();
    if brand.is_empty()
        || brand.len() > 30
        || !brand
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'_')
    {
        return Err(Error::invalid(
            "payment_method.brand",
            "expected a card brand such as visa or mastercard",
        ));
    }
    if given.last4.len() != 4 || !given.last4.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            "payment_method.last4",
            "expected the card's last four digits",
        ));
    }
    if !(1..=12).contains(&given.exp_month) {
        return Err(Error::invalid(
            "payment_method.exp_month",
            "expected a month from 1 to 12",
        ));
    }
    let today = chrono::Utc::now().date_naive();
    let (year, month) = (
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today) as i32,
    );
    if given.exp_year > 2200 || (given.exp_year, given.exp_month) < (year, month) {
        return Err(Error::invalid(
            "payment_method.exp_year",
            "the card has expired or the expiry date is not valid",
        ));
    }
    Ok(NewPaymentMethod {
        processor_token: token.to_owned(),
        brand,
        last4: given.last4.clone(),
        exp_month: given.exp_month,
        exp_year: given.exp_year,
    })
}

/// The attempt RecordInvoicePayment reports: a failure says why, a success
/// says nothing more.
pub(super) fn payment_attempt(body: &pb::RecordInvoicePaymentRequest) -> Result<PaymentAttempt> {
    use pb::record_invoice_payment_request::Outcome;
    let reference = ProcessorReference::parse("processor_reference", &body.processor_reference)?;
    let failure = match Outcome::try_from(body.outcome) {
        Ok(Outcome::Succeeded) if body.failure_message.is_empty() => None,
        Ok(Outcome::Succeeded) => {
            return Err(Error::invalid(
                "failure_message",
                "a payment that succeeded has no failure message: leave it empty",
            ));
        }
        Ok(Outcome::Failed) => Some(FailureMessage::parse(
            "failure_message",
            &body.failure_message,
        )?),
        Ok(Outcome::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                "outcome",
                "say whether the charge succeeded (OUTCOME_SUCCEEDED) or failed (OUTCOME_FAILED)",
            ));
        }
    };
    let amount = body
        .amount
        .as_ref()
        .ok_or_else(|| Error::invalid("amount", "the amount charged is required"))?;
    let currency = Currency::parse("amount.currency_code", &amount.currency_code)?;
    if amount.amount_minor <= 0 {
        return Err(Error::invalid(
            "amount.amount_minor",
            "a charge is of more than nothing: send the amount in minor units (cents for USD)",
        ));
    }
    Ok(PaymentAttempt {
        reference,
        failure,
        amount: Money::new(amount.amount_minor, currency),
    })
}

/// Reads the fields named in an update mask out of `given`.
pub(super) fn profile_changes(
    given: &pb::BillingProfile,
    mask: Option<&prost_types::FieldMask>,
) -> Result<ProfileChanges> {
    let paths = mask_paths("update_mask", mask, UPDATABLE_FIELDS)?;
    let mut changes = ProfileChanges::default();
    for path in paths {
        match path.as_str() {
            "legal_name" => {
                changes.legal_name = Some(
                    LegalName::parse("billing_profile.legal_name", &given.legal_name)?
                        .as_str()
                        .to_owned(),
                )
            }
            "billing_email" => {
                changes.billing_email = Some(Email::parse(
                    "billing_profile.billing_email",
                    &given.billing_email,
                )?)
            }
            "tax_id" => {
                changes.tax_id = Some(
                    TaxId::parse_optional("billing_profile.tax_id", &given.tax_id)?
                        .map_or_else(String::new, |id| id.as_str().to_owned()),
                )
            }
            "address" => {
                let address = given.address.clone().unwrap_or_default();
                let parsed = PostalAddress::parse(
                    "billing_profile.address",
                    &address.address_lines,
                    &address.city,
                    &address.postal_code,
                    &address.region,
                    &address.country,
                )?;
                changes.address = Some(AddressFields {
                    lines: parsed.lines,
                    city: parsed.city,
                    postal_code: parsed.postal_code,
                    region: parsed.region,
                    country: parsed.country.as_str().to_owned(),
                });
            }
            other => return Err(not_updatable("update_mask", other, UPDATABLE_FIELDS)),
        }
    }
    Ok(changes)
}

/// An amount of money in `field` (`{field}.currency_code`,
/// `{field}.amount_minor`): `what` it is, from one minor unit up to
/// `MAX_AMOUNT_MINOR`.
pub(super) fn positive_amount(
    field: &str,
    given: Option<&pb::Money>,
    what: &str,
) -> Result<(Currency, i64)> {
    let amount =
        given.ok_or_else(|| Error::invalid(field, format!("the {what} amount is required")))?;
    let currency = Currency::parse(&format!("{field}.currency_code"), &amount.currency_code)?;
    if !(1..=MAX_AMOUNT_MINOR).contains(&amount.amount_minor) {
        return Err(Error::invalid(
            format!("{field}.amount_minor"),
            format!("the {what} must be between 1 and {MAX_AMOUNT_MINOR} minor units"),
        ));
    }
    Ok((currency, amount.amount_minor))
}

/// A request id that makes a create safe to retry, required where a
/// duplicate would bill twice.
pub(super) fn required_request_id(raw: &str) -> Result<uuid::Uuid> {
    request_id(raw)?.ok_or_else(|| {
        Error::invalid(
            "request_id",
            "a request_id is required, a fresh UUID per report, so that a retry never bills twice",
        )
    })
}

/// The usage charge CreateUsageCharge reports in `org` (its `parent`).
pub(super) fn new_usage_charge(
    body: &pb::CreateUsageChargeRequest,
    org: &OrgRow,
) -> Result<NewUsageCharge> {
    let given = body
        .usage_charge
        .as_ref()
        .ok_or_else(|| Error::invalid("usage_charge", "the usage charge is required"))?;
    let description = ChargeDescription::parse("usage_charge.description", &given.description)?;
    let (currency, amount_minor) =
        positive_amount("usage_charge.amount", given.amount.as_ref(), "charge")?;
    let resource_id = match given.resource.as_str() {
        "" => None,
        raw => {
            let name = ChildName::parse("usage_charge.resource", raw, RESOURCES)?;
            if !name.org.names(org.id, &org.slug) {
                return Err(Error::invalid(
                    "usage_charge.resource",
                    format!(
                        "{} is not in the charge's organization, {}",
                        quoted(raw),
                        quoted(&body.parent)
                    ),
                ));
            }
            Some(name.id)
        }
    };
    let time = |field: &str, t: Option<&prost_types::Timestamp>| {
        let t = t.ok_or_else(|| {
            Error::invalid(field, "the metered interval's start and end are required")
        })?;
        datetime(field, t)
    };
    let interval = UsageInterval::new(
        time(
            "usage_charge.usage_start_time",
            given.usage_start_time.as_ref(),
        )?,
        time("usage_charge.usage_end_time", given.usage_end_time.as_ref())?,
        "usage_charge.usage_end_time",
    )?;
    Ok(NewUsageCharge {
        org_id: org.id,
        description,
        amount_minor,
        currency,
        resource_id,
        interval,
        request_id: required_request_id(&body.request_id)?,
    })
}
