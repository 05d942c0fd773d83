//! Secrets orgd generates for itself and keeps in its data directory (the dev
//! JWT secret, the embedded cluster's password): created once, atomically, and
//! readable only by the user running orgd.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// Shortest secret accepted anywhere: 32 bytes (256 bits for HS256).
pub const MIN_SECRET_LEN: usize = 32;

/// The secret stored at `path`, generated first if the file does not exist.
/// Concurrent callers agree on one secret: it is written to a private temporary
/// file and hard-linked into place, which fails if another caller was first.
pub fn read_or_create(path: &Path) -> anyhow::Result<String> {
    if let Some(secret) = read(path)? {
        return Ok(secret);
    }
    let dir = path.parent().context("a secret file needs a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = crate::domain::Secret::generate().token;
    let temp = dir.join(format!(".secret-{}", uuid::Uuid::new_v4().simple()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} vanished", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(secret) if secret.len() >= MIN_SECRET_LEN => Ok(Some(secret)),
        Ok(_) => bail!(
            "{} holds a secret shorter than {MIN_SECRET_LEN} bytes; delete it to generate a new one",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_and_shared() {
        let dir = std::env::temp_dir().join(format!("orgd-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join("s");
        let results: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| read_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            results
                .iter()
                .all(|s| s == &results[0] && s.len() >= MIN_SECRET_LEN)
        );
        fs::write(&path, "short").unwrap();
        assert!(read_or_create(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
