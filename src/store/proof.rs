//! `OrgAccess`: the proof that a call passed its method's policy in an
//! organization. Store commands that act for a caller in an organization take
//! one, so code that holds none cannot call them.
//!
//! It lives here, beside the rows it carries, and not in `crate::auth`: the auth
//! layer depends on the store (it reads standings through it), and store
//! commands naming a type of `auth` would make the two depend on each other.
//! Only `auth` can make one all the same: `OrgAccess::new` takes an
//! `auth::Mint`, which nothing outside `auth` can build, and `auth::mint` is a
//! leaf, so the store's one edge towards `auth` leads nowhere else.

use super::org_row::OrgRow;
use super::standing::MemberAccess;
use crate::auth::Mint;
use crate::domain::Permission;

/// What the policy layer proved: the caller is a member of `org` holding
/// `member` (already narrowed to an API token's limit) and, unless the method
/// asks membership alone, `permission`.
#[derive(Debug)]
pub struct OrgAccess {
    org: OrgRow,
    member: MemberAccess,
    permission: Option<Permission>,
    allows_deleted: bool,
}

impl OrgAccess {
    pub fn new(
        _: Mint,
        org: OrgRow,
        member: MemberAccess,
        permission: Option<Permission>,
        allows_deleted: bool,
    ) -> Self {
        OrgAccess {
            org,
            member,
            permission,
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

    /// The permission the method's policy demanded; `None` for members' methods.
    pub fn permission(&self) -> Option<&Permission> {
        self.permission.as_ref()
    }

    /// Whether the method's policy admits a soft-deleted organization.
    pub fn allows_deleted(&self) -> bool {
        self.allows_deleted
    }
}
