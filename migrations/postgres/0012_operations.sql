-- Issue 14, operations: the call timeout and call policy a participant
-- declares per action when it registers (src/machine/policy.rs,
-- ActionPolicy); NULL: none. A branch copies the policy in force when it
-- is created, so these are read only by the registry.
ALTER TABLE participant_actions
    ADD COLUMN call_timeout_ms bigint,
    ADD COLUMN policy          jsonb;

-- A branch whose owed Confirm, Cancel or compensation an operator skipped
-- after doing its work by hand: when, who, and the required note. Its
-- phase columns keep the last real outcome, so "skipped" is never confused
-- with "succeeded"; the state machine reads the owed phase as skipped.
ALTER TABLE branches
    ADD COLUMN skipped_at timestamptz,
    ADD COLUMN skipped_by text,
    ADD COLUMN skip_note  text;

-- Alerts to post to the configured webhooks: one row per change of a
-- transaction's needs_attention (flagged, or no longer: finished or
-- resolved), inserted by the same statement as the change, so that a
-- change has exactly one alert whatever the crashes and instances. Any
-- instance delivers it (claim with SKIP LOCKED and a lease); the URLs
-- that answered 2xx are kept in `delivered_to` so a retry only posts to
-- the others. Deleted with their transaction.
CREATE TABLE alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gid          text NOT NULL REFERENCES global_transactions (gid) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('needs_attention', 'attention_cleared')),
    reason       text,
    created_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL,
    -- JSON array of the URLs that took it.
    delivered_to text NOT NULL DEFAULT '[]',
    delivered_at timestamptz,
    last_error   text,
    owner        text,
    lease_until  timestamptz
);
CREATE INDEX alerts_due ON alerts (next_at) WHERE delivered_at IS NULL;
CREATE INDEX alerts_gid ON alerts (gid);
