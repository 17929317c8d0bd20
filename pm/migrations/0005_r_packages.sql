-- R source packages published to local (R) sources. One row per file; the
-- current version of a package is its highest version not archived.
CREATE TABLE r_packages (
    id {autoid},
    source_guid TEXT NOT NULL REFERENCES sources (guid) ON DELETE CASCADE,
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    md5 TEXT NOT NULL,
    -- Every DESCRIPTION field, as a JSON object in the file's order.
    fields TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    uploaded_at DOUBLE PRECISION NOT NULL,
    uploaded_by TEXT NOT NULL,
    UNIQUE (source_guid, filename)
);

CREATE INDEX r_packages_package ON r_packages (source_guid, package);
CREATE INDEX r_packages_sha256 ON r_packages (sha256);
