-- The core metadata a project page shows (description, author, URLs...), as JSON.
ALTER TABLE python_files ADD COLUMN details TEXT;
