//! BillingService: plans, subscription, billing profile, payment methods,
//! invoices, vouchers. (Card numbers never get this far: the auth layer refuses
//! any request with one in any field.)

use tonic::{Request, Response, Status};

use super::{call_context, child_id, datetime, declared_permission, emailed_token, org_access};
use crate::auth::OrgAccess;
use crate::domain::{ChildName, Etag, OrgRef, PageRequest, Permission, quoted};
use crate::error::{Error, Result};
use crate::pb::{self, billing_service_server::BillingService};
use crate::store::Store;
use crate::store::billing_profiles::PAYMENT_METHODS;
use crate::store::invoices::{INVOICES, NewVoucher};
use crate::store::org_row::OrgRow;
use crate::store::subscription_row::SubscriptionView;
use crate::store::usage_charges::USAGE_CHARGES;
use crate::store::verification::ContactVerification;

mod input;
mod views;

use input::{
    ensure_singleton, new_payment_method, new_usage_charge, payment_attempt, plan_id,
    positive_amount, profile_changes, voucher_code,
};
use views::{
    invoice, money, payment_method, plan, profile, render, subscription, usage_charge, voucher,
};

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

    /// The organization a backend service's call names (a service acts in
    /// any, deleted ones included); `raw` is how the request named it.
    async fn named_org(&self, org_ref: &OrgRef, raw: &str) -> Result<OrgRow> {
        self.store
            .find_org(org_ref)
            .await?
            .ok_or_else(|| Error::NotFound(format!("organization {} not found", quoted(raw))))
    }

    /// The organization of `name`, a `what` a backend service's call names
    /// (`raw`): by id as it stands, so that what outlives a purged
    /// organization (its invoices) is still found; by slug, the organization
    /// holding it now.
    async fn org_id_of(&self, name: &ChildName, what: &str, raw: &str) -> Result<uuid::Uuid> {
        match &name.org {
            OrgRef::Id(id) => Ok(*id),
            by_slug => Ok(self
                .store
                .find_org(by_slug)
                .await?
                .ok_or_else(|| Error::NotFound(format!("{what} {} not found", quoted(raw))))?
                .id),
        }
    }

    /// The subscription as the caller may see it (`views::subscription`).
    fn subscription_reply(
        &self,
        view: &SubscriptionView,
        access: &OrgAccess,
    ) -> Response<pb::Subscription> {
        Response::new(subscription(view, access, &self.reads_billing))
    }
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
        Ok(self.subscription_reply(&view, &access))
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
        Ok(self.subscription_reply(&view, &access))
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
        Ok(self.subscription_reply(&view, &access))
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
        Ok(self.subscription_reply(&view, &access))
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
        let (currency, amount_minor) =
            positive_amount("voucher.amount", given.amount.as_ref(), "credit")?;
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
                    amount_minor,
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
        let org = self.named_org(&org_ref, raw).await?;
        let closed = self
            .store
            .close_period_now(&ctx.actor(), org.id, period_start)
            .await?;
        Ok(Response::new(pb::CloseBillingPeriodResponse {
            invoice: Some(invoice(&closed)),
        }))
    }

    async fn record_invoice_payment(
        &self,
        request: Request<pb::RecordInvoicePaymentRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let name = ChildName::parse("name", &body.name, INVOICES)?;
        let attempt = payment_attempt(body)?;
        // By id, the invoice is found even once its organization is purged
        // (invoices outlive it, and so may a charge of the final one).
        let org_id = self.org_id_of(&name, "invoice", &body.name).await?;
        let view = self
            .store
            .record_invoice_payment(&ctx.actor(), org_id, name.id, &attempt)
            .await?;
        Ok(Response::new(invoice(&view)))
    }

    async fn create_usage_charge(
        &self,
        request: Request<pb::CreateUsageChargeRequest>,
    ) -> Result<Response<pb::UsageCharge>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let org_ref = OrgRef::parse("parent", &body.parent)?;
        let org = self.named_org(&org_ref, &body.parent).await?;
        let new = new_usage_charge(body, &org)?;
        let created = self.store.create_usage_charge(&ctx.actor(), new).await?;
        Ok(Response::new(usage_charge(&created)))
    }

    async fn list_usage_charges(
        &self,
        request: Request<pb::ListUsageChargesRequest>,
    ) -> Result<Response<pb::ListUsageChargesResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (rows, next_page_token) = self.store.list_usage_charges(access.org().id, page).await?;
        Ok(Response::new(pb::ListUsageChargesResponse {
            usage_charges: rows.iter().map(usage_charge).collect(),
            next_page_token,
        }))
    }

    async fn delete_usage_charge(
        &self,
        request: Request<pb::DeleteUsageChargeRequest>,
    ) -> Result<Response<pb::UsageCharge>, Status> {
        let ctx = call_context(&request)?;
        let raw = &request.get_ref().name;
        let name = ChildName::parse("name", raw, USAGE_CHARGES)?;
        let org_id = self.org_id_of(&name, "usage charge", raw).await?;
        let deleted = self
            .store
            .delete_usage_charge(&ctx.actor(), org_id, name.id)
            .await?;
        Ok(Response::new(usage_charge(&deleted)))
    }
}
