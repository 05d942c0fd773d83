//! Billing time in tests: moved by SQL, as if it had passed, instead of waited for.

use orgd::pb;

/// Moves the organization's current period (and its plan segments) one month
/// into the past, as if that month had gone by: the period has now ended.
/// `db` is a connection to the organization's database.
pub async fn let_a_month_pass(db: &tokio_postgres::Client, org: &pb::Organization) {
    let id: uuid::Uuid = org.uid.parse().unwrap();
    // One statement, so a billing job running meanwhile never sees the period
    // moved without its segments (it would close a period of zero days).
    db.execute(
        "WITH moved AS (
                 UPDATE subscriptions SET period_start = period_start - interval '1 month',
                        period_end = period_end - interval '1 month' WHERE org_id = $1)
             UPDATE subscription_segments SET starts_at = starts_at - interval '1 month'
             WHERE org_id = $1",
        &[&id],
    )
    .await
    .unwrap();
}
