-- Until when a Try of the branch may still be running at its participant
-- (the call's deadline plus a margin, by this server's clock). A Try has
-- no lease to cover it, so the branch itself says that a call is out: a
-- repeated Try waits for it, and no Confirm or Cancel of the branch is sent
-- before it passed (README: "Never two calls of one branch at once").
ALTER TABLE branches ADD COLUMN call_until timestamptz;
