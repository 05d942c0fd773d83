//! ResourceService: the registry of resources other services create in an
//! organization.

use tonic::{Request, Response, Status};

use super::{call_context, child_id, org_access, timestamp};
use crate::domain::{OrgRef, PageRequest, is_hidden, shows_nothing};
use crate::error::{Error, Result};
use crate::pb::{self, resource_service_server::ResourceService};
use crate::store::Store;
use crate::store::resources::{NewResource, RESOURCES, ResourceRow};

pub struct ResourceApi {
    store: Store,
}

impl ResourceApi {
    pub fn new(store: Store) -> Self {
        ResourceApi { store }
    }
}

fn resource(row: &ResourceRow) -> pb::Resource {
    pb::Resource {
        name: row.name(),
        kind: row.kind.clone(),
        external_id: row.external_id.clone(),
        display_name: row.display_name.clone(),
        create_time: Some(timestamp(row.created_at)),
    }
}

fn new_resource(given: &pb::Resource) -> Result<NewResource> {
    let kind = given.kind.trim();
    if kind.is_empty()
        || kind.len() > 40
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(
            "resource.kind",
            "a kind is 1 to 40 of a-z, 0-9, '-' and '_', e.g. app or database",
        ));
    }
    let external_id = given.external_id.trim();
    if external_id.is_empty()
        || external_id.chars().count() > 200
        || external_id.chars().any(char::is_control)
    {
        return Err(Error::invalid(
            "resource.external_id",
            "the id in the owning service is required: 1 to 200 characters, no control characters",
        ));
    }
    let display_name = given.display_name.trim();
    // Optional, but one that shows blank (zero-width characters) is no name.
    if display_name.chars().count() > 200
        || display_name.chars().any(is_hidden)
        || (!display_name.is_empty() && shows_nothing(display_name))
    {
        return Err(Error::invalid(
            "resource.display_name",
            "up to 200 characters, some visible, no control characters",
        ));
    }
    Ok(NewResource {
        kind: kind.to_owned(),
        external_id: external_id.to_owned(),
        display_name: display_name.to_owned(),
    })
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn register_resource(
        &self,
        request: Request<pb::RegisterResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let given = request
            .get_ref()
            .resource
            .as_ref()
            .ok_or_else(|| Error::invalid("resource", "the resource is required"))?;
        let row = self
            .store
            .register_resource(&ctx.actor(), &access, new_resource(given)?)
            .await?;
        Ok(Response::new(resource(&row)))
    }

    async fn unregister_resource(
        &self,
        request: Request<pb::UnregisterResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, RESOURCES, &access)?;
        self.store
            .unregister_resource(&ctx.actor(), &access, id)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        request: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (rows, next_page_token) = self.store.list_resources(access.org().id, page).await?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: rows.iter().map(resource).collect(),
            next_page_token,
        }))
    }

    async fn get_resource(
        &self,
        request: Request<pb::GetResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, RESOURCES, &access)?;
        let row = self.store.get_resource(access.org().id, id).await?;
        Ok(Response::new(resource(&row)))
    }

    async fn transfer_resource(
        &self,
        request: Request<pb::TransferResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        let id = child_id("name", &body.name, RESOURCES, &access)?;
        let destination = OrgRef::parse("destination", &body.destination)?;
        let moved = self
            .store
            .transfer_resource(&ctx.actor(), &access, id, &destination)
            .await?;
        Ok(Response::new(resource(&moved)))
    }
}
