//! Usage charges billed: each charge waits until the period its usage ended
//! in closes, then is a line of that period's invoice, once, however many
//! closers run; a deleted organization's final invoice takes what is
//! pending; a pending charge can be withdrawn, a billed one stays. Billing
//! time moves by SQL, never by waiting. (Reports themselves:
//! tests/usage_reports.rs.)

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::usage::*;
use common::*;
use orgd::pb::{self, usage_charge::State};
use tokio::sync::Barrier;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_is_billed_on_the_invoice_of_the_period_its_usage_ended_in() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let (org, start, end) = org_with_a_month_used(&app, "Acme").await;
    let web = register_app(&app, &org, "web-1").await;

    // Usage within the month that ended, and usage after it.
    let in_period = altered(
        &report(
            &org,
            "App web-1 & worker: 310 GB-hours <memory>",
            1234,
            start + HOUR,
            end - HOUR,
        ),
        |c| c.resource = web.name.clone(),
    );
    let reported = operator
        .create_usage_charge(in_period)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reported.state(), State::Pending);
    assert!(
        reported
            .name
            .starts_with(&format!("{}/usageCharges/", org.name))
    );
    assert_eq!(reported.resource, web.name);
    assert_eq!(reported.invoice, "");
    let late = operator
        .create_usage_charge(report(
            &org,
            "Database db-1: storage",
            500,
            end,
            SystemTime::now(),
        ))
        .await
        .unwrap()
        .into_inner();

    // Credit of 1000 pays part of the whole subtotal, plan and usage alike.
    operator
        .create_voucher(pb::CreateVoucherRequest {
            voucher: Some(pb::Voucher {
                code: "USAGE-1000".into(),
                amount: usd(1000),
                max_redemptions: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    app.billing_as("alice")
        .await
        .redeem_voucher(pb::RedeemVoucherRequest {
            organization: org.name.clone(),
            code: "USAGE-1000".into(),
        })
        .await
        .unwrap();
    let pending = charges(&app, "alice", &org).await;
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|c| c.state() == State::Pending));

    let invoice = close(&mut operator, &org, Some(start)).await;
    assert_eq!(invoice.lines.len(), 2, "{:?}", invoice.lines);
    assert!(invoice.lines[0].description.starts_with("Starter plan"));
    assert!(
        invoice.lines[1]
            .description
            .starts_with("App web-1 & worker: 310 GB-hours <memory>, "),
        "{:?}",
        invoice.lines[1]
    );
    assert_eq!(amount(&invoice.lines[1].amount), 1234);
    assert_eq!(amount(&invoice.subtotal), 1900 + 1234);
    assert_eq!(amount(&invoice.credit), 1000);
    assert_eq!(amount(&invoice.total), 1900 + 1234 - 1000);

    // The listing shows which invoice billed what, and what still waits.
    let listed = charges(&app, "alice", &org).await;
    let of = |name: &str| listed.iter().find(|c| c.name == name).unwrap().clone();
    assert_eq!(of(&reported.name).state(), State::Billed);
    assert_eq!(of(&reported.name).invoice, invoice.name);
    assert_eq!(of(&late.name).state(), State::Pending);
    assert_eq!(of(&late.name).invoice, "");

    // The download shows the usage line, escaped.
    let html = String::from_utf8(
        app.billing_as("alice")
            .await
            .download_invoice(pb::DownloadInvoiceRequest {
                name: invoice.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .content,
    )
    .unwrap();
    assert!(
        html.contains("App web-1 &amp; worker: 310 GB-hours &lt;memory&gt;"),
        "{html}"
    );
    assert!(html.contains("12.34"), "{html}");

    // The late usage is on the next invoice, closed now.
    let next = close(&mut operator, &org, None).await;
    assert!(
        next.lines.iter().any(
            |line| line.description.starts_with("Database db-1: storage, ")
                && amount(&line.amount) == 500
        ),
        "{:?}",
        next.lines
    );
    assert_eq!(amount(&next.credit), 0, "the credit was used up");
    let listed = charges(&app, "alice", &org).await;
    assert!(listed.iter().all(|c| c.state() == State::Billed));
    assert_eq!(
        listed.iter().find(|c| c.name == late.name).unwrap().invoice,
        next.name
    );
    // Each report was audited, and the invoice counts the charges it billed.
    assert_eq!(activity_count(&app, "usage_charge.create").await, 2);
    let billed: i64 = app
        .db
        .query_one(
            "SELECT (details->>'usage_charges')::bigint FROM activity
             WHERE action = 'invoice.create' AND target = $1",
            &[&invoice.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(billed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_closing_the_same_period_bill_each_charge_once() {
    let app = TestApp::spawn().await;
    let replica = TestApp::spawn_on(&app.db_url, &[]).await;
    let (org, start, end) = org_with_a_month_used(&app, "Acme").await;
    let mut operator = app.billing_as_service().await;
    for n in 0..3 {
        operator
            .create_usage_charge(report(
                &org,
                &format!("App {n}: 1 hour"),
                100,
                start,
                end - HOUR,
            ))
            .await
            .unwrap();
    }
    let barrier = Arc::new(Barrier::new(2));
    let mut closers = Vec::new();
    for server in [&app, &replica] {
        let (barrier, org) = (barrier.clone(), org.clone());
        let mut billing = server.billing_as_service().await;
        closers.push(tokio::spawn(async move {
            barrier.wait().await;
            close(&mut billing, &org, Some(start)).await
        }));
    }
    let mut invoices = Vec::new();
    for closer in closers {
        invoices.push(closer.await.unwrap());
    }
    assert_eq!(invoices[0].name, invoices[1].name);
    assert_eq!(invoices[0].lines.len(), 4, "{:?}", invoices[0].lines);
    assert_eq!(amount(&invoices[0].subtotal), 1900 + 300);
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    assert_eq!(
        app.count("SELECT 1 FROM invoices WHERE org_id = $1", &[&org_id])
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT 1 FROM usage_charges c JOIN invoices i ON i.id = c.invoice_id
             WHERE c.org_id = $1",
            &[&org_id]
        )
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_organizations_final_invoice_takes_the_pending_charges() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Short Lived").await;
    let now = SystemTime::now() - Duration::from_secs(1);
    let first = report(&org, "App web-1: last hours", 777, now - HOUR, now);
    let charge = operator
        .create_usage_charge(first.clone())
        .await
        .unwrap()
        .into_inner();
    orgs.delete_organization(delete(&org)).await.unwrap();

    let invoices = app
        .billing_as("alice")
        .await
        .list_invoices(pb::ListInvoicesRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invoices;
    assert_eq!(invoices.len(), 1);
    assert!(
        invoices[0].lines.iter().any(|line| line
            .description
            .starts_with("App web-1: last hours, ")
            && amount(&line.amount) == 777),
        "{:?}",
        invoices[0].lines
    );
    let listed = charges(&app, "alice", &org).await;
    assert_eq!(listed[0].invoice, invoices[0].name);

    // Billing has ended: new usage is refused, saying so; the retry of a
    // report made before still answers with its charge.
    let refused = expect_code(
        operator
            .create_usage_charge(report(&org, "App web-1: more", 5, now - HOUR, now))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&refused), "BILLING_ENDED");
    assert!(refused.message().contains("deleted"), "{refused:?}");
    let replayed = operator
        .create_usage_charge(first)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.name, charge.name);
    assert_eq!(replayed.state(), State::Billed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_charge_is_withdrawn_and_a_billed_one_stays_on_its_invoice() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let (org, start, end) = org_with_a_month_used(&app, "Acme").await;
    let billed_report = report(&org, "App web-1: month", 300, start, end);
    let billed = operator
        .create_usage_charge(billed_report)
        .await
        .unwrap()
        .into_inner();
    let mistaken_report = report(&org, "App web-1: twice", 300, end, SystemTime::now());
    let mistaken = operator
        .create_usage_charge(mistaken_report.clone())
        .await
        .unwrap()
        .into_inner();
    let invoice = close(&mut operator, &org, Some(start)).await;

    let withdraw = |name: &str| pb::DeleteUsageChargeRequest { name: name.into() };
    let deleted = operator
        .delete_usage_charge(withdraw(&mistaken.name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state(), State::Deleted);
    assert!(deleted.delete_time.is_some());
    assert_eq!(activity_count(&app, "usage_charge.delete").await, 1);
    let listed = charges(&app, "alice", &org).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, billed.name);
    expect_code(
        operator.delete_usage_charge(withdraw(&mistaken.name)).await,
        Code::NotFound,
    );
    // Its report retried is not billed after all.
    let retried = expect_code(
        operator.create_usage_charge(mistaken_report).await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&retried), "REQUEST_ID_USED");
    assert!(retried.message().contains("withdrawn"), "{retried:?}");

    let stays = expect_code(
        operator.delete_usage_charge(withdraw(&billed.name)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&stays), "USAGE_CHARGE_BILLED");
    assert!(stays.message().contains(&invoice.name), "{stays:?}");
    // The database keeps it too.
    let id: uuid::Uuid = billed.name.rsplit('/').next().unwrap().parse().unwrap();
    let changed = app
        .db
        .execute(
            "UPDATE usage_charges SET invoice_id = NULL WHERE id = $1",
            &[&id],
        )
        .await;
    assert!(changed.is_err(), "a billed charge lost its invoice");
    let next = close(&mut operator, &org, None).await;
    assert!(
        next.lines
            .iter()
            .all(|line| !line.description.starts_with("App web-1: twice")),
        "{:?}",
        next.lines
    );
}
