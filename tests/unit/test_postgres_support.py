"""Tests for the throwaway PostgreSQL server helper in tests.support.postgres."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.support.postgres import PostgresCluster, PostgresServer


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    # Starting a cluster costs a second or two, so the tests that do not stop it share one.
    with PostgresCluster() as started:
        yield started


def _select_one(url: str) -> int:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    value: int = row[0]
    return value


def _process_alive(pid: int) -> bool:
    # The postmaster is orphaned after pg_ctl exits; if nothing reaps it, it lingers as a
    # zombie, which is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _port_accepts(server: PostgresServer) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((server.host, server.port)) == 0


def test_create_database_and_query_over_tcp_with_password(cluster: PostgresCluster) -> None:
    """A database made by create_database answers `select 1` through the returned URL."""
    server = cluster.server
    url = server.create_database("support_query")
    try:
        assert url == server.url("support_query")
        assert url.startswith(f"postgres://{server.user}:")
        assert url.endswith(f"@127.0.0.1:{server.port}/support_query")
        assert _select_one(url) == 1
    finally:
        server.drop_database("support_query")

    with pytest.raises(psycopg2.OperationalError):
        _select_one(url)


def test_drop_database_ends_open_sessions(cluster: PostgresCluster) -> None:
    """drop_database succeeds while a session is still connected, and tolerates a missing db."""
    server = cluster.server
    url = server.create_database("support_busy")
    leaked = psycopg2.connect(url)
    try:
        server.drop_database("support_busy")
    finally:
        leaked.close()
    server.drop_database("support_busy")


def test_kill_then_restart_keeps_port_and_data(cluster: PostgresCluster) -> None:
    """After kill() the server is unreachable; restart() brings it back with its databases."""
    server = cluster.server
    url = server.create_database("support_survivor")

    cluster.kill()
    assert not cluster.is_running()
    assert cluster.postmaster_pid() is None
    assert cluster.data_dir.is_dir()
    with pytest.raises(psycopg2.OperationalError):
        _select_one(url)

    cluster.restart()
    assert cluster.server == server
    assert cluster.is_running()
    assert _select_one(url) == 1
    server.drop_database("support_survivor")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    # Under root the server runs as the postgres account, which cannot enter pytest's
    # private tmp_path, so the base directory must be reachable by other users.
    with tempfile.TemporaryDirectory(prefix="pm-support-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def test_stop_leaves_no_process_or_files(shared_tmp: Path) -> None:
    """stop() ends the postmaster, frees the port, removes the temp dir and can be repeated."""
    cluster = PostgresCluster(base=shared_tmp)
    server = cluster.start()
    try:
        assert _select_one(server.url("postgres")) == 1
        pid = cluster.postmaster_pid()
        assert pid is not None
        assert _process_alive(pid)
        data_dir = cluster.data_dir
        assert data_dir.is_relative_to(shared_tmp)
    finally:
        cluster.stop()

    assert not _process_alive(pid)
    assert not _port_accepts(server)
    assert not data_dir.exists()
    assert list(shared_tmp.iterdir()) == []
    assert not cluster.is_running()
    cluster.stop()
