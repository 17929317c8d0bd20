-- Sources receive packages, repos serve them, subscriptions join the two in order.
CREATE TABLE sources (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE repos (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE subscriptions (
    repo_guid TEXT NOT NULL REFERENCES repos (guid) ON DELETE CASCADE,
    source_guid TEXT NOT NULL REFERENCES sources (guid) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (repo_guid, source_guid)
);

CREATE TABLE events (
    id {autoid},
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX events_at ON events (at);
