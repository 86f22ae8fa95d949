-- The wire protocol of each participant endpoint (issue 12): 'grpc', what
-- every endpoint spoke before, or 'http' (HTTP/JSON, one POST per call).
ALTER TABLE participant_endpoints
    ADD COLUMN protocol text NOT NULL DEFAULT 'grpc' CHECK (protocol IN ('grpc', 'http'));
