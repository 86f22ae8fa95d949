-- Identifiers (gids, branch ids, names) are compared byte-wise: they are
-- ASCII by validation, and the database's default collation would make
-- every index lookup on them go through the locale's string comparison.
ALTER TABLE branches DROP CONSTRAINT branches_gid_fkey;
ALTER TABLE participant_actions DROP CONSTRAINT participant_actions_participant_fkey;
ALTER TABLE participant_endpoints DROP CONSTRAINT participant_endpoints_participant_fkey;

ALTER TABLE global_transactions ALTER COLUMN gid TYPE text COLLATE "C";
ALTER TABLE branches
    ALTER COLUMN gid TYPE text COLLATE "C",
    ALTER COLUMN branch_id TYPE text COLLATE "C",
    ALTER COLUMN participant TYPE text COLLATE "C",
    ALTER COLUMN action TYPE text COLLATE "C";
ALTER TABLE transaction_events ALTER COLUMN gid TYPE text COLLATE "C";
ALTER TABLE participants ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE participant_actions
    ALTER COLUMN participant TYPE text COLLATE "C",
    ALTER COLUMN action TYPE text COLLATE "C";
ALTER TABLE participant_endpoints ALTER COLUMN participant TYPE text COLLATE "C";

ALTER TABLE branches ADD CONSTRAINT branches_gid_fkey
    FOREIGN KEY (gid) REFERENCES global_transactions (gid) ON DELETE CASCADE;
ALTER TABLE participant_actions ADD CONSTRAINT participant_actions_participant_fkey
    FOREIGN KEY (participant) REFERENCES participants (name) ON DELETE CASCADE;
ALTER TABLE participant_endpoints ADD CONSTRAINT participant_endpoints_participant_fkey
    FOREIGN KEY (participant) REFERENCES participants (name) ON DELETE CASCADE;
