//! The plan limits, asked in one place: `plan_in_force` says which plan's limits
//! apply to an organization now, and every limit check (a new member, a new or
//! transferred resource) goes through it. Callers hold the organization's row
//! lock, so what they count cannot change before they commit.

use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::members::member_count;
use super::org_row::OrgRow;
use super::schema::{org_resources, plans, subscriptions};
use super::subscription_row::{PlanRow, free_plan, has_default_payment_method};
use crate::domain::{count, plural};
use crate::error::{Error, Result};

/// The plan whose limits apply to `org_id` now. A cancelled plan stays in force
/// until its period ends (as Adaptable keeps a cancelled plan's features "until
/// the end of the current billing period"); from then on the free plan is, even
/// before the billing worker has closed the period and moved the subscription
/// to it. Timed by the database's clock, as billing periods are.
pub(super) async fn plan_in_force(conn: &mut Conn, org_id: Uuid) -> Result<PlanRow> {
    let (plan, lapsed): (PlanRow, bool) = subscriptions::table
        .inner_join(plans::table)
        .filter(subscriptions::org_id.eq(org_id))
        .select((
            PlanRow::as_select(),
            subscriptions::cancel_at_period_end.and(
                subscriptions::period_end.le(diesel::dsl::sql::<Timestamptz>("clock_timestamp()")),
            ),
        ))
        .first(conn)
        .await?;
    if lapsed {
        free_plan(conn).await
    } else {
        Ok(plan)
    }
}

/// What a plan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limited {
    Members,
    Resources,
}

impl Limited {
    fn noun(self) -> &'static str {
        match self {
            Limited::Members => "member",
            Limited::Resources => "resource",
        }
    }

    /// The most of these `plan` allows (`None`: unlimited).
    pub fn limit(self, plan: &PlanRow) -> Option<i64> {
        match self {
            Limited::Members => plan.max_members,
            Limited::Resources => plan.max_resources,
        }
        .map(i64::from)
    }

    /// The fewest an organization can be left with: it keeps an owner.
    fn fewest(self) -> i64 {
        match self {
            Limited::Members => 1,
            Limited::Resources => 0,
        }
    }

    /// `n` of these, in words that agree with the number: "1 member", "3 members".
    pub fn count(self, n: i64) -> String {
        count(n, self.noun())
    }

    /// The step that takes `n` of these away: "remove 1 member", "unregister 2 resources".
    pub fn removal(self, n: i64) -> String {
        let verb = match self {
            Limited::Members => "remove",
            Limited::Resources => "unregister",
        };
        format!("{verb} {}", self.count(n))
    }
}

/// The smallest larger plan in `plan`'s currency with room for one more of
/// `what` than `used`, as a step to take: "ChangePlan to Startup (plans/startup)
/// for up to 6 members", first adding a payment method if a paid plan needs
/// one that `org` lacks; `None` when no plan has that room.
async fn larger_plan_step(
    conn: &mut Conn,
    org: &OrgRow,
    plan: &PlanRow,
    what: Limited,
    used: i64,
) -> Result<Option<String>> {
    let larger: Vec<PlanRow> = plans::table
        .filter(plans::tier.gt(plan.tier))
        .filter(plans::currency.eq(&plan.currency))
        .order(plans::tier)
        .select(PlanRow::as_select())
        .load(conn)
        .await?;
    let Some(larger) = larger
        .into_iter()
        .find(|larger| what.limit(larger).is_none_or(|more| more > used))
    else {
        return Ok(None);
    };
    let room = match what.limit(&larger) {
        Some(more) => format!("up to {}", what.count(more)),
        None => format!("unlimited {}", plural(what.noun())),
    };
    let pay_first = if larger.is_paid() && !has_default_payment_method(conn, org.id).await? {
        "add a payment method (AddPaymentMethod), then "
    } else {
        ""
    };
    Ok(Some(format!(
        "{pay_first}ChangePlan to {} ({}) for {room}",
        larger.display_name,
        larger.name()
    )))
}

/// An organization with `used` of `what` and no room for one more under `plan`
/// (whose limit is `limit`): what it is, and the steps that make room, e.g.
/// ("\"Acme\" (acme, organizations/…) has reached the Starter plan's limit of 3 members",
/// "ChangePlan to Startup (plans/startup) for up to 6 members, or remove 1 member").
/// Over the limit (members kept through a cancellation), it says how many must go.
async fn no_room(
    conn: &mut Conn,
    org: &OrgRow,
    plan: &PlanRow,
    what: Limited,
    used: i64,
    limit: i64,
) -> Result<(String, String)> {
    let state = if used == limit {
        format!(
            "{} has reached the {} plan's limit of {}",
            org.described(),
            plan.display_name,
            what.count(limit)
        )
    } else {
        format!(
            "{} has {}, over the {} plan's limit of {}",
            org.described(),
            what.count(used),
            plan.display_name,
            what.count(limit)
        )
    };
    // Removing helps only if what is left may be that few: a plan may allow no
    // resources at all, and the free plan's one member is the owner.
    let remove = (limit > what.fewest()).then(|| what.removal(used - limit + 1));
    let steps = match (larger_plan_step(conn, org, plan, what, used).await?, remove) {
        (Some(step), Some(remove)) => format!("{step}, or {remove}"),
        (Some(step), None) => step,
        (None, Some(remove)) => remove,
        (None, None) => "contact support".to_owned(),
    };
    Ok((state, steps))
}

/// Who is about to bring a member in, which decides what they are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Joining {
    /// A member who manages the organization invites someone (CreateInvitation).
    Inviting,
    /// The invitee accepts (AcceptInvitation).
    Accepting,
}

/// Refuses one more member beyond the plan in force, naming the plan and what
/// would make room. Only members count: a pending invitation reserves no place
/// (it may be declined or lapse), so invitations can outnumber the free places
/// and the first acceptances within the limit win; hence the check runs both
/// when inviting and when accepting.
pub(super) async fn ensure_member_room(
    conn: &mut Conn,
    org: &OrgRow,
    joining: Joining,
) -> Result<()> {
    let plan = plan_in_force(conn, org.id).await?;
    let Some(limit) = Limited::Members.limit(&plan) else {
        return Ok(());
    };
    let members = member_count(conn, org.id).await?;
    if members < limit {
        return Ok(());
    }
    let (state, steps) = no_room(conn, org, &plan, Limited::Members, members, limit).await?;
    let message = match joining {
        Joining::Inviting => format!("{state}: {steps}, then invite again"),
        Joining::Accepting => {
            format!("{state}; ask its owner to {steps}, then accept again")
        }
    };
    Err(Error::precondition("MEMBER_LIMIT", org.name(), message))
}

/// Refuses one more resource beyond the plan in force, naming the plan and what
/// would make room.
pub(super) async fn ensure_resource_room(conn: &mut Conn, org: &OrgRow) -> Result<()> {
    let plan = plan_in_force(conn, org.id).await?;
    let Some(limit) = Limited::Resources.limit(&plan) else {
        return Ok(());
    };
    let held: i64 = org_resources::table
        .filter(org_resources::org_id.eq(org.id))
        .count()
        .get_result(conn)
        .await?;
    if held < limit {
        return Ok(());
    }
    let (state, steps) = no_room(conn, org, &plan, Limited::Resources, held, limit).await?;
    Err(Error::precondition(
        "RESOURCE_LIMIT",
        org.name(),
        format!("{state}: {steps} first"),
    ))
}

#[cfg(test)]
mod tests {
    use super::Limited;

    #[test]
    fn counts_agree_with_their_numbers() {
        assert_eq!(Limited::Members.count(1), "1 member");
        assert_eq!(Limited::Members.count(3), "3 members");
        assert_eq!(Limited::Resources.count(0), "0 resources");
        assert_eq!(Limited::Resources.count(1), "1 resource");
        assert_eq!(Limited::Members.removal(1), "remove 1 member");
        assert_eq!(Limited::Resources.removal(2), "unregister 2 resources");
    }
}
