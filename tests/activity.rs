//! ActivityService: the audit trail of an organization, newest first, filtered,
//! and paged stably while new activities arrive.

mod common;

use common::*;
use orgd::pb::{self, activity_service_client::ActivityServiceClient};
use prost_types::FieldMask;
use tonic::Code;

fn list(org: &pb::Organization) -> pb::ListActivitiesRequest {
    pb::ListActivitiesRequest {
        parent: org.name.clone(),
        ..Default::default()
    }
}

fn actions(response: &pb::ListActivitiesResponse) -> Vec<&str> {
    response
        .activities
        .iter()
        .map(|a| a.action.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trail_is_newest_first_filtered_and_stably_paged() {
    let app = TestApp::spawn().await;
    let mut orgs = app.orgs_as("alice").await;
    let org = create_org(&mut orgs, "Acme").await;
    let bob = join(&app, "alice", &org, "bob", &["developer"])
        .await
        .unwrap();
    app.members_as("alice")
        .await
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                name: bob.name.clone(),
                roles: vec!["admin".into()],
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["roles".into()],
            }),
        })
        .await
        .unwrap();
    let mut trail = ActivityServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("alice"))),
    );

    let all = trail
        .list_activities(list(&org))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        actions(&all),
        [
            "member.update",
            "invitation.accept",
            "invitation.create",
            "organization.create"
        ]
    );
    let promotion = &all.activities[0];
    assert_eq!(promotion.target, bob.name);
    assert!(promotion.actor.starts_with("users/"));
    assert!(!promotion.request_id.is_empty());
    let details = promotion.details.as_ref().unwrap();
    assert!(details.fields.contains_key("members"), "{details:?}");

    // Filters: action (exact or prefix), actor, time range.
    let invitations = trail
        .list_activities(pb::ListActivitiesRequest {
            action: "invitation.*".into(),
            ..list(&org)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        actions(&invitations),
        ["invitation.accept", "invitation.create"]
    );
    let by_bob = trail
        .list_activities(pb::ListActivitiesRequest {
            actor: bob.user.clone(),
            ..list(&org)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(actions(&by_bob), ["invitation.accept"]);
    let accepted_at = all.activities[1].create_time;
    let since_accept = trail
        .list_activities(pb::ListActivitiesRequest {
            start_time: accepted_at,
            ..list(&org)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        actions(&since_accept),
        ["member.update", "invitation.accept"]
    );
    let before_accept = trail
        .list_activities(pb::ListActivitiesRequest {
            end_time: accepted_at,
            ..list(&org)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        actions(&before_accept),
        ["invitation.create", "organization.create"]
    );
    for bad in ["Member.update", "member*", "*", "member.update;drop"] {
        expect_code(
            trail
                .list_activities(pb::ListActivitiesRequest {
                    action: bad.into(),
                    ..list(&org)
                })
                .await,
            Code::InvalidArgument,
        );
    }

    // Pages of one: new activities arriving meanwhile shift nothing.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = trail
            .list_activities(pb::ListActivitiesRequest {
                page_size: 1,
                page_token: token,
                ..list(&org)
            })
            .await
            .unwrap()
            .into_inner();
        walked.extend(page.activities.iter().map(|a| a.name.clone()));
        let mut change = org.clone();
        change.description = format!("edit {}", walked.len());
        change.etag = String::new();
        orgs.update_organization(update(change, &["description"]))
            .await
            .unwrap();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = all.activities.iter().map(|a| a.name.clone()).collect();
    assert_eq!(walked, expected);
    assert_eq!(
        trail
            .list_activities(list(&org))
            .await
            .unwrap()
            .into_inner()
            .activities
            .len(),
        expected.len() + 4,
        "the new activities are there, on the first page"
    );

    // Developers do not hold activity.read.
    let denied = ActivityServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token("carol"))),
    );
    join(&app, "alice", &org, "carol", &["developer"])
        .await
        .unwrap();
    expect_code(
        denied.clone().list_activities(list(&org)).await,
        Code::PermissionDenied,
    );
}
