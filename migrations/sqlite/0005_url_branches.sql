-- What PostgreSQL's 0013 adds: branches called by URL (the DTM-compatible
-- API), and DTM query_prepared URLs as a message's query-back.

-- Each phase's URL and the headers of every call, as JSON; NULL for a
-- branch of a registered participant.
ALTER TABLE branches ADD COLUMN url_call TEXT;

-- SQLite cannot alter a CHECK: the table is rebuilt with the new one.
CREATE TABLE message_queries_new (
    gid      TEXT PRIMARY KEY REFERENCES global_transactions (gid) ON DELETE CASCADE,
    url      TEXT NOT NULL,
    protocol TEXT NOT NULL CHECK (protocol IN ('grpc', 'http', 'dtm'))
);
INSERT INTO message_queries_new (gid, url, protocol) SELECT gid, url, protocol FROM message_queries;
DROP TABLE message_queries;
ALTER TABLE message_queries_new RENAME TO message_queries;
