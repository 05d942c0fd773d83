//! Billing profiles (who invoices are addressed to) and payment methods (the
//! processor's tokens with display data; a card number never gets here).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::org_row::{OrgRow, lock_org};
use super::proof::OrgAccess;
use super::schema::{
    billing_email_verifications, billing_profiles, payment_methods, plans, subscriptions,
};
use super::verification::{
    ContactVerification, Requester, ensure_requester_still_may, link_not_valid,
};
use super::{Actor, Conn, KeepPrepared, Store, audit, outbox};
use crate::domain::{Action, ChildName, Email, Etag, Secret, count};
use crate::error::{Error, Result};

pub const PAYMENT_METHODS: &str = "paymentMethods";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = billing_profiles, check_for_backend(diesel::pg::Pg))]
pub struct ProfileRow {
    pub org_id: Uuid,
    pub legal_name: String,
    pub billing_email: String,
    pub pending_billing_email: Option<String>,
    pub tax_id: String,
    pub address_lines: Vec<String>,
    pub city: String,
    pub postal_code: String,
    pub region: String,
    pub country: String,
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
}

impl ProfileRow {
    pub fn name(&self) -> String {
        format!(
            "{}/billingProfile",
            crate::domain::OrgRef::name_of(self.org_id)
        )
    }

    pub fn etag(&self) -> Etag {
        Etag(self.revision)
    }
}

/// A postal address, validated.
#[derive(Debug, Clone, Default)]
pub struct AddressFields {
    pub lines: Vec<String>,
    pub city: String,
    pub postal_code: String,
    pub region: String,
    pub country: String,
}

/// The fields an update changes; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub legal_name: Option<String>,
    pub billing_email: Option<Email>,
    pub tax_id: Option<String>,
    pub address: Option<AddressFields>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payment_methods, check_for_backend(diesel::pg::Pg))]
pub struct PaymentMethodRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub processor_token: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

impl PaymentMethodRow {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, PAYMENT_METHODS, self.id)
    }
}

/// Payment methods an organization may hold: more than people keep on file, few
/// enough that listing them needs no pages.
pub const MAX_PAYMENT_METHODS: usize = 20;

pub struct NewPaymentMethod {
    pub processor_token: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
}

pub(super) async fn create_profile(conn: &mut Conn, org_id: Uuid) -> Result<()> {
    diesel::insert_into(billing_profiles::table)
        .values(billing_profiles::org_id.eq(org_id))
        .execute(conn)
        .await?;
    Ok(())
}

async fn load_profile(conn: &mut Conn, org_id: Uuid, lock: bool) -> Result<ProfileRow> {
    let query = billing_profiles::table
        .find(org_id)
        .select(ProfileRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await?
    } else {
        query.first(conn).await?
    })
}

async fn touch_profile(conn: &mut Conn, org_id: Uuid) -> Result<ProfileRow> {
    Ok(diesel::update(billing_profiles::table.find(org_id))
        .set((
            billing_profiles::revision.eq(billing_profiles::revision + 1),
            billing_profiles::updated_at.eq(diesel::dsl::now),
        ))
        .returning(ProfileRow::as_returning())
        .prepared()
        .get_result(conn)
        .await?)
}

/// Queues the confirmation of a new billing email that `requester` asks for;
/// any earlier link dies.
async fn start_billing_email_change(
    conn: &mut Conn,
    org: &OrgRow,
    email: &Email,
    requester: &Requester,
    settings: &ContactVerification,
) -> Result<()> {
    diesel::delete(
        billing_email_verifications::table.filter(billing_email_verifications::org_id.eq(org.id)),
    )
    .execute(conn)
    .await?;
    diesel::update(billing_profiles::table.find(org.id))
        .set(billing_profiles::pending_billing_email.eq(email.as_str()))
        .prepared()
        .execute(conn)
        .await?;
    let secret = Secret::generate();
    let expires_at = Utc::now() + settings.ttl;
    diesel::insert_into(billing_email_verifications::table)
        .values((
            billing_email_verifications::token_hash.eq(&secret.hash),
            billing_email_verifications::org_id.eq(org.id),
            billing_email_verifications::email.eq(email.as_str()),
            billing_email_verifications::expires_at.eq(expires_at),
            billing_email_verifications::requested_by.eq(requester.user_id),
            billing_email_verifications::permission.eq(&*requester.permission),
        ))
        .execute(conn)
        .await?;
    let body = format!(
        "Someone asked to send the invoices of the organization \"{}\" to {email}.\n\
         To confirm, open {}{}\nThe link expires at {expires_at}. If this was not you, ignore this message.",
        org.display_name, settings.link_prefix, secret.token
    );
    outbox::enqueue(conn, email.as_str(), "Confirm your billing email", &body).await
}

/// Whether the organization's current plan is paid.
async fn on_paid_plan(conn: &mut Conn, org_id: Uuid) -> Result<bool> {
    let price: i64 = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::org_id.eq(org_id))
        .select(plans::price_minor)
        .first(conn)
        .await?;
    Ok(price > 0)
}

async fn payment_methods_of(conn: &mut Conn, org_id: Uuid) -> Result<Vec<PaymentMethodRow>> {
    Ok(payment_methods::table
        .filter(payment_methods::org_id.eq(org_id))
        .order((
            payment_methods::is_default.desc(),
            payment_methods::created_at,
        ))
        .select(PaymentMethodRow::as_select())
        .load(conn)
        .await?)
}

fn payment_method_not_found(org_id: Uuid, id: Uuid) -> Error {
    Error::NotFound(format!(
        "payment method {} not found",
        ChildName::name_of(org_id, PAYMENT_METHODS, id)
    ))
}

impl Store {
    pub async fn get_billing_profile(&self, org_id: Uuid) -> Result<ProfileRow> {
        self.read(|conn| load_profile(conn, org_id, false).scope_boxed())
            .await
    }

    pub async fn update_billing_profile(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        changes: ProfileChanges,
        etag: Option<Etag>,
        verification: &ContactVerification,
    ) -> Result<ProfileRow> {
        let changes = &changes;
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let org = &change.org;
                let profile = load_profile(conn, org_id, true).await?;
                if let Some(etag) = etag
                    && etag != profile.etag()
                {
                    return Err(Error::Aborted(format!(
                        "{} changed since etag {etag} was read (it is now {}); get it again and retry",
                        profile.name(),
                        profile.etag()
                    )));
                }
                if let Some(email) = &changes.billing_email
                    && email.as_str() != profile.billing_email
                {
                    let requester = Requester::of(&change, access)?;
                    start_billing_email_change(conn, org, email, &requester, verification).await?;
                }
                let address = changes.address.as_ref();
                // Always one column set (diesel refuses an empty changeset).
                diesel::update(billing_profiles::table.find(org_id))
                    .set((
                        changes
                            .legal_name
                            .as_ref()
                            .map(|v| billing_profiles::legal_name.eq(v)),
                        changes.tax_id.as_ref().map(|v| billing_profiles::tax_id.eq(v)),
                        address.map(|a| billing_profiles::address_lines.eq(&a.lines)),
                        address.map(|a| billing_profiles::city.eq(&a.city)),
                        address.map(|a| billing_profiles::postal_code.eq(&a.postal_code)),
                        address.map(|a| billing_profiles::region.eq(&a.region)),
                        address.map(|a| billing_profiles::country.eq(&a.country)),
                        billing_profiles::updated_at.eq(diesel::dsl::now),
                    ))
                    .prepared()
                    .execute(conn)
                    .await?;
                let updated = touch_profile(conn, org_id).await?;
                let fields: Vec<&str> = [
                    ("legal_name", changes.legal_name.is_some()),
                    ("billing_email", changes.billing_email.is_some()),
                    ("tax_id", changes.tax_id.is_some()),
                    ("address", changes.address.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, set)| set.then_some(name))
                .collect();
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::BillingProfileUpdate,
                    &updated.name(),
                    serde_json::json!({ "fields": fields }),
                )
                .await?;
                Ok(updated)
            }
            .scope_boxed()
        })
        .await
    }

    /// Makes the address of a pending billing-email change the billing email.
    /// No `OrgAccess`: the emailed token, not a standing, is what authorizes it.
    pub async fn verify_billing_email(&self, actor: &Actor, token: &str) -> Result<ProfileRow> {
        let hash = Secret::hash(token);
        let hash = &hash;
        self.write(|conn| {
            async move {
                let (org_id, email, expires_at, requested_by, permission): (Uuid, String, DateTime<Utc>, Uuid, String) =
                    billing_email_verifications::table
                        .find(hash)
                        .select((
                            billing_email_verifications::org_id,
                            billing_email_verifications::email,
                            billing_email_verifications::expires_at,
                            billing_email_verifications::requested_by,
                            billing_email_verifications::permission,
                        ))
                        .first(conn)
                        .await
                        .optional()?
                        .ok_or_else(link_not_valid)?;
                let org = lock_org(conn, org_id).await?;
                let profile = load_profile(conn, org_id, true).await?;
                if org.deleted_at.is_some() || profile.pending_billing_email.as_deref() != Some(email.as_str()) {
                    return Err(link_not_valid());
                }
                ensure_requester_still_may(conn, org_id, requested_by, &permission, "billing email").await?;
                if expires_at < Utc::now() {
                    return Err(Error::precondition(
                        "TOKEN_EXPIRED",
                        "token",
                        "this verification token has expired; change the billing email again to get a new one",
                    ));
                }
                diesel::delete(billing_email_verifications::table.filter(billing_email_verifications::org_id.eq(org_id)))
                    .execute(conn)
                    .await?;
                diesel::update(billing_profiles::table.find(org_id))
                    .set((
                        billing_profiles::billing_email.eq(&email),
                        billing_profiles::pending_billing_email.eq(None::<String>),
                    ))
                    .prepared()
                    .execute(conn)
                    .await?;
                let updated = touch_profile(conn, org_id).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::BillingProfileBillingEmailVerify,
                    &updated.name(),
                    serde_json::json!({ "billing_email": email }),
                )
                .await?;
                Ok(updated)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn add_payment_method(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        new: NewPaymentMethod,
    ) -> Result<PaymentMethodRow> {
        let new = &new;
        let org_id = access.org().id;
        // Under the organization's lock, the count holds until commit on every
        // replica.
        self.change(access, actor, |conn, change| {
            async move {
                let org = &change.org;
                let held = payment_methods_of(conn, org_id).await?.len();
                if held >= MAX_PAYMENT_METHODS {
                    return Err(Error::precondition(
                        "PAYMENT_METHOD_LIMIT",
                        org.name(),
                        format!(
                            "{} already has {}, the most an organization may hold; remove one first",
                            org.described(),
                            count(MAX_PAYMENT_METHODS as i64, "payment method")
                        ),
                    ));
                }
                let added: PaymentMethodRow = diesel::insert_into(payment_methods::table)
                    .values((
                        payment_methods::id.eq(Uuid::now_v7()),
                        payment_methods::org_id.eq(org_id),
                        payment_methods::processor_token.eq(&new.processor_token),
                        payment_methods::brand.eq(&new.brand),
                        payment_methods::last4.eq(&new.last4),
                        payment_methods::exp_month.eq(new.exp_month),
                        payment_methods::exp_year.eq(new.exp_year),
                        payment_methods::is_default.eq(held == 0),
                    ))
                    .on_conflict_do_nothing()
                    .returning(PaymentMethodRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| {
                        Error::AlreadyExists(format!(
                            "this processor token is already a payment method of {}",
                            org.described()
                        ))
                    })?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::PaymentMethodAdd,
                    &added.name(),
                    serde_json::json!({ "brand": added.brand, "last4": added.last4, "default": added.is_default }),
                )
                .await?;
                Ok(added)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn list_payment_methods(&self, org_id: Uuid) -> Result<Vec<PaymentMethodRow>> {
        self.read(|conn| payment_methods_of(conn, org_id).scope_boxed())
            .await
    }

    pub async fn set_default_payment_method(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
    ) -> Result<PaymentMethodRow> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, _| {
            async move {
                let methods = payment_methods_of(conn, org_id).await?;
                if !methods.iter().any(|m| m.id == id) {
                    return Err(payment_method_not_found(org_id, id));
                }
                // Clear first: the partial unique index allows one default at a time.
                diesel::update(payment_methods::table.filter(payment_methods::org_id.eq(org_id)))
                    .set(payment_methods::is_default.eq(false))
                    .prepared()
                    .execute(conn)
                    .await?;
                let chosen: PaymentMethodRow = diesel::update(payment_methods::table.find(id))
                    .set(payment_methods::is_default.eq(true))
                    .returning(PaymentMethodRow::as_returning())
                    .prepared()
                    .get_result(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::PaymentMethodSetDefault,
                    &chosen.name(),
                    serde_json::json!({}),
                )
                .await?;
                Ok(chosen)
            }
            .scope_boxed()
        })
        .await
    }

    /// Removes a payment method; returns the default one afterwards.
    pub async fn remove_payment_method(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
    ) -> Result<Option<PaymentMethodRow>> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let org = &change.org;
                let methods = payment_methods_of(conn, org_id).await?;
                let removed = methods
                    .iter()
                    .find(|m| m.id == id)
                    .ok_or_else(|| payment_method_not_found(org_id, id))?;
                if methods.len() == 1 && on_paid_plan(conn, org_id).await? {
                    return Err(Error::precondition(
                        "PAYMENT_METHOD_REQUIRED",
                        removed.name(),
                        format!(
                            "{} is on a paid plan and this is its only payment method: add another one first, or move to the free plan",
                            org.described()
                        ),
                    ));
                }
                diesel::delete(payment_methods::table.find(id))
                    .execute(conn)
                    .await?;
                let successor = methods.iter().find(|m| m.id != id);
                if removed.is_default
                    && let Some(next) = successor
                {
                    diesel::update(payment_methods::table.find(next.id))
                        .set(payment_methods::is_default.eq(true))
                        .prepared()
                        .execute(conn)
                        .await?;
                }
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::PaymentMethodRemove,
                    &removed.name(),
                    serde_json::json!({ "brand": removed.brand, "last4": removed.last4 }),
                )
                .await?;
                Ok(payment_methods_of(conn, org_id)
                    .await?
                    .into_iter()
                    .find(|m| m.is_default))
            }
            .scope_boxed()
        })
        .await
    }
}
