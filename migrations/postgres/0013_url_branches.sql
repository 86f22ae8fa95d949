-- Branches called by URL (the DTM-compatible API, issue 12 part 3): each
-- phase's URL and the headers sent with every call, as JSON; NULL for a
-- branch of a registered participant. Read with the branch, never queried
-- by its parts.
ALTER TABLE branches ADD COLUMN url_call jsonb;

-- A message's query-back may be a DTM `query_prepared` URL, called by
-- DTM's convention (GET with gid, trans_type, branch_id and op).
ALTER TABLE message_queries DROP CONSTRAINT message_queries_protocol_check;
ALTER TABLE message_queries ADD CONSTRAINT message_queries_protocol_check
    CHECK (protocol IN ('grpc', 'http', 'dtm'));
