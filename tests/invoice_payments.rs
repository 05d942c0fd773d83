//! Paying invoices: the payment processor's side (a backend service) records
//! each attempt to charge an invoice by its reference, once; the invoice shows
//! OPEN or PAID, its due time, the payment and the last failure; the
//! subscription is PAST_DUE while an invoice is open past its due time; the
//! downloaded document says when it is due or was paid.

mod common;

use std::sync::Arc;

use common::billing::{failed, invoiced_org, succeeded};
use common::*;
use orgd::pb::{self, invoice::State, record_invoice_payment_request::Outcome};
use tokio::sync::Barrier;
use tonic::Code;

/// An orgd whose new team organizations are on Starter (USD 19 a month),
/// whatever the default plan, with `extra` flags.
async fn spawn(extra: &[&str]) -> TestApp {
    let flags = [&["--default-plan", "starter"], extra].concat();
    TestApp::spawn_with(&flags).await
}

async fn get_invoice(app: &TestApp, name: &str) -> pb::Invoice {
    app.billing_as("alice")
        .await
        .get_invoice(pb::GetInvoiceRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn subscription(app: &TestApp, org: &pb::Organization) -> pb::Subscription {
    app.billing_as("alice")
        .await
        .get_subscription(pb::GetSubscriptionRequest {
            name: format!("{}/subscription", org.name),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The downloaded invoice document.
async fn download(app: &TestApp, invoice: &pb::Invoice) -> String {
    let file = app
        .billing_as("alice")
        .await
        .download_invoice(pb::DownloadInvoiceRequest {
            name: invoice.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8(file.content).unwrap()
}

fn date(time: &Option<prost_types::Timestamp>) -> String {
    let time = time.as_ref().expect("a time");
    chrono::DateTime::from_timestamp(time.seconds, time.nanos as u32)
        .unwrap()
        .date_naive()
        .to_string()
}

fn seconds(time: &Option<prost_types::Timestamp>) -> i64 {
    time.as_ref().expect("a time").seconds
}

/// The `ErrorInfo` reason of a refusal.
fn reason(status: &tonic::Status) -> String {
    tonic_types::StatusExt::get_details_error_info(status)
        .expect("an ErrorInfo detail")
        .reason
}

/// The activity rows of `action` on `target`, each with its change-feed
/// event's type and data: (actor, details, event type, event data).
async fn trail(
    app: &TestApp,
    action: &str,
    target: &str,
) -> Vec<(String, serde_json::Value, String, serde_json::Value)> {
    app.db
        .query(
            "SELECT a.actor, a.details::text, e.type, e.data::text FROM activity a
             JOIN events e ON e.id = a.id AND e.subject = a.target AND e.org_id = a.org_id
             WHERE a.action = $1 AND a.target = $2 ORDER BY a.created_at",
            &[&action, &target],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let json = |i| serde_json::from_str(row.get(i)).unwrap();
            (row.get(0), json(1), row.get(2), json(3))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_charge_pays_the_invoice() {
    let app = spawn(&[]).await;
    let (_, issued) = invoiced_org(&app, "Acme").await;
    assert_eq!(issued.state(), State::Open);
    assert!(
        issued.total.as_ref().unwrap().amount_minor > 0,
        "{issued:?}"
    );
    assert!(issued.paid_time.is_none() && issued.last_payment_failure.is_none());
    // Due 14 days (--invoice-due's default) after it was issued.
    assert_eq!(
        seconds(&issued.due_time) - seconds(&issued.create_time),
        14 * 86_400
    );
    assert!(download(&app, &issued).await.contains(&format!(
        "<td>Status</td><td>Due {}</td>",
        date(&issued.due_time)
    )));
    // The feed's invoice.created says what a processor's side needs to charge it.
    let created = trail(&app, "invoice.create", &issued.name).await;
    let (_, _, event_type, data) = &created[0];
    assert_eq!(event_type, "orgd.invoice.created.v1");
    assert_eq!(
        (&data["total_minor"], &data["currency"], &data["state"]),
        (
            &serde_json::json!(issued.total.as_ref().unwrap().amount_minor),
            &serde_json::json!("USD"),
            &serde_json::json!("open")
        )
    );
    let due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(data["due_time"].clone()).unwrap();
    assert_eq!(due.timestamp(), seconds(&issued.due_time));

    let paid = app
        .billing_as_service()
        .await
        .record_invoice_payment(succeeded(&issued, "pi_3NvPaid0001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.state(), State::Paid);
    assert_eq!(paid.paid_processor_reference, "pi_3NvPaid0001");
    assert!(paid.paid_time.is_some());
    assert_eq!(
        (paid.due_time, paid.total.clone()),
        (issued.due_time, issued.total.clone())
    );
    assert_eq!(
        get_invoice(&app, &issued.name).await,
        paid,
        "GetInvoice agrees"
    );

    // Its audit record and change-feed event, by the service.
    let recorded = trail(&app, "invoice.pay", &issued.name).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (actor, details, event_type, data) = &recorded[0];
    assert_eq!(actor, &format!("services/{SERVICE_SUBJECT}"));
    assert_eq!(event_type, "orgd.invoice.paid.v1");
    assert_eq!(details, data);
    assert_eq!(details["processor_reference"], "pi_3NvPaid0001");
    assert_eq!(details["number"], issued.number.as_str());
    assert_eq!(
        details["total_minor"],
        issued.total.as_ref().unwrap().amount_minor
    );

    let document = download(&app, &paid).await;
    assert!(
        document.contains(&format!(
            "<td>Status</td><td>Paid on {}</td>",
            date(&paid.paid_time)
        )),
        "{document}"
    );
    assert!(document.contains("Total paid") && !document.contains("Total due"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_charge_leaves_it_open_and_emails_billing_then_a_retry_pays_it() {
    let app = spawn(&[]).await;
    let (_, issued) = invoiced_org(&app, "Acme").await;
    let mut processor = app.billing_as_service().await;

    let open = processor
        .record_invoice_payment(failed(
            &issued,
            "ch_3NvFail0001",
            "  Your card was declined.  ",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.state(), State::Open);
    let failure = open.last_payment_failure.clone().expect("the failure");
    assert_eq!(failure.message, "Your card was declined.");
    assert_eq!(failure.processor_reference, "ch_3NvFail0001");
    assert!(failure.time.is_some());
    assert_eq!(open.paid_processor_reference, "");
    let recorded = trail(&app, "invoice.payment_fail", &issued.name).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].2, "orgd.invoice.payment_failed.v1");
    assert_eq!(recorded[0].1["failure_message"], "Your card was declined.");

    // The notice goes to the organization's contact (no billing email is set),
    // queued in the same transaction.
    let mail = app
        .db
        .query_one(
            "SELECT recipient, subject, body FROM outbox_messages
             WHERE subject LIKE 'Payment failed%'",
            &[],
        )
        .await
        .unwrap();
    let (recipient, subject, body): (String, String, String) =
        (mail.get(0), mail.get(1), mail.get(2));
    assert_eq!(recipient, "alice@example.com");
    assert_eq!(
        subject,
        format!("Payment failed for invoice {}", issued.number)
    );
    for expected in [
        "Your card was declined.",
        "\"Acme\"",
        &format!("due on {}", date(&issued.due_time)),
    ] {
        assert!(body.contains(expected), "{expected:?} missing in {body:?}");
    }

    // A second failure replaces the last one shown; then the retry succeeds.
    processor
        .record_invoice_payment(failed(&issued, "ch_3NvFail0002", "Insufficient funds."))
        .await
        .unwrap();
    let paid = processor
        .record_invoice_payment(succeeded(&issued, "ch_3NvPaid0003"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.state(), State::Paid);
    assert_eq!(paid.paid_processor_reference, "ch_3NvPaid0003");
    let last = paid.last_payment_failure.expect("kept once paid");
    assert_eq!(
        (last.message.as_str(), last.processor_reference.as_str()),
        ("Insufficient funds.", "ch_3NvFail0002")
    );
    assert_eq!(
        trail(&app, "invoice.payment_fail", &issued.name)
            .await
            .len(),
        2
    );
    assert_eq!(trail(&app, "invoice.pay", &issued.name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_is_recorded_once_with_one_outcome() {
    let app = spawn(&[]).await;
    // A second replica on the same database, for webhooks delivered to both.
    let replica = TestApp::spawn_on(&app.db_url, &[]).await;
    let (_, issued) = invoiced_org(&app, "Acme").await;
    let (_, other) = invoiced_org(&app, "Globex").await;

    // The same webhook at once on both replicas: one payment, one record.
    let barrier = Arc::new(Barrier::new(2));
    let mut calls = Vec::new();
    for replica_app in [&app, &replica] {
        let mut processor = replica_app.billing_as_service().await;
        let (barrier, request) = (barrier.clone(), succeeded(&issued, "pi_3NvTwice01"));
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            processor.record_invoice_payment(request).await
        }));
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().unwrap().into_inner());
    }
    assert_eq!(results[0], results[1], "both got the paid invoice");
    assert_eq!(results[0].state(), State::Paid);
    assert_eq!(trail(&app, "invoice.pay", &issued.name).await.len(), 1);

    // A later replay too, and it changes nothing.
    let mut processor = app.billing_as_service().await;
    let replayed = processor
        .record_invoice_payment(succeeded(&issued, "pi_3NvTwice01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, results[0]);
    assert_eq!(trail(&app, "invoice.pay", &issued.name).await.len(), 1);

    // The same reference with another outcome, or on another invoice.
    let refused = expect_code(
        processor
            .record_invoice_payment(failed(&issued, "pi_3NvTwice01", "Declined."))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "PAYMENT_REFERENCE_USED");
    for expected in ["'pi_3NvTwice01'", "recorded as succeeded", &issued.number] {
        assert!(refused.message().contains(expected), "{refused:?}");
    }
    let refused = expect_code(
        processor
            .record_invoice_payment(succeeded(&other, "pi_3NvTwice01"))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "PAYMENT_REFERENCE_USED");
    assert!(
        refused.message().contains(&issued.name),
        "names the invoice it was recorded for: {refused:?}"
    );
    assert_eq!(get_invoice(&app, &other.name).await.state(), State::Open);

    // Another success on the paid invoice is a second charge: refused.
    let refused = expect_code(
        processor
            .record_invoice_payment(succeeded(&issued, "pi_3NvLate0001"))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "INVOICE_PAID");
    for expected in [
        issued.number.as_str(),
        issued.name.as_str(),
        "was paid at",
        "'pi_3NvTwice01'",
        "refund",
    ] {
        assert!(refused.message().contains(expected), "{refused:?}");
    }
    assert_eq!(
        app.count("SELECT 1 FROM invoice_payments", &[]).await,
        1,
        "nothing refused was recorded"
    );
    // An earlier attempt's failure whose webhook arrives after the success is
    // recorded and changes nothing: the invoice stays paid, nobody is emailed.
    let notices = app.count("SELECT 1 FROM outbox_messages", &[]).await;
    let late = processor
        .record_invoice_payment(failed(&issued, "ch_3NvLate0002", "Declined."))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.state(), State::Paid);
    assert_eq!(late.paid_processor_reference, "pi_3NvTwice01");
    assert_eq!(
        app.count("SELECT 1 FROM outbox_messages", &[]).await,
        notices
    );
    let recorded = trail(&app, "invoice.payment_fail", &issued.name).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].1["after_payment"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_recorded_meanwhile_on_another_invoice_is_refused() {
    let app = spawn(&[]).await;
    let (_, issued) = invoiced_org(&app, "Acme").await;
    let (_, other) = invoiced_org(&app, "Globex").await;
    // Another replica is recording `pi_3NvRace0001` on Acme's invoice and has
    // not committed yet: the call on Globex's cannot see it.
    let replica = sql_client(&app.db_url).await;
    let id: uuid::Uuid = issued.name.rsplit('/').next().unwrap().parse().unwrap();
    replica
        .batch_execute(&format!(
            "BEGIN; INSERT INTO invoice_payments (processor_reference, invoice_id, outcome, recorded_by)
             VALUES ('pi_3NvRace0001', '{id}', 'succeeded', 'services/other');
             UPDATE invoices SET state = 'paid', paid_at = now() WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let mut processor = app.billing_as_service().await;
    let request = succeeded(&other, "pi_3NvRace0001");
    let call = tokio::spawn(async move { processor.record_invoice_payment(request).await });
    // It waits on the other replica's row, which then commits.
    let waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    while app.count(waiting, &[]).await == 0 {
        assert!(!call.is_finished(), "{:?}", call.await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    replica.batch_execute("COMMIT").await.unwrap();
    let refused = expect_code(call.await.unwrap(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "PAYMENT_REFERENCE_USED");
    assert!(refused.message().contains(&issued.name), "{refused:?}");
    let others = "SELECT 1 FROM invoices WHERE number = $1 AND state = 'open'";
    assert_eq!(app.count(others, &[&other.number]).await, 1);
    assert_eq!(app.count("SELECT 1 FROM invoice_payments", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_backend_services_record_payments_and_requests_are_checked() {
    let app = spawn(&[]).await;
    let (org, issued) = invoiced_org(&app, "Acme").await;

    // The owner holds billing.manage, and is still no payment processor.
    let refused = expect_code(
        app.billing_as("alice")
            .await
            .record_invoice_payment(succeeded(&issued, "pi_3NvOwner01"))
            .await,
        Code::PermissionDenied,
    );
    assert!(!refused.message().is_empty());

    let mut processor = app.billing_as_service().await;
    let by_slug = issued.name.replace(&org.uid, &org.slug);
    let bad_requests = [
        (succeeded(&issued, ""), "processor_reference"),
        (succeeded(&issued, "pi 3Nv"), "processor_reference"),
        (
            pb::RecordInvoicePaymentRequest {
                outcome: Outcome::Unspecified.into(),
                ..succeeded(&issued, "pi_3NvBad0001")
            },
            "outcome",
        ),
        (
            pb::RecordInvoicePaymentRequest {
                failure_message: "Declined.".into(),
                ..succeeded(&issued, "pi_3NvBad0002")
            },
            "failure_message",
        ),
        (failed(&issued, "ch_3NvBad0003", "   "), "failure_message"),
        // Free text: a card number is refused before the handler.
        (
            failed(
                &issued,
                "ch_3NvBad0004",
                "card 4111 1111 1111 1111 declined",
            ),
            "failure_message",
        ),
        (
            succeeded(
                &pb::Invoice {
                    name: format!("{}/paymentMethods/{}", org.name, uuid::Uuid::now_v7()),
                    ..Default::default()
                },
                "pi_3NvBad0005",
            ),
            "name",
        ),
        (
            pb::RecordInvoicePaymentRequest {
                amount: None,
                ..succeeded(&issued, "pi_3NvBad0006")
            },
            "amount",
        ),
        (
            pb::RecordInvoicePaymentRequest {
                amount: Some(pb::Money {
                    currency_code: "XXX".into(),
                    amount_minor: 1900,
                }),
                ..succeeded(&issued, "pi_3NvBad0007")
            },
            "amount.currency_code",
        ),
        (
            pb::RecordInvoicePaymentRequest {
                amount: Some(pb::Money {
                    currency_code: "USD".into(),
                    amount_minor: 0,
                }),
                ..succeeded(&issued, "pi_3NvBad0008")
            },
            "amount.amount_minor",
        ),
    ];
    for (request, field) in bad_requests {
        let refused = expect_code(
            processor.record_invoice_payment(request).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&refused), field, "{refused:?}");
    }
    let missing = format!("{}/invoices/{}", org.name, uuid::Uuid::now_v7());
    expect_code(
        processor
            .record_invoice_payment(succeeded(
                &pb::Invoice {
                    name: missing,
                    ..issued.clone()
                },
                "pi_3NvMissing1",
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(app.count("SELECT 1 FROM invoice_payments", &[]).await, 0);

    // The invoice may be named by the organization's slug too.
    let paid = processor
        .record_invoice_payment(pb::RecordInvoicePaymentRequest {
            name: by_slug,
            ..succeeded(&issued, "pi_3NvSlug0001")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((paid.state(), paid.name), (State::Paid, issued.name));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invoice_with_nothing_to_pay_is_paid_when_issued() {
    let app = spawn(&["--default-plan", "hobby"]).await;
    let (_, invoice) = invoiced_org(&app, "Free Riders").await;
    assert_eq!(invoice.total.as_ref().unwrap().amount_minor, 0);
    assert_eq!(invoice.state(), State::Paid);
    assert_eq!(invoice.paid_time, invoice.create_time);
    assert_eq!(invoice.paid_processor_reference, "");
    let refused = expect_code(
        app.billing_as_service()
            .await
            .record_invoice_payment(pb::RecordInvoicePaymentRequest {
                amount: Some(pb::Money {
                    currency_code: "USD".into(),
                    amount_minor: 100,
                }),
                ..succeeded(&invoice, "pi_3NvZero0001")
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "INVOICE_PAID");
    assert!(
        refused.message().contains("its total is zero"),
        "{refused:?}"
    );
    assert!(
        download(&app, &invoice)
            .await
            .contains(&format!("Paid on {}", date(&invoice.create_time)))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscription_is_past_due_while_an_invoice_is_open_after_its_due_time() {
    let app = spawn(&["--invoice-due", "3days"]).await;
    let (org, issued) = invoiced_org(&app, "Acme").await;
    assert_eq!(
        seconds(&issued.due_time) - seconds(&issued.create_time),
        3 * 86_400,
        "due as --invoice-due says"
    );
    assert_eq!(
        subscription(&app, &org).await.status(),
        pb::subscription::Status::Active,
        "open, not yet due"
    );

    // Three days go by (the due time moves back, as if they had).
    let id: uuid::Uuid = issued.name.rsplit('/').next().unwrap().parse().unwrap();
    app.db
        .execute(
            "UPDATE invoices SET due_at = due_at - interval '3 days' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let past_due = subscription(&app, &org).await;
    assert_eq!(past_due.status(), pb::subscription::Status::PastDue);
    assert_eq!(past_due.plan, "plans/starter", "nothing else changes");

    // A cancellation still shows, beside the state.
    let canceling = app
        .billing_as("alice")
        .await
        .cancel_subscription(pb::CancelSubscriptionRequest {
            name: format!("{}/subscription", org.name),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceling.status(), pb::subscription::Status::PastDue);
    assert!(canceling.cancel_at_period_end);

    app.billing_as_service()
        .await
        .record_invoice_payment(succeeded(&issued, "pi_3NvLate0001"))
        .await
        .unwrap();
    assert_eq!(
        subscription(&app, &org).await.status(),
        pb::subscription::Status::Canceling,
        "paid: back to what it was"
    );
}

/// A charge of another amount, or in another currency, pays nothing: a
/// capture in part, or a webhook mapped to the wrong invoice.
#[tokio::test(flavor = "multi_thread")]
async fn a_charge_of_another_amount_pays_nothing() {
    let app = spawn(&[]).await;
    let (_, issued) = invoiced_org(&app, "Acme").await;
    let total = issued.total.clone().unwrap();
    assert!(total.amount_minor > 1, "{total:?}");
    let mut processor = app.billing_as_service().await;
    for (reference, amount) in [
        (
            "pi_3NvPart0001",
            pb::Money {
                amount_minor: total.amount_minor - 1,
                ..total.clone()
            },
        ),
        (
            "pi_3NvEuro0001",
            pb::Money {
                currency_code: "EUR".into(),
                ..total.clone()
            },
        ),
    ] {
        let refused = expect_code(
            processor
                .record_invoice_payment(pb::RecordInvoicePaymentRequest {
                    amount: Some(amount),
                    ..succeeded(&issued, reference)
                })
                .await,
            Code::FailedPrecondition,
        );
        assert_eq!(reason(&refused), "AMOUNT_MISMATCH");
        assert!(
            refused.message().contains(&format!(
                "is for USD {}.{:02}",
                total.amount_minor / 100,
                total.amount_minor % 100
            )) && refused.message().contains(reference),
            "{refused:?}"
        );
    }
    assert_eq!(get_invoice(&app, &issued.name).await.state(), State::Open);
    assert_eq!(
        app.count("SELECT 1 FROM invoice_payments", &[]).await,
        0,
        "nothing recorded"
    );
    let paid = processor
        .record_invoice_payment(succeeded(&issued, "pi_3NvWhole001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.state(), State::Paid);
}
