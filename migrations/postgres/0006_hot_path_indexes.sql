-- Indexes and storage tuned for the write path, measured with
-- `concord bench` and pg_stat_statements.

-- `branches_participant (participant, gid)` served only the `--participant`
-- filter of `concord tx list`, an EXISTS probe that the primary key serves
-- as well (a transaction has a handful of branches). On the hot path it
-- cost an index insert per branch and, worse, it was a trap for cached
-- generic plans: a plan made while the table was small could look branches
-- up by gid through it, a scan of the whole index that grew with the table
-- (measured: 0.3 ms per branch at 20k branches, most of the database's time
-- in the phase-2 progress write).
DROP INDEX IF EXISTS branches_participant;

-- Events are only ever read and deleted by gid: one index, (gid, id), is
-- the key, instead of a key on id plus an index on (gid, id) — nine
-- index inserts fewer per committed TCC transaction. Building the new key
-- locks the events table against writes while it runs: on a large history,
-- apply this migration (`concord migrate`) in a quiet moment.
ALTER TABLE transaction_events DROP CONSTRAINT transaction_events_pkey;
DROP INDEX transaction_events_gid;
ALTER TABLE transaction_events ADD PRIMARY KEY (gid, id);

-- The status index serves the open-transaction gauges; finished and
-- resolved rows (the vast majority) need not be in it, so finishing a
-- transaction no longer inserts into it. The admin list filters by status
-- along the (created_at, gid) index.
DROP INDEX global_transactions_status;
CREATE INDEX global_transactions_open ON global_transactions (status, created_at)
    WHERE finished_at IS NULL AND resolved_at IS NULL;

-- Room on each page for the updates a row gets while it is driven (branch
-- counter, Try and phase-2 outcomes), so that those that touch no indexed
-- column stay heap-only (HOT) instead of adding index entries.
ALTER TABLE global_transactions SET (fillfactor = 70);
ALTER TABLE branches SET (fillfactor = 70);
