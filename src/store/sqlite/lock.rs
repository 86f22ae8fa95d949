//! One instance per SQLite file: an exclusive OS lock (`flock`) on a
//! sidecar file next to the database, taken before the database is opened
//! and held for as long as the store lives. A second `concord serve` on the
//! same file is refused at start instead of becoming a second writer whose
//! leases and fences the first one cannot see coming. The operating system
//! drops the lock when the process dies, however it dies, so a restart
//! after a crash takes it again at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    // Held for its lock, never read again.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// `<database>.lock` beside the database file.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        database.with_file_name(name)
    }

    /// Takes the lock of `database`, or says which process holds it.
    pub fn acquire(database: &Path) -> StoreResult<Self> {
        let path = Self::path_for(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(StoreError::Conflict(format!(
                    "{} is in use by another concord instance{holder}: one instance per SQLite \
                     file; to run several instances, use PostgreSQL (DATABASE_URL=postgres://...)",
                    database.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        // Only for the message above; the lock is what counts.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(Self { _file: file, path })
    }

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
        let db = dir.path().join("concord.db");
        let first = InstanceLock::acquire(&db).unwrap();
        assert_eq!(first.path(), dir.path().join("concord.db.lock"));
        let err = InstanceLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains("in use by another concord instance"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        InstanceLock::acquire(&db).unwrap();
    }
}
