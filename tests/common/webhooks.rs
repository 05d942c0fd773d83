//! The webhook tests' helpers: orgd's flags for fast delivery, clients,
//! endpoint requests, the feed an endpoint should receive, and the checks of
//! what a receiver got.

use std::time::Duration;

use orgd::pb::{self, webhook_service_client::WebhookServiceClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::receiver::Receiver;
use super::*;

pub type WebhookClient = WebhookServiceClient<InterceptedService<Channel, Bearer>>;

pub const LONG: Duration = Duration::from_secs(20);

/// A key file of its own, shared by the replicas given the same path.
pub fn key_file() -> String {
    scratch_dir("webhooks")
        .join(format!("key-{}", uuid::Uuid::new_v4()))
        .display()
        .to_string()
}

/// orgd's flags for delivering fast to a receiver on loopback; `retries`
/// waits of 100 ms before an endpoint is disabled.
pub fn flags(key: &str, retries: usize) -> Vec<String> {
    let schedule = vec!["100ms"; retries].join(",");
    [
        "--webhook-allow-private",
        "--webhook-key-file",
        key,
        "--webhook-poll-interval",
        "50ms",
        "--webhook-retry-schedule",
        &schedule,
        "--webhook-timeout",
        "2s",
        "--webhook-lease",
        "4s",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub async fn spawn(flags: &[String]) -> TestApp {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestApp::spawn_with(&flags).await
}

pub fn client(channel: Channel, token: &str) -> WebhookClient {
    WebhookServiceClient::with_interceptor(channel, Bearer::new(Some(token)))
}

pub async fn webhooks_as(app: &TestApp, sub: &str) -> WebhookClient {
    client(app.channel().await, &user_token(sub))
}

pub fn new_endpoint(parent: &str, url: &str) -> pb::CreateWebhookEndpointRequest {
    pb::CreateWebhookEndpointRequest {
        parent: parent.into(),
        webhook_endpoint: Some(pb::WebhookEndpoint {
            url: url.into(),
            description: "test receiver".into(),
            ..Default::default()
        }),
    }
}

pub async fn create(
    client: &mut WebhookClient,
    parent: &str,
    url: &str,
) -> (pb::WebhookEndpoint, String) {
    let created = client
        .create_webhook_endpoint(new_endpoint(parent, url))
        .await
        .unwrap()
        .into_inner();
    (created.webhook_endpoint.unwrap(), created.secret)
}

/// Changes `org`'s description: one event.
pub async fn touch(orgs: &mut OrgClient, org: &pb::Organization, n: usize) {
    let mut change = org.clone();
    change.description = format!("change {n}");
    change.etag.clear();
    orgs.update_organization(update(change, &["description"]))
        .await
        .unwrap();
}

/// The ids of the events after `cursor` that `filter` admits, in feed order,
/// read with `events` (ListEvents) once `app`'s feed shows every change made
/// so far.
pub async fn feed(
    app: &TestApp,
    events: &mut EventClient,
    organization: &str,
    filter: pb::EventFilter,
    cursor: &str,
) -> Vec<String> {
    app.feed_caught_up().await;
    let page = events
        .list_events(pb::ListEventsRequest {
            organization: organization.into(),
            after: cursor.into(),
            filter: Some(filter),
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    page.events
        .into_iter()
        .map(|event| event.cloud_event.unwrap().id)
        .collect()
}

pub async fn deliveries(client: &mut WebhookClient, endpoint: &str) -> Vec<pb::WebhookDelivery> {
    client
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            parent: endpoint.into(),
            page_size: 200,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// Every request received is signed with `secret` and is the CloudEvent its
/// `webhook-id` names, in structured JSON.
pub fn assert_signed_cloud_events(receiver: &Receiver, secret: &str) {
    for request in receiver.received() {
        assert!(request.signed_with(secret), "bad signature: {request:?}");
        assert_eq!(
            request.headers["content-type"],
            "application/cloudevents+json"
        );
        let age = chrono::Utc::now().timestamp()
            - request.headers["webhook-timestamp"].parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "timestamp {age}s old");
        let event = request.json();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "orgd");
        assert_eq!(event["id"], request.id());
        assert!(event["type"].as_str().unwrap().starts_with("orgd."));
        assert!(event["data"].is_object(), "{event}");
    }
}

/// Waits until `endpoint` is disabled (its retries used up); returns it then.
pub async fn disabled(client: &mut WebhookClient, endpoint: &str) -> pb::WebhookEndpoint {
    let get = pb::GetWebhookEndpointRequest {
        name: endpoint.into(),
    };
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let got = client
            .get_webhook_endpoint(get.clone())
            .await
            .unwrap()
            .into_inner();
        if got.state() == pb::webhook_endpoint::State::Disabled {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never disabled: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enables `endpoint` again (UpdateWebhookEndpoint of its state).
pub async fn enable(client: &mut WebhookClient, endpoint: &str) -> pb::WebhookEndpoint {
    client
        .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
            webhook_endpoint: Some(pb::WebhookEndpoint {
                name: endpoint.into(),
                state: pb::webhook_endpoint::State::Enabled.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `receiver` acknowledged as many events as `expected` holds, then
/// asserts they are exactly those, in that order, each signed with `secret`.
pub async fn assert_delivered_in_order(receiver: &Receiver, expected: &[String], secret: &str) {
    receiver
        .wait_for(LONG, |_| receiver.acknowledged().len() >= expected.len())
        .await;
    assert_eq!(receiver.acknowledged(), expected);
    assert_signed_cloud_events(receiver, secret);
}
