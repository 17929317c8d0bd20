-- Python distributions published to local-python sources.
CREATE TABLE python_files (
    id {autoid},
    source_guid TEXT NOT NULL REFERENCES sources (guid) ON DELETE CASCADE,
    project TEXT NOT NULL,
    display_name TEXT NOT NULL,
    version TEXT NOT NULL,
    filename TEXT NOT NULL,
    filetype TEXT NOT NULL,
    python_version TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    blake2_256 TEXT NOT NULL,
    md5 TEXT NOT NULL,
    requires_python TEXT,
    summary TEXT,
    metadata_sha256 TEXT,
    signature_sha256 TEXT,
    signature_keyid TEXT,
    -- 1 verified against a trusted key, 0 key unknown, NULL unsigned.
    signature_trusted INTEGER,
    yanked INTEGER NOT NULL DEFAULT 0,
    uploaded_at DOUBLE PRECISION NOT NULL,
    uploaded_by TEXT NOT NULL,
    UNIQUE (source_guid, filename)
);

CREATE INDEX python_files_project ON python_files (source_guid, project);
