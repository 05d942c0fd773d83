//! Calls in flight at shutdown are drained, not cut; a call abandoned at its
//! deadline leaves nothing half-written.

mod common;

use std::time::Duration;

use common::{TestApp, create_org, lock_org_row};
use orgd::pb;
use prost_types::FieldMask;
use tonic_health::pb::health_check_response::ServingStatus;

fn rename(org: &pb::Organization, display_name: &str) -> pb::UpdateOrganizationRequest {
    let mut changed = org.clone();
    changed.display_name = display_name.into();
    pb::UpdateOrganizationRequest {
        organization: Some(changed),
        update_mask: Some(FieldMask {
            paths: vec!["display_name".into()],
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_in_flight_calls() {
    // The drained update waits on a row lock for as long as the test takes.
    let mut app =
        TestApp::spawn_with(&["--shutdown-grace", "20s", "--db-lock-timeout", "60s"]).await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    // A load balancer watching health must see NOT_SERVING for the whole drain.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "orgd.v1.OrgService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let locker = lock_org_row(&app, &org).await;
    let in_flight =
        tokio::spawn(async move { alice.update_organization(rename(&org, "Drained")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the update waits for the row lock"
    );

    let stopped = app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopped.is_finished(), "orgd waits for the in-flight call");
    let refused = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "no new connections while draining");
    assert_eq!(
        health.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    // Then the stream ends, since graceful shutdown waits for open streams.
    let ended = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("the watch ends");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "health changed again while draining: {ended:?}"
    );

    locker.batch_execute("COMMIT").await.unwrap();
    let updated = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completes")
        .into_inner();
    assert_eq!(updated.display_name, "Drained");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("orgd stops once drained")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_deadline_writes_nothing() {
    let app = TestApp::spawn().await;
    let mut alice = app.orgs_as("alice").await;
    let org = create_org(&mut alice, "Acme").await;

    let locker = lock_org_row(&app, &org).await;
    let mut request = tonic::Request::new(rename(&org, "Too late"));
    request.set_timeout(Duration::from_millis(300));
    let status = alice
        .update_organization(request)
        .await
        .expect_err("the deadline passes while waiting");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    locker.batch_execute("COMMIT").await.unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = alice
        .get_organization(pb::GetOrganizationRequest {
            name: org.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.display_name, "Acme");
    assert_eq!(now.etag, org.etag);
    assert_eq!(
        app.count(
            "SELECT 1 FROM activity WHERE action = 'organization.update'",
            &[]
        )
        .await,
        0
    );
    // The abandoned transaction's connection was not returned in a broken state.
    for _ in 0..8 {
        alice
            .get_organization(pb::GetOrganizationRequest {
                name: org.name.clone(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_together_migrate_once() {
    let url = common::new_database("template0").await;
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { orgd::store::run_migrations(&url).await })
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap()
            .expect("every replica's migration run succeeds");
    }
    let db = common::sql_client(&url).await;
    let applied: i64 = db
        .query_one("SELECT count(*) FROM __diesel_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, shipped);
}
