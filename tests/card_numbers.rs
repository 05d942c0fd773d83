//! orgd never stores a card number: every billing text that contains one is
//! refused with INVALID_ARGUMENT, and the number reaches neither the database nor
//! the logs. Checked against the real binary, with debug logging captured.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use orgd::pb::{self, billing_service_client::BillingServiceClient};
use prost_types::FieldMask;
use tonic::Code;
use tonic::transport::Channel;

/// Test card numbers (Luhn-valid), as a person might type them.
const CARDS: [&str; 6] = [
    "4242424242424242",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "6011111111111117",
    "4000056655665556",
];

fn digits(card: &str) -> String {
    card.chars().filter(char::is_ascii_digit).collect()
}

async fn connect(addr: &str) -> Channel {
    for _ in 0..300 {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("orgd did not start listening on {addr}");
}

fn profile_update(
    org: &pb::Organization,
    path: &str,
    profile: pb::BillingProfile,
) -> pb::UpdateBillingProfileRequest {
    pb::UpdateBillingProfileRequest {
        billing_profile: Some(pb::BillingProfile {
            name: format!("{}/billingProfile", org.name),
            ..profile
        }),
        update_mask: Some(FieldMask {
            paths: vec![path.into()],
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn card_numbers_are_refused_and_never_stored_or_logged() {
    let db_url = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("orgd-cards-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("orgd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let addr = common::free_local_addr();
    let mut orgd = Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args([
            "serve",
            "--listen",
            &addr,
            "--jwt-secret",
            SECRET,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--shutdown-grace",
            "2s",
        ])
        .env("DATABASE_URL", &db_url)
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let channel = connect(&addr).await;
    let token = user_token("alice");
    let mut orgs = pb::org_service_client::OrgServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&token)),
    );
    let org = create_org(&mut orgs, "Acme").await;
    let mut billing = BillingServiceClient::with_interceptor(channel, Bearer::new(Some(&token)));

    let mut refusals = Vec::new();
    for (i, card) in CARDS.iter().enumerate() {
        let mut method = pb::PaymentMethod {
            processor_token: "pm_valid_token".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
            ..Default::default()
        };
        match i % 2 {
            0 => method.processor_token = format!("pm_{}", digits(card)),
            _ => method.brand = (*card).to_owned(),
        }
        refusals.push(
            billing
                .add_payment_method(pb::AddPaymentMethodRequest {
                    parent: org.name.clone(),
                    payment_method: Some(method),
                })
                .await
                .map(|_| ()),
        );
    }
    let profile_fields = [
        (
            "legal_name",
            pb::BillingProfile {
                legal_name: format!("Pay with {}", CARDS[2]),
                ..Default::default()
            },
        ),
        (
            "tax_id",
            pb::BillingProfile {
                tax_id: CARDS[4].into(),
                ..Default::default()
            },
        ),
        (
            "billing_email",
            pb::BillingProfile {
                billing_email: format!("{}@example.com", digits(CARDS[0])),
                ..Default::default()
            },
        ),
        (
            "address",
            pb::BillingProfile {
                address: Some(pb::PostalAddress {
                    address_lines: vec![format!("Card {}", CARDS[3])],
                    city: "Berlin".into(),
                    country: "DE".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    for (path, profile) in profile_fields {
        refusals.push(
            billing
                .update_billing_profile(profile_update(&org, path, profile))
                .await
                .map(|_| ()),
        );
    }
    refusals.push(
        billing
            .redeem_voucher(pb::RedeemVoucherRequest {
                organization: org.name.clone(),
                code: CARDS[5].into(),
            })
            .await
            .map(|_| ()),
    );
    // Not only the texts a person types: names, plans, etags, masks, tokens too,
    // however the digits are punctuated.
    let pan = digits(CARDS[0]);
    let sub_name = format!("{}/subscription", org.name);
    refusals.push(
        billing
            .change_plan(pb::ChangePlanRequest {
                name: sub_name.clone(),
                plan: format!("plans/{pan}"),
                etag: String::new(),
            })
            .await
            .map(|_| ()),
    );
    refusals.push(
        billing
            .change_plan(pb::ChangePlanRequest {
                name: sub_name.clone(),
                plan: "plans/startup".into(),
                etag: format!("W/\"{}\"", CARDS[1]),
            })
            .await
            .map(|_| ()),
    );
    refusals.push(
        billing
            .get_subscription(pb::GetSubscriptionRequest {
                name: format!("{}/{pan}", org.name),
            })
            .await
            .map(|_| ()),
    );
    refusals.push(
        billing
            .redeem_voucher(pb::RedeemVoucherRequest {
                organization: pan.clone(),
                code: "WELCOME".into(),
            })
            .await
            .map(|_| ()),
    );
    refusals.push(
        billing
            .verify_billing_email(pb::VerifyBillingEmailRequest { token: pan.clone() })
            .await
            .map(|_| ()),
    );
    let mut mask = profile_update(&org, "legal_name", pb::BillingProfile::default());
    mask.update_mask.as_mut().unwrap().paths = vec![pan.clone()];
    refusals.push(billing.update_billing_profile(mask).await.map(|_| ()));
    for disguised in [
        "4242.4242.4242.4242",
        "4242\u{a0}4242\u{a0}4242\u{a0}4242",
        "4242_4242_4242_4242",
    ] {
        refusals.push(
            billing
                .update_billing_profile(profile_update(
                    &org,
                    "tax_id",
                    pb::BillingProfile {
                        tax_id: disguised.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        );
    }
    assert_eq!(refusals.len(), 20);
    for refusal in refusals {
        let status = expect_code(refusal, Code::InvalidArgument);
        assert!(status.message().contains("card number"), "{status:?}");
        for card in CARDS {
            assert!(
                !status.message().contains(&digits(card)[..8]),
                "the refusal echoes the number: {status:?}"
            );
        }
    }
    // The real thing goes through: a processor token and display data.
    let added = billing
        .add_payment_method(pb::AddPaymentMethodRequest {
            parent: org.name.clone(),
            payment_method: Some(pb::PaymentMethod {
                processor_token: "pm_1NvXyzABC".into(),
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2031,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.last4, "4242");

    // Stop orgd so that its log is complete.
    unsafe { libc::kill(orgd.id() as i32, libc::SIGTERM) };
    assert!(orgd.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.matches("call finished").count() >= 21,
        "the debug log of every call was captured"
    );
    let compact_log: String = log.chars().filter(|c| *c != ' ' && *c != '-').collect();
    for card in CARDS {
        assert!(!log.contains(card), "{card} is in the log");
        assert!(!compact_log.contains(&digits(card)), "{card} is in the log");
    }

    // No table holds any of them, however they are punctuated.
    let db = sql_client(&db_url).await;
    let tables = public_tables(&db).await;
    assert!(tables.len() > 20, "{tables:?}");
    for table in tables {
        for card in CARDS {
            let found: i64 = db
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {table} t
                         WHERE regexp_replace(row_to_json(t)::text, '[ -]', '', 'g') LIKE '%' || $1 || '%'"
                    ),
                    &[&digits(card)],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(found, 0, "{card} found in {table}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
