-- A repo's package list (the UI, rspm list packages) reads these columns of
-- every release; rows are wide (the README), so the index covers the query.
CREATE INDEX python_files_releases
    ON python_files (source_guid, project, version, display_name, summary, uploaded_at);
