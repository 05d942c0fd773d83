//! Usage charges in tests: reports as a backend service sends them, and the
//! organization, periods and listings the scenarios read.

use std::time::{Duration, SystemTime};

use orgd::pb::{self, resource_service_client::ResourceServiceClient};
use prost_types::Timestamp;

use super::periods::let_a_month_pass;
use super::{Bearer, BillingClient, TestApp, create_org, user_token};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn usd(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: "USD".into(),
        amount_minor,
    })
}

/// A report of `amount_minor` cents for `description`, used from `start` to
/// `end`, under a fresh request id.
pub fn report(
    org: &pb::Organization,
    description: &str,
    amount_minor: i64,
    start: SystemTime,
    end: SystemTime,
) -> pb::CreateUsageChargeRequest {
    pb::CreateUsageChargeRequest {
        parent: org.name.clone(),
        usage_charge: Some(pb::UsageCharge {
            description: description.into(),
            amount: usd(amount_minor),
            usage_start_time: Some(start.into()),
            usage_end_time: Some(end.into()),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// The same report with its charge changed by `change`.
pub fn altered(
    request: &pb::CreateUsageChargeRequest,
    change: impl FnOnce(&mut pb::UsageCharge),
) -> pb::CreateUsageChargeRequest {
    let mut request = request.clone();
    change(request.usage_charge.as_mut().unwrap());
    request
}

pub fn time(t: &Option<Timestamp>) -> SystemTime {
    SystemTime::try_from(t.expect("a time")).unwrap()
}

/// `display_name`'s organization (alice's, on Starter) with its first month
/// over but not yet billed: the organization and that period's start and end.
pub async fn org_with_a_month_used(
    app: &TestApp,
    display_name: &str,
) -> (pb::Organization, SystemTime, SystemTime) {
    let org = create_org(&mut app.orgs_as("alice").await, display_name).await;
    let_a_month_pass(&app.db, &org).await;
    let sub = app
        .billing_as("alice")
        .await
        .get_subscription(pb::GetSubscriptionRequest {
            name: format!("{}/subscription", org.name),
        })
        .await
        .unwrap()
        .into_inner();
    let (start, end) = (
        time(&sub.current_period_start),
        time(&sub.current_period_end),
    );
    (org, start, end)
}

/// Closes the period of `org` starting at `start` as the operator (`None`: the
/// current one, now).
pub async fn close(
    billing: &mut BillingClient,
    org: &pb::Organization,
    start: Option<SystemTime>,
) -> pb::Invoice {
    billing
        .close_billing_period(pb::CloseBillingPeriodRequest {
            organization: org.name.clone(),
            period_start: start.map(Into::into),
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap()
}

pub async fn charges(app: &TestApp, sub: &str, org: &pb::Organization) -> Vec<pb::UsageCharge> {
    app.billing_as(sub)
        .await
        .list_usage_charges(pb::ListUsageChargesRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .usage_charges
}

pub fn amount(money: &Option<pb::Money>) -> i64 {
    money.as_ref().expect("an amount").amount_minor
}

pub async fn register_app(
    app: &TestApp,
    org: &pb::Organization,
    external_id: &str,
) -> pb::Resource {
    ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    )
    .register_resource(pb::RegisterResourceRequest {
        parent: org.name.clone(),
        resource: Some(pb::Resource {
            kind: "app".into(),
            external_id: external_id.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
}
