-- What PostgreSQL's 0012 adds: the call timeout and call policy (JSON) a
-- participant declares per action when it registers; NULL: none.
ALTER TABLE participant_actions ADD COLUMN call_timeout_ms INTEGER;
ALTER TABLE participant_actions ADD COLUMN policy TEXT;

-- A branch whose owed Confirm, Cancel or compensation an operator skipped
-- (microseconds, the operator's name, the note).
ALTER TABLE branches ADD COLUMN skipped_at INTEGER;
ALTER TABLE branches ADD COLUMN skipped_by TEXT;
ALTER TABLE branches ADD COLUMN skip_note TEXT;

-- Alerts to post to the configured webhooks (see PostgreSQL's 0012);
-- times in microseconds.
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    gid          TEXT NOT NULL REFERENCES global_transactions (gid) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('needs_attention', 'attention_cleared')),
    reason       TEXT,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    delivered_to TEXT NOT NULL DEFAULT '[]',
    delivered_at INTEGER,
    last_error   TEXT,
    owner        TEXT,
    lease_until  INTEGER
);
CREATE INDEX alerts_due ON alerts (next_at) WHERE delivered_at IS NULL;
CREATE INDEX alerts_gid ON alerts (gid);
