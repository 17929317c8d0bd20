-- Housekeeping asks which stored files are still used, by digest.
CREATE INDEX python_files_sha256 ON python_files (sha256);
CREATE INDEX python_files_metadata_sha256 ON python_files (metadata_sha256);
CREATE INDEX python_files_signature_sha256 ON python_files (signature_sha256);
