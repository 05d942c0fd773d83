//! Calls in flight when PostgreSQL ends their session, or dies altogether, fail
//! UNAVAILABLE (retryable), never INTERNAL: nothing was wrong with them. This
//! binary kills its own test cluster, so it holds this one test alone.

mod common;

use common::*;
use orgd::pb;
use tonic::Code;

/// Calls that rename `org`, each waiting for the row lock a test session holds.
const IN_FLIGHT: usize = 3;

type Call = tokio::task::JoinHandle<Result<pb::Organization, tonic::Status>>;

/// Starts `IN_FLIGHT` renames of `org` that wait on its row lock (taken by the
/// returned session), once PostgreSQL shows them all waiting.
async fn renames_waiting_on_a_lock(
    app: &TestApp,
    org: &pb::Organization,
) -> (tokio_postgres::Client, Vec<Call>) {
    let locker = lock_org_row(app, org).await;
    let mut calls = Vec::new();
    for n in 0..IN_FLIGHT {
        let mut alice = app.orgs_as("alice").await;
        let mut renamed = org.clone();
        renamed.display_name = format!("Renamed {n}");
        renamed.etag = String::new();
        calls.push(tokio::spawn(async move {
            alice
                .update_organization(update(renamed, &["display_name"]))
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    assert_eq!(
        app.lock_waiters(IN_FLIGHT as i64).await,
        IN_FLIGHT as i64,
        "the renames wait on the lock"
    );
    (locker, calls)
}

/// Asserts that each call ended UNAVAILABLE, saying to retry.
async fn assert_unavailable(calls: Vec<Call>, when: &str) {
    for call in calls {
        let status = call.await.unwrap().expect_err("the call lost its database");
        assert_eq!(status.code(), Code::Unavailable, "{when}: {status:?}");
        assert!(status.message().contains("retry"), "{when}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_in_flight_when_postgres_goes_away_are_unavailable() {
    let app = TestApp::spawn_with(&["--pool-size", "8"]).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;

    // PostgreSQL ends the sessions (a fast shutdown, a failover, an operator):
    // each gets FATAL "terminating connection due to administrator command".
    let (locker, calls) = renames_waiting_on_a_lock(&app, &org).await;
    let ended = app
        .db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ended, IN_FLIGHT as u64);
    assert_unavailable(calls, "sessions terminated").await;
    drop(locker);

    // The cluster dies at once (SIGQUIT: an immediate shutdown, as when its
    // host goes down): the sockets close under the calls without a word.
    let (_locker, calls) = renames_waiting_on_a_lock(&app, &org).await;
    let data_dir: String = app
        .db
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    let postmaster: i32 = std::fs::read_to_string(format!("{data_dir}/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: stopping the cluster this test process started.
    assert_eq!(unsafe { libc::kill(postmaster, libc::SIGQUIT) }, 0);
    assert_unavailable(calls, "PostgreSQL died").await;

    // And while it stays down, a new call is UNAVAILABLE too.
    let status = app
        .orgs_as("alice")
        .await
        .get_organization(get(&org.name))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
