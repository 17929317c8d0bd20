"""Database access for SQLite and PostgreSQL through ``twisted.enterprise.adbapi``.

The rest of the code writes one SQL dialect (``?`` placeholders, portable types)
and never imports a driver; every difference between the two databases lives in
:class:`Dialect`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg2
import psycopg2.errors
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pm.errors import Conflict, StoreUnavailable

T = TypeVar("T")
Row = dict[str, Any]

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every node sharing a database.
_MIGRATION_LOCK = 4242_0001
_WRITE_LOCK = 4242_0002


class SchemaTooNew(Exception):
    """The database was migrated by a newer Package Manager than this one."""


@dataclass(frozen=True)
class Dialect:
    """Everything that differs between SQLite and PostgreSQL."""

    name: str
    connect: Callable[[], Any]
    pool_args: tuple[Any, ...]
    pool_kwargs: dict[str, Any]
    placeholder: str
    autoid: str
    begin_statements: tuple[str, ...]
    migration_lock: tuple[str, ...]
    integrity_errors: tuple[type[BaseException], ...]
    # Says whether a driver error means "the database cannot be reached now"
    # (503, try again) rather than a bug.
    unavailable: Callable[[BaseException], bool]
    description: str = ""
    # A read-only connection for the calling thread, where a query costs
    # microseconds (embedded SQLite); None where every query goes to the pool.
    quick_connect: Callable[[], Any] | None = None
    # Where a query goes over the network (PostgreSQL): the adbapi arguments of
    # a second, small pool for the reads on every request's path (the change
    # serial), so that they never queue behind uploads' reads and writes.
    quick_pool_kwargs: dict[str, Any] | None = None
    # The adbapi arguments of a pool for reads apart from the write transactions,
    # which wait their turn for the write lock holding their connections; None
    # where reads and writes share one pool (SQLite's single connection).
    read_pool_kwargs: dict[str, Any] | None = None
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, query: str) -> str:
        """Translate the portable ``?`` placeholders to the driver's."""
        if self.placeholder == "?":
            return query
        cached = self._cache.get(query)
        if cached is None:
            cached = self._cache[query] = query.replace("%", "%%").replace("?", self.placeholder)
        return cached

    def ddl(self, script: str) -> str:
        return script.replace("{autoid}", self.autoid)


# busy, locked, I/O error, corrupt, full, cannot open, not a database
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 11, 13, 14, 26})


def _sqlite_unavailable(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.DatabaseError) and (
        code is None or code & 0xFF in _SQLITE_UNAVAILABLE
    )


def _postgres_unavailable(error: BaseException) -> bool:
    return isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError)


def _sqlite_setup(connection: sqlite3.Connection) -> None:
    # The busy timeout first, so every later statement waits out another
    # process (a second node starting, an admin tool) holding a lock.
    connection.execute("PRAGMA busy_timeout=10000")
    # WAL lets readers proceed during a write. It is a property of the file:
    # switch once. SQLite may refuse the switch with "locked" without calling
    # the busy handler, so that one statement is retried.
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        deadline = time.monotonic() + 10
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_read_only(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=False,
                                 timeout=0)
    # Never wait: the caller is the reactor thread and has the pool to fall back on.
    connection.execute("PRAGMA busy_timeout=0")
    return connection


def sqlite_dialect(directory: Path) -> Dialect:
    """The embedded default: one database file in ``directory``."""
    path = str(directory / "packagemanager.db")

    def connect() -> sqlite3.Connection:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The database holds token rows and who uploaded what: readable by the
        # server's user only. SQLite gives its -wal and -shm files the mode of
        # the database file, so creating that one is enough.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        connection = sqlite3.connect(path, check_same_thread=False)
        _sqlite_setup(connection)
        return connection

    return Dialect(
        name="sqlite",
        connect=connect,
        pool_args=("sqlite3", path),
        pool_kwargs={
            "check_same_thread": False,
            "timeout": 10.0,
            "cp_openfun": _sqlite_setup,
            # One connection: SQLite serialises writers anyway, and a single
            # connection can never deadlock against itself on lock upgrades.
            "cp_min": 1,
            "cp_max": 1,
        },
        placeholder="?",
        autoid="INTEGER PRIMARY KEY AUTOINCREMENT",
        # IMMEDIATE takes the write lock up front, so a transaction never fails
        # half way when it first writes.
        begin_statements=("BEGIN IMMEDIATE",),
        migration_lock=(),
        integrity_errors=(sqlite3.IntegrityError,),
        unavailable=_sqlite_unavailable,
        description=path,
        quick_connect=lambda: _sqlite_read_only(path),
    )


def _autocommit(connection: Any) -> None:
    connection.autocommit = True


def postgres_dialect(url: str) -> Dialect:
    """PostgreSQL through psycopg2, for production and several nodes."""

    def connect() -> Any:
        return psycopg2.connect(url, connect_timeout=10)

    return Dialect(
        name="postgres",
        connect=connect,
        pool_args=("psycopg2", url),
        pool_kwargs={
            "connect_timeout": 10,
            "cp_min": 1,
            "cp_max": 8,
            # A server restart kills pooled connections; reconnect instead of
            # failing forever.
            "cp_reconnect": True,
        },
        placeholder="%s",
        autoid="BIGSERIAL PRIMARY KEY",
        # Writers take turns: an event's id is then handed out in commit
        # order, so the newest id (pm.changes) never stands still while an
        # earlier transaction commits after a later one.
        begin_statements=(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})",),
        migration_lock=(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})",),
        integrity_errors=(psycopg2.IntegrityError,),
        unavailable=_postgres_unavailable,
        description=_redact(url),
        read_pool_kwargs={
            "connect_timeout": 10,
            "cp_min": 1,
            "cp_max": 8,
            "cp_reconnect": True,
        },
        quick_pool_kwargs={
            "connect_timeout": 10,
            "cp_min": 1,
            "cp_max": 2,
            "cp_reconnect": True,
            # One statement is its own snapshot: one round trip instead of
            # BEGIN, the query and COMMIT.
            "cp_openfun": _autocommit,
        },
    )


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class Tx:
    """A cursor that speaks the portable dialect and returns rows as dicts."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def run(self, query: str, *params: Any) -> int:
        self._cursor.execute(self._dialect.sql(query), params)
        return int(self._cursor.rowcount)

    def all(self, query: str, *params: Any) -> list[Row]:
        self._cursor.execute(self._dialect.sql(query), params)
        names = [column[0] for column in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def one(self, query: str, *params: Any) -> Row | None:
        rows = self.all(query, *params)
        return rows[0] if rows else None

    def script(self, script: str) -> None:
        for statement in _statements(self._dialect.ddl(script)):
            self._cursor.execute(statement)


def _statements(script: str) -> list[str]:
    # Migration files hold ';'-terminated statements with no ';' inside a
    # literal; comment lines are dropped first because they may hold one.
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    script: str


def migrations() -> list[Migration]:
    """The numbered schema files shipped in ``pm/migrations``."""
    found = []
    for entry in importlib.resources.files("pm.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {versions}")
    return found


def migrate(dialect: Dialect, available: Sequence[Migration] | None = None) -> int:
    """Bring the schema up to date in one transaction; return the version.

    Runs before the reactor starts, so it talks to the driver directly.
    """
    steps = list(migrations() if available is None else available)
    latest = steps[-1].version if steps else 0
    connection = dialect.connect()
    try:
        cursor = connection.cursor()
        tx = Tx(cursor, dialect)
        for statement in (*dialect.begin_statements, *dialect.migration_lock):
            cursor.execute(statement)
        tx.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
        current = int(row["v"]) if row and row["v"] is not None else 0
        if current > latest:
            raise SchemaTooNew(
                f"the database schema is at version {current}, newer than this "
                f"Package Manager knows (up to {latest}); run a newer release"
            )
        for step in steps:
            if step.version > current:
                tx.script(step.script)
                tx.run(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (?, ?, CURRENT_TIMESTAMP)",
                    step.version,
                    step.name,
                )
        connection.commit()
        return latest
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()


class Database:
    """The adbapi pool, with reads, write transactions and error mapping."""

    def __init__(self, dialect: Dialect, pool: adbapi.ConnectionPool | None = None) -> None:
        self.dialect = dialect
        self.pool = pool or adbapi.ConnectionPool(*dialect.pool_args, **dialect.pool_kwargs)
        self.read_pool = self.quick_pool = self.pool
        if pool is None and dialect.read_pool_kwargs is not None:
            self.read_pool = adbapi.ConnectionPool(*dialect.pool_args,
                                                   **dialect.read_pool_kwargs)
        if dialect.quick_pool_kwargs is not None:
            self.quick_pool = adbapi.ConnectionPool(*dialect.pool_args,
                                                    **dialect.quick_pool_kwargs)

    def read(self, work: Callable[[Tx], T]) -> Deferred[T]:
        """Run ``work`` in a pool thread, as one transaction; for queries that change
        nothing. Where the dialect has a read pool, it never waits behind writes: 64
        uploads finishing at once hold every write connection, waiting for the lock,
        while the index pages they change are made again."""
        d: Deferred[T] = self.read_pool.runInteraction(
            lambda cursor: work(Tx(cursor, self.dialect)))
        return d.addErrback(self._translate)

    def read_quick(self, work: Callable[[Tx], T]) -> Deferred[T]:
        """Like :meth:`read`, on the dialect's quick pool if it has one: for one short
        statement that every request waits for. With many uploads at once the other
        pools' queues hold their token, source and file lookups, the pages their
        events invalidate, and their write transactions."""
        d: Deferred[T] = self.quick_pool.runInteraction(
            lambda cursor: work(Tx(cursor, self.dialect)))
        return d.addErrback(self._translate)

    def write(self, work: Callable[[Tx], T]) -> Deferred[T]:
        """Run ``work`` as one transaction: all of it commits, or none."""

        def interaction(cursor: Any) -> T:
            for statement in self.dialect.begin_statements:
                cursor.execute(statement)
            return work(Tx(cursor, self.dialect))

        d: Deferred[T] = self.pool.runInteraction(interaction)
        return d.addErrback(self._translate)

    def _translate(self, failure: Failure) -> Failure:
        if failure.check(*self.dialect.integrity_errors):
            raise Conflict(f"conflicting change: {failure.value}")
        error = failure.value
        if failure.check(adbapi.ConnectionLost) or (
            error is not None and self.dialect.unavailable(error)
        ):
            raise StoreUnavailable(
                f"the {self.dialect.name} database is unavailable; try again shortly"
            )
        return failure

    def close(self) -> None:
        for pool in {id(p): p for p in (self.pool, self.read_pool, self.quick_pool)}.values():
            pool.close()
