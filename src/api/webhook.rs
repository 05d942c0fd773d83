//! WebhookService: endpoints that the change feed is delivered to, an
//! organization's (its members with `webhooks.manage`) or a backend
//! service's own (`webhookEndpoints/{id}`, every organization's events).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{call_context, child_id, mask_paths, not_updatable, org_access, timestamp};
use crate::auth::{Checkable, OrgAccess, Principal};
use crate::domain::{OrgRef, PageRequest, quoted};
use crate::error::{Error, Result};
use crate::pb::{self, webhook_service_server::WebhookService};
use crate::store::Store;
use crate::store::events::EventFilter;
use crate::store::webhook_delivery::DeliveryRow;
use crate::store::webhooks::{
    EndpointChanges, EndpointRow, NewEndpoint, Owner, SealedSecret, Switch, WEBHOOK_ENDPOINTS,
};
use crate::webhooks::address::Destinations;
use crate::webhooks::sealing::Keyring;
use crate::webhooks::signing::SigningKey;

/// The longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most event type prefixes (and organizations) one endpoint names.
const MAX_FILTERS: usize = 50;
const UPDATABLE_FIELDS: &str = "url, description, event_type_prefixes, organizations, state";

pub struct WebhookApi {
    store: Store,
    keyring: Arc<Keyring>,
    destinations: Destinations,
}

impl WebhookApi {
    pub fn new(store: Store, keyring: Arc<Keyring>, destinations: Destinations) -> Self {
        WebhookApi {
            store,
            keyring,
            destinations,
        }
    }
}

/// The caller's side of a call: an organization's member, or a service.
enum Caller {
    Member(Arc<OrgAccess>),
    Service(String),
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Result<Caller> {
        match &call_context(request)?.principal {
            Principal::Service(service) => {
                // An endpoint of its own receives every organization's events.
                if let Checkable::Only(_) = &*service.checkable {
                    return Err(Error::PermissionDenied(format!(
                        "{} may ask about some permissions only (--service-permissions), and a service's webhook endpoint receives every organization's events",
                        service.name()
                    )));
                }
                Ok(Caller::Service(service.subject.clone()))
            }
            Principal::User(_) | Principal::ApiToken(_) => Ok(Caller::Member(org_access(request)?)),
        }
    }

    fn owner(&self) -> Owner<'_> {
        match self {
            Caller::Member(access) => Owner::Org(access.as_ref()),
            Caller::Service(subject) => Owner::Service(subject.as_str()),
        }
    }

    /// A `parent` field: the organization the policy layer resolved, or empty
    /// for a service.
    fn check_parent(&self, field: &str, raw: &str) -> Result<()> {
        match self {
            Caller::Service(_) if !raw.is_empty() => Err(Error::invalid(
                field,
                format!(
                    "a backend service manages its own endpoints, which receive every organization's events: leave {field} empty, not {}",
                    quoted(raw)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The id of the endpoint `raw` names, which must be the caller's kind.
    fn endpoint_id(&self, field: &str, raw: &str) -> Result<Uuid> {
        match self {
            Caller::Member(access) => child_id(field, raw, WEBHOOK_ENDPOINTS, access),
            Caller::Service(_) => raw
                .strip_prefix(WEBHOOK_ENDPOINTS)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|id| Uuid::try_parse(id).ok())
                .ok_or_else(|| {
                    Error::invalid(
                        field,
                        format!(
                            "{} is not one of a service's webhook endpoints: expected {WEBHOOK_ENDPOINTS}/{{id}} (an organization's endpoints are its members' to manage)",
                            quoted(raw)
                        ),
                    )
                }),
        }
    }
}

fn endpoint(row: &EndpointRow) -> pb::WebhookEndpoint {
    use pb::webhook_endpoint::State;
    let backing_off = row.failures > 0 && row.disabled_at.is_none();
    pb::WebhookEndpoint {
        name: row.name(),
        url: row.url.clone(),
        description: row.description.clone(),
        event_type_prefixes: row.type_prefixes.clone(),
        organizations: row
            .org_filter
            .iter()
            .flatten()
            .map(|id| OrgRef::name_of(*id))
            .collect(),
        state: if row.disabled_at.is_some() {
            State::Disabled
        } else {
            State::Enabled
        }
        .into(),
        disabled_reason: row.disabled_reason.clone().unwrap_or_default(),
        disable_time: row.disabled_at.map(timestamp),
        creator: row.creator.clone(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        cursor: row.cursor().to_string(),
        failed_attempts: row.failures,
        next_attempt_time: backing_off.then(|| timestamp(row.retry_at)),
    }
}

fn delivery(row: DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        event_id: row.event_id.to_string(),
        event_type: row.event_type,
        attempt: row.attempt,
        redelivery: row.redelivery,
        attempt_time: Some(timestamp(row.attempted_at)),
        duration: Some(prost_types::Duration {
            seconds: i64::from(row.duration_ms / 1000),
            nanos: (row.duration_ms % 1000) * 1_000_000,
        }),
        http_status: row.http_status.unwrap_or_default(),
        error: row.error.unwrap_or_default(),
    }
}

impl WebhookApi {
    async fn url(&self, field: &str, raw: &str) -> Result<String> {
        Ok(self
            .destinations
            .check(field, raw.trim())
            .await?
            .to_string())
    }

    fn description(field: &str, raw: &str) -> Result<String> {
        let description = raw.trim();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(description.to_owned())
    }

    fn type_prefixes(field: &str, raw: &[String]) -> Result<Vec<String>> {
        if raw.len() > MAX_FILTERS {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_FILTERS} prefixes"),
            ));
        }
        EventFilter::check_type_prefixes(field, raw)?;
        let mut prefixes = raw.to_vec();
        prefixes.sort();
        prefixes.dedup();
        Ok(prefixes)
    }

    /// The organizations a service's endpoint is limited to; `None`: every
    /// one. An id is taken as it is, a slug must name an organization.
    async fn org_filter(
        &self,
        caller: &Caller,
        field: &str,
        raw: &[String],
    ) -> Result<Option<Vec<Uuid>>> {
        if raw.is_empty() {
            return Ok(None);
        }
        if let Caller::Member(_) = caller {
            return Err(Error::invalid(
                field,
                "is for a backend service's endpoints; an organization's endpoint receives that organization's events",
            ));
        }
        if raw.len() > MAX_FILTERS {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_FILTERS} organizations"),
            ));
        }
        let mut ids = Vec::with_capacity(raw.len());
        for (i, name) in raw.iter().enumerate() {
            let item = format!("{field}[{i}]");
            ids.push(match OrgRef::parse(&item, name)? {
                OrgRef::Id(id) => id,
                org_ref => {
                    self.store
                        .find_org(&org_ref)
                        .await?
                        .ok_or_else(|| {
                            Error::NotFound(format!(
                                "{item}: organization {} not found",
                                org_ref.name()
                            ))
                        })?
                        .id
                }
            });
        }
        ids.sort();
        ids.dedup();
        Ok(Some(ids))
    }

    /// The fields of `given` that `mask` names, validated.
    async fn changes(
        &self,
        caller: &Caller,
        given: &pb::WebhookEndpoint,
        mask: Option<&prost_types::FieldMask>,
    ) -> Result<EndpointChanges> {
        let paths = mask_paths("update_mask", mask, UPDATABLE_FIELDS)?;
        let mut changes = EndpointChanges::default();
        for path in paths {
            let field = format!("webhook_endpoint.{path}");
            match path.as_str() {
                "url" => changes.url = Some(self.url(&field, &given.url).await?),
                "description" => {
                    changes.description = Some(Self::description(&field, &given.description)?)
                }
                "event_type_prefixes" => {
                    changes.type_prefixes =
                        Some(Self::type_prefixes(&field, &given.event_type_prefixes)?)
                }
                "organizations" => {
                    changes.org_filter = Some(
                        self.org_filter(caller, &field, &given.organizations)
                            .await?,
                    )
                }
                "state" => {
                    use pb::webhook_endpoint::State;
                    changes.switch = Some(match State::try_from(given.state) {
                        Ok(State::Enabled) => Switch::Enable,
                        Ok(State::Disabled) => Switch::Disable,
                        _ => {
                            return Err(Error::invalid(
                                &field,
                                "STATE_ENABLED to enable the endpoint, or STATE_DISABLED to pause it",
                            ));
                        }
                    })
                }
                other => return Err(not_updatable("update_mask", other, UPDATABLE_FIELDS)),
            }
        }
        Ok(changes)
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let ctx = call_context(&request)?;
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        caller.check_parent("parent", &body.parent)?;
        let given = body.webhook_endpoint.as_ref().ok_or_else(|| {
            Error::invalid("webhook_endpoint", "the endpoint to register is required")
        })?;
        if given.url.trim().is_empty() {
            return Err(Error::invalid(
                "webhook_endpoint.url",
                "the URL events are POSTed to is required, e.g. https://hooks.example.com/orgd",
            )
            .into());
        }
        let new = NewEndpoint {
            url: self.url("webhook_endpoint.url", &given.url).await?,
            description: Self::description("webhook_endpoint.description", &given.description)?,
            type_prefixes: Self::type_prefixes(
                "webhook_endpoint.event_type_prefixes",
                &given.event_type_prefixes,
            )?,
            org_filter: self
                .org_filter(
                    &caller,
                    "webhook_endpoint.organizations",
                    &given.organizations,
                )
                .await?,
        };
        let id = Uuid::now_v7();
        let signing = SigningKey::generate();
        let key = self.keyring.key()?;
        let sealed = SealedSecret {
            sealed: key.seal(id, &signing),
            key_id: key.id().to_owned(),
        };
        let row = self
            .store
            .create_webhook_endpoint(&ctx.actor(), caller.owner(), id, new, sealed)
            .await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            webhook_endpoint: Some(endpoint(&row)),
            secret: signing.secret(),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let caller = Caller::of(&request)?;
        let id = caller.endpoint_id("name", &request.get_ref().name)?;
        let row = self.store.get_webhook_endpoint(caller.owner(), id).await?;
        Ok(Response::new(endpoint(&row)))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        caller.check_parent("parent", &body.parent)?;
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (rows, next_page_token) = self
            .store
            .list_webhook_endpoints(caller.owner(), page)
            .await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            webhook_endpoints: rows.iter().map(endpoint).collect(),
            next_page_token,
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let ctx = call_context(&request)?;
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let given = body.webhook_endpoint.as_ref().ok_or_else(|| {
            Error::invalid("webhook_endpoint", "the endpoint to update is required")
        })?;
        let id = caller.endpoint_id("webhook_endpoint.name", &given.name)?;
        let changes = self
            .changes(&caller, given, body.update_mask.as_ref())
            .await?;
        let row = self
            .store
            .update_webhook_endpoint(&ctx.actor(), caller.owner(), id, changes)
            .await?;
        Ok(Response::new(endpoint(&row)))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let caller = Caller::of(&request)?;
        let id = caller.endpoint_id("name", &request.get_ref().name)?;
        self.store
            .delete_webhook_endpoint(&ctx.actor(), caller.owner(), id)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = caller.endpoint_id("parent", &body.parent)?;
        let page = PageRequest::parse_scoped(body.page_size, &body.page_token, &[&id.to_string()])?;
        // NOT_FOUND for an endpoint that is not the caller's.
        self.store.get_webhook_endpoint(caller.owner(), id).await?;
        let (rows, next_page_token) = self.store.list_webhook_deliveries(id, page).await?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery).collect(),
            next_page_token,
        }))
    }

    async fn redeliver_event(
        &self,
        request: Request<pb::RedeliverEventRequest>,
    ) -> Result<Response<pb::RedeliverEventResponse>, Status> {
        let ctx = call_context(&request)?;
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let id = caller.endpoint_id("webhook_endpoint", &body.webhook_endpoint)?;
        let event_id = Uuid::try_parse(&body.event_id).map_err(|_| {
            Error::invalid(
                "event_id",
                format!(
                    "{} is not an event id: pass an event's cloud_event.id (a UUID), as in a delivery's webhook-id header",
                    quoted(&body.event_id)
                ),
            )
        })?;
        let row = self
            .store
            .redeliver_webhook_event(&ctx.actor(), caller.owner(), id, event_id)
            .await?;
        Ok(Response::new(pb::RedeliverEventResponse {
            webhook_endpoint: Some(endpoint(&row)),
        }))
    }
}
