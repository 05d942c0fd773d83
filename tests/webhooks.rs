//! Webhooks: orgd's events POSTed to endpoints, signed (each signature
//! checked here with an HMAC of the test's own), in feed order, at least once
//! through outages and crashes, once with two replicas; endpoints disabled
//! after their retries and enabled again; redelivery; who may manage them;
//! and the URLs refused (SSRF).

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::logged::LoggedOrgd;
use common::receiver::{Mode, Receiver};
use common::webhooks::*;
use common::*;
use orgd::pb::{self, webhook_endpoint::State};
use prost_types::FieldMask;
use tonic::Code;

/// (a) The receiver is down a while, then up: a service's endpoint for two
/// organizations gets every event, none lost, in feed order, each answered
/// once, and every attempt is listed.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_loses_nothing_and_keeps_the_order() {
    let app = spawn(&flags(&key_file(), 40)).await;
    let receiver = Receiver::start(Mode::Up).await;
    let mut orgs = app.orgs_as("alice").await;
    let acme = create_org(&mut orgs, "Acme").await;
    let beta = create_org(&mut orgs, "Beta").await;
    let mut service = client(app.channel().await, &service_token());
    let mut request = new_endpoint("", &receiver.url());
    request.webhook_endpoint.as_mut().unwrap().organizations =
        vec![acme.name.clone(), beta.name.clone()];
    let created = service
        .create_webhook_endpoint(request)
        .await
        .unwrap()
        .into_inner();
    let (endpoint, secret) = (created.webhook_endpoint.unwrap(), created.secret);
    assert!(
        endpoint.name.starts_with("webhookEndpoints/"),
        "{}",
        endpoint.name
    );

    receiver.set_mode(Mode::Unavailable);
    for n in 0..6 {
        let org = if n % 2 == 0 { &acme } else { &beta };
        touch(&mut orgs, org, n).await;
    }
    receiver
        .wait_for(LONG, |got| {
            got.iter().filter(|r| r.answered == 503).count() >= 4
        })
        .await;
    receiver.set_mode(Mode::Up);

    let filter = pb::EventFilter {
        organizations: vec![acme.name.clone(), beta.name.clone()],
        type_prefixes: vec![],
    };
    let expected = feed(
        &app,
        &mut app.events_as_service().await,
        "",
        filter,
        &endpoint.cursor,
    )
    .await;
    assert!(
        expected.len() >= 6,
        "the six changes, in the two organizations"
    );
    // In feed order, which is each organization's order too; none twice.
    assert_delivered_in_order(&receiver, &expected, &secret).await;
    let failed_first = receiver
        .received()
        .iter()
        .filter(|r| r.answered == 503)
        .count();
    assert!(
        receiver.received()[..failed_first]
            .iter()
            .all(|r| r.id() == expected[0])
    );

    // The feed's present starts at the oldest transaction still open, so the
    // first event may be one of the organizations' creations as well as a change.
    let first_type = receiver.received()[0].event_type();
    assert!(
        [
            "orgd.organization.created.v1",
            "orgd.organization.updated.v1"
        ]
        .contains(&&*first_type),
        "{first_type}"
    );
    let attempts = deliveries(&mut service, &endpoint.name).await;
    let first: Vec<&pb::WebhookDelivery> = attempts
        .iter()
        .rev()
        .filter(|d| d.event_id == expected[0])
        .collect();
    assert_eq!(first.len(), failed_first + 1);
    for (n, attempt) in first.iter().enumerate() {
        assert_eq!(attempt.attempt as usize, n + 1);
        let last = n == failed_first;
        assert_eq!(
            attempt.http_status,
            if last { 200 } else { 503 },
            "{attempt:?}"
        );
        assert_eq!(attempt.error.is_empty(), last, "{attempt:?}");
        assert_eq!(attempt.event_type, first_type);
    }
    let endpoint = service
        .get_webhook_endpoint(pb::GetWebhookEndpointRequest {
            name: endpoint.name,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(endpoint.state(), State::Enabled);
    assert_eq!(endpoint.failed_attempts, 0);
}

/// (b) orgd is killed (SIGKILL) while the receiver holds a delivery open:
/// after a restart the event is delivered, and the ones after it follow.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_cut_by_a_crash_is_made_again_after_restart() {
    let db = fresh_database().await;
    let key = key_file();
    let mut flags = flags(&key, 40);
    flags.extend([
        "--webhook-lease".into(),
        "3s".into(),
        "--webhook-timeout".into(),
        "1s".into(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let receiver = Receiver::start(Mode::Hold).await;

    let orgd = LoggedOrgd::start(&db, &flags, "info");
    let channel = orgd.channel().await;
    let mut orgs = pb::org_service_client::OrgServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&user_token("alice"))),
    );
    let org = create_org(&mut orgs, "Acme").await;
    let (endpoint, secret) = create(
        &mut client(channel, &user_token("alice")),
        &org.name,
        &receiver.url(),
    )
    .await;
    // The first event, the endpoint's creation, is held open: kill orgd then.
    receiver.wait_for(LONG, |got| !got.is_empty()).await;
    let held = receiver.received()[0].id().to_owned();
    orgd.kill();
    receiver.set_mode(Mode::Up);

    let orgd = LoggedOrgd::start(&db, &flags, "info");
    let channel = orgd.channel().await;
    let mut orgs = pb::org_service_client::OrgServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&user_token("alice"))),
    );
    touch(&mut orgs, &org, 1).await;
    receiver
        .wait_for(LONG, |_| receiver.acknowledged().len() >= 2)
        .await;
    let acknowledged = receiver.acknowledged();
    assert_eq!(
        acknowledged[0], held,
        "the cut delivery is made again, first"
    );
    assert_eq!(receiver.received()[0].answered, 0);
    assert_signed_cloud_events(&receiver, &secret);
    let mut webhooks = client(channel, &user_token("alice"));
    let attempts = deliveries(&mut webhooks, &endpoint.name).await;
    assert!(
        attempts
            .iter()
            .any(|d| d.event_id == held && d.http_status == 200)
    );
    let _ = orgd.stop();
}

/// (c) Two replicas on one database share the delivery: each event once.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_deliver_each_event_once() {
    let flags = flags(&key_file(), 40);
    let first = spawn(&flags).await;
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let second = TestApp::spawn_on(&first.db_url, &flag_refs).await;
    let receiver = Receiver::start(Mode::Up).await;
    let mut orgs = [first.orgs_as("alice").await, second.orgs_as("alice").await];
    let org = create_org(&mut orgs[0], "Acme").await;
    let (endpoint, secret) = create(
        &mut webhooks_as(&second, "alice").await,
        &org.name,
        &receiver.url(),
    )
    .await;
    for n in 0..20 {
        touch(&mut orgs[n % 2], &org, n).await;
    }
    let mut events = first.events(&user_token("alice")).await;
    let expected = feed(
        &first,
        &mut events,
        &org.name,
        pb::EventFilter::default(),
        &endpoint.cursor,
    )
    .await;
    assert!(expected.len() >= 21, "its creation and the twenty changes");
    receiver
        .wait_for(LONG, |_| receiver.acknowledged().len() >= expected.len())
        .await;
    // Let a stray duplicate show up, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let every: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(every, expected, "each event once, in order");
    assert_signed_cloud_events(&receiver, &secret);
}

/// (d) Without --webhook-allow-private: https only, public addresses only,
/// the host must resolve; each refusal names its rule.
#[tokio::test(flavor = "multi_thread")]
async fn unsafe_urls_are_refused() {
    let app = TestApp::spawn_with(&["--webhook-key-file", &key_file()]).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut webhooks = webhooks_as(&app, "alice").await;
    for (url, rule) in [
        ("http://hooks.example.com/orgd", "https"),
        ("https://127.0.0.1/orgd", "loopback"),
        ("https://localhost:8443/orgd", "loopback"),
        ("https://10.0.0.7/orgd", "private"),
        ("https://[::ffff:192.168.0.1]/orgd", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::1]/orgd", "loopback"),
        ("https://[fe80::1]/orgd", "link-local"),
        ("https://100.64.1.1/orgd", "shared"),
        ("https://192.0.2.1/orgd", "documentation"),
        ("https://0.0.0.0/orgd", "unspecified"),
        ("https://224.0.0.1/orgd", "multicast"),
        ("https://nonexistent.invalid/orgd", "does not resolve"),
        (
            "https://user:pw@93.184.215.14/orgd",
            "user name or password",
        ),
    ] {
        let status = expect_code(
            webhooks
                .create_webhook_endpoint(new_endpoint(&org.name, url))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), "webhook_endpoint.url", "{url}");
        assert!(
            status.message().contains(rule),
            "{url}: {}",
            status.message()
        );
    }
    let mut filtered = new_endpoint(&org.name, "https://93.184.215.14/orgd");
    filtered
        .webhook_endpoint
        .as_mut()
        .unwrap()
        .event_type_prefixes = vec!["orgd.nothing.".into()];
    let status = expect_code(
        webhooks.create_webhook_endpoint(filtered).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_field(&status),
        "webhook_endpoint.event_type_prefixes"
    );

    // A public address is taken; changing it to a private one is not.
    let (endpoint, _) = create(&mut webhooks, &org.name, "https://93.184.215.14/orgd").await;
    let status = expect_code(
        webhooks
            .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
                webhook_endpoint: Some(pb::WebhookEndpoint {
                    name: endpoint.name.clone(),
                    url: "https://10.1.2.3/orgd".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["url".into()],
                }),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("private"), "{}", status.message());
    webhooks
        .delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
            name: endpoint.name,
        })
        .await
        .unwrap();
}

/// (e) An endpoint whose retries all fail is disabled, saying why, with an
/// event by orgd itself; nothing is sent while it is off; enabled again, it
/// gets the event it failed at and every one after.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_endpoint_is_disabled_then_enabled_again() {
    let app = spawn(&flags(&key_file(), 2)).await;
    let receiver = Receiver::start(Mode::Unavailable).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut webhooks = webhooks_as(&app, "alice").await;
    let (endpoint, secret) = create(&mut webhooks, &org.name, &receiver.url()).await;
    let disabled = disabled(&mut webhooks, &endpoint.name).await;
    assert!(
        disabled
            .disabled_reason
            .contains("3 attempts in a row failed"),
        "{}",
        disabled.disabled_reason
    );
    assert!(
        disabled.disabled_reason.contains("503"),
        "{}",
        disabled.disabled_reason
    );
    let attempts = deliveries(&mut webhooks, &endpoint.name).await;
    assert_eq!(
        attempts.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    // Its own creation's event, or the organization's if a transaction was
    // still open when the endpoint was made (the feed's present starts there).
    let first = &receiver.received()[0];
    assert!(
        [
            "orgd.organization.created.v1",
            "orgd.webhook_endpoint.created.v1"
        ]
        .contains(&&*first.event_type()),
        "{first:?}"
    );
    assert!(attempts.iter().all(|d| d.http_status == 503
        && d.event_id == first.id()
        && d.event_type == first.event_type()));
    let by_orgd = app
        .count(
            "SELECT 1 FROM events WHERE type = 'orgd.webhook_endpoint.disabled.v1' AND subject = $1 AND actor = 'system'",
            &[&endpoint.name],
        )
        .await;
    assert_eq!(by_orgd, 1);

    receiver.set_mode(Mode::Up);
    touch(&mut orgs, &org, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing is sent while disabled"
    );
    let enabled = enable(&mut webhooks, &endpoint.name).await;
    assert_eq!(enabled.state(), State::Enabled);
    assert!(enabled.disabled_reason.is_empty());
    let mut events = app.events(&user_token("alice")).await;
    let expected = feed(
        &app,
        &mut events,
        &org.name,
        pb::EventFilter::default(),
        &endpoint.cursor,
    )
    .await;
    assert!(
        expected.len() >= 4,
        "created, disabled, the change, updated (enabled)"
    );
    assert_delivered_in_order(&receiver, &expected, &secret).await;
}

/// (f) RedeliverEvent sends an event again, with the same webhook-id; only
/// an event the endpoint receives.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_is_redelivered_on_request() {
    let app = spawn(&flags(&key_file(), 40)).await;
    let receiver = Receiver::start(Mode::Up).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let other = create_org(&mut orgs, "Other").await;
    let mut webhooks = webhooks_as(&app, "alice").await;
    let mut request = new_endpoint(&org.name, &receiver.url());
    request
        .webhook_endpoint
        .as_mut()
        .unwrap()
        .event_type_prefixes = vec!["orgd.webhook_endpoint.created".into()];
    let created = webhooks
        .create_webhook_endpoint(request)
        .await
        .unwrap()
        .into_inner();
    let (endpoint, secret) = (created.webhook_endpoint.unwrap(), created.secret);
    receiver.wait_for(LONG, |got| got.len() == 1).await;
    let first = receiver.acknowledged()[0].clone();

    webhooks
        .redeliver_event(pb::RedeliverEventRequest {
            webhook_endpoint: endpoint.name.clone(),
            event_id: first.clone(),
        })
        .await
        .unwrap();
    receiver.wait_for(LONG, |got| got.len() == 2).await;
    assert_eq!(receiver.acknowledged(), [first.clone(), first.clone()]);
    assert_signed_cloud_events(&receiver, &secret);
    let attempts = deliveries(&mut webhooks, &endpoint.name).await;
    assert_eq!((attempts[0].attempt, attempts[0].redelivery), (2, true));
    assert_eq!((attempts[1].attempt, attempts[1].redelivery), (1, false));

    // Another organization's event, an event of a type it does not
    // receive, and no event id at all.
    let mut events = app.events(&user_token("alice")).await;
    let foreign = feed(
        &app,
        &mut events,
        &other.name,
        pb::EventFilter::default(),
        "",
    )
    .await;
    let unsubscribed = feed(&app, &mut events, &org.name, pb::EventFilter::default(), "").await;
    for (event_id, code) in [
        (foreign[0].clone(), Code::NotFound),
        (unsubscribed[0].clone(), Code::FailedPrecondition),
        ("not-an-id".to_owned(), Code::InvalidArgument),
    ] {
        expect_code(
            webhooks
                .redeliver_event(pb::RedeliverEventRequest {
                    webhook_endpoint: endpoint.name.clone(),
                    event_id,
                })
                .await,
            code,
        );
    }
}

/// (g) `webhooks.manage` (owners and admins) is needed; a service manages
/// only its own endpoints; the secret is shown once and stored sealed.
#[tokio::test(flavor = "multi_thread")]
async fn managing_endpoints_needs_the_permission_and_the_secret_shows_once() {
    let app = spawn(&flags(&key_file(), 40)).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    join(&app, "alice", &org, "bob", &["developer"])
        .await
        .unwrap();
    join(&app, "alice", &org, "carol", &["admin"])
        .await
        .unwrap();
    let url = "http://127.0.0.1:9/hooks";
    let mut bob = webhooks_as(&app, "bob").await;
    expect_code(
        bob.create_webhook_endpoint(new_endpoint(&org.name, url))
            .await,
        Code::PermissionDenied,
    );
    let list = pb::ListWebhookEndpointsRequest {
        parent: org.name.clone(),
        ..Default::default()
    };
    expect_code(
        bob.list_webhook_endpoints(list.clone()).await,
        Code::PermissionDenied,
    );

    let mut alice = webhooks_as(&app, "alice").await;
    let (endpoint, secret) = create(&mut alice, &org.name, url).await;
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    let listed = webhooks_as(&app, "carol")
        .await
        .list_webhook_endpoints(list)
        .await
        .unwrap()
        .into_inner();
    fn names(list: &[pb::WebhookEndpoint]) -> Vec<&str> {
        list.iter().map(|e| e.name.as_str()).collect()
    }
    assert_eq!(names(&listed.webhook_endpoints), [endpoint.name.as_str()]);
    assert_eq!(
        endpoint.creator,
        format!("users/{}", app.user_id("alice").await)
    );
    // Neither the secret nor its key bytes are stored anywhere in clear.
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    for table in public_tables(&app.db).await {
        let dump: Vec<String> = app
            .db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let dump = dump.join("\n");
        assert!(
            !dump.contains(&secret[6..]) && !dump.contains(&hex),
            "{table} holds the secret"
        );
    }

    // A service's endpoints are its own, named without an organization.
    let mut service = client(app.channel().await, &service_token());
    let status = expect_code(
        service
            .create_webhook_endpoint(new_endpoint(&org.name, url))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&status), "parent");
    let (own, _) = create(&mut service, "", url).await;
    for name in [&endpoint.name, &own.name] {
        let theirs = if name == &own.name {
            &mut alice
        } else {
            &mut service
        };
        expect_code(
            theirs
                .get_webhook_endpoint(pb::GetWebhookEndpointRequest { name: name.clone() })
                .await,
            Code::InvalidArgument,
        );
    }
    let mine = service
        .list_webhook_endpoints(pb::ListWebhookEndpointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&mine.webhook_endpoints), [own.name.as_str()]);
}

/// An endpoint disabled for longer than events are kept: when enabled again,
/// delivery goes on from the oldest event retention kept, in order, and the
/// deleted ones are gone for it (as for a WatchEvents consumer).
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_disabled_past_retention_resumes_at_the_oldest_kept_event() {
    let app = spawn(&flags(&key_file(), 1)).await;
    let receiver = Receiver::start(Mode::Unavailable).await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let mut webhooks = webhooks_as(&app, "alice").await;
    let (endpoint, secret) = create(&mut webhooks, &org.name, &receiver.url()).await;
    disabled(&mut webhooks, &endpoint.name).await;

    // While it is off, two changes, then retention deletes every event so far.
    touch(&mut orgs, &org, 1).await;
    touch(&mut orgs, &org, 2).await;
    let store = orgd::store::Store::connect(
        &orgd::store::DbConfig::unlimited(&app.db_url, "retention"),
        1,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let purged = store
        .purge_events(chrono::Utc::now() + chrono::TimeDelta::seconds(1), 1000)
        .await
        .unwrap();
    assert!(purged >= 4, "created, disabled, two changes: {purged}");
    assert_eq!(app.count("SELECT 1 FROM events", &[]).await, 0);

    receiver.set_mode(Mode::Up);
    touch(&mut orgs, &org, 3).await;
    let enabled = enable(&mut webhooks, &endpoint.name).await;
    assert_eq!(enabled.state(), State::Enabled);

    // What is left of its feed: the third change and the endpoint's update.
    let mut events = app.events(&user_token("alice")).await;
    let kept = feed(&app, &mut events, &org.name, pb::EventFilter::default(), "").await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_delivered_in_order(&receiver, &kept, &secret).await;
}
