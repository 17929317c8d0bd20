-- API tokens: the JWT is never stored, only what it grants and whether it is revoked.
CREATE TABLE tokens (
    guid TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    scope TEXT NOT NULL,
    -- JSON list of source or repo GUIDs; NULL means every one ('*').
    targets TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
);
