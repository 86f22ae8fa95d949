//! The events a batch appends, inserted at the end of the batch's
//! transaction. With sqlx every statement was a round trip to its SQLite
//! worker thread, so they went in one multi-row INSERT; on the writer's own
//! thread (see `writer`) a cached single-row INSERT per event costs a few
//! microseconds and needs no SQL built per batch. Events keep their order:
//! by gid they are appended in the order they happened.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

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

/// The events of one batch, in the order they were pushed.
#[derive(Default)]
pub(super) struct Events(Vec<Event>);

impl Events {
    pub(super) fn push(&mut self, e: Event) {
        self.0.push(e);
    }

    /// Inserts every event pushed (in the batch's transaction).
    pub(super) fn insert(self, c: &Connection) -> StoreResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut insert = c.prepare_cached(
            "INSERT INTO transaction_events
                (gid, at, kind, status, branch_id, phase, attempt, code, message, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for e in self.0 {
            insert.execute(params![
                e.gid, e.at, e.kind, e.status, e.branch, e.phase, e.attempt, e.code, e.message,
                e.actor,
            ])?;
        }
        Ok(())
    }
}
