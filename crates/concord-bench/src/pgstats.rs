//! `--pg-stats`: what PostgreSQL executed per transaction during the
//! measured run, from `pg_stat_statements` (reset before the run, read
//! after it drained): statements, rows and execution time per transaction
//! in all, and the statements that took the most time. The cluster must
//! load the module (`shared_preload_libraries = 'pg_stat_statements'`);
//! without it the report says so.

use sqlx::PgPool;

/// Creates the extension in the database (if allowed) and resets the
/// statistics of the whole cluster. The error says why it is not available.
pub async fn reset(pool: &PgPool) -> Result<(), String> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await
        .map_err(|e| format!("cannot create pg_stat_statements: {e}"))?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(pool)
        .await
        .map_err(|e| {
            format!("pg_stat_statements not usable (is it in shared_preload_libraries?): {e}")
        })?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    calls: i64,
    rows: i64,
    ms: f64,
    plan_ms: f64,
    query: String,
}

/// The report lines: totals per transaction, then the statements that took
/// the most execution time (`top` of them).
pub async fn report(pool: &PgPool, transactions: u64, top: usize) -> Vec<String> {
    let rows: Vec<Row> = match sqlx::query_as(
        "SELECT s.calls, s.rows, s.total_exec_time AS ms, s.total_plan_time AS plan_ms, s.query
           FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
          WHERE d.datname = current_database()
            AND s.query NOT LIKE '%pg_stat_statements%'
          ORDER BY s.total_exec_time DESC",
    )
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => return vec![format!("pg_stat_statements could not be read: {e}")],
    };
    let n = transactions.max(1) as f64;
    let calls: i64 = rows.iter().map(|r| r.calls).sum();
    let rows_total: i64 = rows.iter().map(|r| r.rows).sum();
    let ms: f64 = rows.iter().map(|r| r.ms).sum();
    let plan_ms: f64 = rows.iter().map(|r| r.plan_ms).sum();
    // Planning is counted only with pg_stat_statements.track_planning on.
    let mut out = vec![format!(
        "pg per tx          {:.2} statements, {:.1} rows, {:.3} ms executing, {:.3} ms planning ({} statements in all)",
        calls as f64 / n,
        rows_total as f64 / n,
        ms / n,
        plan_ms / n,
        calls
    )];
    for r in rows.iter().take(top) {
        let query: String = r.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = query.chars().take(110).collect();
        out.push(format!(
            "  {:>6.3} ms (plan {:>6.3}) {:>5.2} calls {:>6.1} rows  {short}",
            r.ms / n,
            r.plan_ms / n,
            r.calls as f64 / n,
            r.rows as f64 / n
        ));
    }
    out
}
