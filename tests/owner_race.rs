//! The owner invariant under concurrency, across two orgd replicas sharing one
//! database: two owners who demote (or abandon) each other at the same moment
//! always leave exactly one owner behind.

mod common;

use std::sync::Arc;

use common::*;
use orgd::pb;
use prost_types::FieldMask;
use tokio::sync::Barrier;
use tonic::Code;

const ROUNDS: usize = 25;

fn demote(member: &str) -> pb::UpdateMemberRequest {
    pb::UpdateMemberRequest {
        member: Some(pb::Member {
            name: member.into(),
            roles: vec!["admin".into()],
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["roles".into()],
        }),
    }
}

fn promote(member: &str) -> pb::UpdateMemberRequest {
    let mut request = demote(member);
    request.member.as_mut().unwrap().roles = vec!["owner".into()];
    request
}

/// The refusal the loser of a race gets: the last-owner rule, or (when the winner
/// demoted it first) the rule that an admin cannot change an owner.
fn lost_the_race(result: Result<(), tonic::Status>) {
    let status = result.expect_err("both calls succeeded");
    assert!(
        matches!(
            status.code(),
            Code::FailedPrecondition | Code::PermissionDenied
        ),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_owners_demoting_each_other_leave_exactly_one_owner() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(&first.db_url, &[]).await;
    let org = create_org(&mut first.orgs_as("alice").await, "Contested").await;
    let (alice_id, bob_id) = (first.user_id("alice").await, second.user_id("bob").await);
    first.set_member(&org.uid, &bob_id, &["owner"], &[]).await;
    let alice_member = format!("{}/members/{alice_id}", org.name);
    let bob_member = format!("{}/members/{bob_id}", org.name);
    // Alice talks to one replica, bob to the other.
    let mut alice = first.members_as("alice").await;
    let mut bob = second.members_as("bob").await;
    let org_id: uuid::Uuid = org.uid.parse().unwrap();
    let owners = || async {
        first
            .count(
                "SELECT 1 FROM membership_roles WHERE org_id = $1 AND role = 'owner'",
                &[&org_id],
            )
            .await
    };

    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let (alice_call, bob_call) = (alice.clone(), bob.clone());
        let (demote_bob, demote_alice) = (demote(&bob_member), demote(&alice_member));
        let by_alice = tokio::spawn(async move {
            let mut client = alice_call;
            a.wait().await;
            client.update_member(demote_bob).await.map(|_| ())
        });
        let by_bob = tokio::spawn(async move {
            let mut client = bob_call;
            b.wait().await;
            client.update_member(demote_alice).await.map(|_| ())
        });
        let (by_alice, by_bob) = (by_alice.await.unwrap(), by_bob.await.unwrap());
        assert_eq!(
            owners().await,
            1,
            "round {round}: exactly one owner remains"
        );
        // Exactly one demotion went through; the survivor restores the other.
        match (by_alice.is_ok(), by_bob.is_ok()) {
            (true, false) => {
                lost_the_race(by_bob);
                alice.update_member(promote(&bob_member)).await.unwrap();
            }
            (false, true) => {
                lost_the_race(by_alice);
                bob.update_member(promote(&alice_member)).await.unwrap();
            }
            outcome => panic!("round {round}: expected exactly one success, got {outcome:?}"),
        }
        assert_eq!(owners().await, 2);
    }

    // Both owners leaving at once: one leaves, the other stays owner.
    let barrier = Arc::new(Barrier::new(2));
    let leave = |client: MemberClient, barrier: Arc<Barrier>| {
        let organization = org.name.clone();
        tokio::spawn(async move {
            let mut client = client;
            barrier.wait().await;
            client
                .leave_organization(pb::LeaveOrganizationRequest { organization })
                .await
                .map(|_| ())
        })
    };
    let by_alice = leave(alice.clone(), barrier.clone());
    let by_bob = leave(bob.clone(), barrier);
    let results = [by_alice.await.unwrap(), by_bob.await.unwrap()];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let refusal = results.into_iter().find(Result::is_err).unwrap();
    expect_code(refusal, Code::FailedPrecondition);
    assert_eq!(owners().await, 1);
}

/// The database's own backstop, without orgd's row lock in front of it: two
/// transactions each remove one owner's role and commit at the same moment, at
/// every isolation level a writer might use.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_keeps_an_owner_whatever_the_isolation_level() {
    let app = TestApp::spawn().await;
    for isolation in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        let org = create_org(&mut app.orgs_as("alice").await, isolation).await;
        let (alice, bob) = (app.user_id("alice").await, app.user_id("bob").await);
        app.set_member(&org.uid, &bob, &["owner"], &[]).await;
        let org_id: uuid::Uuid = org.uid.parse().unwrap();
        let mut writers = Vec::new();
        for user in [&alice, &bob] {
            let client = sql_client(&app.db_url).await;
            let user: uuid::Uuid = user.parse().unwrap();
            client
                .batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}"))
                .await
                .unwrap();
            client
                .execute(
                    "DELETE FROM membership_roles WHERE org_id = $1 AND user_id = $2 AND role = 'owner'",
                    &[&org_id, &user],
                )
                .await
                .unwrap();
            writers.push(client);
        }
        let commits: Vec<_> = writers
            .into_iter()
            .map(|client| tokio::spawn(async move { client.batch_execute("COMMIT").await }))
            .collect();
        let mut committed = 0;
        for commit in commits {
            committed += usize::from(commit.await.unwrap().is_ok());
        }
        assert_eq!(committed, 1, "{isolation}: exactly one removal commits");
        let owners = app
            .count(
                "SELECT 1 FROM membership_roles WHERE org_id = $1 AND role = 'owner'",
                &[&org_id],
            )
            .await;
        assert_eq!(owners, 1, "{isolation}: one owner remains");
    }
}
