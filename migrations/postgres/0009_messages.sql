-- 2-phase messages (issue 12): the mode, its statuses (prepared ->
-- submitted -> succeeded, or prepared -> aborted), and where to ask the
-- initiator back whether its local transaction committed.

ALTER TABLE global_transactions DROP CONSTRAINT global_transactions_mode_check;
ALTER TABLE global_transactions ADD CONSTRAINT global_transactions_mode_check
    CHECK (mode IN ('tcc', 'saga', 'msg'));
ALTER TABLE global_transactions DROP CONSTRAINT global_transactions_status_check;
ALTER TABLE global_transactions ADD CONSTRAINT global_transactions_status_check
    CHECK (status IN ('trying', 'confirming', 'confirmed', 'cancelling', 'cancelled',
                      'running', 'succeeded', 'compensating', 'compensated',
                      'prepared', 'submitted', 'aborted'));

-- One row per message, written with it and deleted with it.
CREATE TABLE message_queries (
    gid      text COLLATE "C" PRIMARY KEY REFERENCES global_transactions (gid) ON DELETE CASCADE,
    url      text NOT NULL,
    protocol text NOT NULL CHECK (protocol IN ('grpc', 'http'))
);
