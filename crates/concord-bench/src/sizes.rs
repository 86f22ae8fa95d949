//! `--sizes`: live data per finished transaction once the run drained:
//! every table keyed by gid is rewritten (`VACUUM FULL`, so dead rows and
//! free space left by updates do not count), then its size (heap, TOAST
//! and indexes) is divided by the finished transactions in the database
//! (warm-up included). PostgreSQL only. Also the share of the run's row
//! updates that were heap-only (HOT: no index entry added), which the
//! tables' fillfactor trades against their size.

use sqlx::{AssertSqlSafe, PgPool};

#[derive(sqlx::FromRow)]
struct Size {
    heap: i64,
    total: i64,
}

/// The report lines.
pub async fn report(pool: &PgPool) -> Vec<String> {
    match measure(pool).await {
        Ok(lines) => lines,
        Err(e) => vec![format!("sizes could not be measured: {e}")],
    }
}

async fn measure(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND column_name = 'gid'
            AND table_name IN (SELECT table_name FROM information_schema.tables
                                WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
          ORDER BY table_name",
    )
    .fetch_all(pool)
    .await?;
    let finished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM global_transactions WHERE finished_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    let n = finished.max(1) as f64;
    let hot = hot_updates(pool, &tables).await?;
    let mut parts = Vec::new();
    let mut all = 0i64;
    for t in &tables {
        let quoted = format!("\"{}\"", t.replace('"', "\"\""));
        sqlx::query(AssertSqlSafe(format!("VACUUM FULL {quoted}")))
            .execute(pool)
            .await?;
        let s: Size = sqlx::query_as(
            "SELECT pg_table_size($1::regclass) AS heap, pg_total_relation_size($1::regclass) AS total",
        )
        .bind(&quoted)
        .fetch_one(pool)
        .await?;
        all += s.total;
        parts.push(format!(
            "{t} {:.0} B ({:.0} B rows, {:.0} B indexes)",
            s.total as f64 / n,
            s.heap as f64 / n,
            (s.total - s.heap) as f64 / n
        ));
    }
    Ok(vec![
        format!(
            "live data per tx   {:.0} B over {finished} finished transactions, after VACUUM FULL",
            all as f64 / n
        ),
        format!("                   {}", parts.join("; ")),
        format!("hot updates        {hot}"),
    ])
}

#[derive(sqlx::FromRow)]
struct Updates {
    table: String,
    updates: i64,
    hot: i64,
}

/// "branches 97% of 20000; ..." for the tables that had updates.
async fn hot_updates(pool: &PgPool, tables: &[String]) -> anyhow::Result<String> {
    // A backend reports its counters when it goes idle, within a second.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let rows: Vec<Updates> = sqlx::query_as(
        "SELECT relname::text AS table, n_tup_upd AS updates, n_tup_hot_upd AS hot
           FROM pg_stat_user_tables WHERE relname = ANY($1) AND n_tup_upd > 0 ORDER BY relname",
    )
    .bind(tables)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{} {:.0}% of {}",
                r.table,
                100.0 * r.hot as f64 / r.updates as f64,
                r.updates
            )
        })
        .collect::<Vec<_>>()
        .join("; "))
}
