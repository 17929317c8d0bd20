"""Unit tests for pm.db: migrations, the SQL dialects and the Database error mapping."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import pytest_twisted

from pm.db import (
    Database,
    Dialect,
    Migration,
    SchemaTooNew,
    Tx,
    migrate,
    migrations,
    postgres_dialect,
    sqlite_dialect,
)
from pm.errors import Conflict, StoreUnavailable

# What a bad SQL statement raises: the driver's own error, whichever database.
DRIVER_ERRORS = (sqlite3.Error, psycopg2.Error)
SCHEMA_TABLES = {
    "schema_migrations",
    "sources",
    "repos",
    "subscriptions",
    "events",
    "tokens",
    "python_files",
    "r_packages",
}


@pytest.fixture
def dialect(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Dialect:
    """An empty database on each provider (SQLite in tmp_path, then PostgreSQL)."""
    if provider == "postgres":
        return postgres_dialect(request.getfixturevalue("pg_url"))
    return sqlite_dialect(tmp_path / "db")


@pytest.fixture
def database(dialect: Dialect) -> Iterator[Database]:
    """A migrated database with its adbapi pool, closed at the end of the test."""
    migrate(dialect)
    db = Database(dialect)
    yield db
    db.close()


def query(dialect: Dialect, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Run one query on a fresh driver connection, outside the code under test's pool."""
    connection = dialect.connect()
    try:
        rows = Tx(connection.cursor(), dialect).all(sql, *params)
        connection.rollback()
        return rows
    finally:
        connection.close()


def execute(dialect: Dialect, sql: str, *params: Any) -> None:
    connection = dialect.connect()
    try:
        Tx(connection.cursor(), dialect).run(sql, *params)
        connection.commit()
    finally:
        connection.close()


def tables(dialect: Dialect) -> set[str]:
    if dialect.name == "sqlite":
        rows = query(dialect, "SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r["name"] for r in rows if not r["name"].startswith("sqlite_")}
    rows = query(
        dialect,
        "SELECT table_name AS name FROM information_schema.tables"
        " WHERE table_schema = 'public'",
    )
    return {r["name"] for r in rows}


def versions(dialect: Dialect) -> list[int]:
    rows = query(dialect, "SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


def latest() -> int:
    return migrations()[-1].version


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Migrations ----------------------------------------------------------------


def test_migrations_are_numbered_one_to_n() -> None:
    """The shipped migrations are versions 1..n, named NNNN_words.sql, each non-empty."""
    found = migrations()
    assert found, "no migrations shipped"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for m in found:
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", m.name), m.name
        assert int(m.name[:4]) == m.version
        statements = [line for line in m.script.splitlines()
                      if line.strip() and not line.lstrip().startswith("--")]
        assert statements, f"{m.name} has no statement"


def test_migrate_creates_the_schema_and_records_every_version(dialect: Dialect) -> None:
    """On an empty database migrate() creates every table and records versions 1..n."""
    assert tables(dialect) == set()
    assert migrate(dialect) == latest()
    assert tables(dialect) == SCHEMA_TABLES
    assert versions(dialect) == list(range(1, latest() + 1))
    names = [r["name"] for r in query(dialect, "SELECT name FROM schema_migrations"
                                               " ORDER BY version")]
    assert names == [m.name for m in migrations()]


def test_migrate_twice_is_a_no_op(dialect: Dialect) -> None:
    """A second migrate() changes nothing: same version rows, data left alone."""
    migrate(dialect)
    execute(dialect, "INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
            "g1", "kept", "local-python", 1.0)
    before = query(dialect, "SELECT * FROM schema_migrations ORDER BY version")
    assert migrate(dialect) == latest()
    assert query(dialect, "SELECT * FROM schema_migrations ORDER BY version") == before
    assert [r["name"] for r in query(dialect, "SELECT name FROM sources")] == ["kept"]


def test_migrate_applies_only_the_new_versions(dialect: Dialect) -> None:
    """A database at version k gets k+1..n applied and keeps its existing data."""
    steps = migrations()
    assert migrate(dialect, steps[:1]) == 1
    assert versions(dialect) == [1]
    execute(dialect, "INSERT INTO repos (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
            "r1", "pypi", "python", 1.0)
    assert migrate(dialect, steps) == latest()
    assert versions(dialect) == list(range(1, latest() + 1))
    assert tables(dialect) == SCHEMA_TABLES
    assert [r["name"] for r in query(dialect, "SELECT name FROM repos")] == ["pypi"]


def test_schema_newer_than_the_code_is_refused(dialect: Dialect) -> None:
    """A schema_migrations version above the code's latest raises SchemaTooNew, clearly."""
    migrate(dialect)
    newer = latest() + 1
    execute(dialect, "INSERT INTO schema_migrations (version, name, applied_at)"
                     " VALUES (?, ?, ?)", newer, f"{newer:04d}_from_the_future.sql", "now")
    with pytest.raises(SchemaTooNew) as caught:
        migrate(dialect)
    message = str(caught.value)
    assert str(newer) in message
    assert str(latest()) in message
    assert "newer" in message
    assert versions(dialect) == [*range(1, latest() + 1), newer]


def test_schema_too_new_applies_nothing(dialect: Dialect) -> None:
    """An older code base facing a newer schema does not run any of its own steps."""
    migrate(dialect, migrations()[:1])
    execute(dialect, "INSERT INTO schema_migrations (version, name, applied_at)"
                     " VALUES (?, ?, ?)", 99, "0099_future.sql", "now")
    with pytest.raises(SchemaTooNew):
        migrate(dialect, [*migrations()[:1], Migration(2, "0002_x.sql", "CREATE TABLE x (a INT);")])
    assert "x" not in tables(dialect)


def broken_step(version: int) -> Migration:
    return Migration(
        version,
        f"{version:04d}_broken.sql",
        "CREATE TABLE half_done (x INTEGER);\n"
        "INSERT INTO half_done (x) VALUES (1);\n"
        "CREATE TABLE broken (this is not valid sql;\n",
    )


def test_broken_migration_on_an_empty_database_leaves_nothing(dialect: Dialect) -> None:
    """A failing step rolls back the whole run: no tables at all, not even partial ones."""
    steps = [*migrations(), broken_step(latest() + 1)]
    with pytest.raises(DRIVER_ERRORS):
        migrate(dialect, steps)
    assert tables(dialect) == set()


def test_broken_migration_keeps_the_previous_version(dialect: Dialect) -> None:
    """On a database at version n, a broken n+1 leaves version n and no partial tables."""
    migrate(dialect)
    before = query(dialect, "SELECT * FROM schema_migrations ORDER BY version")
    with pytest.raises(DRIVER_ERRORS):
        migrate(dialect, [*migrations(), broken_step(latest() + 1)])
    assert tables(dialect) == SCHEMA_TABLES
    assert query(dialect, "SELECT * FROM schema_migrations ORDER BY version") == before
    # And the database still works for the next, correct, migration.
    fixed = Migration(latest() + 1, f"{latest() + 1:04d}_fixed.sql",
                      "CREATE TABLE fixed (x INTEGER);")
    assert migrate(dialect, [*migrations(), fixed]) == latest() + 1
    assert "fixed" in tables(dialect)


def test_good_step_before_a_broken_one_is_rolled_back_too(dialect: Dialect) -> None:
    """All pending steps are one transaction: a good n+1 is undone when n+2 fails."""
    migrate(dialect)
    good = Migration(latest() + 1, f"{latest() + 1:04d}_good.sql",
                     "CREATE TABLE good (x INTEGER);")
    with pytest.raises(DRIVER_ERRORS):
        migrate(dialect, [*migrations(), good, broken_step(latest() + 2)])
    assert "good" not in tables(dialect)
    assert versions(dialect) == list(range(1, latest() + 1))


def test_concurrent_migrations_apply_each_step_once(dialect: Dialect) -> None:
    """Several nodes migrating the same empty database at once all succeed, each step once."""
    nodes = 4
    start = threading.Barrier(nodes, timeout=60)

    def node() -> int:
        start.wait()
        return migrate(dialect)

    with ThreadPoolExecutor(nodes) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(node) for _ in range(nodes)]]
    assert results == [latest()] * nodes
    assert versions(dialect) == list(range(1, latest() + 1))
    assert tables(dialect) == SCHEMA_TABLES


def test_comment_lines_may_hold_semicolons(dialect: Dialect) -> None:
    """A ';' inside a '--' comment line does not split a migration statement."""
    step = Migration(1, "0001_commented.sql",
                     "-- a comment; with a semicolon\n"
                     "CREATE TABLE commented (\n"
                     "    -- inside; too\n"
                     "    id {autoid},\n"
                     "    x TEXT\n"
                     ");\n")
    assert migrate(dialect, [step]) == 1
    execute(dialect, "INSERT INTO commented (x) VALUES (?)", "a")
    execute(dialect, "INSERT INTO commented (x) VALUES (?)", "b")
    rows = query(dialect, "SELECT id, x FROM commented ORDER BY id")
    assert [r["x"] for r in rows] == ["a", "b"]
    assert rows[0]["id"] < rows[1]["id"]


# Dialect -------------------------------------------------------------------


def test_sqlite_placeholders_are_left_alone(tmp_path: Path) -> None:
    """SQLite speaks '?' natively, so sql() returns the query unchanged."""
    d = sqlite_dialect(tmp_path)
    q = "SELECT * FROM sources WHERE name = ? AND type = ?"
    assert d.sql(q) == q


def test_postgres_placeholders_become_format_markers() -> None:
    """PostgreSQL (psycopg2) gets '%s' for every '?', the same answer every time."""
    d = postgres_dialect("postgres://u:secret@127.0.0.1:1/db")
    q = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"
    assert d.sql(q) == "INSERT INTO t (a, b, c) VALUES (%s, %s, %s)"
    assert d.sql(q) == "INSERT INTO t (a, b, c) VALUES (%s, %s, %s)"
    assert d.sql("SELECT 1") == "SELECT 1"


def test_postgres_description_hides_the_password() -> None:
    """The dialect's description (shown in status and logs) never carries the password."""
    d = postgres_dialect("postgres://pm:s3cr3t@db.example.com:5432/pm")
    assert "s3cr3t" not in d.description
    assert d.description == "postgres://pm:***@db.example.com:5432/pm"


def test_ddl_fills_in_the_auto_id_type(tmp_path: Path) -> None:
    """'{autoid}' in a migration becomes each database's auto-increment key type."""
    assert sqlite_dialect(tmp_path).ddl("id {autoid}") == "id INTEGER PRIMARY KEY AUTOINCREMENT"
    assert postgres_dialect("postgres://u@h/d").ddl("id {autoid}") == "id BIGSERIAL PRIMARY KEY"


@pytest_twisted.ensureDeferred
async def test_placeholders_bind_values_on_both_databases(database: Database) -> None:
    """The portable '?' query binds values in order on each database."""
    row = await database.read(lambda tx: tx.one("SELECT ? AS a, ? AS b, ? AS c", 1, "two", None))
    assert row == {"a": 1, "b": "two", "c": None}


@pytest_twisted.ensureDeferred
async def test_literal_percent_sign_survives_translation(database: Database) -> None:
    """A literal '%' in a portable query with parameters works on both databases."""
    row = await database.read(
        lambda tx: tx.one("SELECT ? || '%' AS v, 7 % 4 AS m", "100")
    )
    assert row == {"v": "100%", "m": 3}


# Database ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_write_commits_and_read_sees_it(database: Database) -> None:
    """A successful write is committed and visible to later reads."""
    await database.write(lambda tx: tx.run(
        "INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
        "g", "local-python", "local-python", 1.5))
    rows = await database.read(lambda tx: tx.all("SELECT name, created_at FROM sources"))
    assert rows == [{"name": "local-python", "created_at": 1.5}]


@pytest_twisted.ensureDeferred
async def test_failed_write_leaves_no_row(database: Database) -> None:
    """An exception inside write() after an insert rolls the insert back."""

    class Boom(Exception):
        pass

    def work(tx: Tx) -> None:
        tx.run("INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
               "g", "doomed", "local-python", 1.0)
        raise Boom("after the insert")

    with pytest.raises(Boom):
        await database.write(work)
    assert await database.read(lambda tx: tx.all("SELECT * FROM sources")) == []


@pytest_twisted.ensureDeferred
async def test_integrity_error_becomes_conflict(database: Database) -> None:
    """A constraint violation is reported as Conflict, not as a driver exception."""
    insert = ("INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)")
    await database.write(lambda tx: tx.run(insert, "g1", "same", "local", 1.0))
    with pytest.raises(Conflict):
        await database.write(lambda tx: tx.run(insert, "g2", "same", "local", 2.0))
    rows = await database.read(lambda tx: tx.all("SELECT guid FROM sources"))
    assert rows == [{"guid": "g1"}]


@pytest_twisted.ensureDeferred
async def test_other_exceptions_pass_through(database: Database) -> None:
    """An exception that is not the database's passes through write() unchanged."""

    def work(tx: Tx) -> None:
        raise KeyError("not a database problem")

    with pytest.raises(KeyError):
        await database.write(work)


@pytest_twisted.ensureDeferred
async def test_sql_mistake_is_not_reported_as_unavailable(database: Database) -> None:
    """A query on a missing table is a programming error on both databases, not a 503."""
    with pytest.raises(Exception) as caught:
        await database.read(lambda tx: tx.all("SELECT * FROM no_such_table"))
    assert not isinstance(caught.value, StoreUnavailable)
    assert isinstance(caught.value, DRIVER_ERRORS)


@pytest_twisted.ensureDeferred
async def test_unreachable_postgres_is_store_unavailable() -> None:
    """With nothing listening at the PostgreSQL URL, reads and writes raise StoreUnavailable."""
    dialect = postgres_dialect(f"postgres://pm:pw@127.0.0.1:{free_port()}/pm")
    db = Database(dialect)
    try:
        with pytest.raises(StoreUnavailable, match="postgres database is unavailable"):
            await db.read(lambda tx: tx.one("SELECT 1 AS one"))
        with pytest.raises(StoreUnavailable):
            await db.write(lambda tx: tx.run("SELECT 1"))
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_unopenable_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    """A SQLite file that cannot be opened makes reads raise StoreUnavailable."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    db = Database(sqlite_dialect(blocker))
    try:
        with pytest.raises(StoreUnavailable, match="sqlite database is unavailable"):
            await db.read(lambda tx: tx.one("SELECT 1 AS one"))
    finally:
        db.close()


def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The database file (and so its -wal and -shm files) is created mode 0600, in a
    directory of mode 0700: it holds token rows."""
    dialect = sqlite_dialect(tmp_path / "db")
    migrate(dialect)
    for name in ("packagemanager.db", "packagemanager.db-wal", "packagemanager.db-shm"):
        path = tmp_path / "db" / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700


@pytest_twisted.ensureDeferred
async def test_reads_are_answered_while_every_write_waits_for_the_write_lock(
        pg_url: str) -> None:
    """On PostgreSQL reads have connections of their own, and the change serial
    every request reads has its own again: with every connection of the write pool
    in a transaction waiting for the write lock, and one more write queued behind
    them, a read and a quick read are both answered."""
    from twisted.internet import reactor

    dialect = postgres_dialect(pg_url)
    migrate(dialect)
    db = Database(dialect)
    holder = dialect.connect()
    holder.cursor().execute(dialect.begin_statements[0])
    writes = [db.write(lambda tx: tx.run("SELECT 1"))
              for _ in range(dialect.pool_kwargs["cp_max"] + 1)]
    try:
        plain = db.read(lambda tx: tx.one("SELECT 1 AS one"))
        quick = db.read_quick(lambda tx: tx.one("SELECT MAX(id) AS serial FROM events"))
        assert await plain.addTimeout(30, reactor) == {"one": 1}
        assert await quick.addTimeout(30, reactor) == {"serial": None}
        assert not any(w.called for w in writes)
    finally:
        holder.rollback()
        holder.close()
        for done in writes:
            await done
        db.close()
