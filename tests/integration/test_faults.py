"""Faults against the real server: disconnects, kill -9, a database restart, a full disk."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.support.packages import build_wheel, multipart_body, upload_fields
from tests.support.postgres import PostgresCluster
from tests.support.server import Response, ServerProcess, http, wait_for

SOURCE = "local-python-src"
# A failing request during a database outage must answer within this.
FAIL_FAST = 5.0


def _upload_body(wheel: Path, version: str = "1.0.0") -> tuple[bytes, str]:
    return multipart_body(upload_fields(wheel, "example-package", version),
                          [("content", wheel.name, wheel.read_bytes())])


def _auth(token: str) -> str:
    return "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()


def _upload(server: ServerProcess, token: str, wheel: Path, version: str = "1.0.0",
            timeout: float = 30) -> Response:
    body, content_type = _upload_body(wheel, version)
    return http("POST", f"{server.address}/upload/pypi/{SOURCE}/", body,
                {"Content-Type": content_type, "Authorization": _auth(token)}, timeout=timeout)


def _raw_request(server: ServerProcess, token: str, wheel: Path) -> bytes:
    """The whole upload as bytes on the wire: request line, headers, body."""
    body, content_type = _upload_body(wheel)
    head = (f"POST /upload/pypi/{SOURCE}/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: {_auth(token)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _send_and_close(server: ServerProcess, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(data)


def _tmp(server: ServerProcess) -> list[str]:
    assert server.data_dir is not None
    return sorted(p.name for p in (server.data_dir / "tmp").iterdir())


def _rows(server: ServerProcess) -> list[tuple[str, str]]:
    """(filename, sha256) of every recorded Python file, read from the database itself."""
    query = "SELECT filename, sha256 FROM python_files ORDER BY filename"
    if server.provider == "postgres":
        connection = psycopg2.connect(server.postgres_url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(query)
                return [(str(a), str(b)) for a, b in cursor.fetchall()]
        finally:
            connection.close()
    assert server.data_dir is not None
    database = server.data_dir / "db" / "packagemanager.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return [(str(a), str(b)) for a, b in db.execute(query).fetchall()]


def _assert_consistent(server: ServerProcess) -> None:
    """Every recorded file has its blob, with the recorded contents."""
    assert server.data_dir is not None
    for filename, sha in _rows(server):
        blob = server.data_dir / "files" / sha[:2] / sha[2:4] / sha
        assert blob.is_file(), f"{filename}: blob {sha} missing"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha, filename


def test_a_disconnect_at_any_point_leaves_nothing(server: ServerProcess, tmp_path: Path) -> None:
    """A client that goes away in the headers, the fields, mid-content or before the last
    byte leaves no temp file and no row, and the same upload then succeeds."""
    token = server.setup_python(SOURCE)
    wheel = build_wheel(tmp_path, payload_size=3 * 1024 * 1024)
    request = _raw_request(server, token, wheel)
    head = request.index(b"\r\n\r\n") + 4
    content = request.index(b'name="content"')
    for cut in (20, head - 3, head, head + 150, content + 200, (head + len(request)) // 2,
                len(request) - 100, len(request) - 1):
        _send_and_close(server, request[:cut])
        wait_for(lambda: _tmp(server) == [], 10, f"the temp file of a cut at {cut} to go")
        assert _rows(server) == [], cut
    assert server.get("/__api__/status").status == 200
    reply = _upload(server, token, wheel)
    assert reply.status == 200, reply
    assert [name for name, _ in _rows(server)] == [wheel.name]
    assert _tmp(server) == []
    _assert_consistent(server)


def test_kill_9_mid_upload_leaves_nothing_half_published(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    """SIGKILL while an upload streams in: after a start the killed upload's temp file is
    gone at once (not after TempMaxAge), no row of it exists, and what was recorded
    before is intact."""
    token = server.setup_python(SOURCE)
    (tmp_path / "before").mkdir()
    before = build_wheel(tmp_path / "before", version="0.9.0")
    assert _upload(server, token, before, "0.9.0").status == 200
    wheel = build_wheel(tmp_path, payload_size=16 * 1024 * 1024)
    request = _raw_request(server, token, wheel)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request[: len(request) // 2])
        wait_for(lambda: any(n.startswith("upload-") for n in _tmp(server)), 10,
                 "the upload's temp file")
        assert server.process is not None
        server.process.kill()
        server.process.wait()
    assert _tmp(server) != [], "the killed upload left its temp file"
    server.start()
    assert _tmp(server) == []
    assert [name for name, _ in _rows(server)] == [before.name]
    _assert_consistent(server)
    assert _upload(server, token, wheel).status == 200
    _assert_consistent(server)


def test_a_postgres_restart_under_traffic(make_server: type[ServerProcess],
                                          postgres_cluster: PostgresCluster,
                                          tmp_path: Path) -> None:
    """Uploads and index reads run while PostgreSQL is killed and restarted: during the
    outage they fail fast with 503 and a reason (or a read is served from the cache), the
    server reconnects by itself, and every upload that answered 200 is recorded and intact."""
    url = postgres_cluster.server.create_database("pm_faults")
    server = make_server(provider="postgres", postgres_url=url).start()
    token = server.setup_python(SOURCE)
    wheels = []
    for i in range(400):
        directory = tmp_path / str(i)
        directory.mkdir()
        wheels.append((f"1.0.{i}", build_wheel(directory, version=f"1.0.{i}")))
    results: list[tuple[str, str, int, str, float]] = []  # what, version, status, reason, took
    stop = threading.Event()

    def traffic() -> None:
        for version, wheel in wheels:
            if stop.is_set():
                return
            for what in ("upload", "read"):
                started = time.monotonic()
                try:
                    reply = (_upload(server, token, wheel, version, timeout=FAIL_FAST * 2)
                             if what == "upload" else
                             server.get("/python/latest/simple/example-package/"))
                    outcome = (reply.status, reply.reason)
                except OSError as e:
                    outcome = (0, repr(e))
                results.append((what, version, *outcome, time.monotonic() - started))

    def statuses(after: int = 0) -> list[int]:
        return [status for _, _, status, _, _ in results[after:]]

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: statuses().count(200) >= 6, 30, "uploads before the outage")
        postgres_cluster.kill()
        try:
            outage = len(results)
            wait_for(lambda: statuses(outage).count(503) >= 4, 30, "failures in the outage")
        finally:
            postgres_cluster.restart()
        back = len(results)
        wait_for(lambda: [s for s in statuses(back) if s == 200][4:], 30, "recovery")
    finally:
        stop.set()
        worker.join()
    failures = [r for r in results if r[2] != 200]
    assert {r[2] for r in failures} <= {503}, failures
    assert all(r[3].strip() and r[4] < FAIL_FAST for r in failures), failures
    # Reads may be answered from the index cache meanwhile; uploads need the database.
    assert any(r[0] == "upload" for r in failures), results
    stored = dict(_rows(server))
    for what, version, status, _, _ in results:
        if what == "upload" and status == 200:
            name = f"example_package-{version}-py3-none-any.whl"
            assert name in stored, name
    _assert_consistent(server)
    assert server.process is not None and server.process.poll() is None


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 24 MiB tmpfs for a server's DataDir, mounted (as root) and unmounted after."""
    mountpoint = Path(tempfile.mkdtemp(prefix="pm-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)
        mountpoint.rmdir()


def test_a_full_disk_answers_507_and_recovers(make_server: type[ServerProcess], provider: str,
                                              small_disk: Path, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    """An upload larger than the space left gets 507 with a clear reason and leaves no
    temp file; the server keeps serving, and once space is back the same upload works."""
    if provider == "postgres":
        server = make_server(provider="postgres", postgres_url=request.getfixturevalue("pg_url"),
                             data_dir=small_disk / "data")
    else:
        server = make_server(data_dir=small_disk / "data")
    server.start()
    token = server.setup_python(SOURCE)
    filler = small_disk / "filler"
    space = os.statvfs(small_disk)
    with open(filler, "wb") as f:
        f.write(b"\0" * (space.f_bavail * space.f_frsize - 2 * 1024 * 1024))
    wheel = build_wheel(tmp_path, payload_size=6 * 1024 * 1024)

    reply = _upload(server, token, wheel)
    assert reply.status == 507, reply
    assert "disk is full" in reply.reason and "not stored" in reply.reason, reply.reason
    assert _tmp(server) == []
    assert _rows(server) == []
    assert server.get("/__api__/status").status == 200

    filler.unlink()
    assert _upload(server, token, wheel).status == 200
    assert [name for name, _ in _rows(server)] == [wheel.name]
    assert _tmp(server) == []
    _assert_consistent(server)
    server.stop()
