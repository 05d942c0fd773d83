//! How fast the change feed delivers under load (issue 21): a backend service
//! follows WatchEvents during the mixed workload's half-rate run, noting when
//! each write's event arrives; afterwards each arrival is set against the
//! commit time of the transaction that wrote the event
//! (`pg_xact_commit_timestamp`: the bench's cluster runs with
//! `track_commit_timestamp = on`). Both clocks are this machine's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use diesel::sql_types::{Array, Double, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use orgd::pb::{self, event_service_client::EventServiceClient, watch_events_response::Kind};
use orgd::store::Store;
use scoped_futures::ScopedFutureExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use uuid::Uuid;

/// The events of the mixed load's writes.
const WRITE_EVENTS: [&str; 2] = ["orgd.organization.updated.v1", "orgd.member.updated.v1"];

/// A WatchEvents stream being followed.
pub struct FeedWatch {
    stop: oneshot::Sender<()>,
    arrivals: JoinHandle<anyhow::Result<Vec<(Uuid, f64)>>>,
}

/// Commit-to-arrival latencies of the events seen.
pub struct FeedLatency {
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn unix_us(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e6
}

impl FeedWatch {
    /// Opens the stream (from now) and follows it on a task of its own.
    pub async fn start(channel: Channel, bearer: MetadataValue<Ascii>) -> anyhow::Result<Self> {
        let mut client = EventServiceClient::new(channel);
        let mut request = tonic::Request::new(pb::WatchEventsRequest {
            filter: Some(pb::EventFilter {
                type_prefixes: WRITE_EVENTS.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", bearer);
        let mut stream = client
            .watch_events(request)
            .await
            .context("opening WatchEvents")?
            .into_inner();
        let (stop, mut stopped) = oneshot::channel();
        let arrivals = tokio::spawn(async move {
            let mut arrivals = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(arrivals),
                    message = stream.message() => match message.context("WatchEvents failed")? {
                        Some(pb::WatchEventsResponse { kind: Some(Kind::Event(event)) }) => {
                            let at = unix_us(SystemTime::now());
                            let id = event.cloud_event.context("an event without its envelope")?.id;
                            arrivals.push((id.parse()?, at));
                        }
                        Some(_) => {}
                        None => anyhow::bail!("WatchEvents ended"),
                    },
                }
            }
        });
        Ok(FeedWatch { stop, arrivals })
    }

    /// Stops following and works out each event's latency from its commit.
    pub async fn finish(self, store: &Store) -> anyhow::Result<FeedLatency> {
        let _ = self.stop.send(());
        let arrivals = self.arrivals.await??;
        anyhow::ensure!(
            !arrivals.is_empty(),
            "no event arrived on the WatchEvents stream"
        );
        #[derive(diesel::QueryableByName)]
        struct Committed {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
            #[diesel(sql_type = Double)]
            commit_us: f64,
        }
        let ids: Vec<Uuid> = arrivals.iter().map(|(id, _)| *id).collect();
        let committed: Vec<Committed> = store
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xid(txid)))::float8 * 1e6
                                AS commit_us
                         FROM events WHERE id = ANY($1)",
                    )
                    .bind::<Array<SqlUuid>, _>(ids)
                    .load(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        let commits: std::collections::HashMap<Uuid, f64> =
            committed.into_iter().map(|c| (c.id, c.commit_us)).collect();
        let mut latencies_ms: Vec<f64> = arrivals
            .iter()
            .filter_map(|(id, at)| commits.get(id).map(|commit| (at - commit) / 1000.0))
            .collect();
        anyhow::ensure!(
            latencies_ms.len() == arrivals.len(),
            "{} of {} events had no commit time",
            arrivals.len() - latencies_ms.len(),
            arrivals.len()
        );
        latencies_ms.sort_by(f64::total_cmp);
        let at = |q: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * q).round() as usize];
        Ok(FeedLatency {
            events: latencies_ms.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// How long after the half-rate run the stream is followed, so that the last
/// writes' events arrive before it stops.
pub const SETTLE: Duration = Duration::from_millis(500);
