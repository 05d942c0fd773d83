//! Assembles orgd: database, migrations, auth layer, background workers;
//! serves the router (`routes`) until the shutdown signal, then drains.

mod access_log;
mod connections;
mod health;
mod layers;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures_util::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::util::MapRequestLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{
    AuthLayer, JwtVerifier, MAX_BEARER_BYTES, OrgPolicy, Policy, PolicyTable, ServiceDirectory,
};
use crate::config::{ServeArgs, ServingLimits};
use crate::mail::Mailer;
use crate::pb;
use crate::postgres::{EmbeddedPostgres, Tuning};
use crate::store::events::EventWakeups;
use crate::store::outbox::RetryPolicy;
use crate::store::{self, DbConfig, DbProbe, Store};
use crate::webhooks::address::Destinations;
use crate::webhooks::delivery::Deliverer;
use crate::webhooks::sealing::Keyring;
use crate::webhooks::sender::Sender;
use crate::workers;
pub use connections::ConnectionInfo;
use connections::{ClientConnection, ConnectionLimits};
use health::{HEALTH_SERVICES, HealthProbe};
use routes::Services;

/// A bound, ready-to-run orgd.
pub struct App {
    args: ServeArgs,
    listener: TcpListener,
    /// How orgd connects: the pool's settings, for connections of its own.
    db: DbConfig,
    store: Store,
    db_probe: DbProbe,
    policies: PolicyTable,
    services: ServiceDirectory,
    verifier: JwtVerifier,
    mailer: Mailer,
    /// The key webhook signing secrets are sealed with.
    keyring: Arc<Keyring>,
}

impl App {
    /// Migrates the database, checks the policy table against it, sets up the
    /// mailer, and binds the listener.
    pub async fn build(args: ServeArgs, database_url: &str) -> anyhow::Result<Self> {
        let db = DbConfig {
            url: database_url.to_owned(),
            application_name: "orgd".to_owned(),
            statement_timeout: args.db.db_statement_timeout,
            lock_timeout: args.db.db_lock_timeout,
        };
        store::run_migrations(database_url).await?;
        let store = Store::connect(&db, args.db.pool_size, args.db.db_acquire_timeout)
            .await?
            .with_invoice_due(args.invoice_due);
        let locale = store.messages_locale().await?;
        let english = ["", "C", "POSIX"].contains(&locale.as_str())
            || locale.starts_with("C.")
            || locale.starts_with("en");
        if !english {
            tracing::warn!(
                lc_messages = %locale,
                "PostgreSQL reports errors in another language than English: lock and statement timeouts will read as internal errors and deadlocks will not be retried; set lc_messages = 'C' for orgd's database"
            );
        }
        let db_probe = DbProbe::new(&DbConfig {
            application_name: "orgd-health".to_owned(),
            ..db.clone()
        });
        let policies = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE)?;
        for (path, entry) in policies.methods() {
            if let Some(Policy::Org(OrgPolicy {
                permission,
                own_permission,
                ..
            })) = &entry.policy
            {
                for permission in permission.iter().chain(own_permission) {
                    anyhow::ensure!(
                        store.permission_exists(permission).await?,
                        "{path} requires permission '{permission}', which no migration defines"
                    );
                }
            }
        }
        let services = ServiceDirectory::new(&args.service_subjects, &args.service_permissions)?;
        for permission in services.limited_permissions() {
            anyhow::ensure!(
                store.permission_exists(permission).await?,
                "--service-permissions names permission '{permission}', which orgd does not define"
            );
        }
        if let Some(id) = &args.default_plan {
            let plan = store
                .get_plan(id)
                .await
                .map_err(|_| anyhow::anyhow!("--default-plan {id} is not a plan"))?;
            if plan.is_paid() {
                tracing::warn!(
                    plan = %plan.name(),
                    "new team organizations start on a paid plan and are invoiced from creation, before anyone adds a payment method"
                );
            }
        }
        let verifier = JwtVerifier::new(
            &args.jwt.key()?,
            &args.jwt.jwt_issuer,
            &args.jwt.jwt_audience,
        )
        .await?;
        let mailer = Mailer::from_config(&args.mail)?;
        args.webhooks.check()?;
        let keyring = Arc::new(match &args.webhooks.webhook_key_file {
            Some(path) => Keyring::new(path.clone(), true)?,
            None => Keyring::new(args.jwt.data_dir_file("webhook-key"), false)?,
        });
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        Ok(App {
            args,
            listener,
            db,
            store,
            db_probe,
            policies,
            services,
            verifier,
            mailer,
            keyring,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting calls and waits up
    /// to the grace period for in-flight ones.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            args,
            listener,
            db,
            store,
            db_probe,
            policies,
            services,
            verifier,
            mailer,
            keyring,
        } = self;
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        let verifier = Arc::new(verifier);
        let destinations = Destinations {
            allow_private: args.webhooks.webhook_allow_private,
        };
        let services = Services::new(
            &args,
            policies,
            services,
            verifier.clone(),
            health_service,
            (keyring.clone(), destinations),
        );
        let (stop_tx, stop) = watch::channel(false);
        let probe = HealthProbe::new(db_probe, health.clone());
        probe.report().await;
        let probe = probe.spawn(stop.clone());
        let wakeups = EventWakeups::spawn(
            DbConfig {
                application_name: "orgd-events".to_owned(),
                ..db
            },
            stop.clone(),
        );
        let deliverer = Deliverer {
            store: store.clone(),
            sender: Sender::new(args.webhooks.webhook_timeout, destinations)?,
            keyring,
            schedule: args.webhooks.webhook_retry_schedule.clone(),
            lease: args.webhooks.webhook_lease,
        };
        let mut workers = vec![
            workers::spawn_purger(store.clone(), args.purge_interval, stop.clone()),
            workers::spawn_expiries(store.clone(), args.purge_interval, stop.clone()),
            workers::spawn_event_retention(
                store.clone(),
                args.event_retention,
                args.purge_interval,
                stop.clone(),
            ),
            workers::spawn_billing(store.clone(), args.billing_interval, stop.clone()),
            workers::spawn_outbox(
                store.clone(),
                mailer,
                RetryPolicy {
                    max_attempts: args.outbox_max_attempts,
                    base: args.outbox_retry_base,
                    max: args.outbox_retry_max,
                },
                args.outbox_lease,
                args.outbox_interval,
                stop.clone(),
            ),
        ];
        workers.push(workers::spawn_webhooks(
            deliverer,
            wakeups.clone(),
            args.webhooks.webhook_poll_interval,
            stop.clone(),
        ));
        workers.extend(verifier.spawn_key_refresher(stop));
        match &args.mail.smtp_host {
            Some(host) => tracing::info!(
                %host,
                port = args.mail.smtp_port,
                tls = ?args.mail.smtp_tls,
                from = %args.mail.mail_from,
                "emails are sent over SMTP"
            ),
            None => tracing::warn!(
                "no SMTP configured: emails, including verification links, are written to this log"
            ),
        }

        tracing::info!(addr = %listener.local_addr()?, "orgd serving");
        let (drain_tx, mut drain) = watch::channel(false);
        let mut draining_health = health.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: refusing new calls, draining in-flight ones");
            // Stop the probe first, so it cannot report SERVING again while draining.
            let _ = stop_tx.send(true);
            let _ = probe.await;
            for service in HEALTH_SERVICES {
                draining_health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
                // Ends open Health.Watch streams (after they saw NOT_SERVING):
                // graceful shutdown waits for every open stream.
                draining_health.clear_service_status(service).await;
            }
            let _ = drain_tx.send(true);
        };
        let limits = &args.limits;
        let incoming = connections::accept(
            listener,
            ConnectionLimits {
                max_connections: limits.max_connections as usize,
                first_call_deadline: limits.first_call_deadline,
            },
        );
        let served = serve_calls(
            limits,
            services.auth(store.clone()),
            services.routes(store.clone(), wakeups, drain.clone())?,
            incoming,
            signal,
        );
        tokio::pin!(served);
        // Serving ends once every connection has closed after the drain began.
        // At the end of the grace period orgd stops waiting: connections still
        // busy then end with the process (the runtime drops their tasks).
        let grace_over = async {
            let _ = drain.wait_for(|draining| *draining).await;
            tokio::time::sleep(args.shutdown_grace).await;
        };
        tokio::pin!(grace_over);
        let outcome = tokio::select! {
            outcome = &mut served => outcome.context("serving gRPC"),
            () = &mut grace_over => {
                tracing::warn!(grace = ?args.shutdown_grace, "calls still in flight after the grace period are cut off");
                Ok(())
            }
        };
        // Background work stopped at the signal; a round still running (an
        // email being sent) has what is left of the grace period, and what it
        // claimed and did not record is sent again after its lease.
        let joined = async {
            for task in workers {
                let _ = task.await;
            }
        };
        if tokio::select! { () = joined => false, () = &mut grace_over => true } {
            tracing::warn!("background work still running after the grace period is cut off");
        }
        tracing::info!("orgd stopped");
        outcome
    }
}

/// Serves `routes` on the `incoming` connections under the serving limits,
/// each call through the steps of `layers` (outermost first) and then `auth`,
/// until `shutdown` completes and the connections have closed.
async fn serve_calls(
    limits: &ServingLimits,
    auth: AuthLayer,
    routes: Routes,
    incoming: impl Stream<Item = std::io::Result<ClientConnection>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // The span only: the access log writes each call's line with its gRPC code.
    let trace = TraceLayer::new_for_grpc()
        .make_span_with(layers::call_span)
        .on_response(())
        .on_failure(());
    tonic::transport::Server::builder()
        .timeout(limits.call_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // The client was told the stream limit; a call beyond it is refused
        // at once rather than queued behind the connection's others.
        .concurrency_limit_per_connection(limits.max_concurrent_streams as usize)
        .load_shed(true)
        // tonic's max_connection_age_grace cuts the connection at age +
        // grace without the GOAWAY first: the grace here is --call-timeout.
        .max_connection_age(limits.max_connection_age)
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        // Room for a bearer token too long for the auth layer, so that it
        // is refused with a gRPC status rather than HTTP/2's 431.
        .http2_max_header_list_size(4 * MAX_BEARER_BYTES as u32)
        .layer(MapRequestLayer::new(layers::mark_first_call))
        .layer(MapRequestLayer::new(layers::drop_unusable_request_id))
        .layer(SetRequestIdLayer::x_request_id(layers::NewRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(access_log::AccessLogLayer)
        .layer(layers::GrpcOnlyLayer)
        .layer(auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The embedded cluster's settings: tuned for its memory and orgd's
/// connections (the pool, background work's four and the health probe's),
/// then the operator's own.
fn embedded_settings(args: &ServeArgs) -> Vec<(String, String)> {
    let connections = args.db.pool_size + 5;
    let tuning = Tuning::new(args.embedded_db.embedded_db_memory, connections);
    let mut settings: Vec<(String, String)> = tuning
        .settings()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    for (name, value) in &args.embedded_db.embedded_db_settings {
        settings.retain(|(tuned, _)| tuned != name);
        settings.push((name.clone(), value.clone()));
    }
    settings
}

/// `orgd serve`: the embedded database unless DATABASE_URL is set, then the app
/// until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let embedded = match &args.database_url {
        Some(_) => None,
        None => {
            let dir = args.jwt.data_dir.join("postgres");
            let settings = embedded_settings(&args);
            let shown: Vec<String> = settings
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            tracing::info!(dir = %dir.display(), settings = %shown.join(" "), "no DATABASE_URL: starting the embedded PostgreSQL cluster");
            let cluster = tokio::task::spawn_blocking(move || {
                let settings: Vec<(&str, &str)> = settings
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                EmbeddedPostgres::start(&dir, &settings)
            })
            .await??;
            cluster.ensure_database("orgd").await?;
            Some(cluster)
        }
    };
    let url = match (&args.database_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(cluster)) => cluster.url("orgd"),
        (None, None) => unreachable!("the embedded cluster runs when DATABASE_URL is unset"),
    };
    let result = async { App::build(args, &url).await?.run(shutdown_signal()).await }.await;
    if let Some(cluster) = embedded {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
    }
    result
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
