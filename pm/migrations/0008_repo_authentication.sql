-- An authenticated repo serves its index and files only to a token that covers
-- it (repos:read for the repo, or global:admin); 0 is a repo anyone may read.
ALTER TABLE repos ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 0;
