"""Database records and helpers for the contract tests of the tables.

The catalog (``test_catalog``), the token store (``test_tokenstore``) and the Python
files table (``test_python_files``) are tested on SQLite and on PostgreSQL alike; this
module holds what they share: the catalog's source kinds, a PythonFile builder for
tests that need a recorded file without uploading one, reads straight from the
tables, and the gate that makes two PostgreSQL transactions race deterministically.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import psycopg2
import pytest
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from pm.catalog import Source, SourceKind
from pm.db import Database, Dialect, Tx, migrate, postgres_dialect, sqlite_dialect
from pm.python.files import PythonFile, PythonFiles
from pm.r.files import RFiles

# The time the tests' clocks start at.
START = 1_700_000_000.25
# Any fixed time: the tests that use these records compare them, never age them.
UPLOADED_AT = 1_700_000_005.25
ACTOR = "admin@unix"
EventTuple = tuple[str, str, str, str]

# The kinds the server registers (pm.assembly), built without their ecosystems.
KINDS = (
    SourceKind("local-python", "python", PythonFiles.delete_source_rows),
    SourceKind("local", "r", RFiles.delete_source_rows),
)


def python_file(
    source: Source,
    filename: str,
    *,
    project: str = "demo",
    version: str = "1.0",
    content: bytes | None = None,
    **changes: Any,
) -> PythonFile:
    """A complete PythonFile record whose digests derive from ``content``."""
    data = content if content is not None else filename.encode()
    record = PythonFile(
        source_guid=source.guid,
        project=project,
        display_name=project.title(),
        version=version,
        filename=filename,
        filetype="sdist" if filename.endswith(".tar.gz") else "bdist_wheel",
        python_version="source" if filename.endswith(".tar.gz") else "py3",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blake2_256=hashlib.blake2b(data, digest_size=32).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        requires_python=">=3.9",
        summary="A demo project",
        metadata_sha256=hashlib.sha256(b"metadata" + data).hexdigest(),
        signature_sha256=None,
        signature_keyid=None,
        signature_trusted=None,
        yanked=False,
        uploaded_at=UPLOADED_AT,
        uploaded_by="token:ci",
    )
    return replace(record, **changes)


# Databases ---------------------------------------------------------------------


def migrated_dialect(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Dialect:
    """A freshly migrated, empty database: SQLite in tmp_path, or PostgreSQL."""
    if provider == "postgres":
        dialect = postgres_dialect(request.getfixturevalue("pg_url"))
    else:
        dialect = sqlite_dialect(tmp_path / "db")
    migrate(dialect)
    return dialect


async def table_rows(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Read rows straight from the tables, bypassing the code under test's own queries."""
    return await db.read(lambda tx: tx.all(sql, *params))


async def history(db: Database) -> list[EventTuple]:
    """Every event, oldest first, as (actor, action, subject, detail)."""
    found = await table_rows(db, "SELECT actor, action, subject, detail FROM events ORDER BY id")
    return [(e["actor"], e["action"], e["subject"], e["detail"]) for e in found]


class TickingClock:
    """A thread-safe clock that returns a later time on every call."""

    def __init__(self, now: float = START) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += 1.0
            return self._now


# Racing transactions (PostgreSQL only) -----------------------------------------

GATE_DEADLINE = 30.0


class Gate:
    """Holds the first transaction just before a chosen statement until a second one
    reaches the same statement or is seen waiting for a lock in PostgreSQL.

    This makes two transactions overlap at the worst moment, deterministically.
    """

    def __init__(self, prefix: str, url: str) -> None:
        self.prefix = prefix
        self._url = url
        self._arrivals = 0
        self._lock = threading.Lock()
        self._second = threading.Event()

    def _someone_waits_for_a_lock(self) -> bool:
        connection = psycopg2.connect(self._url, connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND wait_event_type = 'Lock'")
                row = cursor.fetchone()
                return bool(row and row[0])
        finally:
            connection.close()

    def arrive(self) -> None:
        with self._lock:
            self._arrivals += 1
            arrival = self._arrivals
        if arrival == 2:
            self._second.set()
        if arrival != 1:
            return
        deadline = time.monotonic() + GATE_DEADLINE
        while not self._second.wait(0.05):
            if self._someone_waits_for_a_lock():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no second transaction reached {self.prefix!r}")


class GatedTx:
    def __init__(self, tx: Tx, gate: Gate) -> None:
        self._tx = tx
        self._gate = gate

    def run(self, query: str, *params: Any) -> int:
        if query.startswith(self._gate.prefix):
            self._gate.arrive()
        return self._tx.run(query, *params)

    def all(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return self._tx.all(query, *params)

    def one(self, query: str, *params: Any) -> dict[str, Any] | None:
        return self._tx.one(query, *params)


class GatedDatabase(Database):
    """A Database whose write transactions pass through a Gate."""

    gate: Gate | None = None

    def write(self, work: Callable[[Tx], Any]) -> Deferred[Any]:
        gate = self.gate
        if gate is None:
            return super().write(work)
        return super().write(lambda tx: work(cast(Tx, GatedTx(tx, gate))))


def gated_database(pg_url: str) -> GatedDatabase:
    """A migrated PostgreSQL database whose writes can be raced through a Gate."""
    dialect = postgres_dialect(pg_url)
    migrate(dialect)
    return GatedDatabase(dialect)


async def both(first: Any, second: Any) -> list[tuple[bool, Any]]:
    """Run two coroutines at once; (succeeded, result or Failure) of each."""
    results = await DeferredList([ensureDeferred(first), ensureDeferred(second)],
                                 consumeErrors=True)
    return [(ok, value) for ok, value in results]
