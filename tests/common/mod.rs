//! Test harness: one throwaway PostgreSQL cluster per test binary, a migrated
//! template database, and per test a fresh database cloned from it with an orgd
//! serving real gRPC on an ephemeral port.
#![allow(dead_code)] // each test binary uses its own subset of the harness

pub mod billing;
pub mod logged;
pub mod periods;
pub mod raw;
pub mod receiver;
pub mod smtp;
pub mod usage;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use orgd::auth::{Claims, mint_token};
use orgd::config::{Cli, Command};
use orgd::pb::{
    self, billing_service_client::BillingServiceClient, event_service_client::EventServiceClient,
    member_service_client::MemberServiceClient, org_service_client::OrgServiceClient,
    permission_service_client::PermissionServiceClient,
};
use orgd::postgres::EmbeddedPostgres;
use prost_types::FieldMask;
use tokio::sync::OnceCell;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub const SECRET: &str = "test-secret-not-for-production-0123456789";
pub const ISSUER: &str = "orgd-test";
pub const AUDIENCE: &str = "orgd";
pub const SERVICE_SUBJECT: &str = "billing-service";
const TEMPLATE: &str = "orgd_template";

struct Cluster {
    server: EmbeddedPostgres,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// Starts the cluster of this test process and migrates the template database.
async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let dir = std::env::temp_dir().join(format!("orgd-pg-{}", std::process::id()));
            let server = tokio::task::spawn_blocking(move || start_cluster(&dir, &[]))
                .await
                .unwrap();
            server.ensure_database(TEMPLATE).await.unwrap();
            orgd::store::run_migrations(&server.url(TEMPLATE))
                .await
                .expect("migrating the template");
            Cluster { server }
        })
        .await
}

/// A directory of this test process under /tmp (which the unprivileged
/// PostgreSQL user can always reach), `orgd-pg-{pid}.{name}`: the form in which
/// every test process, on any branch, recognises another's files and removes
/// them only once that process is gone.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orgd-pg-{}.{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a throwaway cluster in `data_dir`, with the settings that make tests
/// fast and `extra` ones (blocking).
pub fn start_cluster(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> EmbeddedPostgres {
    remove_stale_clusters(&std::env::temp_dir());
    let mut settings = vec![
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "400"),
    ];
    settings.extend_from_slice(extra);
    EmbeddedPostgres::start(data_dir, &settings).expect("starting the test PostgreSQL cluster")
}

/// Clusters of earlier test processes that are gone (their PostgreSQL died with them).
fn remove_stale_clusters(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("orgd-pg-")
            .and_then(|rest| rest.split('.').next()?.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists (EPERM: it does).
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// URL of a new database of the test cluster, copied from `template`
/// ("template0" for an empty one).
pub async fn new_database(template: &str) -> String {
    let cluster = cluster().await;
    let database = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = sql_client(&cluster.server.url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {database} TEMPLATE {template}"))
        .await
        .unwrap();
    cluster.server.url(&database)
}

/// Runs SQL against a database of the test cluster, for fixtures and inspection.
pub async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Every table of the orgd schema, to search them all.
pub async fn public_tables(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// A loopback address with a free port, for a process that binds it itself.
pub fn free_local_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub type OrgClient = OrgServiceClient<InterceptedService<Channel, Bearer>>;
pub type MemberClient = MemberServiceClient<InterceptedService<Channel, Bearer>>;
pub type BillingClient = BillingServiceClient<InterceptedService<Channel, Bearer>>;
pub type PermissionClient = PermissionServiceClient<InterceptedService<Channel, Bearer>>;
pub type EventClient = EventServiceClient<InterceptedService<Channel, Bearer>>;

/// URL of a new, migrated database of the test cluster.
pub async fn fresh_database() -> String {
    new_database(TEMPLATE).await
}

pub fn invitation(
    org: &pb::Organization,
    email: &str,
    roles: &[&str],
) -> pb::CreateInvitationRequest {
    pb::CreateInvitationRequest {
        parent: org.name.clone(),
        invitation: Some(pb::Invitation {
            email: email.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
    }
}

pub fn accept(token: &str) -> pb::AcceptInvitationRequest {
    pb::AcceptInvitationRequest {
        token: token.into(),
    }
}

/// The token in the newest message queued for `email` (delivery is off in tests
/// by default, so bodies are still there).
pub async fn latest_token(app: &TestApp, email: &str) -> String {
    let body: String = app
        .db
        .query_one(
            "SELECT body FROM outbox_messages WHERE recipient = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    body.split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no link in {body:?}"))
        .to_owned()
}

/// Invites `{sub}@example.com` to `org` with `roles` as `inviter`, and accepts
/// as `sub`.
pub async fn join(
    app: &TestApp,
    inviter: &str,
    org: &pb::Organization,
    sub: &str,
    roles: &[&str],
) -> Result<pb::Member, Status> {
    let email = format!("{sub}@example.com");
    app.members_as(inviter)
        .await
        .create_invitation(invitation(org, &email, roles))
        .await?;
    let token = latest_token(app, &email).await;
    app.members_as(sub)
        .await
        .accept_invitation(accept(&token))
        .await
        .map(tonic::Response::into_inner)
}

/// Creates an organization named `display_name` as `client`'s user.
pub async fn create_org(client: &mut OrgClient, display_name: &str) -> pb::Organization {
    client
        .create_organization(new_org(display_name))
        .await
        .unwrap()
        .into_inner()
}

// Request builders and probes shared by the scenario tests.

pub fn new_org(display_name: &str) -> pb::CreateOrganizationRequest {
    pb::CreateOrganizationRequest {
        request_id: String::new(),
        organization: Some(pb::Organization {
            display_name: display_name.into(),
            ..Default::default()
        }),
    }
}

pub fn get(name: &str) -> pb::GetOrganizationRequest {
    pb::GetOrganizationRequest { name: name.into() }
}

pub fn update(org: pb::Organization, paths: &[&str]) -> pb::UpdateOrganizationRequest {
    pb::UpdateOrganizationRequest {
        organization: Some(org),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    }
}

/// An UpdateMember request that replaces `member`'s roles.
pub fn set_roles(member: &str, roles: &[&str]) -> pb::UpdateMemberRequest {
    pb::UpdateMemberRequest {
        member: Some(pb::Member {
            name: member.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["roles".into()],
        }),
    }
}

pub fn delete(org: &pb::Organization) -> pb::DeleteOrganizationRequest {
    pb::DeleteOrganizationRequest {
        name: org.name.clone(),
        confirmation: org.display_name.clone(),
        etag: String::new(),
    }
}

pub async fn activity_count(app: &TestApp, action: &str) -> i64 {
    app.count("SELECT 1 FROM activity WHERE action = $1", &[&action])
        .await
}

/// Moves the last send of every invitation two minutes back, past the least time
/// between two sends, as if the tests had waited.
pub async fn let_resend_interval_pass(app: &TestApp) {
    app.db
        .execute(
            "UPDATE invitations SET sent_at = sent_at - interval '2 minutes'",
            &[],
        )
        .await
        .unwrap();
}

/// Holds a row lock on `org` from SQL, so a call that changes it waits in flight.
pub async fn lock_org_row(app: &TestApp, org: &pb::Organization) -> tokio_postgres::Client {
    let locker = sql_client(&app.db_url).await;
    let id: uuid::Uuid = org.uid.parse().unwrap();
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .unwrap();
    locker
}

/// An orgd on its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db_url: String,
    pub db: tokio_postgres::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// Spawns orgd with extra `orgd serve` flags.
    pub async fn spawn_with(extra: &[&str]) -> TestApp {
        Self::spawn_on(&new_database(TEMPLATE).await, extra).await
    }

    /// Spawns orgd on an existing database, e.g. another app's `db_url` for a
    /// second replica, with extra `orgd serve` flags.
    pub async fn spawn_on(db_url: &str, extra: &[&str]) -> TestApp {
        let mut argv = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--service-subjects",
            SERVICE_SUBJECT,
            "--pool-size",
            "4",
            "--shutdown-grace",
            "1s",
            // Tests read queued messages before delivery redacts them.
            "--outbox-interval",
            "1h",
        ];
        let own_keys = ["--jwt-public-key-file", "--jwt-jwks-url"];
        if !extra.iter().any(|flag| own_keys.contains(flag)) {
            argv.extend(["--jwt-secret", SECRET]);
        }
        // Most scenarios build a team: these servers start team organizations on
        // Starter (3 members), as a deployment billing by agreement may, which
        // saves each test the upgrade. The free default is tested on the real
        // binary (tests/free_plan.rs, the README walkthrough).
        if !extra.contains(&"--default-plan") {
            argv.extend(["--default-plan", "starter"]);
        }
        argv.extend_from_slice(extra);
        let Command::Serve(args) = Cli::parse_from(std::iter::once("orgd").chain(argv)).command
        else {
            unreachable!("argv starts with serve")
        };
        let app = orgd::server::App::build(args, db_url)
            .await
            .expect("building orgd");
        let addr = app.local_addr();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async move {
            let _ = stop.await;
        }));
        TestApp {
            addr,
            db: sql_client(db_url).await,
            db_url: db_url.to_owned(),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Signals shutdown, as SIGTERM does; the handle completes once orgd stopped.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let _ = self.shutdown.take().expect("not shut down yet").send(());
        self.server.take().expect("running")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// An OrgService client sending `token` (None: no authorization metadata).
    pub async fn orgs(&self, token: Option<&str>) -> OrgClient {
        OrgServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    /// A client for the user with subject `sub` (email `{sub}@example.com`).
    pub async fn orgs_as(&self, sub: &str) -> OrgClient {
        self.orgs(Some(&user_token(sub))).await
    }

    /// A MemberService client for the user with subject `sub` (email `{sub}@example.com`).
    pub async fn members_as(&self, sub: &str) -> MemberClient {
        MemberServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(&user_token(sub))),
        )
    }

    /// A BillingService client for the user with subject `sub`.
    pub async fn billing_as(&self, sub: &str) -> BillingClient {
        BillingServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(&user_token(sub))),
        )
    }

    /// A BillingService client for the configured backend service (an operator).
    pub async fn billing_as_service(&self) -> BillingClient {
        BillingServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(&service_token())),
        )
    }

    /// A client for the configured backend service.
    pub async fn orgs_as_service(&self) -> OrgClient {
        self.orgs(Some(&service_token())).await
    }

    /// A PermissionService client sending `token`.
    pub async fn permissions(&self, token: &str) -> PermissionClient {
        PermissionServiceClient::with_interceptor(self.channel().await, Bearer::new(Some(token)))
    }

    /// A PermissionService client for the configured backend service.
    pub async fn permissions_as_service(&self) -> PermissionClient {
        self.permissions(&service_token()).await
    }

    /// An EventService client sending `token`.
    pub async fn events(&self, token: &str) -> EventClient {
        EventServiceClient::with_interceptor(self.channel().await, Bearer::new(Some(token)))
    }

    /// An EventService client for the configured backend service.
    pub async fn events_as_service(&self) -> EventClient {
        self.events(&service_token()).await
    }

    /// Makes `user_id` a member of `org_id` with exactly these roles and grants
    /// (MemberService does not exist yet; this is the fixture for it).
    pub async fn set_member(&self, org_id: &str, user_id: &str, roles: &[&str], grants: &[&str]) {
        let org: uuid::Uuid = org_id.parse().unwrap();
        let user: uuid::Uuid = user_id.parse().unwrap();
        for statement in [
            "INSERT INTO memberships (org_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            "DELETE FROM membership_roles WHERE org_id = $1 AND user_id = $2",
            "DELETE FROM membership_permissions WHERE org_id = $1 AND user_id = $2",
        ] {
            self.db.execute(statement, &[&org, &user]).await.unwrap();
        }
        for (table, names) in [
            ("membership_roles", roles),
            ("membership_permissions", grants),
        ] {
            let names: Vec<&str> = names.to_vec();
            self.db
                .execute(
                    &format!("INSERT INTO {table} SELECT $1, $2, unnest($3::text[])"),
                    &[&org, &user, &names],
                )
                .await
                .unwrap();
        }
    }

    /// The id of the user with subject `sub`, created on first sight.
    pub async fn user_id(&self, sub: &str) -> String {
        let me = self
            .orgs_as(sub)
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        me.user.unwrap().uid
    }

    /// Waits until the change feed shows every transaction committed so far.
    /// Its horizon is the cluster's oldest open transaction, which other tests'
    /// work in the shared cluster can hold back for a moment.
    pub async fn feed_caught_up(&self) {
        let txid = |row: tokio_postgres::Row| -> i64 { row.get(0) };
        let committed = txid(
            self.db
                .query_one(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                    &[],
                )
                .await
                .unwrap(),
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let horizon = txid(
                self.db
                    .query_one(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                        &[],
                    )
                    .await
                    .unwrap(),
            );
            if horizon >= committed {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a transaction older than {committed} stayed open: the feed stops at {horizon}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Counts rows of a query's result.
    pub async fn count(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM ({query}) AS q"), params)
            .await
            .unwrap()
            .get(0)
    }

    /// How many sessions of this test's database wait for a lock: polled until
    /// at least `expected` do, for two seconds at most.
    pub async fn lock_waiters(&self, expected: i64) -> i64 {
        let waiting = "SELECT 1 FROM pg_stat_activity
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let mut found = 0;
        for _ in 0..100 {
            found = self.count(waiting, &[]).await;
            if found >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        found
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A token of the configured backend service.
pub fn service_token() -> String {
    token_for(&Claims::new(
        ISSUER,
        AUDIENCE,
        SERVICE_SUBJECT,
        Duration::from_secs(600),
    ))
}

pub fn token_for(claims: &Claims) -> String {
    mint_token(SECRET.as_bytes(), claims).unwrap()
}

/// A valid user token for `sub`, with a verified `{sub}@example.com`.
pub fn user_token(sub: &str) -> String {
    let mut claims = Claims::new(ISSUER, AUDIENCE, sub, Duration::from_secs(600));
    claims.email = Some(format!("{sub}@example.com"));
    claims.email_verified = true;
    claims.name = Some(format!("User {sub}"));
    token_for(&claims)
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Asserts a call failed with `code`; returns the status for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            assert!(
                !status.message().is_empty(),
                "status {code:?} has no message"
            );
            status
        }
    }
}

/// The field a refusal's `google.rpc.BadRequest` names.
#[track_caller]
pub fn violated_field(status: &Status) -> String {
    let details = tonic_types::StatusExt::get_details_bad_request(status)
        .unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    details.field_violations[0].field.clone()
}

/// The kind of precondition a FAILED_PRECONDITION names (its
/// `google.rpc.PreconditionFailure`'s type), e.g. `LAST_OWNER`.
#[track_caller]
pub fn precondition_type(status: &Status) -> String {
    tonic_types::StatusExt::get_details_precondition_failure(status)
        .expect("a PreconditionFailure detail")
        .violations[0]
        .r#type
        .clone()
}

/// The secret of a new API token of `org`, created by `owner`, holding
/// `permissions.check` and nothing else: how a backend service asks
/// OrgService.CheckPermission about one organization.
pub async fn checker_token(app: &TestApp, owner: &str, org: &pb::Organization) -> String {
    pb::token_service_client::TokenServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&user_token(owner))),
    )
    .create_api_token(pb::CreateApiTokenRequest {
        parent: org.name.clone(),
        api_token: Some(pb::ApiToken {
            display_name: "checker".into(),
            extra_permissions: vec!["permissions.check".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .secret
}

/// buf's CLI from npm, installed beside the project if it is not there yet.
pub fn buf(project: &std::path::Path) -> PathBuf {
    let buf = project.join("node_modules/.bin/buf");
    if !buf.exists() {
        let installed = std::process::Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--silent",
                "@bufbuild/buf@1",
            ])
            .current_dir(project)
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()) && buf.exists(),
            "this test needs buf: run `npm install --no-save @bufbuild/buf` in {}",
            project.display()
        );
    }
    buf
}
