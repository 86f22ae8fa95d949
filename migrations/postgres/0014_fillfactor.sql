-- Issue 16, live data per finished transaction: 0006 kept 30 % of every
-- page of these two tables free for the updates a row gets while it is
-- driven (so that they stay heap-only, HOT), and a finished row keeps that
-- room for good: about 250 B of the ~1.1 KB a finished Saga-2 keeps once
-- its success path is no longer stored as events. Measured with `concord
-- bench --sizes` (debug build, BENCHMARKS.md): a Saga-2's branch updates
-- stayed HOT 95 % at 70, 80 % at 85, 67 % at 100 (TCC-2: 99, 96, 92 %);
-- the transaction row's were HOT about as often at 70, 90 and 100 (half
-- of a TCC's, a quarter of a saga's: most change indexed columns). A page
-- keeps room for a few row versions, which pruning recycles once the
-- update that made them dead commits. Applies to pages filled from now on.
ALTER TABLE global_transactions SET (fillfactor = 90);
ALTER TABLE branches SET (fillfactor = 85);
