"""Package Manager: a self-hosted package repository for Python and R."""

__version__ = "0.1.0"
