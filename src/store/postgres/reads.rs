//! Plain reads: a transaction with its branches, its history (stored
//! events and what the rows tell, see `history`) and the
//! readiness check. None of them is batched:
//! a read costs no WAL flush, so there is nothing to share.

use sqlx::postgres::PgConnection;

use super::super::rows::{BranchRow, TxRow, branch_columns};
use super::{MIGRATOR, PgStore};
use crate::domain::Gid;
use crate::store::{BranchRecord, EventRecord, StoreError, StoreResult, TxRecord, history};

/// A transaction's row.
pub(super) async fn tx_row(conn: &mut PgConnection, gid: &Gid) -> StoreResult<Option<TxRecord>> {
    let row: Option<TxRow> = sqlx::query_as("SELECT * FROM global_transactions WHERE gid = $1")
        .bind(gid.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(TxRecord::from))
}

/// A transaction's branches in creation order.
pub(super) async fn branch_rows(
    conn: &mut PgConnection,
    gid: &Gid,
) -> StoreResult<Vec<BranchRecord>> {
    let rows: Vec<BranchRow> = sqlx::query_as(concat!(
        "SELECT ",
        branch_columns!(),
        " FROM branches WHERE gid = $1 ORDER BY created_at, branch_id"
    ))
    .bind(gid.as_str())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(BranchRecord::from).collect())
}

impl PgStore {
    pub(super) async fn load_tx(&self, gid: &Gid) -> StoreResult<Option<TxRecord>> {
        tx_row(&mut *self.durable.acquire().await?, gid).await
    }

    pub(super) async fn load_branch(
        &self,
        gid: &Gid,
        id: &str,
    ) -> StoreResult<Option<BranchRecord>> {
        let row: Option<BranchRow> = sqlx::query_as(concat!(
            "SELECT ",
            branch_columns!(),
            " FROM branches WHERE gid = $1 AND branch_id = $2"
        ))
        .bind(gid.as_str())
        .bind(id)
        .fetch_optional(&self.durable)
        .await?;
        Ok(row.map(BranchRecord::from))
    }

    /// A transaction and its branches, two statements on one connection.
    pub(super) async fn load(
        &self,
        gid: &Gid,
    ) -> StoreResult<Option<(TxRecord, Vec<BranchRecord>)>> {
        let mut conn = self.durable.acquire().await?;
        let Some(tx) = tx_row(&mut conn, gid).await? else {
            return Ok(None);
        };
        let branches = branch_rows(&mut conn, gid).await?;
        Ok(Some((tx, branches)))
    }

    /// The history: the stored events with those the rows tell
    /// (`history`), read in one snapshot so the two agree.
    pub(super) async fn events(&self, gid: &Gid) -> StoreResult<Vec<EventRecord>> {
        let mut t = self.durable.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *t)
            .await?;
        let tx = tx_row(&mut t, gid).await?;
        let branches = match &tx {
            Some(_) => branch_rows(&mut t, gid).await?,
            None => Vec::new(),
        };
        let stored: Vec<EventRecord> = sqlx::query_as(
            "SELECT id, at, kind, status, branch_id, phase, attempt, code, message, actor
               FROM transaction_events WHERE gid = $1 ORDER BY id",
        )
        .bind(gid.as_str())
        .fetch_all(&mut *t)
        .await?;
        t.commit().await?;
        Ok(match tx {
            Some(tx) => history::complete(&tx, &branches, stored),
            None => stored,
        })
    }

    /// The database answers and every migration of this build is applied.
    pub(super) async fn ready(&self) -> StoreResult<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.durable)
                .await?;
        let expected = MIGRATOR.iter().count() as i64;
        if applied < expected {
            return Err(StoreError::Unavailable(format!(
                "{applied} of {expected} migrations applied"
            )));
        }
        Ok(())
    }
}
