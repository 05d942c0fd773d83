//! What the activity log calls each audited change: the `action` of an
//! activity row, and what ListActivities filters by. One list, so that a name
//! is spelt once and a reader sees every action orgd records.

macro_rules! actions {
    ($($variant:ident => $name:literal,)*) => {
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
        }
    };
}

actions! {
    OrganizationCreate => "organization.create",
    OrganizationUpdate => "organization.update",
    OrganizationDelete => "organization.delete",
    OrganizationUndelete => "organization.undelete",
    OrganizationPurge => "organization.purge",
    OrganizationTransferOwnership => "organization.transfer_ownership",
    OrganizationContactEmailVerify => "organization.contact_email.verify",
    MemberUpdate => "member.update",
    MemberRemove => "member.remove",
    MemberLeave => "member.leave",
    MemberBatchUpdate => "member.batch_update",
    MemberBatchRemove => "member.batch_remove",
    InvitationCreate => "invitation.create",
    InvitationResend => "invitation.resend",
    InvitationRevoke => "invitation.revoke",
    InvitationAccept => "invitation.accept",
    InvitationDecline => "invitation.decline",
    BillingProfileUpdate => "billing_profile.update",
    BillingProfileBillingEmailVerify => "billing_profile.billing_email.verify",
    PaymentMethodAdd => "payment_method.add",
    PaymentMethodSetDefault => "payment_method.set_default",
    PaymentMethodRemove => "payment_method.remove",
    SubscriptionChangePlan => "subscription.change_plan",
    SubscriptionCancel => "subscription.cancel",
    SubscriptionResume => "subscription.resume",
    InvoiceCreate => "invoice.create",
    VoucherCreate => "voucher.create",
    VoucherRedeem => "voucher.redeem",
    ResourceRegister => "resource.register",
    ResourceUnregister => "resource.unregister",
    ResourceTransferOut => "resource.transfer_out",
    ResourceTransferIn => "resource.transfer_in",
    ApiTokenCreate => "api_token.create",
    ApiTokenRevoke => "api_token.revoke",
    UserCreate => "user.create",
    UserUpdate => "user.update",
    UserDelete => "user.delete",
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
    }
}
