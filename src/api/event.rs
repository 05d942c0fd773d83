//! EventService: the change feed (`store::events`), a page at a time
//! (ListEvents) or as a stream that follows new events as they commit
//! (WatchEvents).

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{call_context, org_access, timestamp};
use crate::auth::Principal;
use crate::domain::OrgRef;
use crate::error::{Error, Result};
use crate::pb::CloudEvent;
use crate::pb::cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr};
use crate::pb::{self, event_service_server::EventService};
use crate::store::Store;
use crate::store::events::{Cursor, Event, EventFilter, EventWakeups};

/// Events per page when the request names no size, and at most.
const DEFAULT_PAGE_SIZE: i64 = 100;
const MAX_PAGE_SIZE: i64 = 1000;
/// Events a stream reads at a time.
const WATCH_BATCH: i64 = 200;
/// Messages a stream buffers for a slow client before it stops reading.
const WATCH_BUFFER: usize = 64;

/// How a WatchEvents stream follows the feed.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// An idle stream sends a checkpoint this often.
    pub checkpoint_interval: Duration,
    /// A stream looks for new events at least this often, woken or not (the
    /// wake-ups are a hint that may be lost).
    pub poll_interval: Duration,
}

pub struct EventApi {
    store: Store,
    wakeups: EventWakeups,
    settings: WatchSettings,
    /// Turns true when orgd starts shutting down: streams end then, so that
    /// the drain does not wait for them.
    draining: watch::Receiver<bool>,
}

impl EventApi {
    pub fn new(
        store: Store,
        wakeups: EventWakeups,
        settings: WatchSettings,
        draining: watch::Receiver<bool>,
    ) -> Self {
        EventApi {
            store,
            wakeups,
            settings,
            draining,
        }
    }

    /// The events the caller may read and asked for: a member, their
    /// organization's; a service, every organization's or those it names.
    async fn filter<T>(
        &self,
        request: &Request<T>,
        organization: &str,
        wanted: Option<&pb::EventFilter>,
    ) -> Result<EventFilter> {
        let wanted = wanted.cloned().unwrap_or_default();
        EventFilter::check_type_prefixes("filter.type_prefixes", &wanted.type_prefixes)?;
        let context = call_context(request)?;
        let org_ids = match &context.principal {
            Principal::Service(service) => {
                service.ensure_sees_everything("the change feed")?;
                self.service_orgs(organization, &wanted.organizations)
                    .await?
            }
            Principal::User(_) | Principal::ApiToken(_) => {
                if !wanted.organizations.is_empty() {
                    return Err(Error::invalid(
                        "filter.organizations",
                        "is for backend services; a member reads the feed of the organization in `organization`",
                    ));
                }
                let access = org_access(request)?;
                Some(vec![access.org().id])
            }
        };
        Ok(EventFilter {
            org_ids,
            type_prefixes: wanted.type_prefixes,
        })
    }

    /// The organizations a service names in `organization` and
    /// `filter.organizations`; `None` when it names none (every one). An id
    /// is taken as it is (a purged organization's events stay readable); a
    /// slug must name an organization.
    async fn service_orgs(
        &self,
        organization: &str,
        listed: &[String],
    ) -> Result<Option<Vec<Uuid>>> {
        let mut names: Vec<(String, &str)> = listed
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("filter.organizations[{i}]"), name.as_str()))
            .collect();
        if !organization.is_empty() {
            names.push(("organization".to_owned(), organization));
        }
        if names.is_empty() {
            return Ok(None);
        }
        let mut ids = Vec::with_capacity(names.len());
        for (field, name) in names {
            let id = match OrgRef::parse(&field, name)? {
                OrgRef::Id(id) => id,
                org_ref => {
                    self.store
                        .find_org(&org_ref)
                        .await?
                        .ok_or_else(|| {
                            Error::NotFound(format!(
                                "{field}: organization {} not found",
                                org_ref.name()
                            ))
                        })?
                        .id
                }
            };
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        Ok(Some(ids))
    }
}

fn cursor_field(field: &str, raw: &str) -> Result<Option<Cursor>> {
    match raw {
        "" => Ok(None),
        raw => Cursor::parse(field, raw).map(Some),
    }
}

fn page_size(raw: i32) -> Result<i64> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// The event in the CloudEvents 1.0 protobuf envelope.
pub fn cloud_event(event: Event) -> pb::Event {
    let string = |value: String| CloudEventAttributeValue {
        attr: Some(Attr::CeString(value)),
    };
    let mut attributes = HashMap::from([
        ("subject".to_owned(), string(event.subject)),
        (
            "time".to_owned(),
            CloudEventAttributeValue {
                attr: Some(Attr::CeTimestamp(timestamp(event.time))),
            },
        ),
        (
            "datacontenttype".to_owned(),
            string("application/json".into()),
        ),
        ("actor".to_owned(), string(event.actor)),
        ("requestid".to_owned(), string(event.request_id)),
    ]);
    if let Some(org_id) = event.org_id {
        attributes.insert("organization".into(), string(OrgRef::name_of(org_id)));
    }
    pb::Event {
        cursor: event.cursor.to_string(),
        cloud_event: Some(CloudEvent {
            id: event.id.to_string(),
            source: crate::store::events::EVENT_SOURCE.to_owned(),
            spec_version: "1.0".into(),
            r#type: event.event_type,
            attributes,
            data: Some(Data::TextData(event.data.to_string())),
        }),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let body = request.get_ref();
        let filter = self
            .filter(&request, &body.organization, body.filter.as_ref())
            .await?;
        let after = cursor_field("after", &body.after)?.unwrap_or(Cursor::START);
        let page = self
            .store
            .read_events(after, &filter, page_size(body.page_size)?)
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events.into_iter().map(cloud_event).collect(),
            next_cursor: page.next.to_string(),
        }))
    }

    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let body = request.get_ref();
        let filter = self
            .filter(&request, &body.organization, body.filter.as_ref())
            .await?;
        let start = match cursor_field("after", &request.get_ref().after)? {
            Some(cursor) => cursor,
            None => self.store.current_cursor().await?,
        };
        // A cursor too old is refused now, as a status of the call itself.
        let first = self.store.read_events(start, &filter, WATCH_BATCH).await?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let follow = Follow {
            store: self.store.clone(),
            filter,
            wake: self.wakeups.subscribe(),
            settings: self.settings,
            draining: self.draining.clone(),
            sender,
        };
        tokio::spawn(follow.run(first));
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One WatchEvents stream, fed by a task of its own until the client goes,
/// orgd shuts down or the database fails.
struct Follow {
    store: Store,
    filter: EventFilter,
    wake: watch::Receiver<u64>,
    settings: WatchSettings,
    draining: watch::Receiver<bool>,
    sender: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
}

/// Why a stream stopped following the feed.
enum Stop {
    ClientGone,
    Failed(Status),
}

impl Follow {
    async fn run(mut self, first: crate::store::events::EventPage) {
        let stop = self.follow(first).await;
        if let Stop::Failed(status) = stop {
            let _ = self.sender.send(Err(status)).await;
        }
    }

    async fn follow(&mut self, mut page: crate::store::events::EventPage) -> Stop {
        // The first checkpoint goes out as soon as the stream has caught up,
        // so the client learns where it stands even when nothing happens.
        let mut last_sent: Option<Instant> = None;
        loop {
            let full = page.events.len() as i64 >= WATCH_BATCH;
            let sent_events = !page.events.is_empty();
            for event in page.events.drain(..) {
                let message = pb::WatchEventsResponse {
                    kind: Some(pb::watch_events_response::Kind::Event(cloud_event(event))),
                };
                if self.sender.send(Ok(message)).await.is_err() {
                    return Stop::ClientGone;
                }
            }
            let cursor = page.next;
            if sent_events {
                last_sent = Some(Instant::now());
            }
            if !full {
                let checkpoint_due = last_sent
                    .is_none_or(|sent| sent.elapsed() >= self.settings.checkpoint_interval);
                if checkpoint_due {
                    let message = pb::WatchEventsResponse {
                        kind: Some(pb::watch_events_response::Kind::Checkpoint(
                            pb::Checkpoint {
                                cursor: cursor.to_string(),
                                time: Some(timestamp(chrono::Utc::now())),
                            },
                        )),
                    };
                    if self.sender.send(Ok(message)).await.is_err() {
                        return Stop::ClientGone;
                    }
                    last_sent = Some(Instant::now());
                }
                let next_checkpoint = last_sent.map_or(Duration::ZERO, |sent| {
                    self.settings
                        .checkpoint_interval
                        .saturating_sub(sent.elapsed())
                });
                let wait = self
                    .settings
                    .poll_interval
                    .min(next_checkpoint.max(Duration::from_millis(1)));
                tokio::select! {
                    _ = self.wake.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.draining.wait_for(|draining| *draining) => {
                        return Stop::Failed(Status::unavailable(format!(
                            "orgd is shutting down; resume from your last cursor ({cursor})"
                        )));
                    }
                    _ = self.sender.closed() => return Stop::ClientGone,
                }
            }
            page = match self
                .store
                .read_events(cursor, &self.filter, WATCH_BATCH)
                .await
            {
                Ok(page) => page,
                Err(err) => return Stop::Failed(err.into()),
            };
        }
    }
}
