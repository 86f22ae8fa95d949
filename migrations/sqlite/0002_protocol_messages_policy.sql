-- What PostgreSQL's 0008-0010 add (the mode 'msg' and its statuses are in
-- 0001's CHECKs: SQLite cannot alter a CHECK, and 0001 was never released).

-- The wire protocol of each participant endpoint: 'grpc' or 'http'.
ALTER TABLE participant_endpoints
    ADD COLUMN protocol TEXT NOT NULL DEFAULT 'grpc' CHECK (protocol IN ('grpc', 'http'));

-- 2-phase messages: where to ask the initiator back whether its local
-- transaction committed. One row per message, deleted with it.
CREATE TABLE message_queries (
    gid      TEXT PRIMARY KEY REFERENCES global_transactions (gid) ON DELETE CASCADE,
    url      TEXT NOT NULL,
    protocol TEXT NOT NULL CHECK (protocol IN ('grpc', 'http'))
);

-- A branch's (TCC) or saga step's own call policy as JSON; NULL: the
-- coordinator's settings.
ALTER TABLE branches ADD COLUMN policy TEXT;
