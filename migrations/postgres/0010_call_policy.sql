-- A branch's (TCC) or saga step's own call policy, given in the request:
-- retry delays and when its retries are exhausted (src/machine/policy.rs).
-- NULL: the coordinator's settings. JSON rather than six columns: it is
-- read with the branch and never queried by its parts.
ALTER TABLE branches ADD COLUMN policy jsonb;
