//! A private PostgreSQL cluster run from the machine's PostgreSQL binaries: the
//! server's default database when no DATABASE_URL is given, and the test harness's
//! throwaway database server.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres`
//! user and its data directory belongs to that user.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::secret_file;

mod tuning;
pub use tuning::Tuning;

const SUPERUSER: &str = "orgd";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    port: u16,
    pid: i32,
    password: String,
    /// Asks the thread that owns the child to stop it (only that thread may
    /// signal it: it alone reaps it, so the pid cannot have been reused).
    stop: mpsc::Sender<()>,
    /// Reports PostgreSQL's exit (a Mutex makes the handle shareable between threads).
    exited: Mutex<mpsc::Receiver<std::io::Result<ExitStatus>>>,
    /// Held while we use the data directory (see `lock_data_dir`).
    _lock: File,
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root, else
/// ourselves (None). Files the server reads that must be its own, such as a TLS
/// key (`ssl_key_file`), belong to this user.
pub fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres")?;
    // SAFETY: getpwnam returns null or a pointer to a static record we copy at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!(
            "running as root, PostgreSQL needs a 'postgres' user to run as (apt-get install postgresql creates it)"
        );
    }
    // SAFETY: entry is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Finds a PostgreSQL program on PATH or under /usr/lib/postgresql/*/bin (newest first).
pub fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let mut versioned: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|path| {
        let version = path
            .iter()
            .nth(3)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok());
        std::cmp::Reverse(version)
    });
    on_path
        .chain(versioned)
        .find(|path| path.is_file())
        .with_context(|| format!("PostgreSQL's '{name}' is not on PATH nor under /usr/lib/postgresql/*/bin; install PostgreSQL (apt-get install postgresql) or set DATABASE_URL"))
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedPostgres {
    /// Starts (creating it first if needed) the cluster in `data_dir`, with extra
    /// server `settings`, and waits until it accepts connections.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let user = run_as()?;
        let data_dir = std::path::absolute(data_dir)?;
        if user.is_some() {
            check_reachable_by_others(&data_dir)?;
        }
        // The superuser's password, kept beside (not inside) the data directory,
        // readable only by us: nobody else on this machine may connect.
        let password = secret_file::read_or_create(&data_dir.with_extension("password"))?;
        let lock = lock_data_dir(&data_dir)?;
        if data_dir.join("PG_VERSION").exists() {
            stop_leftover(&data_dir, user)?;
        } else {
            init_cluster(&data_dir, user, &password)?;
        }
        let log_path = data_dir.with_extension("log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let port = free_port()?;

        let mut cmd = command(&find_program("postgres")?, user);
        cmd.arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C goes to orgd, which
            // drains calls and then stops PostgreSQL, not to PostgreSQL directly.
            .process_group(0);
        for (key, value) in settings {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        // If we die without stopping it, the kernel asks PostgreSQL for a fast
        // shutdown. Other systems (macOS) have no such signal: a PostgreSQL that
        // outlives a killed orgd runs on until the next start stops it (`stop_leftover`).
        // SAFETY: prctl is async-signal-safe; this runs after setuid, just before exec.
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        // The death signal fires when the *thread* that spawned the child ends, so
        // a dedicated thread spawns it and lives exactly as long as it runs.
        let (pid_tx, pid_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (exit_tx, exited) = mpsc::channel();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(err) => return drop(pid_tx.send(Err(err))),
                };
                let _ = pid_tx.send(Ok(child.id() as i32));
                let mut stopping = false;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => return drop(exit_tx.send(Ok(status))),
                        Ok(None) => {}
                        Err(err) => return drop(exit_tx.send(Err(err))),
                    }
                    if stopping {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    // A dropped handle stops the cluster too.
                    if stop_rx.recv_timeout(Duration::from_millis(50))
                        != Err(RecvTimeoutError::Timeout)
                    {
                        stopping = true;
                        // SAFETY: our child, not yet reaped (only this thread waits on it).
                        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                    }
                }
            })?;
        let pid = pid_rx.recv()?.context("starting postgres")?;
        let server = EmbeddedPostgres {
            data_dir,
            port,
            pid,
            password,
            stop,
            exited: Mutex::new(exited),
            _lock: lock,
        };
        server.wait_until_ready(&log_path)?;
        Ok(server)
    }

    /// PostgreSQL writes "ready" into postmaster.pid once it accepts connections.
    fn wait_until_ready(&self, log_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(status) = self.exited.lock().expect("not poisoned").try_recv() {
                let log = fs::read_to_string(log_path).unwrap_or_default();
                bail!("postgres exited during start-up ({status:?}):\n{log}");
            }
            // A stale file from a crashed run may say "ready" too: trust only ours.
            let pid_file =
                fs::read_to_string(self.data_dir.join("postmaster.pid")).unwrap_or_default();
            let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
            if lines.len() > 7
                && lines[0] == self.pid.to_string()
                && lines[3] == self.port.to_string()
                && lines[7] == "ready"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not become ready within {START_TIMEOUT:?}; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's process id; every backend is its child.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The server's log: its stderr, beside the data directory.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The TCP port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `database` on this cluster, as its superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{database}\""))
                .await?;
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// Fast shutdown: disconnects clients, then waits for PostgreSQL to exit.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self
            .exited
            .lock()
            .expect("not poisoned")
            .recv_timeout(Duration::from_secs(30));
    }
}

/// Locks `data_dir` for this process (the kernel releases the lock when the
/// process dies, however it dies), so that a PostgreSQL found running in it
/// cannot be another live orgd's.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.with_extension("lock");
    let lock = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    lock.try_lock().map_err(|err| match err {
        fs::TryLockError::WouldBlock => anyhow::anyhow!(
            "another orgd is using this data directory ({}): stop it, or give each orgd its own --data-dir",
            data_dir.display()
        ),
        fs::TryLockError::Error(err) => {
            anyhow::Error::new(err).context(format!("locking {}", path.display()))
        }
    })?;
    Ok(lock)
}

/// Stops a PostgreSQL still running in `data_dir` although no orgd holds it:
/// one still shutting down after its orgd died, or, where no death signal
/// stops it (not Linux), one that outlived an orgd killed with SIGKILL.
/// pg_ctl signals the pid in postmaster.pid, as the cluster's user, who can
/// signal no one else's processes; a file whose process is gone is left to
/// PostgreSQL, which replaces it.
fn stop_leftover(data_dir: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let output = command(&find_program("pg_ctl")?, user)
        .args(["stop", "--mode=fast", "--wait", "--timeout=30", "-D"])
        .arg(data_dir)
        .output()
        .context("running pg_ctl stop")?;
    if output.status.success() {
        tracing::warn!(dir = %data_dir.display(), "stopped a PostgreSQL that an earlier orgd left running");
    }
    Ok(())
}

/// As root we run PostgreSQL as another user, who must be able to reach the data
/// directory: every existing ancestor needs the execute bit for others.
fn check_reachable_by_others(data_dir: &Path) -> anyhow::Result<()> {
    for ancestor in data_dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "PostgreSQL runs as the 'postgres' user, which cannot enter {} (mode {:o}); \
                 choose a data directory it can reach, e.g. --data-dir /var/lib/orgd",
                ancestor.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(())
}

fn init_cluster(data_dir: &Path, user: Option<(u32, u32)>, password: &str) -> anyhow::Result<()> {
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))?;
    // initdb reads the password from a file that its user, and only it, can read.
    let pwfile = std::env::temp_dir().join(format!("orgd-pw-{}", uuid::Uuid::new_v4().simple()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pwfile)?
        .write_all(password.as_bytes())?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(data_dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
    }
    let output = command(&find_program("initdb")?, user)
        .arg("-D")
        .arg(data_dir)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .current_dir(data_dir)
        .output();
    let _ = fs::remove_file(&pwfile);
    let output = output.context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed for {}:\n{}{}",
            data_dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
