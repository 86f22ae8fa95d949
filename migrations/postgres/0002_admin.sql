-- Operator actions (issue 5): manual resolution of a transaction that needs
-- attention, and indexes for the admin list.

-- A resolved transaction keeps the status it had; these say who closed it
-- by hand, when and why. Resolution also clears next_attempt_at (so the
-- recovery claim never picks it) and bumps the fence (so a driver still in
-- flight cannot write its round over it).
ALTER TABLE global_transactions
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolution_note text;

-- `concord tx list`: keyset pagination on (created_at, gid).
CREATE INDEX global_transactions_created ON global_transactions (created_at, gid);
-- `--needs-attention`, the first thing an SRE asks for.
CREATE INDEX global_transactions_attention ON global_transactions (created_at)
    WHERE needs_attention;
-- `--participant`.
CREATE INDEX branches_participant ON branches (participant, gid);
