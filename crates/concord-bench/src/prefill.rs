//! `--prefill N`: fills the tables with N finished transactions, for the
//! "flat as history grows" figure, in SQL rather than N real transactions
//! (ten million take minutes, not hours).
//!
//! Each is a copy of a real finished transaction of the benchmarked kind
//! (one the warm-up ran), with every row that carries its gid (the
//! transaction, its branches, its events and whatever else a later schema
//! keys by gid): the same columns, sizes and index entries as the real
//! ones, under a new gid, its times moved into the past one transaction per
//! 100 µs so that retention sees them as history. The gids sort before
//! every real (UUIDv7) one, as older transactions do.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool};

/// Transactions copied per statement.
const CHUNK: u64 = 50_000;

#[derive(sqlx::FromRow)]
struct Column {
    column_name: String,
    data_type: String,
    is_identity: String,
    is_generated: String,
}

/// A gid for copy number `i` (a bigint in SQL): UUID-shaped, below every
/// UUIDv7 of this century.
const GID: &str = "lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0')";

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The INSERT that copies the template's rows of `table` for copies
/// `$2..=$3` of `$4` (all times shifted back by `($4 - i) * 100 µs`).
async fn copy_statement(pool: &PgPool, table: &str) -> anyhow::Result<String> {
    let columns: Vec<Column> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_identity::text, is_generated::text
           FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = $1
          ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let kept: Vec<&Column> = columns
        .iter()
        .filter(|c| c.is_identity != "YES" && c.is_generated != "ALWAYS")
        .collect();
    let names: Vec<String> = kept.iter().map(|c| quote(&c.column_name)).collect();
    let values: Vec<String> = kept
        .iter()
        .map(|c| {
            let col = format!("t.{}", quote(&c.column_name));
            if c.column_name == "gid" {
                GID.to_string()
            } else if c.data_type.starts_with("timestamp") {
                format!("{col} - ($4 - i) * interval '100 microseconds'")
            } else {
                col
            }
        })
        .collect();
    Ok(format!(
        "INSERT INTO {t} ({names}) SELECT {values}
           FROM (SELECT * FROM {t} WHERE gid = $1) t, generate_series($2::bigint, $3::bigint) AS i",
        t = quote(table),
        names = names.join(", "),
        values = values.join(", ")
    ))
}

/// Copies a finished transaction of `mode` `n` times, then vacuums and
/// analyzes the tables (as autovacuum would have on a database that grew
/// to this size) and checkpoints, so that the measured run starts clean.
pub async fn prefill(pool: &PgPool, mode: &str, n: u64) -> anyhow::Result<()> {
    let template: Option<String> = sqlx::query_scalar(
        "SELECT gid FROM global_transactions
          WHERE mode = $1 AND finished_at IS NOT NULL
          ORDER BY finished_at DESC LIMIT 1",
    )
    .bind(mode)
    .fetch_optional(pool)
    .await?;
    let Some(template) = template else {
        anyhow::bail!(
            "--prefill needs a finished {mode} transaction to copy: run a warm-up (--warmup > 0)"
        );
    };
    // The transaction row first: the others may refer to it.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND column_name = 'gid'
            AND table_name IN (SELECT table_name FROM information_schema.tables
                                WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
          ORDER BY table_name <> 'global_transactions', table_name",
    )
    .fetch_all(pool)
    .await?;
    let mut statements = Vec::new();
    for t in &tables {
        statements.push(copy_statement(pool, t).await?);
    }
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let last = (done + CHUNK).min(n);
        let mut tx = pool.begin().await?;
        for s in &statements {
            // Built from the catalog's own column names, quoted.
            sqlx::query(AssertSqlSafe(s.as_str()))
                .bind(&template)
                .bind((done + 1) as i64)
                .bind(last as i64)
                .bind(n as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        done = last;
        if done % (CHUNK * 20) == 0 || done == n {
            eprintln!(
                "bench: prefilled {done} of {n} transactions ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    for t in &tables {
        sqlx::query(AssertSqlSafe(format!("VACUUM (ANALYZE) {}", quote(t))))
            .execute(pool)
            .await?;
    }
    // Not allowed to every user; the run is only less clean without it.
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
    eprintln!(
        "bench: prefill of {n} transactions ({}) took {:.1} s",
        tables.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
