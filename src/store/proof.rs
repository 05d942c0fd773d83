//! `OrgAccess`: the proof that a call passed its method's policy in an
//! organization. Store commands that act for a caller in an organization take
//! one, so code that holds none cannot call them. `AccountAccess` is the same
//! for a user's account.
//!
//! It lives here, beside the rows it carries, and not in `crate::auth`: the auth
//! layer depends on the store (it reads standings through it), and store
//! commands naming a type of `auth` would make the two depend on each other.
//! Only `auth` can make one all the same: `OrgAccess::new` takes an
//! `auth::Mint`, which nothing outside `auth` can build, and `auth::mint` is a
//! leaf, so the store's one edge towards `auth` leads nowhere else.

use uuid::Uuid;

use super::org_row::OrgRow;
use super::standing::MemberAccess;
use crate::auth::Mint;
use crate::domain::Permission;
use crate::error::Error;

/// What the policy layer proved: the caller is a member of `org` holding
/// `member` (already narrowed to an API token's limit) and, unless the method
/// asks membership alone, `permission`, which lets them act on `reach`.
#[derive(Debug)]
pub struct OrgAccess {
    org: OrgRow,
    member: MemberAccess,
    permission: Option<Permission>,
    reach: Reach,
    allows_deleted: bool,
}

/// Whose resources in the organization a call may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Everyone's.
    All,
    /// The caller's own only: they hold the policy's `own_permission` but not
    /// `broader`, which everyone's would take.
    Own { broader: Permission },
}

impl OrgAccess {
    pub fn new(
        _: Mint,
        org: OrgRow,
        member: MemberAccess,
        permission: Option<Permission>,
        reach: Reach,
        allows_deleted: bool,
    ) -> Self {
        OrgAccess {
            org,
            member,
            permission,
            reach,
            allows_deleted,
        }
    }

    /// The organization as read when the call was authorized.
    pub fn org(&self) -> &OrgRow {
        &self.org
    }

    /// The caller's standing there, within an API token's limit.
    pub fn member(&self) -> &MemberAccess {
        &self.member
    }

    /// The permission the caller was admitted with: the method's policy's, or
    /// its `own_permission` (then `reach` is `Own`); `None` for members'
    /// methods. A change checks it again under the organization's lock.
    pub fn permission(&self) -> Option<&Permission> {
        self.permission.as_ref()
    }

    /// Whose resources the call may act on.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Whether the method's policy admits a soft-deleted organization.
    pub fn allows_deleted(&self) -> bool {
        self.allows_deleted
    }
}

/// What the policy layer proved for a method on a user's account: the caller
/// is that user, or a backend service. It does not say the user exists.
#[derive(Debug)]
pub struct AccountAccess {
    user_id: Uuid,
}

impl AccountAccess {
    pub fn new(_: Mint, user_id: Uuid) -> Self {
        AccountAccess { user_id }
    }

    /// The user whose account the call may act on.
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
}

/// The refusal of a member of `org` who holds `member` but not `permission`
/// (nor `own`, which would admit them to their own resources): what they need
/// and the roles they have, to ask an owner for the right one.
pub fn lacks_permission(
    org: &OrgRow,
    member: &MemberAccess,
    permission: &Permission,
    own: Option<&Permission>,
) -> Error {
    let roles = if member.roles.is_empty() {
        "none".to_owned()
    } else {
        member.roles.join(", ")
    };
    let own = own
        .map(|own| format!(" (or '{own}', for your own)"))
        .unwrap_or_default();
    Error::PermissionDenied(format!(
        "you need permission '{permission}'{own} in {}; your roles there: {roles}",
        org.described()
    ))
}
