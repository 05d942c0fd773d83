//! The router: orgd's services with health and reflection, and the auth layer
//! in front of them, built from the serving flags.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use crate::api::activity::ActivityApi;
use crate::api::billing::BillingApi;
use crate::api::event::{EventApi, WatchSettings};
use crate::api::member::{MemberApi, MemberSettings};
use crate::api::org::{OrgApi, OrgSettings};
use crate::api::permission::PermissionApi;
use crate::api::resource::ResourceApi;
use crate::api::token::TokenApi;
use crate::api::webhook::WebhookApi;
use crate::auth::{AuthLayer, AuthState, JwtVerifier, PolicyTable, ServiceDirectory};
use crate::config::ServeArgs;
use crate::pb::{
    self, activity_service_server::ActivityServiceServer,
    billing_service_server::BillingServiceServer, event_service_server::EventServiceServer,
    member_service_server::MemberServiceServer, org_service_server::OrgServiceServer,
    permission_service_server::PermissionServiceServer,
    resource_service_server::ResourceServiceServer, token_service_server::TokenServiceServer,
    webhook_service_server::WebhookServiceServer,
};
use crate::store::Store;
use crate::store::events::EventWakeups;
use crate::store::invitations::InvitationSettings;
use crate::store::orgs::{ContactVerification, OrgLimits};
use crate::webhooks::address::Destinations;
use crate::webhooks::sealing::Keyring;

/// What the router is built from.
pub(super) struct Services {
    org: OrgSettings,
    member: MemberSettings,
    verification: ContactVerification,
    policies: PolicyTable,
    verifier: Arc<JwtVerifier>,
    services: ServiceDirectory,
    max_request_bytes: usize,
    watch: WatchSettings,
    health: HealthServer<HealthService>,
    webhooks: (Arc<Keyring>, Destinations),
}

impl Services {
    pub(super) fn new(
        args: &ServeArgs,
        policies: PolicyTable,
        services: ServiceDirectory,
        verifier: Arc<JwtVerifier>,
        health: HealthServer<HealthService>,
        webhooks: (Arc<Keyring>, Destinations),
    ) -> Self {
        let verification = ContactVerification {
            ttl: args.contact_verification_ttl,
            link_prefix: args.verify_link_prefix.clone(),
        };
        let limits = OrgLimits {
            max_orgs_per_user: args.max_orgs_per_user,
        };
        Services {
            org: OrgSettings {
                limits,
                deleted_retention: args.deleted_retention,
                verification: verification.clone(),
                default_plan: args.default_plan.clone(),
            },
            member: MemberSettings {
                invitations: InvitationSettings {
                    ttl: args.invitation_ttl,
                    link_prefix: args.invite_link_prefix.clone(),
                },
                limits,
            },
            verification,
            policies,
            verifier,
            services,
            max_request_bytes: args.max_request_bytes,
            watch: WatchSettings {
                checkpoint_interval: args.watch_checkpoint_interval,
                poll_interval: args.watch_poll_interval,
            },
            health,
            webhooks,
        }
    }

    /// The auth layer, deciding with `store`.
    pub(super) fn auth(&self, store: Store) -> AuthLayer {
        AuthLayer::new(AuthState {
            store,
            verifier: self.verifier.clone(),
            policies: self.policies.clone(),
            services: self.services.clone(),
            max_request_bytes: self.max_request_bytes,
        })
    }

    /// orgd's services on `store`, with health and reflection; change-feed
    /// streams follow `wakeups` and end when `draining` turns true.
    pub(super) fn routes(
        &self,
        store: Store,
        wakeups: EventWakeups,
        draining: watch::Receiver<bool>,
    ) -> anyhow::Result<Routes> {
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let max_bytes = self.max_request_bytes;
        Ok(Routes::new(self.health.clone())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(
                OrgServiceServer::new(OrgApi::new(store.clone(), self.org.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                MemberServiceServer::new(MemberApi::new(store.clone(), self.member.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                BillingServiceServer::new(BillingApi::new(
                    store.clone(),
                    self.verification.clone(),
                ))
                .max_decoding_message_size(max_bytes),
            )
            .add_service(
                ActivityServiceServer::new(ActivityApi::new(store.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                TokenServiceServer::new(TokenApi::new(store.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                ResourceServiceServer::new(ResourceApi::new(store.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                PermissionServiceServer::new(PermissionApi::new(store.clone()))
                    .max_decoding_message_size(max_bytes),
            )
            .add_service(
                WebhookServiceServer::new(WebhookApi::new(
                    store.clone(),
                    self.webhooks.0.clone(),
                    self.webhooks.1,
                ))
                .max_decoding_message_size(max_bytes),
            )
            .add_service(
                EventServiceServer::new(EventApi::new(store, wakeups, self.watch, draining))
                    .max_decoding_message_size(max_bytes),
            ))
    }
}
