//! Billing requests the scenario tests share.

use orgd::pb;

use super::BillingClient;

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
