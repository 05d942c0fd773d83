//! The `orgd` binary as an operator runs it: no DATABASE_URL, so it starts its
//! embedded PostgreSQL; health, reflection and a dev token work; SIGTERM stops it
//! and its database cleanly; health follows the database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

mod common;

use common::Bearer;
use orgd::pb::{self, org_service_client::OrgServiceClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The service names a reflection endpoint (`v1` or `v1alpha`) lists.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new($channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match stream.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("expected a service list, got {other:?}"),
        }
    }};
}

struct Orgd {
    child: Child,
    addr: String,
}

impl Orgd {
    fn start(data_dir: &Path) -> Orgd {
        Self::start_with(data_dir, &[])
    }

    /// Starts orgd with extra `orgd serve` flags.
    fn start_with(data_dir: &Path, flags: &[&str]) -> Orgd {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(Self::log_path(data_dir)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_orgd"))
            .args(["serve", "--listen", &addr, "--shutdown-grace", "2s"])
            .args(flags)
            .env("ORGD_DATA_DIR", data_dir)
            .env_remove("DATABASE_URL")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Orgd { child, addr }
    }

    /// Where orgd's log goes: beside the data directory, not in it.
    fn log_path(data_dir: &Path) -> PathBuf {
        data_dir.with_extension("log")
    }

    async fn channel(&self) -> Channel {
        for _ in 0..300 {
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("orgd did not start listening on {}", self.addr);
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill().unwrap();
        panic!("orgd did not stop on SIGTERM");
    }
}

/// A failed assertion must not leave orgd (and with it PostgreSQL) running.
impl Drop for Orgd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn health(channel: &Channel) -> ServingStatus {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    response.status()
}

fn token(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args([
            "token",
            "--sub",
            "operator",
            "--email",
            "ops@example.com",
            "--name",
            "Operator",
        ])
        .env("ORGD_DATA_DIR", data_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    // It names the secret it signed with, so a token minted in the wrong
    // folder can be told from a bad one.
    let secret = std::path::absolute(data_dir.join("dev-jwt-secret")).unwrap();
    assert!(said.contains(&secret.display().to_string()), "{said}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// An OrgService client with a token minted by `orgd token`.
fn operator_client(
    channel: &Channel,
    data_dir: &Path,
) -> OrgServiceClient<InterceptedService<Channel, Bearer>> {
    OrgServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(&token(data_dir))))
}

/// The services README.md's `buf curl` session shows `--list-services` printing:
/// the `#   name` lines after that command.
fn readme_service_list() -> Vec<String> {
    let readme = include_str!("../README.md");
    let listing = &readme[readme
        .find("$CURL --list-services")
        .expect("README.md lists the services")..];
    let mut names: Vec<String> = listing
        .lines()
        .skip(1)
        .map_while(|line| line.strip_prefix("#   "))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .parse()
        .ok()
}

fn fresh_data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orgd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(Orgd::log_path(&dir));
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_on_the_embedded_database_and_stops_cleanly() {
    let data_dir = fresh_data_dir("serve");
    let orgd = Orgd::start_with(
        &data_dir,
        &[
            "--embedded-db-memory",
            "2GiB",
            "--embedded-db-setting",
            "work_mem=8MB",
        ],
    );
    let channel = orgd.channel().await;
    assert_eq!(health(&channel).await, ServingStatus::Serving);

    // Reflection v1 (buf curl, grpcurl) and v1alpha (older clients such as Python's)
    // list the services, so operators need no proto files.
    let mut v1 = list_services!(v1, channel);
    let v1alpha = list_services!(v1alpha, channel);
    // The README shows what `buf curl --list-services` (v1) prints: all of it.
    v1.sort();
    assert_eq!(readme_service_list(), v1, "README.md's list of services");
    for (listed, reflection) in [
        (&v1, "grpc.reflection.v1.ServerReflection"),
        (&v1alpha, "grpc.reflection.v1alpha.ServerReflection"),
    ] {
        for expected in ["orgd.v1.OrgService", "grpc.health.v1.Health", reflection] {
            assert!(
                listed.iter().any(|n| n == expected),
                "{expected} missing from {listed:?}"
            );
        }
    }

    // A dev token from `orgd token` works against the server.
    let mut client = operator_client(&channel, &data_dir);
    let org = client
        .create_organization(pb::CreateOrganizationRequest {
            request_id: String::new(),
            organization: Some(pb::Organization {
                display_name: "Operators".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.slug, "operators");
    // One minted with another data directory's secret is told where to look.
    let elsewhere = fresh_data_dir("serve-elsewhere");
    let status = operator_client(&channel, &elsewhere)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains("development secret in its data directory")
            && status.message().contains("--data-dir"),
        "{status:?}"
    );

    // Nobody without the password in the data directory gets into the cluster.
    let pid_file = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid")).unwrap();
    let port = pid_file.lines().nth(3).unwrap().trim().to_owned();
    for user in ["orgd", "postgres"] {
        let url = format!("postgres://{user}:guess@127.0.0.1:{port}/postgres");
        let refused = tokio_postgres::connect(&url, tokio_postgres::NoTls).await;
        assert!(refused.is_err(), "{user} got in without the password");
    }

    // The cluster runs tuned for the memory it was given, with the operator's
    // setting over the tuned one.
    let password = std::fs::read_to_string(data_dir.join("postgres.password")).unwrap();
    let url = format!(
        "postgres://orgd:{}@127.0.0.1:{port}/postgres",
        password.trim()
    );
    let db = common::sql_client(&url).await;
    let mut shown = Vec::new();
    for name in [
        "shared_buffers",
        "effective_cache_size",
        "maintenance_work_mem",
        "work_mem",
        "random_page_cost",
        "jit",
        "max_connections",
    ] {
        let row = db.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
        shown.push(format!("{name}={}", row.get::<_, String>(0)));
    }
    assert_eq!(
        shown,
        [
            "shared_buffers=512MB",
            "effective_cache_size=1536MB",
            "maintenance_work_mem=128MB",
            "work_mem=8MB",
            "random_page_cost=1.1",
            "jit=off",
            "max_connections=100",
        ]
    );
    drop(db);

    let postgres = postmaster_pid(&data_dir).expect("the embedded cluster runs");
    assert!(orgd.terminate().success());
    assert!(
        postmaster_pid(&data_dir).is_none(),
        "PostgreSQL stopped with orgd"
    );
    // SAFETY: probing whether a pid exists.
    assert_ne!(
        unsafe { libc::kill(postgres, 0) },
        0,
        "no orphaned PostgreSQL"
    );

    // The next start reuses the cluster and its data.
    let orgd = Orgd::start(&data_dir);
    let channel = orgd.channel().await;
    let mut client = operator_client(&channel, &data_dir);
    let again = client
        .get_organization(pb::GetOrganizationRequest {
            name: "organizations/operators".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.uid, org.uid);

    // Health follows the database: kill PostgreSQL and it reports NOT_SERVING.
    let postgres = postmaster_pid(&data_dir).unwrap();
    // SAFETY: stopping the cluster our child started.
    unsafe { libc::kill(postgres, libc::SIGQUIT) };
    let mut status = ServingStatus::Serving;
    for _ in 0..100 {
        status = health(&channel).await;
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
    orgd.terminate();
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(Orgd::log_path(&data_dir));
}

/// A newcomer starting orgd twice in one folder is told so in words, and the
/// first one serves on; falling back to the development secret is a warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_orgd_on_the_same_data_dir_is_refused_in_plain_words() {
    let data_dir = fresh_data_dir("second");
    let first = Orgd::start(&data_dir);
    let channel = first.channel().await;
    let second = Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args(["serve", "--listen", &common::free_local_addr()])
        .env("ORGD_DATA_DIR", &data_dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        said.contains("orgd: another orgd is using this data directory"),
        "{said}"
    );
    // Neither PostgreSQL's own complaint nor Rust's debug view of an error.
    for raw in ["postmaster.pid", "lock file", "Os {", "kind:", "[(\""] {
        assert!(!said.contains(raw), "{raw} in {said}");
    }
    assert_eq!(health(&channel).await, ServingStatus::Serving);

    assert!(first.terminate().success());
    let log = std::fs::read_to_string(Orgd::log_path(&data_dir)).unwrap();
    let secret = std::path::absolute(data_dir.join("dev-jwt-secret")).unwrap();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains("development secret")
            && line.contains(&secret.display().to_string())),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(Orgd::log_path(&data_dir));
}

/// Where no death signal stops PostgreSQL with orgd (not Linux), an orgd killed
/// with SIGKILL leaves it running: the next start stops it. While one orgd uses a
/// data directory, another is refused rather than stopping its database.
#[test]
fn a_leftover_postgres_is_stopped_and_a_second_orgd_is_refused() {
    use std::os::unix::process::CommandExt;

    use orgd::postgres::{EmbeddedPostgres, find_program, run_as};

    let data_dir = fresh_data_dir("leftover").join("postgres");
    let cluster = EmbeddedPostgres::start(&data_dir, &[]).unwrap();
    let Err(refused) = EmbeddedPostgres::start(&data_dir, &[]) else {
        panic!("a second start used the same data directory");
    };
    assert!(
        refused.to_string().contains("another orgd is using"),
        "{refused:#}"
    );
    cluster.stop();

    // What a killed orgd leaves behind: a PostgreSQL nobody will stop.
    let mut pg_ctl = Command::new(find_program("pg_ctl").unwrap());
    if let Some((uid, gid)) = run_as().unwrap() {
        pg_ctl.uid(uid).gid(gid);
    }
    let port = common::free_local_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let started = pg_ctl
        .args(["start", "--wait", "--silent", "-l", "/dev/null", "-D"])
        .arg(&data_dir)
        .arg(format!(
            "-o -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
        ))
        .status()
        .unwrap();
    assert!(started.success());
    let leftover = postmaster_pid(data_dir.parent().unwrap()).expect("it runs");

    let cluster = EmbeddedPostgres::start(&data_dir, &[]).unwrap();
    assert_ne!(cluster.pid(), leftover);
    // Its process may linger as a zombie of whoever adopted it; it serves no more.
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the leftover stopped"
    );
    cluster.stop();
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

/// `orgd token` run in any folder of a checkout keeps a development secret in
/// `.orgd-data` there: git must ignore it wherever it is.
#[test]
fn a_data_dir_in_any_folder_of_the_checkout_is_git_ignored() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !project.join(".git").exists() {
        eprintln!("not a git checkout: nothing to ignore");
        return;
    }
    for path in [
        ".orgd-data/dev-jwt-secret",
        "tests/.orgd-data/dev-jwt-secret",
        "src/api/.orgd-data/postgres.password",
    ] {
        let ignored = Command::new("git")
            .args(["check-ignore", "--quiet", "--no-index", path])
            .current_dir(project)
            .status()
            .unwrap();
        assert!(ignored.success(), "git would commit {path}");
    }
}
