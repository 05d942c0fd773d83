//! BillingService: plans, subscription, billing profile, payment methods,
//! invoices, vouchers. (Card numbers never get this far: the auth layer refuses
//! any request with one in any field.)

use tonic::{Request, Response, Status};

use super::{
    call_context, child_id, datetime, declared_permission, emailed_token, optional, org_access,
    timestamp,
};
use crate::auth::OrgAccess;
use crate::domain::{
    Currency, Email, Etag, LegalName, Money, OrgRef, PageRequest, Permission, PostalAddress, TaxId,
    quoted,
};
use crate::error::{Error, Result};
use crate::invoice_doc::{self, BillTo, DocLine, InvoiceDocument};
use crate::pb::{self, billing_service_server::BillingService};
use crate::store::Store;
use crate::store::billing_profiles::{
    AddressFields, NewPaymentMethod, PAYMENT_METHODS, PaymentMethodRow, ProfileChanges, ProfileRow,
};
use crate::store::invoices::{INVOICES, InvoiceView, NewVoucher, VoucherRow};
use crate::store::subscriptions::{PlanRow, SubscriptionView};
use crate::store::verification::ContactVerification;

/// The largest voucher (the database checks it too): no sum of credits overflows.
const MAX_VOUCHER_MINOR: i64 = 1_000_000_000_000;

/// Fields UpdateBillingProfile can change.
const UPDATABLE_FIELDS: &str = "legal_name, billing_email, tax_id, address";

pub struct BillingApi {
    store: Store,
    /// Billing-email confirmation links.
    verification: ContactVerification,
    /// What GetBillingProfile's policy demands: who holds it sees the credit
    /// balance too.
    reads_billing: Permission,
}

impl BillingApi {
    pub fn new(store: Store, verification: ContactVerification) -> Self {
        BillingApi {
            store,
            verification,
            reads_billing: declared_permission(
                pb::billing_service_server::SERVICE_NAME,
                "GetBillingProfile",
            ),
        }
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

fn plan(row: &PlanRow) -> pb::Plan {
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
fn subscription(
    view: &SubscriptionView,
    access: &OrgAccess,
    reads_billing: &Permission,
) -> pb::Subscription {
    use pb::subscription::Status;
    let status = if view.row.is_ended() {
        Status::Ended
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

fn profile(row: &ProfileRow) -> pb::BillingProfile {
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

fn payment_method(row: &PaymentMethodRow) -> pb::PaymentMethod {
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

fn invoice(view: &InvoiceView) -> pb::Invoice {
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
    }
}

fn voucher(row: &VoucherRow) -> pb::Voucher {
    pb::Voucher {
        code: row.code.clone(),
        amount: money(row.amount_minor, &row.currency),
        expire_time: row.expires_at.map(timestamp),
        max_redemptions: row.max_redemptions,
        redemptions: row.redemptions,
    }
}

/// Checks that `raw` is `organizations/{org}/{singleton}` for the organization the
/// call was authorized for.
fn ensure_singleton(field: &str, raw: &str, singleton: &str, access: &OrgAccess) -> Result<()> {
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

fn plan_id(field: &str, raw: &str) -> Result<String> {
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
fn voucher_code(field: &str, raw: &str) -> Result<String> {
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
fn new_payment_method(given: &pb::PaymentMethod) -> Result<NewPaymentMethod> {
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

/// Reads the fields named in an update mask out of `given`.
fn profile_changes(
    given: &pb::BillingProfile,
    mask: Option<&prost_types::FieldMask>,
) -> Result<ProfileChanges> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            format!("name the fields to change; updatable: {UPDATABLE_FIELDS}"),
        ));
    }
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
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "{} cannot be updated; updatable: {UPDATABLE_FIELDS}",
                        quoted(other)
                    ),
                ));
            }
        }
    }
    Ok(changes)
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn list_plans(
        &self,
        _request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let plans = self.store.list_plans().await?;
        Ok(Response::new(pb::ListPlansResponse {
            plans: plans.iter().map(plan).collect(),
        }))
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let id = plan_id("name", &request.get_ref().name)?;
        Ok(Response::new(plan(&self.store.get_plan(&id).await?)))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let access = org_access(&request)?;
        ensure_singleton("name", &request.get_ref().name, "subscription", &access)?;
        let view = self.store.get_subscription(access.org().id).await?;
        Ok(Response::new(subscription(
            &view,
            &access,
            &self.reads_billing,
        )))
    }

    async fn change_plan(
        &self,
        request: Request<pb::ChangePlanRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        ensure_singleton("name", &body.name, "subscription", &access)?;
        let plan = plan_id("plan", &body.plan)?;
        let etag = Etag::parse_optional("etag", &body.etag)?;
        let view = self
            .store
            .change_plan(&ctx.actor(), &access, &plan, etag)
            .await?;
        Ok(Response::new(subscription(
            &view,
            &access,
            &self.reads_billing,
        )))
    }

    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        ensure_singleton("name", &request.get_ref().name, "subscription", &access)?;
        let view = self
            .store
            .cancel_subscription(&ctx.actor(), &access)
            .await?;
        Ok(Response::new(subscription(
            &view,
            &access,
            &self.reads_billing,
        )))
    }

    async fn resume_subscription(
        &self,
        request: Request<pb::ResumeSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        ensure_singleton("name", &request.get_ref().name, "subscription", &access)?;
        let view = self
            .store
            .resume_subscription(&ctx.actor(), &access)
            .await?;
        Ok(Response::new(subscription(
            &view,
            &access,
            &self.reads_billing,
        )))
    }

    async fn get_billing_profile(
        &self,
        request: Request<pb::GetBillingProfileRequest>,
    ) -> Result<Response<pb::BillingProfile>, Status> {
        let access = org_access(&request)?;
        ensure_singleton("name", &request.get_ref().name, "billingProfile", &access)?;
        let row = self.store.get_billing_profile(access.org().id).await?;
        Ok(Response::new(profile(&row)))
    }

    async fn update_billing_profile(
        &self,
        request: Request<pb::UpdateBillingProfileRequest>,
    ) -> Result<Response<pb::BillingProfile>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        let given = body
            .billing_profile
            .as_ref()
            .ok_or_else(|| Error::invalid("billing_profile", "the billing profile is required"))?;
        ensure_singleton(
            "billing_profile.name",
            &given.name,
            "billingProfile",
            &access,
        )?;
        let changes = profile_changes(given, body.update_mask.as_ref())?;
        let etag = Etag::parse_optional("billing_profile.etag", &given.etag)?;
        let row = self
            .store
            .update_billing_profile(&ctx.actor(), &access, changes, etag, &self.verification)
            .await?;
        Ok(Response::new(profile(&row)))
    }

    async fn verify_billing_email(
        &self,
        request: Request<pb::VerifyBillingEmailRequest>,
    ) -> Result<Response<pb::VerifyBillingEmailResponse>, Status> {
        let ctx = call_context(&request)?;
        let token = emailed_token(&request.get_ref().token, "the verification message")?;
        let row = self.store.verify_billing_email(&ctx.actor(), token).await?;
        // The token's holder need not be a member: tell them only what they confirmed.
        Ok(Response::new(pb::VerifyBillingEmailResponse {
            billing_profile: row.name(),
            billing_email: row.billing_email,
        }))
    }

    async fn add_payment_method(
        &self,
        request: Request<pb::AddPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let given =
            request.get_ref().payment_method.as_ref().ok_or_else(|| {
                Error::invalid("payment_method", "the payment method is required")
            })?;
        let new = new_payment_method(given)?;
        let added = self
            .store
            .add_payment_method(&ctx.actor(), &access, new)
            .await?;
        Ok(Response::new(payment_method(&added)))
    }

    async fn list_payment_methods(
        &self,
        request: Request<pb::ListPaymentMethodsRequest>,
    ) -> Result<Response<pb::ListPaymentMethodsResponse>, Status> {
        let access = org_access(&request)?;
        let rows = self.store.list_payment_methods(access.org().id).await?;
        Ok(Response::new(pb::ListPaymentMethodsResponse {
            payment_methods: rows.iter().map(payment_method).collect(),
        }))
    }

    async fn set_default_payment_method(
        &self,
        request: Request<pb::SetDefaultPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, PAYMENT_METHODS, &access)?;
        let chosen = self
            .store
            .set_default_payment_method(&ctx.actor(), &access, id)
            .await?;
        Ok(Response::new(payment_method(&chosen)))
    }

    async fn remove_payment_method(
        &self,
        request: Request<pb::RemovePaymentMethodRequest>,
    ) -> Result<Response<pb::RemovePaymentMethodResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, PAYMENT_METHODS, &access)?;
        let default = self
            .store
            .remove_payment_method(&ctx.actor(), &access, id)
            .await?;
        Ok(Response::new(pb::RemovePaymentMethodResponse {
            default_payment_method: default.as_ref().map(payment_method),
        }))
    }

    async fn list_invoices(
        &self,
        request: Request<pb::ListInvoicesRequest>,
    ) -> Result<Response<pb::ListInvoicesResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (views, next_page_token) = self.store.list_invoices(access.org().id, page).await?;
        Ok(Response::new(pb::ListInvoicesResponse {
            invoices: views.iter().map(invoice).collect(),
            next_page_token,
        }))
    }

    async fn get_invoice(
        &self,
        request: Request<pb::GetInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, INVOICES, &access)?;
        let view = self.store.get_invoice(access.org().id, id).await?;
        Ok(Response::new(invoice(&view)))
    }

    async fn download_invoice(
        &self,
        request: Request<pb::DownloadInvoiceRequest>,
    ) -> Result<Response<pb::DownloadInvoiceResponse>, Status> {
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, INVOICES, &access)?;
        let view = self.store.get_invoice(access.org().id, id).await?;
        let html = render(&view)?;
        Ok(Response::new(pb::DownloadInvoiceResponse {
            content_type: "text/html; charset=utf-8".into(),
            filename: format!("{}.html", view.row.number),
            content: html.into_bytes(),
        }))
    }

    async fn redeem_voucher(
        &self,
        request: Request<pb::RedeemVoucherRequest>,
    ) -> Result<Response<pb::RedeemVoucherResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let code = voucher_code("code", &request.get_ref().code)?;
        let (voucher, balance) = self
            .store
            .redeem_voucher(&ctx.actor(), &access, &code)
            .await?;
        Ok(Response::new(pb::RedeemVoucherResponse {
            credit: money(voucher.amount_minor, &voucher.currency),
            credit_balance: money(balance, &voucher.currency),
        }))
    }

    async fn create_voucher(
        &self,
        request: Request<pb::CreateVoucherRequest>,
    ) -> Result<Response<pb::Voucher>, Status> {
        let ctx = call_context(&request)?;
        let given = request
            .get_ref()
            .voucher
            .as_ref()
            .ok_or_else(|| Error::invalid("voucher", "the voucher is required"))?;
        let code = voucher_code("voucher.code", &given.code)?;
        let amount = given
            .amount
            .as_ref()
            .ok_or_else(|| Error::invalid("voucher.amount", "the credit amount is required"))?;
        let currency = Currency::parse("voucher.amount.currency_code", &amount.currency_code)?;
        if !(1..=MAX_VOUCHER_MINOR).contains(&amount.amount_minor) {
            return Err(Error::invalid(
                "voucher.amount.amount_minor",
                format!("the credit must be between 1 and {MAX_VOUCHER_MINOR} minor units"),
            )
            .into());
        }
        if given.max_redemptions <= 0 {
            return Err(
                Error::invalid("voucher.max_redemptions", "allow at least one redemption").into(),
            );
        }
        let expires_at = given
            .expire_time
            .as_ref()
            .map(|t| datetime("voucher.expire_time", t))
            .transpose()?;
        let created = self
            .store
            .create_voucher(
                &ctx.actor(),
                NewVoucher {
                    code,
                    amount_minor: amount.amount_minor,
                    currency: currency.as_str().to_owned(),
                    expires_at,
                    max_redemptions: given.max_redemptions,
                },
            )
            .await?;
        Ok(Response::new(voucher(&created)))
    }

    async fn close_billing_period(
        &self,
        request: Request<pb::CloseBillingPeriodRequest>,
    ) -> Result<Response<pb::CloseBillingPeriodResponse>, Status> {
        let ctx = call_context(&request)?;
        let raw = &request.get_ref().organization;
        let org_ref = OrgRef::parse("organization", raw)?;
        let period_start = request
            .get_ref()
            .period_start
            .as_ref()
            .map(|t| datetime("period_start", t))
            .transpose()?;
        let org =
            self.store.find_org(&org_ref).await?.ok_or_else(|| {
                Error::NotFound(format!("organization {} not found", quoted(raw)))
            })?;
        let closed = self
            .store
            .close_period_now(&ctx.actor(), org.id, period_start)
            .await?;
        Ok(Response::new(pb::CloseBillingPeriodResponse {
            invoice: Some(invoice(&closed)),
        }))
    }
}

/// The invoice as a self-contained HTML document.
fn render(view: &InvoiceView) -> Result<String> {
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
    };
    Ok(invoice_doc::render_html(&doc))
}
