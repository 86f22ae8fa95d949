//! The program of README's "Writing a participant", whole: a participant
//! ([`participant`], `shop`: a TCC action and a saga pair, behind the
//! barrier) and an initiator ([`initiator`]: five TCC transactions and two
//! sagas, one of each refused). Run it with the `quickstart` binary; the
//! coordinator's tests run it too (`tests/it/sdk.rs`).

pub mod initiator;
pub mod participant;

use sqlx::PgPool;

/// The tables of `shop`, created if missing, with 10 tea in stock and 100
/// in alice's wallet (reset on every call, so runs start alike).
pub async fn setup(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS stock (
             id text PRIMARY KEY,
             available bigint NOT NULL,
             held bigint NOT NULL DEFAULT 0,
             CHECK (held >= 0 AND available >= held));
         CREATE TABLE IF NOT EXISTS wallet (
             id text PRIMARY KEY,
             balance bigint NOT NULL CHECK (balance >= 0));
         INSERT INTO stock VALUES ('tea', 10, 0)
             ON CONFLICT (id) DO UPDATE SET available = 10, held = 0;
         INSERT INTO wallet VALUES ('alice', 100)
             ON CONFLICT (id) DO UPDATE SET balance = 100;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// `(tea available, tea held, alice's balance)`.
pub async fn state(pool: &PgPool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT s.available, s.held, w.balance FROM stock s, wallet w \
         WHERE s.id = 'tea' AND w.id = 'alice'",
    )
    .fetch_one(pool)
    .await
}
