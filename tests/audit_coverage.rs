//! Every mutating RPC of every service, as listed by the descriptor's policy
//! table, leaves exactly one activity row (a resource transfer: one in each of
//! its two organizations; an account deletion: one in each of the account's)
//! and one event of the change feed beside each, written in the same
//! transaction as the change; a call that fails leaves neither.

mod common;

use std::collections::BTreeSet;

use common::billing::card;
use common::periods::let_a_month_pass;
use common::*;
use orgd::auth::PolicyTable;
use orgd::pb::{
    self, resource_service_client::ResourceServiceClient, token_service_client::TokenServiceClient,
    webhook_service_client::WebhookServiceClient,
};
use prost_types::FieldMask;

/// RPCs that only read.
fn reads(method: &str) -> bool {
    ["Get", "List", "Lookup", "CheckPermission", "Watch"]
        .iter()
        .any(|read| method.starts_with(read))
        || ["WhoAmI", "DownloadInvoice"].contains(&method)
}

struct Audit<'a> {
    app: &'a TestApp,
    covered: BTreeSet<String>,
}

impl Audit<'_> {
    /// Activity rows, and events with an activity row of the same id, action
    /// and request id; every event has one (checked at the end).
    async fn rows(&self) -> (i64, i64) {
        let activity = self.app.count("SELECT 1 FROM activity", &[]).await;
        let events = self
            .app
            .count(
                "SELECT 1 FROM events e JOIN activity a ON a.id = e.id
                 WHERE a.request_id = e.request_id AND a.target = e.subject
                   AND a.org_id IS NOT DISTINCT FROM e.org_id",
                &[],
            )
            .await;
        (activity, events)
    }

    /// Runs `call`, the RPC `method`, and checks it wrote `rows` activity rows
    /// and as many events.
    async fn expect<T>(
        &mut self,
        method: &str,
        rows: i64,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        let before = self.rows().await;
        let result = call
            .await
            .unwrap_or_else(|status| panic!("{method}: {status:?}"))
            .into_inner();
        let after = self.rows().await;
        assert_eq!(after.0 - before.0, rows, "{method}'s activity rows");
        assert_eq!(after.1 - before.1, rows, "{method}'s events");
        self.covered.insert(method.to_owned());
        result
    }

    /// Runs `call`, the RPC `method` made to fail, and checks it wrote nothing.
    async fn refused<T: std::fmt::Debug>(
        &self,
        method: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) {
        let before = self.rows().await;
        let outcome = call.await;
        assert!(outcome.is_err(), "{method} should fail: {outcome:?}");
        assert_eq!(
            self.rows().await,
            before,
            "{method} failed and wrote nothing"
        );
    }

    async fn once<T>(
        &mut self,
        method: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        self.expect(method, 1, call).await
    }
}

fn invite(org: &pb::Organization, who: &str) -> pb::CreateInvitationRequest {
    invitation(org, &format!("{who}@example.com"), &["developer"])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutating_rpc_leaves_exactly_one_activity_row() {
    let key = scratch_dir("audit").join("webhook-key");
    // Webhook endpoints on loopback, where nothing listens: delivery fails
    // quietly (no activity) and retries after the default 5 s.
    let app = TestApp::spawn_with(&[
        "--webhook-allow-private",
        "--webhook-key-file",
        key.to_str().unwrap(),
    ])
    .await;
    for user in ["alice", "bob", "carol", "dave"] {
        app.user_id(user).await;
    }
    let mut audit = Audit {
        app: &app,
        covered: BTreeSet::new(),
    };
    let mut orgs = app.orgs_as("alice").await;
    let mut members = app.members_as("alice").await;
    let mut billing = app.billing_as("alice").await;
    let mut operator = app.billing_as_service().await;
    let channel = app.channel().await;
    let alice_bearer = Bearer::new(Some(&user_token("alice")));
    let mut tokens = TokenServiceClient::with_interceptor(channel.clone(), alice_bearer.clone());
    let mut resources = ResourceServiceClient::with_interceptor(channel, alice_bearer);

    // Organizations.
    let org = audit
        .once(
            "CreateOrganization",
            orgs.create_organization(new_org("Acme")),
        )
        .await;
    let mut change = org.clone();
    change.contact_email = "ops@acme.test".into();
    audit
        .once(
            "UpdateOrganization",
            orgs.update_organization(update(change, &["contact_email"])),
        )
        .await;
    // A change refused part-way (a stale etag; an invitation to an address
    // already invited) writes no activity and no event.
    let mut stale = org.clone();
    stale.description = "stale".into();
    audit
        .refused(
            "UpdateOrganization",
            orgs.update_organization(update(stale, &["description"])),
        )
        .await;
    let token = latest_token(&app, "ops@acme.test").await;
    audit
        .once(
            "VerifyContactEmail",
            orgs.verify_contact_email(pb::VerifyContactEmailRequest { token }),
        )
        .await;

    // Invitations and members.
    audit
        .once(
            "CreateInvitation",
            members.create_invitation(invite(&org, "bob")),
        )
        .await;
    audit
        .refused(
            "CreateInvitation",
            members.create_invitation(invite(&org, "bob")),
        )
        .await;
    let token = latest_token(&app, "bob@example.com").await;
    let bob = audit
        .once(
            "AcceptInvitation",
            app.members_as("bob")
                .await
                .accept_invitation(accept(&token)),
        )
        .await;
    let carol_invite = members
        .create_invitation(invite(&org, "carol"))
        .await
        .unwrap()
        .into_inner();
    let_resend_interval_pass(&app).await;
    audit
        .once(
            "ResendInvitation",
            members.resend_invitation(pb::ResendInvitationRequest {
                name: carol_invite.name.clone(),
            }),
        )
        .await;
    audit
        .once(
            "RevokeInvitation",
            members.revoke_invitation(pb::RevokeInvitationRequest {
                name: carol_invite.name,
            }),
        )
        .await;
    members
        .create_invitation(invite(&org, "dave"))
        .await
        .unwrap();
    let token = latest_token(&app, "dave@example.com").await;
    audit
        .once(
            "DeclineInvitation",
            app.members_as("dave")
                .await
                .decline_invitation(pb::DeclineInvitationRequest { token }),
        )
        .await;
    audit
        .once(
            "UpdateMember",
            members.update_member(set_roles(&bob.name, &["viewer"])),
        )
        .await;
    audit
        .once(
            "BatchUpdateMembers",
            members.batch_update_members(pb::BatchUpdateMembersRequest {
                parent: org.name.clone(),
                requests: vec![set_roles(&bob.name, &["developer"])],
            }),
        )
        .await;
    let carol = join(&app, "alice", &org, "carol", &["viewer"])
        .await
        .unwrap();
    audit
        .once(
            "RemoveMember",
            members.remove_member(pb::RemoveMemberRequest { name: carol.name }),
        )
        .await;
    let carol = join(&app, "alice", &org, "carol", &["viewer"])
        .await
        .unwrap();
    audit
        .once(
            "BatchRemoveMembers",
            members.batch_remove_members(pb::BatchRemoveMembersRequest {
                parent: org.name.clone(),
                names: vec![carol.name],
            }),
        )
        .await;

    // Billing.
    let first = audit
        .once(
            "AddPaymentMethod",
            billing.add_payment_method(card(&org, "pm_first")),
        )
        .await;
    let second = billing
        .add_payment_method(card(&org, "pm_second"))
        .await
        .unwrap()
        .into_inner();
    audit
        .once(
            "SetDefaultPaymentMethod",
            billing.set_default_payment_method(pb::SetDefaultPaymentMethodRequest {
                name: second.name,
            }),
        )
        .await;
    audit
        .once(
            "RemovePaymentMethod",
            billing.remove_payment_method(pb::RemovePaymentMethodRequest { name: first.name }),
        )
        .await;
    let subscription = format!("{}/subscription", org.name);
    audit
        .once(
            "ChangePlan",
            billing.change_plan(pb::ChangePlanRequest {
                name: subscription.clone(),
                plan: "plans/startup".into(),
                etag: String::new(),
            }),
        )
        .await;
    audit
        .once(
            "CancelSubscription",
            billing.cancel_subscription(pb::CancelSubscriptionRequest {
                name: subscription.clone(),
            }),
        )
        .await;
    audit
        .once(
            "ResumeSubscription",
            billing.resume_subscription(pb::ResumeSubscriptionRequest { name: subscription }),
        )
        .await;
    audit
        .once(
            "UpdateBillingProfile",
            billing.update_billing_profile(pb::UpdateBillingProfileRequest {
                billing_profile: Some(pb::BillingProfile {
                    name: format!("{}/billingProfile", org.name),
                    billing_email: "invoices@acme.test".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["billing_email".into()],
                }),
            }),
        )
        .await;
    let token = latest_token(&app, "invoices@acme.test").await;
    audit
        .once(
            "VerifyBillingEmail",
            billing.verify_billing_email(pb::VerifyBillingEmailRequest { token }),
        )
        .await;
    audit
        .once(
            "CreateVoucher",
            operator.create_voucher(pb::CreateVoucherRequest {
                voucher: Some(pb::Voucher {
                    code: "AUDIT-1".into(),
                    amount: Some(pb::Money {
                        currency_code: "USD".into(),
                        amount_minor: 100,
                    }),
                    max_redemptions: 1,
                    ..Default::default()
                }),
            }),
        )
        .await;
    audit
        .once(
            "RedeemVoucher",
            billing.redeem_voucher(pb::RedeemVoucherRequest {
                organization: org.name.clone(),
                code: "AUDIT-1".into(),
            }),
        )
        .await;
    // Usage a backend service reports, and one it withdraws.
    let used = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let usage = |request_id: &str| pb::CreateUsageChargeRequest {
        request_id: request_id.into(),
        ..common::usage::report(&org, "App web: 1 hour", 25, used, used)
    };
    audit
        .once(
            "CreateUsageCharge",
            operator.create_usage_charge(usage("0193a8f0-0000-7000-8000-000000000001")),
        )
        .await;
    let mistaken = audit
        .once(
            "CreateUsageCharge",
            operator.create_usage_charge(usage("0193a8f0-0000-7000-8000-000000000002")),
        )
        .await;
    audit
        .once(
            "DeleteUsageCharge",
            operator.delete_usage_charge(pb::DeleteUsageChargeRequest {
                name: mistaken.name.clone(),
            }),
        )
        .await;
    audit
        .refused(
            "DeleteUsageCharge",
            operator.delete_usage_charge(pb::DeleteUsageChargeRequest {
                name: mistaken.name,
            }),
        )
        .await;
    // A month on Startup, so that the invoice has something to pay.
    let_a_month_pass(&app.db, &org).await;
    let invoice = audit
        .once(
            "CloseBillingPeriod",
            operator.close_billing_period(pb::CloseBillingPeriodRequest {
                organization: org.name.clone(),
                period_start: None,
            }),
        )
        .await
        .invoice
        .unwrap();
    let payment = |outcome: pb::record_invoice_payment_request::Outcome, why: &str| {
        pb::RecordInvoicePaymentRequest {
            name: invoice.name.clone(),
            outcome: outcome.into(),
            processor_reference: "ch_audit1".into(),
            failure_message: why.into(),
            amount: invoice.total.clone(),
        }
    };
    use pb::record_invoice_payment_request::Outcome;
    audit
        .once(
            "RecordInvoicePayment",
            operator.record_invoice_payment(payment(Outcome::Failed, "Declined.")),
        )
        .await;
    audit
        .refused(
            "RecordInvoicePayment",
            operator.record_invoice_payment(payment(Outcome::Succeeded, "")),
        )
        .await;

    // API tokens.
    let created = audit
        .once(
            "CreateApiToken",
            tokens.create_api_token(pb::CreateApiTokenRequest {
                parent: org.name.clone(),
                api_token: Some(pb::ApiToken {
                    display_name: "ci".into(),
                    roles: vec!["viewer".into()],
                    ..Default::default()
                }),
            }),
        )
        .await;
    audit
        .once(
            "RevokeApiToken",
            tokens.revoke_api_token(pb::RevokeApiTokenRequest {
                name: created.api_token.unwrap().name,
            }),
        )
        .await;

    // Webhooks.
    let mut webhooks = WebhookServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );
    let hook = |url: &str| pb::CreateWebhookEndpointRequest {
        parent: org.name.clone(),
        webhook_endpoint: Some(pb::WebhookEndpoint {
            url: url.into(),
            ..Default::default()
        }),
    };
    let endpoint = audit
        .once(
            "CreateWebhookEndpoint",
            webhooks.create_webhook_endpoint(hook("http://127.0.0.1:9/hooks")),
        )
        .await
        .webhook_endpoint
        .unwrap();
    audit
        .refused(
            "CreateWebhookEndpoint",
            webhooks.create_webhook_endpoint(hook("ftp://127.0.0.1/hooks")),
        )
        .await;
    audit
        .once(
            "UpdateWebhookEndpoint",
            webhooks.update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
                webhook_endpoint: Some(pb::WebhookEndpoint {
                    name: endpoint.name.clone(),
                    description: "audited".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["description".into()],
                }),
            }),
        )
        .await;
    let created: uuid::Uuid = app
        .db
        .query_one(
            "SELECT id FROM events WHERE type = 'orgd.webhook_endpoint.created.v1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    audit
        .once(
            "RedeliverEvent",
            webhooks.redeliver_event(pb::RedeliverEventRequest {
                webhook_endpoint: endpoint.name.clone(),
                event_id: created.to_string(),
            }),
        )
        .await;
    audit
        .once(
            "DeleteWebhookEndpoint",
            webhooks.delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
                name: endpoint.name,
            }),
        )
        .await;

    // Resources, moved between two organizations: one row in each.
    let beta = create_org(&mut orgs, "Beta").await;
    let registered = audit
        .once(
            "RegisterResource",
            resources.register_resource(pb::RegisterResourceRequest {
                parent: org.name.clone(),
                resource: Some(pb::Resource {
                    kind: "app".into(),
                    external_id: "audit-app".into(),
                    ..Default::default()
                }),
            }),
        )
        .await;
    let moved = audit
        .expect(
            "TransferResource",
            2,
            resources.transfer_resource(pb::TransferResourceRequest {
                name: registered.name,
                destination: beta.name.clone(),
            }),
        )
        .await;
    let per_org = app
        .count(
            "SELECT 1 FROM activity WHERE action LIKE 'resource.transfer_%' GROUP BY org_id",
            &[],
        )
        .await;
    assert_eq!(per_org, 2, "one transfer row in each organization");
    audit
        .once(
            "UnregisterResource",
            resources.unregister_resource(pb::UnregisterResourceRequest { name: moved.name }),
        )
        .await;

    // Ownership, leaving, deletion.
    audit
        .once(
            "TransferOwnership",
            members.transfer_ownership(pb::TransferOwnershipRequest {
                organization: org.name.clone(),
                new_owner: bob.name.clone(),
            }),
        )
        .await;
    audit
        .once(
            "LeaveOrganization",
            members.leave_organization(pb::LeaveOrganizationRequest {
                organization: org.name.clone(),
            }),
        )
        .await;
    audit
        .once(
            "DeleteOrganization",
            orgs.delete_organization(delete(&beta)),
        )
        .await;
    audit
        .once(
            "UndeleteOrganization",
            orgs.undelete_organization(pb::UndeleteOrganizationRequest { name: beta.name }),
        )
        .await;

    // Account deletion: one row in each organization the account belonged
    // to, here dave's personal one.
    let dave = app.user_id("dave").await;
    audit
        .once(
            "DeleteUser",
            app.orgs_as("dave")
                .await
                .delete_user(pb::DeleteUserRequest {
                    name: format!("users/{dave}"),
                }),
        )
        .await;

    // Support raises a user's organization limit: one row, of no organization.
    let erin = app.user_id("erin").await;
    audit
        .once(
            "UpdateUser",
            app.orgs_as_service()
                .await
                .update_user(pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: format!("users/{erin}"),
                        organization_limit: 10,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["organization_limit".into()],
                    }),
                }),
        )
        .await;

    // Nothing mutating was left out.
    let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
    let mutating: BTreeSet<String> = table
        .methods()
        .map(|(path, _)| path.rsplit('/').next().unwrap().to_owned())
        .filter(|method| !reads(method))
        .collect();
    assert_eq!(audit.covered, mutating);
    // Every event is its activity row's twin, typed after the action.
    let orphans = app
        .count(
            "SELECT 1 FROM events e LEFT JOIN activity a ON a.id = e.id WHERE a.id IS NULL",
            &[],
        )
        .await;
    assert_eq!(orphans, 0, "events without their activity row");
    let rows = app
        .db
        .query(
            "SELECT DISTINCT a.action, e.type FROM events e JOIN activity a ON a.id = e.id",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 30, "{} kinds of event", rows.len());
    for row in rows {
        let (action, event_type): (String, String) = (row.get(0), row.get(1));
        let expected = orgd::domain::Action::ALL
            .iter()
            .find(|a| a.as_str() == action)
            .unwrap_or_else(|| panic!("unknown action {action}"))
            .event_type();
        assert_eq!(event_type, expected, "{action}");
    }
}
