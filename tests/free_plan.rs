//! New team organizations start on the free plan, as on Koyeb and Adaptable:
//! nobody is billed for a plan they did not choose, and a team grows once an
//! owner adds a payment method and picks a paid plan. Run on the real binary
//! with its defaults (the in-process test servers start teams on Starter).

mod common;

use std::time::Duration;

use common::billing::*;
use common::logged::LoggedOrgd;
use common::*;
use orgd::pb;
use orgd::pb::billing_service_client::BillingServiceClient;
use orgd::pb::member_service_client::MemberServiceClient;
use orgd::pb::org_service_client::OrgServiceClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_team_starts_free_and_grows_once_its_owner_picks_a_paid_plan() {
    let db_url = fresh_database().await;
    let orgd = LoggedOrgd::start(&db_url, &["--billing-interval", "200ms"], "info");
    let channel = orgd.channel().await;
    let alice = Bearer::new(Some(&user_token("alice")));
    let mut orgs = OrgServiceClient::with_interceptor(channel.clone(), alice.clone());
    let mut members = MemberServiceClient::with_interceptor(channel.clone(), alice.clone());
    let mut billing = BillingServiceClient::with_interceptor(channel, alice);
    let acme = create_org(&mut orgs, "Acme").await;

    assert_eq!(subscription(&mut billing, &acme).await.plan, "plans/hobby");

    // The owner is the free plan's one member: the refusal says how to make
    // room, and not "remove 1 member", which would leave nobody.
    let refused = expect_code(
        members
            .create_invitation(invitation(&acme, "bob@example.com", &["developer"]))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains(
            "has reached the Hobby plan's limit of 1 member: add a payment method \
             (AddPaymentMethod), then ChangePlan to Starter (plans/starter) for up to \
             3 members, then invite again"
        ),
        "{}",
        refused.message()
    );
    let refused = expect_code(
        billing.change_plan(change_plan(&acme, "starter")).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("add a payment method"),
        "{}",
        refused.message()
    );

    billing
        .add_payment_method(card(&acme, "pm_card_visa"))
        .await
        .unwrap();
    let upgraded = billing
        .change_plan(change_plan(&acme, "starter"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upgraded.plan, "plans/starter");
    members
        .create_invitation(invitation(&acme, "bob@example.com", &["developer"]))
        .await
        .unwrap();

    // A team left on the free plan is never charged: its period closes with
    // nothing to pay.
    let idle = create_org(&mut orgs, "Idle").await;
    let db = sql_client(&db_url).await;
    periods::let_a_month_pass(&db, &idle).await;
    let first_invoice = async {
        loop {
            let listed = billing
                .list_invoices(pb::ListInvoicesRequest {
                    parent: idle.name.clone(),
                    page_size: 10,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            if let Some(invoice) = listed.invoices.into_iter().next() {
                break invoice;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let invoice = tokio::time::timeout(Duration::from_secs(30), first_invoice)
        .await
        .expect("the billing worker closes the ended period");
    assert_eq!(
        invoice.total.unwrap().amount_minor,
        0,
        "{:?}",
        invoice.lines
    );
    assert!(invoice.lines.iter().all(|line| {
        line.amount
            .as_ref()
            .is_some_and(|amount| amount.amount_minor == 0)
    }));
    let log = orgd.stop();
    assert!(!log.contains("start on a paid plan"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_default_plan_is_an_operators_choice_and_is_warned_about() {
    let db_url = fresh_database().await;
    let orgd = LoggedOrgd::start(&db_url, &["--default-plan", "starter"], "info");
    let channel = orgd.channel().await;
    let alice = Bearer::new(Some(&user_token("alice")));
    let acme = create_org(
        &mut OrgServiceClient::with_interceptor(channel.clone(), alice.clone()),
        "Acme",
    )
    .await;
    let mut billing = BillingServiceClient::with_interceptor(channel, alice);
    assert_eq!(
        subscription(&mut billing, &acme).await.plan,
        "plans/starter"
    );
    let log = orgd.stop();
    let warning = log
        .lines()
        .find(|line| line.contains("start on a paid plan"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(
        warning.contains("WARN") && warning.contains("plans/starter"),
        "{warning}"
    );
}
