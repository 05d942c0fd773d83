//! What the activity log calls each audited change: the `action` of an
//! activity row, and what ListActivities filters by; and the type of the
//! change feed's event for it (`orgd.<resource>.<what happened>.v1`). One
//! list, so that a name is spelt once and a reader sees every action orgd
//! records.

macro_rules! actions {
    ($($variant:ident => $name:literal, $event:literal,)*) => {
        /// An audited change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action {
            $($variant,)*
        }

        impl Action {
            /// Every action, in the order above.
            pub const ALL: &[Action] = &[$(Action::$variant,)*];

            /// The name stored in the activity log.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// The type of the change feed's event for it (CloudEvents `type`).
            pub fn event_type(self) -> &'static str {
                match self {
                    $(Action::$variant => $event,)*
                }
            }
        }
    };
}

actions! {
    OrganizationCreate => "organization.create", "orgd.organization.created.v1",
    OrganizationUpdate => "organization.update", "orgd.organization.updated.v1",
    OrganizationDelete => "organization.delete", "orgd.organization.deleted.v1",
    OrganizationUndelete => "organization.undelete", "orgd.organization.undeleted.v1",
    OrganizationPurge => "organization.purge", "orgd.organization.purged.v1",
    OrganizationTransferOwnership => "organization.transfer_ownership", "orgd.organization.ownership_transferred.v1",
    OrganizationContactEmailVerify => "organization.contact_email.verify", "orgd.organization.contact_email_verified.v1",
    MemberUpdate => "member.update", "orgd.member.updated.v1",
    MemberRemove => "member.remove", "orgd.member.removed.v1",
    MemberLeave => "member.leave", "orgd.member.left.v1",
    MemberBatchUpdate => "member.batch_update", "orgd.member.batch_updated.v1",
    MemberBatchRemove => "member.batch_remove", "orgd.member.batch_removed.v1",
    InvitationCreate => "invitation.create", "orgd.invitation.created.v1",
    InvitationResend => "invitation.resend", "orgd.invitation.resent.v1",
    InvitationRevoke => "invitation.revoke", "orgd.invitation.revoked.v1",
    InvitationAccept => "invitation.accept", "orgd.invitation.accepted.v1",
    InvitationDecline => "invitation.decline", "orgd.invitation.declined.v1",
    InvitationExpire => "invitation.expire", "orgd.invitation.expired.v1",
    BillingProfileUpdate => "billing_profile.update", "orgd.billing_profile.updated.v1",
    BillingProfileBillingEmailVerify => "billing_profile.billing_email.verify", "orgd.billing_profile.billing_email_verified.v1",
    PaymentMethodAdd => "payment_method.add", "orgd.payment_method.added.v1",
    PaymentMethodSetDefault => "payment_method.set_default", "orgd.payment_method.default_set.v1",
    PaymentMethodRemove => "payment_method.remove", "orgd.payment_method.removed.v1",
    SubscriptionChangePlan => "subscription.change_plan", "orgd.subscription.plan_changed.v1",
    SubscriptionCancel => "subscription.cancel", "orgd.subscription.canceled.v1",
    SubscriptionResume => "subscription.resume", "orgd.subscription.resumed.v1",
    InvoiceCreate => "invoice.create", "orgd.invoice.created.v1",
    InvoicePay => "invoice.pay", "orgd.invoice.paid.v1",
    InvoicePaymentFail => "invoice.payment_fail", "orgd.invoice.payment_failed.v1",
    UsageChargeCreate => "usage_charge.create", "orgd.usage_charge.created.v1",
    UsageChargeDelete => "usage_charge.delete", "orgd.usage_charge.deleted.v1",
    VoucherCreate => "voucher.create", "orgd.voucher.created.v1",
    VoucherRedeem => "voucher.redeem", "orgd.voucher.redeemed.v1",
    ResourceRegister => "resource.register", "orgd.resource.registered.v1",
    ResourceUnregister => "resource.unregister", "orgd.resource.unregistered.v1",
    ResourceTransferOut => "resource.transfer_out", "orgd.resource.transferred_out.v1",
    ResourceTransferIn => "resource.transfer_in", "orgd.resource.transferred_in.v1",
    ApiTokenCreate => "api_token.create", "orgd.api_token.created.v1",
    ApiTokenRevoke => "api_token.revoke", "orgd.api_token.revoked.v1",
    ApiTokenExpire => "api_token.expire", "orgd.api_token.expired.v1",
    UserCreate => "user.create", "orgd.user.created.v1",
    UserUpdate => "user.update", "orgd.user.updated.v1",
    UserDelete => "user.delete", "orgd.user.deleted.v1",
    WebhookEndpointCreate => "webhook_endpoint.create", "orgd.webhook_endpoint.created.v1",
    WebhookEndpointUpdate => "webhook_endpoint.update", "orgd.webhook_endpoint.updated.v1",
    WebhookEndpointDelete => "webhook_endpoint.delete", "orgd.webhook_endpoint.deleted.v1",
    WebhookEndpointDisable => "webhook_endpoint.disable", "orgd.webhook_endpoint.disabled.v1",
    WebhookEndpointRedeliver => "webhook_endpoint.redeliver", "orgd.webhook_endpoint.redelivery_requested.v1",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_resource_dot_verb() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        assert!(names.iter().all(|n| n.contains('.') && !n.contains(' ')));
        let mut types: Vec<&str> = Action::ALL.iter().map(|a| a.event_type()).collect();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), Action::ALL.len());
        assert!(types.iter().all(|t| {
            let parts: Vec<&str> = t.split('.').collect();
            parts.len() == 4 && parts[0] == "orgd" && parts[3] == "v1"
        }));
    }
}
