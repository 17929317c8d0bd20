"""Fixtures of the unit tests of one table (catalog, tokens, each ecosystem's files).

Each runs a test on SQLite and then PostgreSQL, on a freshly migrated, empty
database. A module that needs another kind of ``dialect``, ``clock`` or ``db``
defines its own, which takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pm.catalog import Catalog
from pm.db import Database, Dialect
from pm.testing import Clock
from tests.support.records import KINDS, START, migrated_dialect


@pytest.fixture
def dialect(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Dialect:
    """A freshly migrated, empty database: SQLite in tmp_path, then PostgreSQL."""
    return migrated_dialect(provider, tmp_path, request)


@pytest.fixture
def clock() -> Clock:
    """The injected clock, shared by the catalog and the tables beside it."""
    return Clock(START)


@pytest.fixture
def db(dialect: Dialect) -> Iterator[Database]:
    """A real adbapi pool; closed after the test."""
    database = Database(dialect)
    yield database
    database.close()


@pytest.fixture
def catalog(db: Database, clock: Clock) -> Catalog:
    """A Catalog with the server's source kinds (local-python and local R)."""
    return Catalog(db, KINDS, clock)
