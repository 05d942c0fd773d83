//! The key that mints the proofs of `crate::store::proof` (`OrgAccess`,
//! `AccountAccess`). Its field is
//! private to `crate::auth`, so only the policy layer can make one. It depends on
//! nothing, so the store can name it without depending on the rest of `auth`.

/// Zero-sized: holding one is the whole point.
#[derive(Debug)]
pub struct Mint(pub(super) ());
