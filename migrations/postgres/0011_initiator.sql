-- The identity that began a transaction (issue 17): its Try, Commit,
-- Rollback, follow-ups and reads are allowed to it and to admins only.
-- NULL: begun while authentication was off.
ALTER TABLE global_transactions ADD COLUMN initiator text;
