//! Every call ends with one INFO access line: method, request id, gRPC code and
//! duration, and for a failure the status message. Every JSON line is one
//! object with one `message`, and an email logged for want of SMTP is one line.
//! Checked against the real binary's JSON log at its default level.

mod common;

use common::logged::LoggedOrgd;
use common::*;
use orgd::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn every_call_gets_one_access_line_with_its_code_and_duration() {
    let db_url = fresh_database().await;
    // At the default level (info), in JSON.
    let orgd = LoggedOrgd::start(
        &db_url,
        &["--log-format", "json", "--default-plan", "starter"],
        "info",
    );
    let channel = orgd.channel().await;
    let token = user_token("alice");
    let mut orgs = pb::org_service_client::OrgServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&token)),
    );
    let mut create = tonic::Request::new(new_org("Access Log"));
    create
        .metadata_mut()
        .insert("x-request-id", "access-create-1".parse().unwrap());
    let org = orgs.create_organization(create).await.unwrap().into_inner();
    // Its email, with no SMTP configured, goes to the log.
    pb::member_service_client::MemberServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&token)),
    )
    .create_invitation(invitation(&org, "carol@example.com", &["viewer"]))
    .await
    .unwrap();
    // Refused by the handler: the organization does not exist.
    let missing = format!("organizations/{}", uuid::Uuid::new_v4());
    expect_code(orgs.get_organization(get(&missing)).await, Code::NotFound);
    // Refused by the auth layer, before any handler.
    let mut stranger = pb::org_service_client::OrgServiceClient::with_interceptor(
        channel,
        Bearer::new(Some("not-a-jwt")),
    );
    expect_code(
        stranger.get_organization(get(&org.name)).await,
        Code::Unauthenticated,
    );

    delivered(&db_url).await;
    let log = orgd.stop();
    let every: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            // serde_json keeps the last of two equal keys: count them raw.
            assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"))
        })
        .collect();
    let lines: Vec<&serde_json::Value> = every
        .iter()
        .filter(|line| line["target"] == "orgd::access")
        .collect();
    assert_eq!(lines.len(), 4, "one access line per call:\n{log}");

    let [created, invited, not_found, unauthenticated] = lines[..] else {
        unreachable!()
    };
    assert_eq!(invited["fields"]["code"], "Ok");
    // The whole email, accept link included, is one line of the log.
    let email = every
        .iter()
        .find(|line| line["fields"]["to"] == "carol@example.com")
        .expect("the invitation email is logged");
    let body = email["fields"]["body"].as_str().unwrap();
    assert!(body.contains("invitations/accept?token="), "{email}");
    let method = |line: &serde_json::Value| line["span"]["method"].as_str().unwrap().to_owned();
    assert_eq!(method(created), "/orgd.v1.OrgService/CreateOrganization");
    assert_eq!(created["span"]["request_id"], "access-create-1");
    assert_eq!(created["fields"]["code"], "Ok");
    assert_eq!(created["fields"]["message"], "call finished");
    assert!(created["fields"]["detail"].is_null(), "{created}");
    assert_eq!(created["level"], "INFO");

    assert_eq!(method(not_found), "/orgd.v1.OrgService/GetOrganization");
    assert_eq!(not_found["fields"]["code"], "NotFound");
    let detail = not_found["fields"]["detail"].as_str().unwrap();
    assert!(detail.contains("not found"), "{detail}");

    assert_eq!(unauthenticated["fields"]["code"], "Unauthenticated");
    assert!(
        !unauthenticated["fields"]["detail"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{unauthenticated}"
    );
    for line in lines {
        let request_id = line["span"]["request_id"].as_str().unwrap();
        assert!(!request_id.is_empty() && request_id != "-", "{line}");
        assert!(line["fields"]["micros"].as_u64().unwrap() > 0, "{line}");
    }
    // The refusal is logged once, by the access line.
    assert!(!log.contains("call refused"), "{log}");
}

/// Waits until orgd delivered (here: logged) every queued email.
async fn delivered(db_url: &str) {
    let db = sql_client(db_url).await;
    for _ in 0..100 {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM outbox_messages WHERE delivered_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the invitation email was never delivered");
}
