//! The database error codes the stores react to, named, and the
//! conversions from [`sqlx::Error`] and [`rusqlite::Error`] (the SQLite
//! store's writer) to [`StoreError`]: the only place that
//! looks at an error code. PostgreSQL's SQLSTATEs have five characters and
//! SQLite's extended result codes at most four digits, so one table serves
//! both. Every statement of the store returns its error
//! through `?` and this conversion.

use super::StoreError;

/// PostgreSQL SQLSTATE codes (appendix A of the PostgreSQL manual).
pub mod postgres {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
}

/// SQLite extended result codes (sqlite.org/rescode.html), as sqlx gives
/// them: the number in decimal.
pub mod sqlite {
    pub const CONSTRAINT_CHECK: &str = "275";
    pub const CONSTRAINT_FOREIGNKEY: &str = "787";
    pub const CONSTRAINT_PRIMARYKEY: &str = "1555";
    pub const CONSTRAINT_UNIQUE: &str = "2067";
    /// Another connection holds the write lock past the busy timeout.
    pub const BUSY: &str = "5";
    pub const BUSY_SNAPSHOT: &str = "517";
    pub const LOCKED: &str = "6";
    /// The disk is full, or the file cannot be read or written.
    pub const FULL: &str = "13";
    pub const IOERR: &str = "10";
}

/// What an error code says about the write: a constraint refused it (the
/// caller asked for something that conflicts), or the database could not
/// take it now (worth retrying).
fn classify(code: &str) -> Option<fn(String) -> StoreError> {
    use postgres::*;
    match code {
        UNIQUE_VIOLATION | CHECK_VIOLATION | FOREIGN_KEY_VIOLATION => Some(StoreError::Conflict),
        SERIALIZATION_FAILURE | DEADLOCK_DETECTED | ADMIN_SHUTDOWN | TOO_MANY_CONNECTIONS => {
            Some(StoreError::Unavailable)
        }
        sqlite::CONSTRAINT_CHECK
        | sqlite::CONSTRAINT_FOREIGNKEY
        | sqlite::CONSTRAINT_PRIMARYKEY
        | sqlite::CONSTRAINT_UNIQUE => Some(StoreError::Conflict),
        sqlite::BUSY | sqlite::BUSY_SNAPSHOT | sqlite::LOCKED | sqlite::FULL | sqlite::IOERR => {
            Some(StoreError::Unavailable)
        }
        _ => None,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                let message = db.message().to_string();
                match db.code().as_deref().and_then(classify) {
                    Some(kind) => kind(message),
                    None => StoreError::Database(message),
                }
            }
            // A value this version cannot read (a status it does not know).
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(err.to_string())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err.to_string()),
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// The SQLite store's writer thread (rusqlite), by the same table.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::SqliteFailure(e, message) => {
                let message = message.clone().unwrap_or_else(|| e.to_string());
                match classify(&e.extended_code.to_string()) {
                    Some(kind) => kind(message),
                    None => StoreError::Database(message),
                }
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(err.to_string()),
            _ => StoreError::Database(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_kind_of_error() {
        assert!(matches!(
            classify(postgres::UNIQUE_VIOLATION).map(|k| k("x".into())),
            Some(StoreError::Conflict(_))
        ));
        assert!(matches!(
            classify(postgres::DEADLOCK_DETECTED).map(|k| k("x".into())),
            Some(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            classify(sqlite::CONSTRAINT_PRIMARYKEY).map(|k| k("x".into())),
            Some(StoreError::Conflict(_))
        ));
        assert!(matches!(
            classify(sqlite::BUSY).map(|k| k("x".into())),
            Some(StoreError::Unavailable(_))
        ));
        assert!(classify("42P01").is_none());
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
    }
}
