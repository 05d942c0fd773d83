//! grpc.health.v1 as the database makes it: SERVING while PostgreSQL answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::DbProbe;
use crate::workers;

const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Health is reported for the whole server ("") and for each orgd service.
pub(super) const HEALTH_SERVICES: [&str; 10] = [
    "",
    "orgd.v1.OrgService",
    "orgd.v1.MemberService",
    "orgd.v1.BillingService",
    "orgd.v1.ActivityService",
    "orgd.v1.TokenService",
    "orgd.v1.ResourceService",
    "orgd.v1.PermissionService",
    "orgd.v1.EventService",
    "orgd.v1.WebhookService",
];

/// Reports SERVING only while the database answers, asked on a connection of
/// the probe's own (calls filling the pool do not make orgd look down). A Health.Watch stream
/// gets a message whenever a status is set, so a status is set only when it
/// changes: a watcher sees changes, not every probe.
#[derive(Clone)]
pub(super) struct HealthProbe {
    db: Arc<DbProbe>,
    health: HealthReporter,
    last: Arc<std::sync::Mutex<Option<ServingStatus>>>,
}

impl HealthProbe {
    pub(super) fn new(db: DbProbe, health: HealthReporter) -> Self {
        HealthProbe {
            db: Arc::new(db),
            health,
            last: Arc::default(),
        }
    }

    pub(super) async fn report(&self) {
        let answered = tokio::time::timeout(HEALTH_PROBE_INTERVAL, self.db.answers()).await;
        let status = if answered == Ok(true) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let previous = self
            .last
            .lock()
            .expect("never poisoned: nothing panics holding it")
            .replace(status);
        if previous == Some(status) {
            return;
        }
        for service in HEALTH_SERVICES {
            self.health.set_service_status(service, status).await;
        }
    }

    /// Reports every `HEALTH_PROBE_INTERVAL` until `stop`.
    pub(super) fn spawn(self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        workers::every(HEALTH_PROBE_INTERVAL, stop, move || {
            let probe = self.clone();
            async move { probe.report().await }
        })
    }
}
