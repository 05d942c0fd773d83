//! orgd never stores or repeats a card number: the free-text fields of a request
//! (names, descriptions, addresses, the payment processor's token) refuse one
//! with INVALID_ARGUMENT naming the field, however it is written, and an error
//! that echoes another field (an id, a resource name) masks it. Ids that merely
//! pass the Luhn check are taken. Checked against the real binary, with debug
//! logging captured.

mod common;

use common::logged::LoggedOrgd;
use common::*;
use orgd::pb::{
    self, billing_service_client::BillingServiceClient, org_service_client::OrgServiceClient,
    resource_service_client::ResourceServiceClient, token_service_client::TokenServiceClient,
};
use prost_types::FieldMask;
use tonic::{Code, Status};

/// Test card numbers (they pass every card rule), as people type them.
const CARDS: [&str; 4] = [
    "4111 1111 1111 1111",
    "378282246310005",
    "5555-5555-5555-4444",
    "6011111111111117",
];

/// The same numbers as they got past a screen that read only ASCII digits with
/// narrow gaps.
const DISGUISED: [&str; 7] = [
    "3782   822463   10005",
    "4111 / 1111 / 1111 / 1111",
    "5555\t5555\t\t5555\t4444",
    "6011\u{200b}1111\u{200b}1111\u{200b}1117",
    "3782\u{2060}8224\u{feff}6310\u{200c}005",
    "４１１１ １１１１ １１１１ １１１１",
    "٤١١١ ١١١١ ١١١١ ١١١١",
];

/// The digits of `text` in order, as ASCII whatever their script (of those
/// used here), everything else left out, escapes such as `\u{200b}` included:
/// a card number written anywhere in it, in any spacing or script, shows whole.
fn digit_stream(text: &str) -> String {
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.next_if_eq(&'u').is_some() {
            if chars.next_if_eq(&'{').is_some() {
                chars.by_ref().find(|&c| c == '}');
            } else {
                chars.by_ref().take(4).for_each(drop);
            }
            continue;
        }
        let zero = match c {
            '0'..='9' => '0',
            '０'..='９' => '０',
            '٠'..='٩' => '٠',
            _ => continue,
        };
        digits.push(char::from(b'0' + (u32::from(c) - u32::from(zero)) as u8));
    }
    digits
}

/// Asserts that `text` holds none of the card numbers, in any form.
fn assert_no_card_number(text: &str, what: &str) {
    let digits = digit_stream(text);
    // A short text is shown whole; the log would drown the message.
    let shown = if text.len() < 1000 { text } else { "" };
    for card in CARDS {
        assert!(
            !digits.contains(&digit_stream(card)),
            "{card} is in {what}: {shown}"
        );
    }
}

/// Asserts a card-number refusal naming `field`, and that it repeats no number.
fn assert_refused(result: Result<(), Status>, field: &str) {
    let status = expect_code(result, Code::InvalidArgument);
    assert!(
        status.message().starts_with(&format!("{field}: "))
            && status.message().contains("card number"),
        "expected a card-number refusal of {field}: {status:?}"
    );
    assert_no_card_number(status.message(), "a refusal");
}

#[tokio::test(flavor = "multi_thread")]
async fn card_numbers_are_refused_in_free_text_and_never_echoed_stored_or_logged() {
    let db_url = fresh_database().await;
    let orgd = LoggedOrgd::start(&db_url, &[], "debug");
    let channel = orgd.channel().await;
    let bearer = Bearer::new(Some(&user_token("alice")));
    let mut orgs = OrgServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut billing = BillingServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut resources = ResourceServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut tokens = TokenServiceClient::with_interceptor(channel, bearer);
    let org = create_org(&mut orgs, "Acme").await;
    let mut calls = 1;

    // In a description, as typed and as disguised.
    for card in CARDS.into_iter().chain(DISGUISED) {
        let described = pb::Organization {
            name: org.name.clone(),
            description: format!("Pay with {card}, thanks"),
            ..Default::default()
        };
        let result = orgs
            .update_organization(update(described, &["description"]))
            .await;
        assert_refused(result.map(drop), "organization.description");
        calls += 1;
    }
    // In the processor's token and the other display data of a payment method.
    let payment_method = |processor_token: &str, brand: &str| pb::AddPaymentMethodRequest {
        parent: org.name.clone(),
        payment_method: Some(pb::PaymentMethod {
            processor_token: processor_token.into(),
            brand: brand.into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
            ..Default::default()
        }),
    };
    for (request, field) in [
        (
            payment_method("pm_378282246310005", "visa"),
            "payment_method.processor_token",
        ),
        (
            payment_method("pm_4111111111111111", "visa"),
            "payment_method.processor_token",
        ),
        (
            payment_method(&format!("pm_{}", DISGUISED[6]), "visa"),
            "payment_method.processor_token",
        ),
        (
            payment_method("pm_1NvXyzABC", CARDS[2]),
            "payment_method.brand",
        ),
    ] {
        assert_refused(billing.add_payment_method(request).await.map(drop), field);
        calls += 1;
    }
    // In names and an address.
    assert_refused(
        orgs.create_organization(new_org(CARDS[3])).await.map(drop),
        "organization.display_name",
    );
    let profile = |legal_name: &str, line: &str, path: &str| pb::UpdateBillingProfileRequest {
        billing_profile: Some(pb::BillingProfile {
            name: format!("{}/billingProfile", org.name),
            legal_name: legal_name.into(),
            address: Some(pb::PostalAddress {
                address_lines: vec!["Main St 1".into(), line.into()],
                city: "Berlin".into(),
                country: "DE".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec![path.into()],
        }),
    };
    assert_refused(
        billing
            .update_billing_profile(profile(
                &format!("Card {}", CARDS[1]),
                "2nd floor",
                "legal_name",
            ))
            .await
            .map(drop),
        "billing_profile.legal_name",
    );
    assert_refused(
        billing
            .update_billing_profile(profile("ACME GmbH", DISGUISED[3], "address"))
            .await
            .map(drop),
        "billing_profile.address.address_lines[1]",
    );
    assert_refused(
        resources
            .register_resource(pb::RegisterResourceRequest {
                parent: org.name.clone(),
                resource: Some(pb::Resource {
                    kind: "app".into(),
                    external_id: "app-1".into(),
                    display_name: DISGUISED[5].into(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        "resource.display_name",
    );
    assert_refused(
        tokens
            .create_api_token(pb::CreateApiTokenRequest {
                parent: org.name.clone(),
                api_token: Some(pb::ApiToken {
                    display_name: CARDS[0].into(),
                    roles: vec!["developer".into()],
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        "api_token.display_name",
    );
    calls += 5;

    // Ids and resource names are not screened, and an error repeating one
    // masks the number in it.
    let pan = digit_stream(CARDS[0]);
    let echoes = [
        orgs.get_organization(get(&format!("organizations/{pan}")))
            .await
            .map(drop),
        resources
            .get_resource(pb::GetResourceRequest {
                name: format!("{}/resources/{}", org.name, CARDS[0]),
            })
            .await
            .map(drop),
        billing
            .change_plan(pb::ChangePlanRequest {
                name: format!("{}/subscription", org.name),
                plan: format!("plans/{pan}"),
                etag: String::new(),
            })
            .await
            .map(drop),
    ];
    for echo in echoes {
        let status = echo.expect_err("no such organization, resource or plan");
        assert!(status.message().contains("•••• 1111"), "{status:?}");
        assert_no_card_number(status.message(), "an error");
        calls += 1;
    }

    // The real thing goes through: a processor token and display data.
    let added = billing
        .add_payment_method(payment_method("pm_1NvXyzABC", "visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.last4, "4242");
    calls += 1;

    let log = orgd.stop();
    assert!(
        log.matches("call finished").count() >= calls,
        "the debug log of every call was captured"
    );
    assert_no_card_number(&log, "the log");

    // No table holds any of them, however they were written.
    let db = sql_client(&db_url).await;
    let tables = public_tables(&db).await;
    assert!(tables.len() > 20, "{tables:?}");
    for table in tables {
        for row in db
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .await
            .unwrap()
        {
            assert_no_card_number(row.get(0), &table);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_pass_the_luhn_check_are_not_card_numbers() {
    let app = TestApp::spawn().await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    // A 12-digit local part, as test suites generate them.
    app.members_as("alice")
        .await
        .create_invitation(invitation(&org, "491510000004@acceptance.test", &[]))
        .await
        .unwrap();
    // A cloud account id: one in ten 12-digit ones passes Luhn.
    let mut resources = ResourceServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let resource = resources
        .register_resource(pb::RegisterResourceRequest {
            parent: org.name.clone(),
            resource: Some(pb::Resource {
                kind: "aws-account".into(),
                external_id: "100000000008".into(),
                display_name: "Production account 100000000008".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resource.external_id, "100000000008");
}
