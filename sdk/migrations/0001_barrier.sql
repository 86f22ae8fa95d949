-- Idempotency barrier of Concord participants (see concord_sdk::Barrier).
-- One row per (branch, op) that has happened; the primary key is what
-- serialises concurrent deliveries of the same op.
CREATE TABLE IF NOT EXISTS concord_barrier (
    gid        text        NOT NULL,
    branch_id  text        NOT NULL,
    -- try | confirm | cancel | execute | compensate
    op         text        NOT NULL,
    -- The op whose call inserted the row: equal to op, except for the
    -- try/execute row a cancel/compensate inserts when the forward op never
    -- ran (null compensation), which is what refuses a late, hanging try.
    origin_op  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch_id, op)
);

-- For Barrier::cleanup.
CREATE INDEX IF NOT EXISTS concord_barrier_created_at_idx ON concord_barrier (created_at);
