//! Billing requests the scenario tests share.

use orgd::pb::{self, record_invoice_payment_request};

use super::periods::let_a_month_pass;
use super::{BillingClient, TestApp, create_org};

pub fn subscription_name(org: &pb::Organization) -> String {
    format!("{}/subscription", org.name)
}

/// The organization's subscription, read by `billing`'s caller.
pub async fn subscription(billing: &mut BillingClient, org: &pb::Organization) -> pb::Subscription {
    billing
        .get_subscription(pb::GetSubscriptionRequest {
            name: subscription_name(org),
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn change_plan(org: &pb::Organization, plan: &str) -> pb::ChangePlanRequest {
    pb::ChangePlanRequest {
        name: subscription_name(org),
        plan: format!("plans/{plan}"),
        etag: String::new(),
    }
}

pub fn card(org: &pb::Organization, token: &str) -> pb::AddPaymentMethodRequest {
    pb::AddPaymentMethodRequest {
        parent: org.name.clone(),
        payment_method: Some(pb::PaymentMethod {
            processor_token: token.into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
            ..Default::default()
        }),
    }
}

/// `display_name`'s organization, owned by alice, with a month billed: its
/// invoice, as the operator's CloseBillingPeriod returned it.
pub async fn invoiced_org(app: &TestApp, display_name: &str) -> (pb::Organization, pb::Invoice) {
    let org = create_org(&mut app.orgs_as("alice").await, display_name).await;
    let_a_month_pass(&app.db, &org).await;
    let id: uuid::Uuid = org.uid.parse().unwrap();
    let start: std::time::SystemTime = app
        .db
        .query_one(
            "SELECT period_start FROM subscriptions WHERE org_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    // By its start, so that the billing worker closing it first changes nothing.
    let invoice = app
        .billing_as_service()
        .await
        .close_billing_period(pb::CloseBillingPeriodRequest {
            organization: org.name.clone(),
            period_start: Some(start.into()),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    (org, invoice)
}

pub fn succeeded(invoice: &pb::Invoice, reference: &str) -> pb::RecordInvoicePaymentRequest {
    pb::RecordInvoicePaymentRequest {
        name: invoice.name.clone(),
        outcome: record_invoice_payment_request::Outcome::Succeeded.into(),
        processor_reference: reference.into(),
        failure_message: String::new(),
        amount: invoice.total.clone(),
    }
}

pub fn failed(
    invoice: &pb::Invoice,
    reference: &str,
    why: &str,
) -> pb::RecordInvoicePaymentRequest {
    pb::RecordInvoicePaymentRequest {
        outcome: record_invoice_payment_request::Outcome::Failed.into(),
        failure_message: why.into(),
        ..succeeded(invoice, reference)
    }
}
