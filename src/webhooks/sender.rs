//! The HTTP side of a delivery: one event, as CloudEvents JSON, POSTed and
//! signed as Standard Webhooks says, and what came of it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

use super::address::{Destinations, PublicOnly};
use super::signing::SigningKey;
use crate::domain::OrgRef;
use crate::store::events::{EVENT_SOURCE, Event};

/// The content type of a CloudEvent in structured mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempted_at: DateTime<Utc>,
    pub duration: Duration,
    /// The status the endpoint answered, if it answered.
    pub http_status: Option<u16>,
    /// Why the attempt failed; `None`: acknowledged (2xx).
    pub error: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Sends deliveries: no redirects, no proxy (it would resolve names for us),
/// and with `--webhook-allow-private` off, a resolver that refuses private
/// addresses.
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    destinations: Destinations,
}

impl Sender {
    pub fn new(timeout: Duration, destinations: Destinations) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .user_agent(concat!("orgd-webhooks/", env!("CARGO_PKG_VERSION")));
        if !destinations.allow_private {
            builder = builder.https_only(true).dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Sender {
            client: builder.build()?,
            timeout,
            destinations,
        })
    }

    /// POSTs `event` to `url`, signed with `key`, waiting at most `within`
    /// (and `--webhook-timeout`) for the answer.
    pub async fn send(
        &self,
        url: &str,
        key: &SigningKey,
        event: &Event,
        within: Duration,
    ) -> Outcome {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let outcome = |http_status: Option<u16>, error: Option<String>| Outcome {
            attempted_at,
            duration: started.elapsed(),
            http_status,
            error,
        };
        // An address written in the URL never meets the resolver.
        if let Err(err) = self.destinations.check_shape("url", url) {
            return outcome(None, Some(err.to_string()));
        }
        let body = body(event);
        let id = event.id.to_string();
        let timestamp = attempted_at.timestamp();
        let request = self
            .client
            .post(url)
            .timeout(self.timeout.min(within))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", key.sign(&id, timestamp, &body))
            .body(body);
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                outcome(Some(response.status().as_u16()), None)
            }
            Ok(response) => {
                let status = response.status();
                outcome(
                    Some(status.as_u16()),
                    Some(format!("the endpoint answered {status}, not 2xx")),
                )
            }
            Err(err) => outcome(None, Some(describe(&err.without_url()))),
        }
    }
}

/// A reqwest error with its causes, which say what actually went wrong
/// (refused, timed out, a certificate, our resolver's refusal).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "no answer within the timeout".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The event as a CloudEvent in JSON (structured mode): the attributes of
/// EventService's protobuf form, orgd's extensions and the feed cursor.
pub fn body(event: &Event) -> Vec<u8> {
    let mut cloud_event = serde_json::json!({
        "specversion": "1.0",
        "id": event.id.to_string(),
        "source": EVENT_SOURCE,
        "type": event.event_type,
        "subject": event.subject,
        "time": event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "actor": event.actor,
        "requestid": event.request_id,
        "cursor": event.cursor.to_string(),
        "data": event.data,
    });
    if let Some(org_id) = event.org_id {
        cloud_event["organization"] = OrgRef::name_of(org_id).into();
    }
    serde_json::to_vec(&cloud_event).expect("JSON values serialize")
}
