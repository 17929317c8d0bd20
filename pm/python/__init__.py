"""Python packages: Warehouse's checks, the upload form and the simple index."""
