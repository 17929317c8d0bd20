"""The ``rspm`` command."""
