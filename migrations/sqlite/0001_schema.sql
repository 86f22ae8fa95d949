-- The whole schema of the embedded store, as PostgreSQL's migrations 0001-0007
-- left it (see migrations/postgres/ for why each column and index exists).
-- Differences, all of representation: instants are INTEGER microseconds
-- since the Unix epoch (they compare and sort as numbers; SQLite has no
-- timestamp type), metadata is JSON text, a step's dependencies are a JSON
-- array of integers, and the event id is the rowid.

CREATE TABLE participants (
    name        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE participant_actions (
    participant TEXT NOT NULL REFERENCES participants (name) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (participant, action)
) STRICT, WITHOUT ROWID;

CREATE TABLE participant_endpoints (
    participant   TEXT NOT NULL REFERENCES participants (name) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (participant, url)
) STRICT, WITHOUT ROWID;

CREATE TABLE global_transactions (
    gid              TEXT PRIMARY KEY,
    mode             TEXT NOT NULL CHECK (mode IN ('tcc', 'saga', 'msg')),
    status           TEXT NOT NULL CHECK (status IN ('trying', 'confirming', 'confirmed', 'cancelling',
                         'cancelled', 'running', 'succeeded', 'compensating', 'compensated',
                         'prepared', 'submitted', 'aborted')),
    metadata         TEXT NOT NULL DEFAULT '{}',
    timeout_ms       INTEGER NOT NULL,
    deadline         INTEGER NOT NULL,
    branch_seq       INTEGER NOT NULL DEFAULT 0,
    rollback_reason  TEXT,
    decided_at       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    needs_attention  INTEGER NOT NULL DEFAULT 0,
    attention_reason TEXT,
    paused           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    owner            TEXT,
    lease_until      INTEGER,
    fence            INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    resolved_at      INTEGER,
    resolved_by      TEXT,
    resolution_note  TEXT,
    concurrency      INTEGER NOT NULL DEFAULT 8
) STRICT;

CREATE INDEX global_transactions_due ON global_transactions (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX global_transactions_created ON global_transactions (created_at, gid);
CREATE INDEX global_transactions_open ON global_transactions (status, created_at)
    WHERE finished_at IS NULL AND resolved_at IS NULL;
CREATE INDEX global_transactions_closed
    ON global_transactions (COALESCE(finished_at, resolved_at))
    WHERE finished_at IS NOT NULL OR resolved_at IS NOT NULL;

CREATE TABLE branches (
    gid                 TEXT NOT NULL REFERENCES global_transactions (gid) ON DELETE CASCADE,
    branch_id           TEXT NOT NULL,
    participant         TEXT NOT NULL,
    action              TEXT NOT NULL,
    payload             BLOB NOT NULL,
    call_timeout_ms     INTEGER,
    first_phase         TEXT NOT NULL DEFAULT 'pending'
        CHECK (first_phase IN ('pending', 'succeeded', 'rejected', 'unknown', 'not_required')),
    second_phase        TEXT NOT NULL DEFAULT 'not_required'
        CHECK (second_phase IN ('pending', 'succeeded', 'rejected', 'unknown', 'not_required')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_code           TEXT,
    last_error          TEXT,
    last_attempt_at     INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    compensation        TEXT,
    depends_on          TEXT NOT NULL DEFAULT '[]',
    compensate_rejected INTEGER NOT NULL DEFAULT 1,
    call_until          INTEGER,
    PRIMARY KEY (gid, branch_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE transaction_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    gid       TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT,
    branch_id TEXT,
    phase     TEXT,
    attempt   INTEGER,
    code      TEXT,
    message   TEXT,
    actor     TEXT
) STRICT;
CREATE INDEX transaction_events_gid ON transaction_events (gid, id);
