//! orgd over TLS to PostgreSQL: one cluster with `ssl=on` and a certificate for
//! `localhost` signed by a CA made here; each sslmode connects as libpq's would,
//! or fails saying where and why.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orgd::postgres::EmbeddedPostgres;
use orgd::store::{DbConfig, DbProbe, Store};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

struct Tls {
    server: EmbeddedPostgres,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server shows.
    other_ca: PathBuf,
    /// A client certificate (CN `orgd-client`) from `ca`, and its key.
    client: (PathBuf, PathBuf),
}

static TLS: OnceCell<Tls> = OnceCell::const_new();

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
}

/// Makes the certificates and starts the cluster, once per test process.
async fn tls() -> &'static Tls {
    TLS.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let dir = common::scratch_dir("tls");
            let ca = CertifiedIssuer::self_signed(
                ca_params("orgd test CA"),
                KeyPair::generate().unwrap(),
            )
            .unwrap();
            let other_ca =
                CertifiedIssuer::self_signed(ca_params("another CA"), KeyPair::generate().unwrap())
                    .unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let client_key = KeyPair::generate().unwrap();
            let mut client = CertificateParams::new(Vec::new()).unwrap();
            client
                .distinguished_name
                .push(DnType::CommonName, "orgd-client");
            let client = client.signed_by(&client_key, &ca).unwrap();
            let path = |name: &str| dir.join(name);
            write_file(&path("client.pem"), &client.pem(), 0o644);
            write_file(&path("client.key"), &client_key.serialize_pem(), 0o600);
            write_file(&path("ca.pem"), &ca.pem(), 0o644);
            write_file(&path("other-ca.pem"), &other_ca.pem(), 0o644);
            write_file(&path("server.pem"), &cert.pem(), 0o644);
            // PostgreSQL refuses a key that is not its own or that others may read.
            write_file(&path("server.key"), &key.serialize_pem(), 0o600);
            if let Some((uid, gid)) = orgd::postgres::run_as().unwrap() {
                std::os::unix::fs::chown(path("server.key"), Some(uid), Some(gid)).unwrap();
            }
            let (cert_file, key_file) = (path("server.pem"), path("server.key"));
            let server = common::start_cluster(
                &dir.join("data"),
                &[
                    ("ssl", "on"),
                    ("ssl_cert_file", cert_file.to_str().unwrap()),
                    ("ssl_key_file", key_file.to_str().unwrap()),
                    // Client certificates from `ca` are asked for, and checked
                    // when presented (pg_hba.conf does not require them).
                    ("ssl_ca_file", path("ca.pem").to_str().unwrap()),
                ],
            );
            Tls {
                server,
                ca: path("ca.pem"),
                other_ca: path("other-ca.pem"),
                client: (path("client.pem"), path("client.key")),
            }
        })
        .await
        .unwrap()
    })
    .await
}

impl Tls {
    /// The cluster's `postgres` database at `host`, with `params` in the query.
    fn url(&self, host: &str, params: &str) -> String {
        let url = self
            .server
            .url("postgres")
            .replacen("@127.0.0.1:", &format!("@{host}:"), 1);
        format!("{url}?{params}")
    }

    fn ca(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    fn other_ca(&self) -> &str {
        self.other_ca.to_str().unwrap()
    }

    fn at(&self, host: &str) -> String {
        format!("at {host}:{}", self.server.port())
    }
}

/// One connection as orgd opens them all.
async fn connect(url: &str) -> Result<AsyncPgConnection, String> {
    DbConfig::unlimited(url, "orgd-tls-test")
        .establish()
        .await
        .map_err(|err| err.to_string())
}

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether PostgreSQL sees this session as encrypted.
async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .unwrap()
        .ssl
}

/// `url` must fail with an error that says where it connected and `cause`.
async fn refused(url: &str, at: &str, cause: &str) {
    let Err(err) = connect(url).await else {
        panic!("{url} connected");
    };
    assert!(err.contains(at) && err.contains(cause), "{url}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orgd_migrates_and_pools_over_verify_full_with_its_session_settings() {
    let tls = tls().await;
    tls.server.ensure_database("orgd_tls").await.unwrap();
    let url = tls
        .url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", tls.ca()),
        )
        .replace("/postgres?", "/orgd_tls?");
    orgd::store::run_migrations(&url).await.unwrap();

    let db = DbConfig {
        url: url.clone(),
        application_name: "orgd-tls-pool".into(),
        statement_timeout: Duration::from_secs(7),
        lock_timeout: Duration::from_secs(1),
    };
    // The pool opens its first connection at once; the probe one of its own.
    let _pool = Store::connect(&db, 2, Duration::from_secs(5))
        .await
        .unwrap();
    let probe = DbProbe::new(&db);
    assert!(probe.answers().await);
    let admin = common::sql_client(&tls.server.url("postgres")).await;
    let row = admin
        .query_one(
            "SELECT count(*), bool_and(ssl) FROM pg_stat_activity JOIN pg_stat_ssl USING (pid)
             WHERE application_name = 'orgd-tls-pool'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) >= 1, "the pool has a session");
    assert_eq!(
        row.get::<_, Option<bool>>(1),
        Some(true),
        "every one encrypted"
    );

    // The startup options still reach the server.
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        statement_timeout: String,
    }
    let mut conn = db.establish().await.unwrap();
    let setting = diesel::sql_query("SHOW statement_timeout")
        .get_result::<Setting>(&mut conn)
        .await
        .unwrap();
    assert_eq!(setting.statement_timeout, "7s");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_refuses_a_certificate_from_another_ca() {
    let tls = tls().await;
    let url = tls.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", tls.other_ca()),
    );
    refused(&url, &tls.at("localhost"), "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let tls = tls().await;
    // The certificate names localhost only.
    let full = tls.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca()),
    );
    refused(
        &full,
        &tls.at("127.0.0.1"),
        "not valid for name \"127.0.0.1\"",
    )
    .await;

    let ca = tls.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", tls.ca()),
    );
    assert!(encrypted(&mut connect(&ca).await.unwrap()).await);

    let other = tls.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", tls.other_ca()),
    );
    refused(&other, &tls.at("127.0.0.1"), "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_without_a_root_certificate_and_checks_one_it_is_given() {
    let tls = tls().await;
    for host in ["localhost", "127.0.0.1"] {
        let mut conn = connect(&tls.url(host, "sslmode=require")).await.unwrap();
        assert!(encrypted(&mut conn).await, "{host}");
    }
    // As in libpq, a root certificate makes `require` check the chain.
    let url = tls.url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={}", tls.other_ca()),
    );
    refused(&url, &tls.at("127.0.0.1"), "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_is_the_default_and_disable_turns_tls_off() {
    let tls = tls().await;
    let default = tls.server.url("postgres");
    assert!(encrypted(&mut connect(&default).await.unwrap()).await);
    let plain = tls.url("127.0.0.1", "sslmode=disable");
    assert!(!encrypted(&mut connect(&plain).await.unwrap()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn require_fails_clearly_when_the_server_does_not_offer_tls() {
    // A server that declines PostgreSQL's SSLRequest, as one with ssl=off does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0; 8];
        socket.read_exact(&mut request).await.unwrap();
        socket.write_all(b"N").await.unwrap();
        let _ = socket.read(&mut request).await;
    });
    let url = format!("postgres://orgd@127.0.0.1:{port}/postgres?sslmode=require");
    refused(
        &url,
        &format!("at 127.0.0.1:{port}"),
        "server does not support TLS",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orgd_serve_says_where_and_why_it_cannot_connect() {
    let tls = tls().await;
    let url = tls.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", tls.other_ca()),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args(["serve", "--listen", &common::free_local_addr()])
        .args(["--jwt-secret", common::SECRET])
        .env("DATABASE_URL", &url)
        .env(
            "ORGD_DATA_DIR",
            common::scratch_dir("tls").join("orgd-data"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&tls.at("localhost")) && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sslcert_and_sslkey_present_a_client_certificate() {
    let tls = tls().await;
    let (cert, key) = &tls.client;
    let url = tls.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            tls.ca(),
            cert.display(),
            key.display()
        ),
    );
    #[derive(QueryableByName)]
    struct ClientDn {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        client_dn: Option<String>,
    }
    let mut conn = connect(&url).await.unwrap();
    let row = diesel::sql_query("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<ClientDn>(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.client_dn.as_deref(), Some("/CN=orgd-client"));
}
