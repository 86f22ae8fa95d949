-- `branches_participant (participant, gid)` served only the `--participant`
-- filter of `concord tx list`, an EXISTS probe that the primary key serves
-- as well (a transaction has a handful of branches). On the hot path it
-- cost an index insert per branch and, worse, it was a trap for cached
-- generic plans: a plan made while the table was small could look branches
-- up by gid through it, a scan of the whole index that grew with the table
-- (measured: 0.3 ms per branch at 20k branches, most of the database's time
-- in the phase-2 progress write).
DROP INDEX IF EXISTS branches_participant;
