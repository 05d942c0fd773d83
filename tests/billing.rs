//! BillingService: the plan decides who may join, upgrades and downgrades,
//! cancellation at period end, one invoice per period however many closers run,
//! vouchers, payment methods, and who may see or change billing.

mod common;

use std::sync::Arc;

use common::billing::*;
use common::periods::let_a_month_pass;
use common::*;
use orgd::auth::{Policy, PolicyTable};
use orgd::pb;
use prost_reflect::DescriptorPool;
use prost_types::FieldMask;
use tokio::sync::Barrier;
use tonic::Code;

fn voucher(code: &str, amount_minor: i64, max_redemptions: i32) -> pb::CreateVoucherRequest {
    pb::CreateVoucherRequest {
        voucher: Some(pb::Voucher {
            code: code.into(),
            amount: Some(pb::Money {
                currency_code: "USD".into(),
                amount_minor,
            }),
            max_redemptions,
            ..Default::default()
        }),
    }
}

fn redeem(org: &pb::Organization, code: &str) -> pb::RedeemVoucherRequest {
    pb::RedeemVoucherRequest {
        organization: org.name.clone(),
        code: code.into(),
    }
}

fn amount(money: &Option<pb::Money>) -> i64 {
    money.as_ref().expect("an amount").amount_minor
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starter_team_grows_upgrades_cancels_and_is_invoiced_once() {
    let app = TestApp::spawn().await;
    // A second replica on the same database, for concurrent closing.
    let replica = TestApp::spawn_on(&app.db_url, &[]).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut billing = app.billing_as("alice").await;

    // New team organizations are on Starter: three members.
    let sub = subscription(&mut billing, &org).await;
    assert_eq!(sub.plan, "plans/starter");
    join(&app, "alice", &org, "bob", &["developer"])
        .await
        .unwrap();
    join(&app, "alice", &org, "carol", &["viewer"])
        .await
        .unwrap();
    // Full: inviting dave is refused at once, naming the plan and the way up.
    let full = join(&app, "alice", &org, "dave", &["developer"])
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(precondition_type(&full), "MEMBER_LIMIT");
    assert!(
        full.message().contains("Starter plan's limit of 3 members")
            && full
                .message()
                .contains("ChangePlan to Startup (plans/startup)"),
        "{full:?}"
    );

    // Upgrading to a paid plan needs a payment method; then dave can join.
    let status = billing
        .change_plan(change_plan(&org, "startup"))
        .await
        .unwrap_err();
    assert_eq!(precondition_type(&status), "PAYMENT_METHOD_REQUIRED");
    billing
        .add_payment_method(card(&org, "pm_card_visa"))
        .await
        .unwrap();
    let upgraded = billing
        .change_plan(change_plan(&org, "startup"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upgraded.plan, "plans/startup");
    join(&app, "alice", &org, "dave", &["developer"])
        .await
        .unwrap();

    // Back to Starter is refused while four members remain, saying how many must go.
    let refused = expect_code(
        billing.change_plan(change_plan(&org, "starter")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&refused), "PLAN_LIMITS");
    assert!(
        refused.message().contains("4 members") && refused.message().contains("remove 1 member"),
        "{refused:?}"
    );

    // An operator issues a voucher; the organization redeems it once.
    app.billing_as_service()
        .await
        .create_voucher(voucher("welcome-10", 1000, 5))
        .await
        .unwrap();
    let redeemed = billing
        .redeem_voucher(redeem(&org, "WELCOME-10"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(amount(&redeemed.credit_balance), 1000);
    expect_code(
        billing.redeem_voucher(redeem(&org, "welcome-10")).await,
        Code::AlreadyExists,
    );

    // The address printed on invoices.
    billing
        .update_billing_profile(pb::UpdateBillingProfileRequest {
            billing_profile: Some(pb::BillingProfile {
                name: format!("{}/billingProfile", org.name),
                legal_name: "Acme Cloud GmbH".into(),
                address: Some(pb::PostalAddress {
                    address_lines: vec!["Unter den Linden 1".into()],
                    city: "Berlin".into(),
                    postal_code: "10117".into(),
                    country: "de".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["legal_name".into(), "address".into()],
            }),
        })
        .await
        .unwrap();

    // Cancel at period end: the plan stays until the period closes.
    let canceling = billing
        .cancel_subscription(pb::CancelSubscriptionRequest {
            name: subscription_name(&org),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceling.plan, "plans/startup");
    assert_eq!(canceling.status(), pb::subscription::Status::Canceling);

    // The month passes; two operators close the period at once, on two replicas.
    let_a_month_pass(&app.db, &org).await;
    let period_start = subscription(&mut billing, &org).await.current_period_start;
    let barrier = Arc::new(Barrier::new(2));
    let mut closers = Vec::new();
    for replica_app in [&app, &replica] {
        let mut operator = replica_app.billing_as_service().await;
        let (barrier, request) = (
            barrier.clone(),
            pb::CloseBillingPeriodRequest {
                organization: org.name.clone(),
                period_start,
            },
        );
        closers.push(tokio::spawn(async move {
            barrier.wait().await;
            operator.close_billing_period(request).await
        }));
    }
    let mut invoices = Vec::new();
    for closer in closers {
        invoices.push(closer.await.unwrap().unwrap().into_inner().invoice.unwrap());
    }
    assert_eq!(
        invoices[0], invoices[1],
        "both closers got the same invoice"
    );
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    assert_eq!(
        app.count("SELECT 1 FROM invoices WHERE org_id = $1", &[&org_id])
            .await,
        1
    );

    // The invoice: Starter for the moments before the upgrade, Startup for the
    // rest of the month, the voucher's credit, and totals that add up.
    let invoice = &invoices[0];
    assert_eq!(invoice.lines.len(), 2, "{invoice:?}");
    assert!(invoice.lines[0].description.starts_with("Starter plan"));
    assert!(invoice.lines[1].description.starts_with("Startup plan"));
    let sum: i64 = invoice.lines.iter().map(|l| amount(&l.amount)).sum();
    assert_eq!(amount(&invoice.subtotal), sum);
    assert!(
        (4890..=4900).contains(&sum),
        "about a month of Startup: {sum}"
    );
    assert_eq!(amount(&invoice.credit), 1000);
    assert_eq!(amount(&invoice.total), sum - 1000);

    // The cancellation took effect: the free plan, and the credit is used up.
    let after = subscription(&mut billing, &org).await;
    assert_eq!(after.plan, "plans/hobby");
    assert_eq!(after.status(), pb::subscription::Status::Active);
    assert_eq!(amount(&after.credit_balance), 0);
    assert!(
        after.current_period_start.unwrap().seconds > period_start.unwrap().seconds,
        "a new period began"
    );

    // The document carries the billing address and the totals.
    let document = billing
        .download_invoice(pb::DownloadInvoiceRequest {
            name: invoice.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(document.content_type.starts_with("text/html"));
    let html = String::from_utf8(document.content).unwrap();
    for expected in [
        "Acme Cloud GmbH",
        "Unter den Linden 1",
        "Berlin",
        "10117",
        invoice.number.as_str(),
    ] {
        assert!(
            html.contains(expected),
            "{expected} missing from the invoice"
        );
    }
    let total = amount(&invoice.total);
    assert!(
        html.contains(&format!("USD {}.{:02}", total / 100, total % 100)),
        "the total is printed"
    );
    for action in [
        "subscription.change_plan",
        "subscription.cancel",
        "voucher.redeem",
        "invoice.create",
        "billing_profile.update",
        "payment_method.add",
    ] {
        assert_eq!(
            activity_count(&app, action).await,
            1,
            "{action} audited once"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_billing_job_closes_due_periods_once_across_replicas() {
    let flags = ["--billing-interval", "100ms"];
    let app = TestApp::spawn_with(&flags).await;
    let _replica = TestApp::spawn_on(&app.db_url, &flags).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let_a_month_pass(&app.db, &org).await;
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while app
        .count("SELECT 1 FROM invoices WHERE org_id = $1", &[&org_id])
        .await
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "no invoice issued");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Both replicas keep running their jobs: still one invoice, a full Starter month.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rows = app
        .db
        .query(
            "SELECT subtotal_minor FROM invoices WHERE org_id = $1",
            &[&org_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 1900);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_organization_bills_up_to_the_deletion() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Short Lived").await;
    let_a_month_pass(&app.db, &org).await;
    // Half a month into the next... simulated by moving it back by half its length.
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    app.db
        .execute(
            "UPDATE subscriptions SET period_start = now() - interval '15 days',
                    period_end = now() + interval '15 days' WHERE org_id = $1",
            &[&org_id],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "UPDATE subscription_segments SET starts_at = now() - interval '15 days' WHERE org_id = $1",
            &[&org_id],
        )
        .await
        .unwrap();
    orgs.delete_organization(delete(&org)).await.unwrap();
    let mut billing = app.billing_as("alice").await;
    let invoices = billing
        .list_invoices(pb::ListInvoicesRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invoices;
    assert_eq!(invoices.len(), 1);
    // Half of Starter's 1900, give or take the seconds the test took.
    let billed = amount(&invoices[0].total);
    assert!((940..=960).contains(&billed), "{billed}");
    let sub: String = app
        .db
        .query_one(
            "SELECT status FROM subscriptions WHERE org_id = $1",
            &[&org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sub, "ended");
    // Restoring restarts billing.
    orgs.undelete_organization(pb::UndeleteOrganizationRequest {
        name: org.name.clone(),
    })
    .await
    .unwrap();
    let restored = subscription(&mut billing, &org).await;
    assert_eq!(restored.status(), pb::subscription::Status::Active);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_use_of_a_voucher_is_redeemed_exactly_once() {
    let app = TestApp::spawn().await;
    let mut operator = app.billing_as_service().await;
    let mut orgs = app.orgs_as("alice").await;
    let (first, second) = (
        create_org(&mut orgs, "First").await,
        create_org(&mut orgs, "Second").await,
    );
    for round in 0..5 {
        let code = format!("LAST-{round}");
        operator
            .create_voucher(voucher(&code, 500, 1))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let mut redeemers = Vec::new();
        for org in [&first, &second] {
            let (mut client, barrier, request) = (
                app.billing_as("alice").await,
                barrier.clone(),
                redeem(org, &code),
            );
            redeemers.push(tokio::spawn(async move {
                barrier.wait().await;
                client.redeem_voucher(request).await
            }));
        }
        let mut results = Vec::new();
        for redeemer in redeemers {
            results.push(redeemer.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        let loser = results.into_iter().find_map(Result::err).unwrap();
        assert_eq!(precondition_type(&loser), "VOUCHER_USED_UP");
    }
    assert_eq!(app.count("SELECT 1 FROM voucher_redemptions", &[]).await, 5);
    assert_eq!(
        app.count(
            "SELECT 1 FROM vouchers WHERE redemptions = max_redemptions",
            &[]
        )
        .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_methods_keep_a_default_while_a_paid_plan_runs() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut billing = app.billing_as("alice").await;
    let first = billing
        .add_payment_method(card(&org, "pm_first"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.default, "the first one becomes the default");
    let second = billing
        .add_payment_method(card(&org, "pm_second"))
        .await
        .unwrap()
        .into_inner();
    assert!(!second.default);
    expect_code(
        billing.add_payment_method(card(&org, "pm_first")).await,
        Code::AlreadyExists,
    );
    let mut expired = card(&org, "pm_old");
    expired.payment_method.as_mut().unwrap().exp_year = 2020;
    expect_code(
        billing.add_payment_method(expired).await,
        Code::InvalidArgument,
    );

    billing
        .set_default_payment_method(pb::SetDefaultPaymentMethodRequest {
            name: second.name.clone(),
        })
        .await
        .unwrap();
    let listed = billing
        .list_payment_methods(pb::ListPaymentMethodsRequest {
            parent: org.name.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment_methods;
    assert_eq!(listed[0].name, second.name, "the default comes first");
    assert_eq!(listed.iter().filter(|m| m.default).count(), 1);

    // Removing the default promotes the other; the last one stays while Starter is paid.
    let after = billing
        .remove_payment_method(pb::RemovePaymentMethodRequest {
            name: second.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.default_payment_method.unwrap().name, first.name);
    let status = expect_code(
        billing
            .remove_payment_method(pb::RemovePaymentMethodRequest {
                name: first.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&status), "PAYMENT_METHOD_REQUIRED");
    // On the free plan it may go.
    billing
        .change_plan(change_plan(&org, "hobby"))
        .await
        .unwrap();
    billing
        .remove_payment_method(pb::RemovePaymentMethodRequest { name: first.name })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_organization_holds_at_most_twenty_payment_methods() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut billing = app.billing_as("alice").await;
    for i in 0..20 {
        billing
            .add_payment_method(card(&org, &format!("pm_card_{i}")))
            .await
            .unwrap();
    }
    let list = async |billing: &mut BillingClient| {
        billing
            .list_payment_methods(pb::ListPaymentMethodsRequest {
                parent: org.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .payment_methods
    };
    let added = activity_count(&app, "payment_method.add").await;
    let status = expect_code(
        billing.add_payment_method(card(&org, "pm_card_20")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&status), "PAYMENT_METHOD_LIMIT");
    assert!(
        status
            .message()
            .contains("already has 20 payment methods, the most an organization may hold"),
        "{status:?}"
    );
    assert_eq!(list(&mut billing).await.len(), 20);
    assert_eq!(activity_count(&app, "payment_method.add").await, added);

    // Room made, one more fits.
    let last = list(&mut billing).await.pop().unwrap();
    billing
        .remove_payment_method(pb::RemovePaymentMethodRequest { name: last.name })
        .await
        .unwrap();
    billing
        .add_payment_method(card(&org, "pm_card_20"))
        .await
        .unwrap();
    assert_eq!(list(&mut billing).await.len(), 20);

    // Racing for the last place, through separate connections: one wins.
    let last = list(&mut billing).await.pop().unwrap();
    billing
        .remove_payment_method(pb::RemovePaymentMethodRequest { name: last.name })
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..4 {
        let mut racer = app.billing_as("alice").await;
        let request = card(&org, &format!("pm_racer_{i}"));
        racers.push(tokio::spawn(async move {
            racer.add_payment_method(request).await
        }));
    }
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(precondition_type(&status), "PAYMENT_METHOD_LIMIT"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(list(&mut billing).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_developer_reads_the_subscription_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    join(&app, "alice", &org, "dev", &["developer"])
        .await
        .unwrap();
    let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let billing = pool.get_service_by_name("orgd.v1.BillingService").unwrap();
    let channel = app.channel().await;
    let token = user_token("dev");
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for method in billing.methods() {
        let path = format!("/orgd.v1.BillingService/{}", method.name());
        let Some(Policy::Org(scope)) = table.get(&path).unwrap().policy.clone() else {
            continue;
        };
        let target = if scope.child_resource {
            format!("{}/subscription", org.name)
        } else {
            org.name.clone()
        };
        let request = raw::request(&method.input(), &scope.org_field, &target);
        let result = raw::call(&channel, &path, request, Some(&token)).await;
        match result {
            Err(status) if status.code() == Code::PermissionDenied => {
                denied.push(method.name().to_owned())
            }
            other => {
                assert_eq!(
                    scope.permission.as_deref(),
                    Some("subscription.read"),
                    "{path} let a developer through: {other:?}"
                );
                allowed.push(method.name().to_owned());
            }
        }
    }
    assert_eq!(allowed, ["GetSubscription"]);
    for mutation in [
        "ChangePlan",
        "CancelSubscription",
        "ResumeSubscription",
        "UpdateBillingProfile",
        "AddPaymentMethod",
        "SetDefaultPaymentMethod",
        "RemovePaymentMethod",
        "RedeemVoucher",
    ] {
        assert!(
            denied.contains(&mutation.to_owned()),
            "{mutation} not refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_billing_profile_is_validated_and_its_email_confirmed() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut billing = app.billing_as("alice").await;
    let name = format!("{}/billingProfile", org.name);
    let update = |profile: pb::BillingProfile, path: &str| pb::UpdateBillingProfileRequest {
        billing_profile: Some(pb::BillingProfile {
            name: name.clone(),
            ..profile
        }),
        update_mask: Some(FieldMask {
            paths: vec![path.into()],
        }),
    };
    let bad_country = pb::BillingProfile {
        address: Some(pb::PostalAddress {
            address_lines: vec!["1 Main St".into()],
            city: "Springfield".into(),
            country: "XX".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = expect_code(
        billing
            .update_billing_profile(update(bad_country, "address"))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status
            .message()
            .starts_with("billing_profile.address.country"),
        "{status:?}"
    );
    let stale = pb::BillingProfile {
        legal_name: "Acme".into(),
        etag: "W/\"41\"".into(),
        ..Default::default()
    };
    expect_code(
        billing
            .update_billing_profile(update(stale, "legal_name"))
            .await,
        Code::Aborted,
    );

    // A new billing email waits for confirmation from its inbox.
    let pending = billing
        .update_billing_profile(update(
            pb::BillingProfile {
                billing_email: "Invoices@Acme.test".into(),
                ..Default::default()
            },
            "billing_email",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.billing_email, "");
    assert_eq!(pending.pending_billing_email, "invoices@acme.test");
    let token = latest_token(&app, "invoices@acme.test").await;
    let confirmed = billing
        .verify_billing_email(pb::VerifyBillingEmailRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.billing_email, "invoices@acme.test");
    let profile = billing
        .get_billing_profile(pb::GetBillingProfileRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            profile.billing_email.as_str(),
            profile.pending_billing_email.as_str()
        ),
        ("invoices@acme.test", "")
    );
    expect_code(
        billing
            .verify_billing_email(pb::VerifyBillingEmailRequest { token })
            .await,
        Code::NotFound,
    );

    // Cancel, then change one's mind before the period ends.
    billing
        .add_payment_method(card(&org, "pm_card"))
        .await
        .unwrap();
    let subscription = pb::CancelSubscriptionRequest {
        name: subscription_name(&org),
    };
    billing
        .cancel_subscription(subscription.clone())
        .await
        .unwrap();
    let resumed = billing
        .resume_subscription(pb::ResumeSubscriptionRequest {
            name: subscription_name(&org),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.status(), pb::subscription::Status::Active);
    assert!(!resumed.cancel_at_period_end);
    expect_code(
        billing
            .resume_subscription(pb::ResumeSubscriptionRequest {
                name: subscription_name(&org),
            })
            .await,
        Code::FailedPrecondition,
    );
    // Plans are listed smallest first, with prices in minor units.
    let plans = billing
        .list_plans(pb::ListPlansRequest {})
        .await
        .unwrap()
        .into_inner()
        .plans;
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "plans/hobby",
            "plans/starter",
            "plans/startup",
            "plans/team"
        ]
    );
    assert_eq!(amount(&plans[2].monthly_price), 4900);
    assert_eq!(plans[3].max_members, None, "Team is unlimited");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_changes_are_prorated_exactly() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    // A 30-day period in the past: Starter for 15 days, then Startup for 15.
    for statement in [
        "UPDATE subscriptions SET plan_id = 'startup', period_start = '2026-01-01T00:00:00Z',
                period_end = '2026-01-31T00:00:00Z' WHERE org_id = $1",
        "DELETE FROM subscription_segments WHERE org_id = $1",
        "INSERT INTO subscription_segments VALUES
             ($1, '2026-01-01T00:00:00Z', 'starter'), ($1, '2026-01-16T00:00:00Z', 'startup')",
    ] {
        app.db.execute(statement, &[&org_id]).await.unwrap();
    }
    let invoice = app
        .billing_as_service()
        .await
        .close_billing_period(pb::CloseBillingPeriodRequest {
            organization: org.name.clone(),
            period_start: None,
        })
        .await
        .unwrap()
        .into_inner()
        .invoice
        .unwrap();
    let lines: Vec<i64> = invoice.lines.iter().map(|l| amount(&l.amount)).collect();
    assert_eq!(lines, [950, 2450], "{invoice:?}");
    assert!(invoice.lines[0].description.contains("15.00 of 30.00 days"));
    assert_eq!(amount(&invoice.total), 3400);
    // The next period starts where this one ended, on the plan held at the end.
    let sub = subscription(&mut app.billing_as("alice").await, &org).await;
    assert_eq!(sub.plan, "plans/startup");
    assert_eq!(
        sub.current_period_start.unwrap().seconds,
        invoice.period_end.unwrap().seconds
    );
    // An unknown period is NOT_FOUND; another organization's invoice is not here.
    let other = create_org(&mut app.orgs_as("alice").await, "Other").await;
    expect_code(
        app.billing_as("alice")
            .await
            .get_invoice(pb::GetInvoiceRequest {
                name: invoice.name.replace(&org.uid, &other.uid),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        app.billing_as_service()
            .await
            .close_billing_period(pb::CloseBillingPeriodRequest {
                organization: org.name.clone(),
                period_start: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancellation_is_kept_through_deletion() {
    let app = TestApp::spawn_with(&["--default-plan", "startup"]).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut billing = app.billing_as("alice").await;
    billing
        .cancel_subscription(pb::CancelSubscriptionRequest {
            name: subscription_name(&org),
        })
        .await
        .unwrap();
    // While cancelling, the Startup plan is still in force: bob joins.
    join(&app, "alice", &org, "bob", &["viewer"]).await.unwrap();
    // A developer sees the subscription but not the credit balance.
    let dev = app.user_id("dev").await;
    app.set_member(&org.uid, &dev, &["developer"], &[]).await;
    let seen = subscription(&mut app.billing_as("dev").await, &org).await;
    assert!(seen.credit_balance.is_none());
    // Deleting ends the cancelled period; restoring does not revive the paid plan.
    orgs.delete_organization(delete(&org)).await.unwrap();
    orgs.undelete_organization(pb::UndeleteOrganizationRequest {
        name: org.name.clone(),
    })
    .await
    .unwrap();
    let restored = subscription(&mut billing, &org).await;
    assert_eq!(restored.plan, "plans/hobby");
    assert_eq!(restored.status(), pb::subscription::Status::Active);
    assert!(restored.credit_balance.is_some(), "the owner sees it");
    // Over the free plan's limit, the members stay, and nobody new joins.
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    assert_eq!(
        app.count("SELECT 1 FROM memberships WHERE org_id = $1", &[&org_id])
            .await,
        3
    );
    let refused = join(&app, "alice", &org, "carol", &["viewer"])
        .await
        .unwrap_err();
    assert_eq!(precondition_type(&refused), "MEMBER_LIMIT");
    assert!(
        refused
            .message()
            .contains("has 3 members, over the Hobby plan's limit of 1 member:"),
        "{refused:?}"
    );
}

/// Adaptable: "The features of the Teams plan will continue to be available
/// until the end of the current billing period." Every limit follows the plan
/// in force: Team's while cancelling, the free plan's once the period has ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_plan_keeps_its_limits_until_the_period_ends() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    let mut billing = app.billing_as("alice").await;
    let mut resources = orgd::pb::resource_service_client::ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let register = |external_id: &str| pb::RegisterResourceRequest {
        parent: org.name.clone(),
        resource: Some(pb::Resource {
            kind: "app".into(),
            external_id: external_id.into(),
            display_name: format!("app {external_id}"),
            ..Default::default()
        }),
    };
    billing
        .add_payment_method(card(&org, "pm_card_visa"))
        .await
        .unwrap();
    billing
        .change_plan(change_plan(&org, "team"))
        .await
        .unwrap();
    let canceling = billing
        .cancel_subscription(pb::CancelSubscriptionRequest {
            name: subscription_name(&org),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceling.plan, "plans/team");
    assert_eq!(canceling.status(), pb::subscription::Status::Canceling);

    // Team's limits hold while cancelling: more members than Starter or the free
    // plan allow, and more resources than the free plan holds.
    for sub in ["bob", "carol", "dave", "erin"] {
        join(&app, "alice", &org, sub, &["viewer"]).await.unwrap();
    }
    for n in 0..4 {
        resources
            .register_resource(register(&format!("a{n}")))
            .await
            .unwrap();
    }
    // Frank is invited now and answers only after the period.
    app.members_as("alice")
        .await
        .create_invitation(invitation(&org, "frank@example.com", &["viewer"]))
        .await
        .unwrap();
    let frank_token = latest_token(&app, "frank@example.com").await;

    // The period ends; before any closer runs, the free plan's limits apply.
    let_a_month_pass(&app.db, &org).await;
    let refused = expect_code(
        app.members_as("alice")
            .await
            .create_invitation(invitation(&org, "gina@example.com", &["viewer"]))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&refused), "MEMBER_LIMIT");
    assert!(
        refused.message().contains(
            "has 5 members, over the Hobby plan's limit of 1 member: \
             ChangePlan to Startup (plans/startup) for up to 6 members, then invite again"
        ),
        "{refused:?}"
    );

    // The period closes: the free plan. Everyone stays; nobody new joins.
    let period_start = subscription(&mut billing, &org).await.current_period_start;
    app.billing_as_service()
        .await
        .close_billing_period(pb::CloseBillingPeriodRequest {
            organization: org.name.clone(),
            period_start,
        })
        .await
        .unwrap();
    let after = subscription(&mut billing, &org).await;
    assert_eq!(after.plan, "plans/hobby");
    assert_eq!(after.status(), pb::subscription::Status::Active);
    assert_eq!(
        app.count("SELECT 1 FROM memberships WHERE org_id = $1", &[&org_id])
            .await,
        5
    );
    let late = expect_code(
        app.members_as("frank")
            .await
            .accept_invitation(accept(&frank_token))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&late), "MEMBER_LIMIT");
    assert!(
        late.message()
            .contains("over the Hobby plan's limit of 1 member")
            && late.message().contains("then accept again"),
        "{late:?}"
    );
    let full = expect_code(
        resources.register_resource(register("a4")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(precondition_type(&full), "RESOURCE_LIMIT");
    assert!(
        full.message().contains(
            "has 4 resources, over the Hobby plan's limit of 3 resources: \
             ChangePlan to Starter (plans/starter) for up to 20 resources, or unregister 2 resources first"
        ),
        "{full:?}"
    );
}

/// The policy layer lets the call through, then the call waits on the
/// organization's row lock while a concurrent change takes the caller's billing
/// role away: under the lock the change re-reads the caller's standing and is
/// refused, changing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_billing_change_waiting_on_the_lock_is_refused_once_its_caller_is_demoted() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let bob = app.user_id("bob").await;
    app.set_member(&org.uid, &bob, &["billing"], &[]).await;
    let mut billing = app.billing_as("bob").await;
    let profile_name = format!("{}/billingProfile", org.name);
    let before = billing
        .get_billing_profile(pb::GetBillingProfileRequest {
            name: profile_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // The demotion commits together with the lock the call waits on.
    let locker = lock_org_row(&app, &org).await;
    let (org_id, bob_id): (uuid::Uuid, uuid::Uuid) =
        (org.uid.parse().unwrap(), bob.parse().unwrap());
    locker
        .execute(
            "DELETE FROM membership_roles WHERE org_id = $1 AND user_id = $2",
            &[&org_id, &bob_id],
        )
        .await
        .unwrap();
    let request = pb::UpdateBillingProfileRequest {
        billing_profile: Some(pb::BillingProfile {
            name: profile_name.clone(),
            legal_name: "Bob's Own GmbH".into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["legal_name".into()],
        }),
    };
    let mut caller = billing.clone();
    let call = tokio::spawn(async move { caller.update_billing_profile(request).await });
    assert_eq!(
        app.lock_waiters(1).await,
        1,
        "the call passed the policy layer and waits for the lock"
    );
    locker.batch_execute("COMMIT").await.unwrap();

    expect_code(call.await.unwrap(), Code::PermissionDenied);
    let after = app
        .billing_as("alice")
        .await
        .get_billing_profile(pb::GetBillingProfileRequest { name: profile_name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.legal_name, before.legal_name);
    assert_eq!(after.etag, before.etag);
}

/// Platform.sh's "Manage billing" lets a member "add, remove and edit billing
/// information. Access invoices and vouchers": `billing.manage` implies
/// `billing.read` (and what reading billing shows: the subscription), and the
/// caller sees what they hold, implied permissions included.
#[tokio::test(flavor = "multi_thread")]
async fn managing_billing_includes_reading_it() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let bea = app.user_id("bea").await;
    // An individual grant, no role.
    app.set_member(&org.uid, &bea, &[], &["billing.manage"])
        .await;

    let mut billing = app.billing_as("bea").await;
    billing
        .get_billing_profile(pb::GetBillingProfileRequest {
            name: format!("{}/billingProfile", org.name),
        })
        .await
        .unwrap();
    billing
        .list_invoices(pb::ListInvoicesRequest {
            parent: org.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    billing
        .list_payment_methods(pb::ListPaymentMethodsRequest {
            parent: org.name.clone(),
        })
        .await
        .unwrap();
    // The subscription, with the credit vouchers gave (shown to billing.read).
    let subscription = billing
        .get_subscription(pb::GetSubscriptionRequest {
            name: subscription_name(&org),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(subscription.credit_balance.is_some(), "{subscription:?}");
    // Not more: plans and members are not billing's.
    expect_code(
        billing.change_plan(change_plan(&org, "team")).await,
        Code::PermissionDenied,
    );

    let me = app
        .orgs_as("bea")
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let acme = me
        .memberships
        .iter()
        .find(|m| m.organization == org.name)
        .unwrap();
    assert_eq!(acme.roles, Vec::<String>::new());
    assert_eq!(acme.extra_permissions, ["billing.manage"]);
    assert_eq!(
        acme.effective_permissions,
        [
            "billing.manage",
            "billing.read",
            "org.read",
            "subscription.read"
        ]
    );
    // The members page reads the same effective set.
    let listed = app
        .members_as("alice")
        .await
        .get_member(pb::GetMemberRequest {
            name: format!("{}/members/{bea}", org.name),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.effective_permissions, acme.effective_permissions);
}
