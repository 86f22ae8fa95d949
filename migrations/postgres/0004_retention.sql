-- Retention (issue 6): finds finished or resolved transactions by the time
-- they were closed, oldest first, without scanning the open ones.
CREATE INDEX global_transactions_closed
    ON global_transactions ((COALESCE(finished_at, resolved_at)))
    WHERE finished_at IS NOT NULL OR resolved_at IS NOT NULL;
