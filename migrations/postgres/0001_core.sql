-- Core schema: participants, global transactions, branches, events.
-- Status columns are text with CHECK constraints rather than PostgreSQL
-- enums, so that adding states (sagas) is a constraint change, not an
-- ALTER TYPE that cannot run inside a transaction.

CREATE TABLE participants (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participant_actions (
    participant text NOT NULL REFERENCES participants (name) ON DELETE CASCADE,
    action      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant, action)
);

CREATE TABLE participant_endpoints (
    participant   text NOT NULL REFERENCES participants (name) ON DELETE CASCADE,
    url           text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant, url)
);

CREATE TABLE global_transactions (
    gid              text PRIMARY KEY,
    mode             text NOT NULL CHECK (mode IN ('tcc', 'saga')),
    status           text NOT NULL CHECK (status IN ('trying', 'confirming', 'confirmed', 'cancelling', 'cancelled')),
    metadata         jsonb NOT NULL DEFAULT '{}',
    timeout_ms       bigint NOT NULL,
    deadline         timestamptz NOT NULL,
    -- Bumped by every branch insert: serialises branch registration with the
    -- decision, which compares it to what it read.
    branch_seq       integer NOT NULL DEFAULT 0,
    rollback_reason  text,
    decided_at       timestamptz,
    -- Phase-2 rounds so far (drives the backoff delay).
    attempts         integer NOT NULL DEFAULT 0,
    needs_attention  boolean NOT NULL DEFAULT false,
    attention_reason text,
    paused           boolean NOT NULL DEFAULT false,
    -- When the recovery loop may drive it next; NULL once final.
    next_attempt_at  timestamptz,
    -- Lease: the instance currently driving it, until when, and a fencing
    -- token bumped on every claim so a stale owner's writes match nothing.
    owner            text,
    lease_until      timestamptz,
    fence            bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz
);

-- The recovery query: due, unfinished work.
CREATE INDEX global_transactions_due ON global_transactions (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX global_transactions_status ON global_transactions (status, created_at);

CREATE TABLE branches (
    gid             text NOT NULL REFERENCES global_transactions (gid) ON DELETE CASCADE,
    branch_id       text NOT NULL,
    participant     text NOT NULL,
    action          text NOT NULL,
    payload         bytea NOT NULL,
    call_timeout_ms bigint,
    first_phase     text NOT NULL DEFAULT 'pending'
        CHECK (first_phase IN ('pending', 'succeeded', 'rejected', 'unknown', 'not_required')),
    second_phase    text NOT NULL DEFAULT 'not_required'
        CHECK (second_phase IN ('pending', 'succeeded', 'rejected', 'unknown', 'not_required')),
    attempts        integer NOT NULL DEFAULT 0,
    last_code       text,
    last_error      text,
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (gid, branch_id)
);

-- Append-only history that operators read; no foreign key so that it stays
-- cheap to write and is deleted only by retention.
CREATE TABLE transaction_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gid       text NOT NULL,
    at        timestamptz NOT NULL,
    kind      text NOT NULL,
    status    text,
    branch_id text,
    phase     text,
    attempt   integer,
    code      text,
    message   text,
    actor     text
);
CREATE INDEX transaction_events_gid ON transaction_events (gid, id);
