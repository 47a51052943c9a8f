//! The data directory's lock: one process at a time owns an embedded store
//! (SQLite state and a blob directory), so two servers never write the same
//! files and an offline `fsck --repair` never runs under a live server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ServerError;

/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data directory, released when dropped (or when the
/// process dies, however it dies: the kernel drops the lock with the file).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    path: PathBuf,
}

impl DataLock {
    /// Creates `dir` if needed and locks it for this process. Fails with a
    /// one-line reason when another process holds it.
    pub fn acquire(dir: &Path) -> Result<DataLock, ServerError> {
        Self::acquire_as(dir, "data directory")
    }

    /// The same for a blob cache directory: two nodes filling and evicting
    /// one cache would each count bytes the other deletes.
    pub fn acquire_cache(dir: &Path) -> Result<DataLock, ServerError> {
        Self::acquire_as(dir, "cache directory")
    }

    fn acquire_as(dir: &Path, what: &str) -> Result<DataLock, ServerError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ServerError::Startup(format!("cannot create {what} {}: {e}", dir.display()))
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| ServerError::Startup(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(ServerError::Startup(format!(
                    "{what} {} is in use by another skewless process{}",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(ServerError::Startup(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        // The pid is only a hint for the message above; the lock decides.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        Ok(DataLock { _file: file, path })
    }

    /// Whether some process holds the lock on `dir` right now.
    pub fn is_held(dir: &Path) -> bool {
        let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DataLock::is_held(dir.path()));
        let first = DataLock::acquire(dir.path()).unwrap();
        assert!(DataLock::is_held(dir.path()));
        let err = DataLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another skewless process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(!DataLock::is_held(dir.path()));
        DataLock::acquire(dir.path()).unwrap();
    }
}
