//! The change feed (EventService): ordered and gap-free even when writers
//! commit out of order, read by services for every organization and by
//! members for their own, followed by WatchEvents, resumable across an orgd
//! restart, and trimmed by retention.

mod common;

use std::time::Duration;

use common::*;
use orgd::pb::{self, watch_events_response::Kind};
use tonic::Code;

fn after(cursor: &str) -> pb::ListEventsRequest {
    pb::ListEventsRequest {
        after: cursor.into(),
        page_size: 1000,
        ..Default::default()
    }
}

fn event_type(event: &pb::Event) -> &str {
    &event.cloud_event.as_ref().unwrap().r#type
}

fn attribute(event: &pb::Event, name: &str) -> String {
    use pb::cloud_event::cloud_event_attribute_value::Attr;
    match event
        .cloud_event
        .as_ref()
        .unwrap()
        .attributes
        .get(name)
        .and_then(|value| value.attr.clone())
    {
        Some(Attr::CeString(text)) => text,
        other => panic!("attribute {name}: {other:?}"),
    }
}

/// Reads on from `cursor` until `done` holds for what was read (other tests'
/// transactions in the shared cluster can hold the feed back for a moment).
async fn read_until(
    feed: &mut EventClient,
    cursor: &str,
    done: impl Fn(&[pb::Event]) -> bool,
) -> Vec<pb::Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut cursor = cursor.to_owned();
    let mut read = Vec::new();
    while !done(&read) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed did not deliver in time: {read:?}"
        );
        let page = feed.list_events(after(&cursor)).await.unwrap().into_inner();
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        read.extend(page.events);
        cursor = page.next_cursor;
    }
    read
}

fn assert_in_feed_order(events: &[pb::Event]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].cursor < pair[1].cursor,
            "cursors out of order: {} then {}",
            pair[0].cursor,
            pair[1].cursor
        );
    }
}

/// The next message of a WatchEvents stream, within a few seconds.
async fn next(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) -> Kind {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("the stream goes on")
        .expect("a message")
        .kind
        .expect("an event or a checkpoint")
}

/// The next event of the stream, skipping checkpoints.
async fn next_event(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) -> pb::Event {
    loop {
        if let Kind::Event(event) = next(stream).await {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_transaction_commits_late_is_not_skipped() {
    let app = TestApp::spawn().await;
    let mut feed = app.events_as_service().await;
    let mut orgs = app.orgs_as("alice").await;
    let early = create_org(&mut orgs, "Early").await;
    let read = read_until(&mut feed, "", |events| {
        events.iter().any(|e| attribute(e, "subject") == early.name)
    })
    .await;
    let cursor = read.last().unwrap().cursor.clone();

    // A writer takes its place in the feed and keeps its transaction open...
    let slow = sql_client(&app.db_url).await;
    slow.batch_execute(
        "BEGIN;
         INSERT INTO events (id, type, subject, actor, request_id, data)
         VALUES (gen_random_uuid(), 'orgd.organization.updated.v1', 'organizations/slow',
                 'system', 'slow-writer', '{}')",
    )
    .await
    .unwrap();
    // ...while later writers commit.
    let later = [
        create_org(&mut orgs, "Later A").await,
        create_org(&mut orgs, "Later B").await,
    ];
    // Handing out the later events now would move a reader's cursor past the
    // slow one: the feed holds them back until it commits.
    let meanwhile = feed.list_events(after(&cursor)).await.unwrap().into_inner();
    assert!(meanwhile.events.is_empty(), "{:?}", meanwhile.events);
    slow.batch_execute("COMMIT").await.unwrap();

    // A reader that resumes from the cursor it was given gets all three, the
    // slow one first (its place was taken first), none skipped.
    let subjects = |events: &[pb::Event]| -> Vec<String> {
        events.iter().map(|e| attribute(e, "subject")).collect()
    };
    let wanted = ["organizations/slow", &later[0].name, &later[1].name];
    let resumed = read_until(&mut feed, &meanwhile.next_cursor, |events| {
        let seen = subjects(events);
        wanted.iter().all(|w| seen.iter().any(|s| s == w))
    })
    .await;
    assert_in_feed_order(&resumed);
    let order: Vec<String> = subjects(&resumed)
        .into_iter()
        .filter(|s| wanted.contains(&s.as_str()))
        .collect();
    assert_eq!(order, wanted);
    // The same as reading on from before the slow writer began.
    let again = read_until(&mut feed, &cursor, |events| events.len() >= resumed.len()).await;
    assert_eq!(
        again.iter().map(|e| &e.cursor).collect::<Vec<_>>()[..resumed.len()],
        resumed.iter().map(|e| &e.cursor).collect::<Vec<_>>()[..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn members_read_their_own_organization_s_feed_and_services_any() {
    let app = TestApp::spawn().await;
    let acme = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let other = create_org(&mut app.orgs_as("bob").await, "Other").await;
    app.feed_caught_up().await;
    let mut alice = app.events(&user_token("alice")).await;

    let ours = alice
        .list_events(pb::ListEventsRequest {
            organization: acme.name.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ours.events.is_empty());
    for event in &ours.events {
        assert_eq!(
            attribute(event, "organization"),
            format!("organizations/{}", acme.uid)
        );
        let cloud = event.cloud_event.as_ref().unwrap();
        assert_eq!(
            (cloud.spec_version.as_str(), cloud.source.as_str()),
            ("1.0", "orgd")
        );
        let Some(pb::cloud_event::Data::TextData(json)) = &cloud.data else {
            panic!("JSON data: {cloud:?}");
        };
        serde_json::from_str::<serde_json::Value>(json).unwrap();
    }
    assert_eq!(event_type(&ours.events[0]), "orgd.organization.created.v1");

    // Another organization's feed looks missing; a member names theirs.
    let foreign = alice
        .list_events(pb::ListEventsRequest {
            organization: other.name.clone(),
            ..Default::default()
        })
        .await;
    expect_code(foreign, Code::NotFound);
    let unnamed = alice.list_events(pb::ListEventsRequest::default()).await;
    assert_eq!(
        violated_field(&expect_code(unnamed, Code::InvalidArgument)),
        "organization"
    );
    let widened = alice
        .list_events(pb::ListEventsRequest {
            organization: acme.name.clone(),
            filter: Some(pb::EventFilter {
                organizations: vec![other.name.clone()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(
        violated_field(&expect_code(widened, Code::InvalidArgument)),
        "filter.organizations"
    );

    // Bad cursors and filters name their field.
    let mut service = app.events_as_service().await;
    let garbage = service.list_events(after("not-a-cursor")).await;
    assert_eq!(
        violated_field(&expect_code(garbage, Code::InvalidArgument)),
        "after"
    );
    let misspelt = service
        .list_events(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                type_prefixes: vec!["orgd.membr".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let status = expect_code(misspelt, Code::InvalidArgument);
    assert_eq!(violated_field(&status), "filter.type_prefixes");
    assert!(
        status.message().contains("orgd.member.removed.v1"),
        "{}",
        status.message()
    );

    // A service reads any organizations', filtered by type.
    let both = service
        .list_events(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                organizations: vec![acme.name.clone(), format!("organizations/{}", other.slug)],
                type_prefixes: vec!["orgd.organization.created".into()],
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut created: Vec<String> = both
        .events
        .iter()
        .map(|e| attribute(e, "subject"))
        .collect();
    created.sort();
    let mut expected = vec![acme.name.clone(), other.name.clone()];
    expected.sort();
    assert_eq!(created, expected);
    assert_in_feed_order(&both.events);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sends_events_as_they_commit_and_checkpoints_when_idle() {
    // A stream outlives --call-timeout, which bounds unary calls only.
    let app = TestApp::spawn_with(&[
        "--watch-checkpoint-interval",
        "300ms",
        "--call-timeout",
        "1s",
    ])
    .await;
    let opened = tokio::time::Instant::now();
    let mut feed = app.events_as_service().await;
    let mut stream = feed
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // From now: caught up at once, so a checkpoint first.
    let Kind::Checkpoint(start) = next(&mut stream).await else {
        panic!("a checkpoint first");
    };
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let event = loop {
        let event = next_event(&mut stream).await;
        if attribute(&event, "subject") == org.name {
            break event;
        }
    };
    assert_eq!(event_type(&event), "orgd.organization.created.v1");
    assert!(event.cursor > start.cursor);
    // Idle again: a checkpoint at or past the event.
    let checkpoint = loop {
        match next(&mut stream).await {
            Kind::Checkpoint(checkpoint) => break checkpoint,
            Kind::Event(_) => {}
        }
    };
    assert!(checkpoint.cursor >= event.cursor, "{checkpoint:?}");
    while opened.elapsed() < Duration::from_millis(1500) {
        let Kind::Checkpoint(later) = next(&mut stream).await else {
            continue;
        };
        assert!(later.cursor >= checkpoint.cursor, "{later:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_across_an_orgd_restart_without_a_gap() {
    let db = fresh_database().await;
    let mut first = TestApp::spawn_on(&db, &[]).await;
    let only_orgs = || pb::EventFilter {
        type_prefixes: vec!["orgd.organization.".into()],
        ..Default::default()
    };
    let mut stream = first
        .events_as_service()
        .await
        .watch_events(pb::WatchEventsRequest {
            filter: Some(only_orgs()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut orgs = first.orgs_as("alice").await;
    let a = create_org(&mut orgs, "Before").await;
    // (Alice's personal organization, made on her first call, comes first.)
    let seen = loop {
        let event = next_event(&mut stream).await;
        if attribute(&event, "subject") == a.name {
            break event;
        }
    };

    // orgd stops: the stream ends UNAVAILABLE, saying to resume.
    let stopped = first.begin_shutdown();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("resume"), "{}", end.message());
    stopped.await.unwrap().unwrap();

    // Changes go on (through another replica) before the consumer is back.
    let second = TestApp::spawn_on(&db, &[]).await;
    let mut orgs = second.orgs_as("alice").await;
    let b = create_org(&mut orgs, "During").await;
    let c = create_org(&mut orgs, "After").await;
    let mut resumed = second
        .events_as_service()
        .await
        .watch_events(pb::WatchEventsRequest {
            after: seen.cursor.clone(),
            filter: Some(only_orgs()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next_two = [
        next_event(&mut resumed).await,
        next_event(&mut resumed).await,
    ];
    assert_eq!(
        next_two
            .iter()
            .map(|e| attribute(e, "subject"))
            .collect::<Vec<_>>(),
        [b.name, c.name]
    );
    assert!(seen.cursor < next_two[0].cursor && next_two[0].cursor < next_two[1].cursor);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_past_retention_go_and_older_cursors_are_out_of_range() {
    let app = TestApp::spawn_with(&["--event-retention", "1s", "--purge-interval", "200ms"]).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let mut feed = app.events_as_service().await;
    let read = read_until(&mut feed, "", |events| {
        events.iter().any(|e| attribute(e, "subject") == org.name)
    })
    .await;
    let last = read.last().unwrap().cursor.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.count("SELECT 1 FROM events", &[]).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "events not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Before what is kept: refused, naming where to read from.
    let before_all = format!("{:032x}", 1);
    let status = expect_code(feed.list_events(after(&before_all)).await, Code::OutOfRange);
    assert!(status.message().contains(&last), "{}", status.message());
    // From the oldest kept, or from the last cursor read: nothing is missing.
    for cursor in ["", last.as_str()] {
        let page = feed.list_events(after(cursor)).await.unwrap().into_inner();
        assert!(page.events.is_empty(), "{:?}", page.events);
        assert!(page.next_cursor.as_str() >= last.as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_s_expiry_is_an_event_recorded_once() {
    let flags = ["--purge-interval", "100ms"];
    let app = TestApp::spawn_with(&flags).await;
    let _replica = TestApp::spawn_on(&app.db_url, &flags).await;
    let org = create_org(&mut app.orgs_as("alice").await, "Acme").await;
    let invited = app
        .members_as("alice")
        .await
        .create_invitation(invitation(&org, "bob@example.com", &["developer"]))
        .await
        .unwrap()
        .into_inner();
    app.db
        .execute(
            "UPDATE invitations SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let mut feed = app.events_as_service().await;
    let expired = |events: &[pb::Event]| {
        events
            .iter()
            .filter(|e| event_type(e) == "orgd.invitation.expired.v1")
            .count()
    };
    let read = read_until(&mut feed, "", |events| expired(events) == 1).await;
    let event = read
        .iter()
        .find(|e| event_type(e) == "orgd.invitation.expired.v1")
        .unwrap();
    assert_eq!(attribute(event, "subject"), invited.name);
    assert_eq!(attribute(event, "actor"), "system");
    // Both replicas keep running their rounds: still one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = read_until(&mut feed, "", |events| !events.is_empty()).await;
    assert_eq!(expired(&all), 1);
}
