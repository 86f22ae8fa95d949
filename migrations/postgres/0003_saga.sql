-- Sagas: new statuses, a compensation per step, step dependencies and the
-- per-saga concurrency limit.

ALTER TABLE global_transactions DROP CONSTRAINT global_transactions_status_check;
ALTER TABLE global_transactions ADD CONSTRAINT global_transactions_status_check
    CHECK (status IN ('trying', 'confirming', 'confirmed', 'cancelling', 'cancelled',
                      'running', 'succeeded', 'compensating', 'compensated'));
-- Most steps of one saga running at once.
ALTER TABLE global_transactions ADD COLUMN concurrency integer NOT NULL DEFAULT 8;

ALTER TABLE branches
    -- The action that undoes `action` (sagas only).
    ADD COLUMN compensation        text,
    -- Indices of the steps this one waits for, made explicit for
    -- sequential sagas.
    ADD COLUMN depends_on          integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN compensate_rejected boolean NOT NULL DEFAULT true;
