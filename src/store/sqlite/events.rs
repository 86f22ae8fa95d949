//! The events a batch appends, inserted in one statement at the end of the
//! batch's transaction instead of one statement each. Every statement is a
//! round trip to sqlx's SQLite worker thread, and the writer runs them one
//! after the other: a committed TCC transaction appends eight events, so
//! this takes the writer's statements per transaction from 20 to 12
//! (measured with concord-bench --store sqlite, see BENCHMARKS.md). Events
//! keep their order: by gid they are appended in the order they happened.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::rows::us;
use crate::store::StoreResult;

/// One row of `transaction_events`, its id yet to be assigned.
#[derive(Debug, Default)]
pub(super) struct Event {
    pub gid: String,
    pub at: i64,
    pub kind: String,
    pub status: Option<String>,
    pub branch: Option<String>,
    pub phase: Option<&'static str>,
    pub attempt: Option<i32>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub actor: Option<String>,
}

impl Event {
    /// An event of `kind` on `gid` at `at`; the other columns empty.
    pub(super) fn new(gid: &str, at: DateTime<Utc>, kind: &str, actor: &str) -> Self {
        Self {
            gid: gid.to_string(),
            at: us(at),
            kind: kind.to_string(),
            actor: Some(actor.to_string()),
            ..Self::default()
        }
    }
}

/// Rows per INSERT: ten parameters each, well under SQLite's limit of
/// 32,766 parameters per statement.
const ROWS_PER_INSERT: usize = 500;

/// The events of one batch, in the order they were pushed.
#[derive(Default)]
pub(super) struct Events(Vec<Event>);

impl Events {
    pub(super) fn push(&mut self, e: Event) {
        self.0.push(e);
    }

    /// Inserts every event pushed (in the batch's transaction).
    pub(super) async fn insert(self, c: &mut SqliteConnection) -> StoreResult<()> {
        let mut rows = self.0.into_iter().peekable();
        while rows.peek().is_some() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO transaction_events
                    (gid, at, kind, status, branch_id, phase, attempt, code, message, actor) ",
            );
            q.push_values(rows.by_ref().take(ROWS_PER_INSERT), |mut b, e| {
                b.push_bind(e.gid)
                    .push_bind(e.at)
                    .push_bind(e.kind)
                    .push_bind(e.status)
                    .push_bind(e.branch)
                    .push_bind(e.phase)
                    .push_bind(e.attempt)
                    .push_bind(e.code)
                    .push_bind(e.message)
                    .push_bind(e.actor);
            });
            q.build().execute(&mut *c).await?;
        }
        Ok(())
    }
}
