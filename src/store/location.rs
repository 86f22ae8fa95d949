//! Which store the configuration names: PostgreSQL for a `postgres://`
//! URL, the embedded SQLite file for a `sqlite://` one or when no database
//! is configured at all (then `concord.db` in the data directory). Decided
//! here once for `concord serve`, `concord migrate` and the benchmark.

use std::fmt;
use std::path::{Path, PathBuf};

/// The SQLite file's name in the data directory.
pub const SQLITE_FILE: &str = "concord.db";

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A PostgreSQL database (its URL may carry a password: not `Display`ed).
    Postgres(String),
    /// A SQLite file, for one instance.
    Sqlite(PathBuf),
}

impl StoreLocation {
    /// `database_url` when given, else SQLite in `data_dir`. The error says
    /// what is wrong with the URL.
    pub fn resolve(database_url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self::Sqlite(data_dir.join(SQLITE_FILE)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Err("must start with postgres://, postgresql:// or sqlite://".into());
        };
        // sqlx's URL options (`?mode=rwc`) are the store's to choose.
        let path = rest.split_once('?').map_or(rest, |(p, _)| p);
        if path.is_empty() {
            return Err("sqlite:// needs a file path, for example sqlite://./concord.db".into());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// For logs and messages: the SQLite path, or only that it is PostgreSQL.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("postgresql"),
            Self::Sqlite(path) => write!(f, "sqlite file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_store_and_nothing_means_sqlite_in_the_data_dir() {
        let dir = Path::new("/var/lib/concord");
        let r = |u| StoreLocation::resolve(u, dir);
        assert_eq!(r(None), Ok(StoreLocation::Sqlite(dir.join("concord.db"))));
        assert_eq!(r(Some("  ")), r(None));
        assert_eq!(
            r(Some("postgres://u:pw@h/db")),
            Ok(StoreLocation::Postgres("postgres://u:pw@h/db".into()))
        );
        assert!(matches!(
            r(Some("postgresql://h/db")),
            Ok(StoreLocation::Postgres(_))
        ));
        assert_eq!(
            r(Some("sqlite:///tmp/c.db?mode=rwc")),
            Ok(StoreLocation::Sqlite("/tmp/c.db".into()))
        );
        assert_eq!(
            r(Some("sqlite://./c.db")),
            Ok(StoreLocation::Sqlite("./c.db".into()))
        );
        assert_eq!(
            r(Some("sqlite:c.db")),
            Ok(StoreLocation::Sqlite("c.db".into()))
        );
        assert!(r(Some("sqlite://")).is_err());
        assert!(r(Some("mysql://h/db")).unwrap_err().contains("postgres://"));
        let pg = StoreLocation::Postgres("postgres://u:secret@h/db".into());
        assert!(!pg.to_string().contains("secret"));
    }
}
