//! The email outbox over real SMTP (a sink on loopback): delivery, retries while
//! the server is down, replicas sharing the work, permanent failures, and the
//! leases that keep database transactions out of the SMTP exchange.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use common::smtp::{Mail, SmtpSink, unused_port};
use common::*;
use orgd::config::{Cli, Command};
use orgd::mail::{Mailer, SendError};
use orgd::pb;
use orgd::store::Store;
use orgd::store::outbox::{Delivery, REDACTED_BODY, REDACTED_FAILED_BODY, Recorded, RetryPolicy};
use uuid::Uuid;

/// Generous: the machine running the tests may be slow and busy.
const PATIENCE: Duration = Duration::from_secs(60);
const LINK_PREFIX: &str = "https://console.test/verify?token=";

/// Flags for an orgd mailing to `port` on loopback, retrying quickly.
fn smtp_flags(port: u16, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port.to_string(),
        "--smtp-tls",
        "none",
        "--outbox-interval",
        "100ms",
        "--outbox-retry-base",
        "200ms",
        "--outbox-retry-max",
        "1s",
        "--verify-link-prefix",
        LINK_PREFIX,
    ]
    .map(String::from)
    .into();
    flags.extend(extra.iter().map(|f| f.to_string()));
    flags
}

async fn spawn_mailing_to(port: u16, extra: &[&str]) -> TestApp {
    let flags = smtp_flags(port, extra);
    TestApp::spawn_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// Asks for `email` as contact address of a new organization, which queues the
/// verification message; returns the organization.
async fn request_contact_change(app: &TestApp, email: &str) -> pb::Organization {
    let mut alice = app.orgs_as("alice").await;
    let mut org = create_org(&mut alice, &format!("Org {}", Uuid::new_v4().simple())).await;
    org.contact_email = email.into();
    alice
        .update_organization(update(org.clone(), &["contact_email"]))
        .await
        .unwrap()
        .into_inner()
}

/// Queues a message directly, as a change's transaction would; returns its id.
async fn queue(db: &tokio_postgres::Client, recipient: &str) -> Uuid {
    let id = Uuid::now_v7();
    db.execute(
        "INSERT INTO outbox_messages (id, recipient, subject, body) VALUES ($1, $2, 'Hello', $3)",
        &[&id, &recipient, &format!("message {id}")],
    )
    .await
    .unwrap();
    id
}

/// The outbox row of a message, as far as these tests care.
#[derive(Debug)]
struct Row {
    id: Uuid,
    body: String,
    attempts: i32,
    last_error: Option<String>,
    delivered: bool,
    failed: bool,
}

async fn row(app: &TestApp, recipient: &str) -> Row {
    let row = app
        .db
        .query_one(
            "SELECT id, body, attempts, last_error, delivered_at IS NOT NULL, failed_at IS NOT NULL \
             FROM outbox_messages WHERE recipient = $1",
            &[&recipient],
        )
        .await
        .unwrap();
    Row {
        id: row.get(0),
        body: row.get(1),
        attempts: row.get(2),
        last_error: row.get(3),
        delivered: row.get(4),
        failed: row.get(5),
    }
}

/// Polls the row of `recipient` until `done` holds for it.
async fn wait_for_row(app: &TestApp, recipient: &str, done: impl Fn(&Row) -> bool) -> Row {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let row = row(app, recipient).await;
        if done(&row) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox row of {recipient} stuck at {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn to(recipient: &str) -> impl Fn(&Mail) -> bool + '_ {
    move |mail| mail.to == [recipient]
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_link_arrives_over_smtp() {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_to(
        sink.port(),
        &["--mail-from", "Acme Console <no-reply@acme.test>"],
    )
    .await;
    request_contact_change(&app, "ops@acme.test").await;

    let mail = sink.wait_for(to("ops@acme.test"), PATIENCE).await;
    assert_eq!(mail.from, "no-reply@acme.test");
    assert_eq!(
        mail.header("From").as_deref(),
        Some("\"Acme Console\" <no-reply@acme.test>")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your organization's contact email")
    );
    let body = mail.body();
    let token = body
        .split(LINK_PREFIX)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no link in {body:?}"))
        .to_owned();

    let row = wait_for_row(&app, "ops@acme.test", |r| r.delivered).await;
    assert_eq!(mail.message_id(), Some(orgd::mail::message_id(row.id)));
    assert_eq!(
        row.body, REDACTED_BODY,
        "the link is gone from the database"
    );
    assert_eq!((row.attempts, row.last_error, row.failed), (1, None, false));

    // The mailed link is the real one.
    let verified = app
        .orgs_as("bob")
        .await
        .verify_contact_email(pb::VerifyContactEmailRequest { token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.contact_email, "ops@acme.test");
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_lost_while_the_smtp_server_is_down() {
    let port = unused_port();
    // One attempt only: an outage must not use it up.
    let app = spawn_mailing_to(port, &["--outbox-max-attempts", "1"]).await;
    request_contact_change(&app, "ops@acme.test").await;

    let first_try = wait_for_retry(&app, "ops@acme.test", None).await;
    let waiting = wait_for_retry(&app, "ops@acme.test", Some(first_try)).await;
    assert!(waiting > first_try, "tried again later");
    let waiting = row(&app, "ops@acme.test").await;
    assert!(!waiting.delivered && !waiting.failed, "{waiting:?}");
    assert_eq!(waiting.attempts, 0, "an outage uses up no attempts");
    assert!(waiting.last_error.is_some(), "{waiting:?}");
    assert!(waiting.body.contains(LINK_PREFIX), "the message is intact");

    let sink = SmtpSink::start_on(port).await;
    let mail = sink.wait_for(to("ops@acme.test"), PATIENCE).await;
    assert!(mail.body().contains(LINK_PREFIX));
    let row = wait_for_row(&app, "ops@acme.test", |r| r.delivered).await;
    assert_eq!(row.body, REDACTED_BODY);
    assert_eq!(row.attempts, 1);
    // Delivered rows are never sent again: this is the only copy, ever.
    assert_eq!(sink.mails(), [mail]);
}

/// Waits until the message to `recipient` was tried and rescheduled after `since`
/// (a previous `next_attempt_at`); returns its new `next_attempt_at`.
async fn wait_for_retry(
    app: &TestApp,
    recipient: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> chrono::DateTime<chrono::Utc> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let scheduled: (Option<String>, chrono::DateTime<chrono::Utc>) = app
            .db
            .query_one(
                "SELECT last_error, next_attempt_at FROM outbox_messages WHERE recipient = $1",
                &[&recipient],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        match scheduled {
            (Some(_), next) if since.is_none_or(|since| next > since) => return next,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry of {recipient} was scheduled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_deliver_each_message_exactly_once() {
    let sink = SmtpSink::start().await;
    let flags = smtp_flags(sink.port(), &[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = TestApp::spawn_with(&flags).await;
    let _second = TestApp::spawn_on(&first.db_url, &flags).await;

    // Queued at once, so both replicas find them due together.
    let ids: Vec<Uuid> = first
        .db
        .query(
            "INSERT INTO outbox_messages (id, recipient, subject, body) \
             SELECT gen_random_uuid(), 'user' || n || '@acme.test', 'Hello', 'message ' || n \
             FROM generate_series(1, 40) AS n RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while first
        .count(
            "SELECT 1 FROM outbox_messages WHERE delivered_at IS NULL",
            &[],
        )
        .await
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut copies: HashMap<String, usize> = HashMap::new();
    for mail in sink.mails() {
        *copies.entry(mail.message_id().unwrap()).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "sent more than once: {duplicated:?}");
    let missing: Vec<_> = ids
        .iter()
        .map(|&id| orgd::mail::message_id(id))
        .filter(|id| !copies.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}");
    assert_eq!(copies.len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_fails_the_message_at_once() {
    let sink = SmtpSink::start().await;
    sink.reject_recipient("gone@acme.test");
    let app = spawn_mailing_to(sink.port(), &["--outbox-max-attempts", "1000"]).await;
    queue(&app.db, "gone@acme.test").await;
    queue(&app.db, "ops@acme.test").await;

    let failed = wait_for_row(&app, "gone@acme.test", |r| r.failed).await;
    assert_eq!(failed.attempts, 1, "a 5xx is not retried");
    let error = failed.last_error.unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(!failed.delivered);
    assert_eq!(failed.body, REDACTED_FAILED_BODY);

    sink.wait_for(to("ops@acme.test"), PATIENCE).await;
    let delivered = wait_for_row(&app, "ops@acme.test", |r| r.delivered).await;
    assert_eq!(delivered.attempts, 1);
    assert!(
        sink.mails()
            .iter()
            .all(|m| !m.to.contains(&"gone@acme.test".into())),
        "the refused recipient got nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_is_given_up_after_the_maximum_attempts() {
    let sink = SmtpSink::start().await;
    sink.defer_recipient("ops@acme.test");
    let app = spawn_mailing_to(sink.port(), &["--outbox-max-attempts", "3"]).await;
    queue(&app.db, "ops@acme.test").await;
    queue(&app.db, "dev@acme.test").await;

    let failed = wait_for_row(&app, "ops@acme.test", |r| r.failed).await;
    assert_eq!(failed.attempts, 3, "three temporary refusals");
    wait_for_row(&app, "dev@acme.test", |r| r.delivered).await;
    assert!(sink.mails().iter().all(|m| m.to == ["dev@acme.test"]));
    assert!(!failed.delivered);
    assert!(failed.last_error.is_some());
    assert_eq!(failed.body, REDACTED_FAILED_BODY);
}

#[tokio::test(flavor = "multi_thread")]
async fn required_starttls_never_falls_back_to_plaintext() {
    let sink = SmtpSink::start().await; // offers no STARTTLS
    let port = sink.port().to_string();
    let app = TestApp::spawn_with(&[
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "starttls",
        "--outbox-interval",
        "100ms",
        "--outbox-retry-base",
        "200ms",
        "--outbox-max-attempts",
        "2",
    ])
    .await;
    queue(&app.db, "ops@acme.test").await;

    // A server without STARTTLS is treated as unavailable: the message waits
    // (misconfiguration is not the message's fault) and is never sent in clear.
    let first_try = wait_for_retry(&app, "ops@acme.test", None).await;
    wait_for_retry(&app, "ops@acme.test", Some(first_try)).await;
    let waiting = row(&app, "ops@acme.test").await;
    assert!(!waiting.delivered && !waiting.failed, "{waiting:?}");
    assert_eq!(waiting.attempts, 0);
    assert_eq!(sink.mails(), []);
}

// Delivery rounds driven directly through the store, as the worker drives them:
// no orgd runs, so nothing else delivers.

const LEASE: Duration = Duration::from_secs(60);
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base: Duration::from_secs(60),
    max: Duration::from_secs(600),
};

/// A database of its own with a client for fixtures and a store for the rounds
/// (a store stands for one replica).
async fn outbox_database() -> (String, tokio_postgres::Client, Store) {
    let url = fresh_database().await;
    let db = sql_client(&url).await;
    (url.clone(), db, store_on(&url).await)
}

async fn store_on(url: &str) -> Store {
    Store::connect(
        &orgd::store::DbConfig::unlimited(url, "outbox-test"),
        2,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// A mailer for the sink on `port`, configured as `orgd serve` would configure it.
fn mailer_to(port: u16) -> Mailer {
    let port = port.to_string();
    let argv = [
        "orgd",
        "serve",
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
    ];
    let Command::Serve(args) = Cli::parse_from(argv).command else {
        unreachable!("argv starts with serve")
    };
    Mailer::from_config(&args.mail).unwrap()
}

/// How many copies of each message (by `Message-ID`) the sink received.
fn copies(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for mail in sink.mails() {
        *copies.entry(mail.message_id().unwrap()).or_default() += 1;
    }
    copies
}

fn copies_of(sink: &SmtpSink, id: Uuid) -> usize {
    copies(sink)
        .get(&orgd::mail::message_id(id))
        .copied()
        .unwrap_or(0)
}

fn sent(count: usize) -> Delivery {
    Delivery {
        sent: count,
        ..Delivery::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_that_stops_before_recording_resends_only_what_it_claimed() {
    let sink = SmtpSink::start().await;
    let mailer = mailer_to(sink.port());
    let (_, db, store) = outbox_database().await;
    let mut queued = Vec::new();
    for n in 0..5 {
        queued.push(queue(&db, &format!("user{n}@acme.test")).await);
    }

    // A round claims three and sends them, then stops before recording
    // anything: orgd died, or the database went away.
    let stopped = store.claim_outbox(3, LEASE).await.unwrap();
    let claimed: Vec<Uuid> = stopped.messages.iter().map(|m| m.id).collect();
    assert_eq!(claimed.len(), 3);
    for message in &stopped.messages {
        stopped.send(&mailer, message).await.unwrap();
    }
    let leased = db
        .query_one(
            "SELECT count(*) FROM outbox_messages WHERE lease_id = $1 \
             AND leased_until > now() + $2 * interval '1 second' - interval '30 seconds' \
             AND delivered_at IS NULL",
            &[&stopped.lease_id, &(LEASE.as_secs_f64())],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(leased, 3, "the claim holds its messages for the lease");

    // While the lease holds, other rounds send only the other two.
    let round = store
        .deliver_outbox(&mailer, &RETRY, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(round, sent(2));
    assert!(queued.iter().all(|&id| copies_of(&sink, id) == 1));

    // The lease runs out (moved back rather than waited for): the claimed
    // three are due again, and only they.
    db.execute(
        "UPDATE outbox_messages SET leased_until = now() - interval '1 second' WHERE lease_id = $1",
        &[&stopped.lease_id],
    )
    .await
    .unwrap();
    let again = store.claim_outbox(10, LEASE).await.unwrap();
    let mut reclaimed: Vec<Uuid> = again.messages.iter().map(|m| m.id).collect();
    reclaimed.sort();
    let mut expected = claimed.clone();
    expected.sort();
    assert_eq!(reclaimed, expected);

    // Should the stopped round come back, its outcome no longer counts.
    let stale = store
        .record_outcome(
            &stopped,
            &stopped.messages[0],
            Err(SendError::Permanent("550 too late".into())),
            &RETRY,
        )
        .await
        .unwrap();
    assert_eq!(stale, Recorded::LeaseLost);

    for message in &again.messages {
        let outcome = again.send(&mailer, message).await;
        let recorded = store
            .record_outcome(&again, message, outcome, &RETRY)
            .await
            .unwrap();
        assert_eq!(recorded, Recorded::Sent);
    }
    for &id in &queued {
        let expected = if claimed.contains(&id) { 2 } else { 1 };
        assert_eq!(copies_of(&sink, id), expected, "copies of {id}");
    }
    let done = db
        .query_one(
            "SELECT count(*) FROM outbox_messages WHERE delivered_at IS NOT NULL \
             AND lease_id IS NULL AND leased_until IS NULL AND attempts = 1 AND body = $1",
            &[&REDACTED_BODY],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(done, 5, "all delivered, leases ended, bodies redacted");
    assert_eq!(
        store
            .deliver_outbox(&mailer, &RETRY, LEASE, 10)
            .await
            .unwrap(),
        Delivery::default()
    );
    assert_eq!(sink.mails().len(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rounds_never_send_a_message_twice() {
    let sink = SmtpSink::start().await;
    let (url, db, first) = outbox_database().await;
    let second = store_on(&url).await;
    for n in 0..30 {
        queue(&db, &format!("user{n}@acme.test")).await;
    }

    // Both replicas' rounds are in the middle of sending at once.
    let hold = sink.hold_messages().await;
    let round = |store: Store| {
        let mailer = mailer_to(sink.port());
        tokio::spawn(async move { store.deliver_outbox(&mailer, &RETRY, LEASE, 10).await })
    };
    let (a, b) = (round(first.clone()), round(second));
    sink.wait_for_held(2, PATIENCE).await;
    drop(hold);
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!((a, b), (sent(10), sent(10)));
    let rest = first
        .deliver_outbox(&mailer_to(sink.port()), &RETRY, LEASE, 100)
        .await
        .unwrap();
    assert_eq!(rest, sent(10));

    let copies = copies(&sink);
    assert_eq!(copies.len(), 30);
    assert!(copies.values().all(|&n| n == 1), "{copies:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_row_lock_or_transaction_is_held_while_sending() {
    let sink = SmtpSink::start().await;
    let (_, db, store) = outbox_database().await;
    let id = queue(&db, "ops@acme.test").await;

    let hold = sink.hold_messages().await;
    let mailer = mailer_to(sink.port());
    let round = tokio::spawn(async move { store.deliver_outbox(&mailer, &RETRY, LEASE, 10).await });
    sink.wait_for_held(1, PATIENCE).await;

    // Mid-exchange, the row can be locked at once, and no session of this
    // database is inside a transaction.
    let locked = db
        .query(
            "SELECT lease_id FROM outbox_messages WHERE id = $1 FOR UPDATE NOWAIT",
            &[&id],
        )
        .await
        .expect("the message's row is not locked while it is sent");
    assert!(
        locked[0].get::<_, Option<Uuid>>(0).is_some(),
        "it is leased"
    );
    let in_transaction = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND xact_start IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        in_transaction, 0,
        "a transaction is open during the SMTP exchange"
    );

    drop(hold);
    assert_eq!(round.await.unwrap().unwrap(), sent(1));
    assert_eq!(copies_of(&sink, id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_that_outlasts_its_lease_is_cut_off() {
    let sink = SmtpSink::start().await;
    let (_, db, store) = outbox_database().await;
    queue(&db, "ops@acme.test").await;

    // Past its lease another round may send the message: this one stops
    // waiting, and the server counts as unavailable (no attempt used up).
    let _hold = sink.hold_messages().await;
    let round = store
        .deliver_outbox(
            &mailer_to(sink.port()),
            &RETRY,
            Duration::from_millis(300),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        round,
        Delivery {
            deferred: 1,
            ..Delivery::default()
        }
    );
    let (attempts, error, leased): (i32, String, bool) = db
        .query_one(
            "SELECT attempts, last_error, lease_id IS NOT NULL FROM outbox_messages",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .unwrap();
    assert_eq!((attempts, leased), (0, false));
    assert!(error.contains("lease"), "{error}");
}
