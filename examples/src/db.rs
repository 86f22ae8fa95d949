//! One PostgreSQL schema per service: the examples run every service
//! against one database, but no service sees another's tables (each pool
//! has its own `search_path`), as if each had a database of its own.

use std::str::FromStr;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres};

/// Creates the database of `database_url` if it does not exist.
pub async fn ensure_database(database_url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(database_url).await? {
        tracing::info!("creating database");
        // Two processes may race here; losing the race is fine.
        if let Err(e) = Postgres::create_database(database_url).await
            && !Postgres::database_exists(database_url).await?
        {
            return Err(e);
        }
    }
    Ok(())
}

/// A pool whose connections see only `schema` (created if missing).
pub async fn schema_pool_from_url(
    database_url: &str,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    schema_pool(
        PgConnectOptions::from_str(database_url)?,
        schema,
        max_connections,
    )
    .await
}

/// A pool whose connections see only `schema` (created if missing), from
/// existing connect options (for example those of a test database).
pub async fn schema_pool(
    options: PgConnectOptions,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    check_name(schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options.options([("search_path", schema)]))
        .await?;
    // `check_name` allows only plain identifiers.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&pool)
    .await?;
    Ok(pool)
}

/// Drops `schema` and everything in it (tests clean up with it).
pub async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    check_name(schema)?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

/// Schema names are interpolated into SQL: only plain names are accepted.
fn check_name(schema: &str) -> Result<(), sqlx::Error> {
    let plain = !schema.is_empty()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("invalid schema name {schema:?}").into(),
        ))
    }
}
