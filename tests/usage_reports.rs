//! Usage reports: only backend services report usage and members with
//! billing.read list it; a retried report returns its first charge, other
//! content under the same request id is refused; a bad report is refused
//! naming its field, and writes nothing.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::usage::*;
use common::*;
use orgd::pb;
use tokio::sync::Barrier;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_report_returns_its_charge_and_other_content_is_refused() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let now = SystemTime::now() - Duration::from_secs(1);
    let first = report(&org, "App web-1: 2 vCPU-hours", 42, now - HOUR, now);

    // Sent twice at once, and again later: one charge.
    let barrier = Arc::new(Barrier::new(2));
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let (barrier, request) = (barrier.clone(), first.clone());
        let mut operator = app.billing_as_service().await;
        attempts.push(tokio::spawn(async move {
            barrier.wait().await;
            operator.create_usage_charge(request).await
        }));
    }
    let mut names = Vec::new();
    for attempt in attempts {
        names.push(attempt.await.unwrap().unwrap().into_inner().name);
    }
    let mut operator = app.billing_as_service().await;
    let again = operator
        .create_usage_charge(first.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names[0], names[1]);
    assert_eq!(again.name, names[0]);
    assert_eq!(app.count("SELECT 1 FROM usage_charges", &[]).await, 1);
    assert_eq!(activity_count(&app, "usage_charge.create").await, 1);

    // The same request id with another amount or interval is refused, naming
    // what differs.
    let refused = expect_code(
        operator
            .create_usage_charge(altered(&first, |c| c.amount = usd(43)))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&refused), "REQUEST_ID_USED");
    assert!(
        refused.message().contains("usage_charge.amount"),
        "{refused:?}"
    );
    let refused = expect_code(
        operator
            .create_usage_charge(altered(&first, |c| {
                c.usage_start_time = Some((now - 2 * HOUR).into())
            }))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("usage_charge.usage_start_time"),
        "{refused:?}"
    );
    // A report needs a request id, so that no retry bills twice.
    let missing = expect_code(
        operator
            .create_usage_charge(pb::CreateUsageChargeRequest {
                request_id: String::new(),
                ..first.clone()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&missing), "request_id");
    assert_eq!(app.count("SELECT 1 FROM usage_charges", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_reports_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    let elsewhere = register_app(&app, &other, "other-app").await;
    let now = SystemTime::now() - Duration::from_secs(1);
    let good = report(&org, "App web-1: 2 vCPU-hours", 42, now - HOUR, now);

    let cases: Vec<(&str, pb::CreateUsageChargeRequest, &str)> = vec![
        (
            "another currency",
            altered(&good, |c| {
                c.amount = Some(pb::Money {
                    currency_code: "EUR".into(),
                    amount_minor: 42,
                })
            }),
            "usage_charge.amount.currency_code",
        ),
        (
            "no amount",
            altered(&good, |c| c.amount = None),
            "usage_charge.amount",
        ),
        (
            "zero",
            altered(&good, |c| c.amount = usd(0)),
            "usage_charge.amount.amount_minor",
        ),
        (
            "negative",
            altered(&good, |c| c.amount = usd(-5)),
            "usage_charge.amount.amount_minor",
        ),
        (
            "too large",
            altered(&good, |c| c.amount = usd(1_000_000_000_001)),
            "usage_charge.amount.amount_minor",
        ),
        (
            "usage in the future",
            altered(&good, |c| {
                c.usage_end_time = Some((SystemTime::now() + HOUR).into())
            }),
            "usage_charge.usage_end_time",
        ),
        (
            "an end before the start",
            altered(&good, |c| c.usage_end_time = Some((now - 2 * HOUR).into())),
            "usage_charge.usage_end_time",
        ),
        (
            "no start",
            altered(&good, |c| c.usage_start_time = None),
            "usage_charge.usage_start_time",
        ),
        (
            "no description",
            altered(&good, |c| c.description = " ".into()),
            "usage_charge.description",
        ),
        (
            "a card number in the description",
            altered(&good, |c| c.description = "card 4111 1111 1111 1111".into()),
            "usage_charge.description",
        ),
        (
            "another organization's resource",
            altered(&good, |c| c.resource = elsewhere.name.clone()),
            "usage_charge.resource",
        ),
    ];
    for (case, request, field) in cases {
        let refused = expect_code(
            operator.create_usage_charge(request).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&refused), field, "{case}: {refused:?}");
    }

    // A resource this organization does not hold, named as its own.
    let resource_id = elsewhere.name.rsplit('/').next().unwrap();
    let foreign = expect_code(
        operator
            .create_usage_charge(altered(&good, |c| {
                c.resource = format!("{}/resources/{resource_id}", org.name)
            }))
            .await,
        Code::NotFound,
    );
    assert!(
        foreign.message().contains("usage_charge.resource"),
        "{foreign:?}"
    );
    let unknown = expect_code(
        operator
            .create_usage_charge(pb::CreateUsageChargeRequest {
                parent: format!("organizations/{}", uuid::Uuid::now_v7()),
                ..good.clone()
            })
            .await,
        Code::NotFound,
    );
    assert!(unknown.message().contains("not found"), "{unknown:?}");
    assert_eq!(app.count("SELECT 1 FROM usage_charges", &[]).await, 0);
    assert_eq!(activity_count(&app, "usage_charge.create").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn billing_readers_list_charges_page_by_page_and_only_services_report_them() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    join(&app, "alice", &org, "dev", &["developer"])
        .await
        .unwrap();
    let now = SystemTime::now() - Duration::from_secs(1);
    let mut reported = Vec::new();
    for n in 0..3 {
        let request = report(&org, &format!("App {n}: 1 hour"), 10 + n, now - HOUR, now);
        reported.push(
            operator
                .create_usage_charge(request)
                .await
                .unwrap()
                .into_inner()
                .name,
        );
    }

    // Newest first, two by two.
    let mut billing = app.billing_as("alice").await;
    let page = |token: String| pb::ListUsageChargesRequest {
        parent: org.name.clone(),
        page_size: 2,
        page_token: token,
    };
    let first = billing
        .list_usage_charges(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.usage_charges.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = billing
        .list_usage_charges(page(first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.next_page_token, "");
    let listed: Vec<String> = first
        .usage_charges
        .iter()
        .chain(&second.usage_charges)
        .map(|c| c.name.clone())
        .collect();
    reported.reverse();
    assert_eq!(listed, reported);

    // A developer holds no billing.read; a stranger learns nothing.
    expect_code(
        app.billing_as("dev")
            .await
            .list_usage_charges(page(String::new()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        app.billing_as("mallory")
            .await
            .list_usage_charges(page(String::new()))
            .await,
        Code::NotFound,
    );
    // Reporting and withdrawing are for backend services, not members.
    expect_code(
        billing
            .create_usage_charge(report(&org, "free money", 1, now - HOUR, now))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        billing
            .delete_usage_charge(pb::DeleteUsageChargeRequest {
                name: reported[0].clone(),
            })
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.count("SELECT 1 FROM usage_charges", &[]).await, 3);
}
