//! The real orgd binary as its own process, logging into a file that the test
//! reads once orgd has stopped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;

use super::{AUDIENCE, ISSUER, SECRET};

pub struct LoggedOrgd {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl LoggedOrgd {
    /// `orgd serve` on `db_url` with the test's JWT settings, extra `flags`,
    /// and `RUST_LOG=rust_log`.
    pub fn start(db_url: &str, flags: &[&str], rust_log: &str) -> LoggedOrgd {
        let dir = std::env::temp_dir().join(format!("orgd-logged-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("orgd.log")).unwrap();
        let addr = super::free_local_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_orgd"))
            .args(["serve", "--listen", &addr, "--jwt-secret", SECRET])
            .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .args(["--shutdown-grace", "2s"])
            .args(flags)
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", rust_log)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        LoggedOrgd { child, addr, dir }
    }

    /// A channel to it, once it listens.
    pub async fn channel(&self) -> Channel {
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

    /// Kills orgd at once (SIGKILL), as a crash or an OOM kill would: it
    /// records nothing more.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops orgd (SIGTERM), so that its log is complete, and returns the log.
    pub fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success());
        let log = std::fs::read_to_string(self.dir.join("orgd.log")).unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
        log
    }
}
