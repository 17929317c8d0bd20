"""Hostile requests fed to the server's own Site byte by byte (see tests/unit/test_upload.py).

What is checked is what a client that means harm can make the server spend:
no 100 Continue before the token is accepted, a refused body read only up to
DRAIN_LIMIT, and odd URLs, missing hosts and huge zip directories answered
without tracebacks or unbounded work.
"""

from __future__ import annotations

import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web.http import HTTPChannel
from twisted.web.server import Site
from zope.interface import provider

from pm.archives import MAX_MEMBERS
from pm.errors import BadUpload
from pm.python.dists import inspect_wheel, parse_filename
from pm.upload import DRAIN_LIMIT
from pm.web import RequestFactory, StreamingRequest
from tests.support.packages import build_wheel
from tests.unit.appfixture import AppEnv, wait_until
from tests.unit.test_upload import (
    Connection,
    Server,
    chunked,
    nothing_kept,
    request_head,
    status_answers,
    wheel_upload,
)

# The fixtures, imported by name so pytest finds them here.
from tests.unit.test_upload import dist as dist
from tests.unit.test_upload import env as env
from tests.unit.test_upload import server as server

BIG = 64 * 1024 * 1024


@pytest.fixture
def logged_failures() -> Iterator[list[dict[str, Any]]]:
    """Every event with a failure (a traceback) logged while the test runs, through the
    new logger or the legacy ``log.err`` (which Klein uses)."""
    failures: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


def upload_head(source: str, token: str | None, length: int | None,
                expect: bool = False) -> bytes:
    return request_head(f"/upload/pypi/{source}/",
                        content_type="multipart/form-data; boundary=x", token=token,
                        length=length, expect=expect)


@pytest_twisted.ensureDeferred
async def test_expect_without_a_token_is_refused_at_once_without_a_100(
    env: AppEnv, server: Server
) -> None:
    """``Expect: 100-continue`` and no token: 401 straight after the headers, no 100,
    and the connection is closed rather than left waiting for the body."""
    source = await env.python_source()
    conn = server.connect()

    conn.send(upload_head(source.name, None, BIG, expect=True))
    response = await conn.final()

    assert [r.status for r in conn.responses()] == [401]
    assert response.header("connection") == "close"
    await wait_until(lambda: not conn.transport.connected, what="the close")
    # A client that sends the body anyway has it dropped.
    conn.send(b"x" * 65536)
    await nothing_kept(env)
    assert (await status_answers(server)).status == 200


@pytest_twisted.ensureDeferred
async def test_expect_with_a_token_gets_its_100_only_once_the_token_is_accepted(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """The 100 Continue waits for the token check; then the upload is stored."""
    source = await env.python_source()
    token = await env.source_token(source)
    body, content_type = wheel_upload(build_wheel(dist), source.name, token).encode()
    gate: Deferred[None] = Deferred()
    server.checker.gate = gate
    conn = server.connect()

    conn.send(request_head(f"/upload/pypi/{source.name}/", content_type=content_type,
                           token=token, length=len(body), expect=True))
    assert conn.transport.value() == b""
    gate.callback(None)
    await wait_until(lambda: conn.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n",
                     what="the 100 Continue")
    conn.send(body, 997)
    response = await conn.final()

    assert [r.status for r in conn.responses()] == [100, 200]
    assert response.status == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest_twisted.ensureDeferred
async def test_a_refused_body_is_read_only_up_to_the_drain_limit(
    env: AppEnv, server: Server, framing: str
) -> None:
    """Without Expect, a refused upload's body is dropped up to DRAIN_LIMIT; past it
    the 401 is sent and the connection closed, long before the body's end."""
    source = await env.python_source()
    conn = server.connect()
    piece = b"x" * 65536
    head = upload_head(source.name, None, None if framing == "chunked" else BIG)
    conn.send(head)

    sent = 0
    while sent < BIG and not conn.responses():
        conn.send(chunked(piece, len(piece))[:-5] if framing == "chunked" else piece, 65536)
        sent += len(piece)
        if sent > DRAIN_LIMIT + 4 * len(piece):
            await wait_until(lambda: bool(conn.responses()), what="the early answer")

    assert sent <= DRAIN_LIMIT + 4 * len(piece), sent
    assert [r.status for r in conn.responses()] == [401]
    assert conn.responses()[0].header("connection") == "close"
    await wait_until(lambda: not conn.transport.connected, what="the close")
    await nothing_kept(env)


@pytest_twisted.ensureDeferred
async def test_a_refused_body_under_the_limit_is_drained_and_answered_once(
    env: AppEnv, server: Server
) -> None:
    """A refused body that ends within DRAIN_LIMIT is answered once it is in, and the
    keep-alive connection goes on to the next request."""
    source = await env.python_source()
    conn = server.connect()
    body = b"x" * (DRAIN_LIMIT - 1)

    conn.send(upload_head(source.name, None, len(body)) + body, 65536)
    await conn.final()
    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    await wait_until(lambda: len(conn.responses()) == 2, what="the second response")

    assert [r.status for r in conn.responses()] == [401, 200]


def admin_site(env: AppEnv) -> Site:
    factory = RequestFactory(env.uploads, local_admin=True)

    def request_factory(channel: HTTPChannel, queued: object = None) -> StreamingRequest:
        return factory(channel, queued)

    return Site(env.app.resource(), requestFactory=request_factory, reactor=task.Clock())


@pytest_twisted.ensureDeferred
async def test_the_admin_socket_serves_a_request_without_host(
    env: AppEnv, logged_failures: list[dict[str, Any]]
) -> None:
    """Over a UNIX socket a request with no Host header is addressed to localhost:
    /__api__/status answers 200 and nothing logs a traceback."""
    admin = Server(env, admin_site(env), task.Clock())
    conn = admin.connect()
    conn.transport.hostAddr = UNIXAddress(b"pm-test.sock")

    conn.send(b"GET /__api__/status HTTP/1.0\r\n\r\n")
    response = await conn.final()

    assert response.status == 200, response
    assert logged_failures == []


@pytest.mark.parametrize("path", [b"/python/latest/simple/%ff/", b"/%ff", b"/__api__/x%c3"])
@pytest_twisted.ensureDeferred
async def test_a_path_that_is_not_utf8_is_400_without_a_traceback(
    server: Server, logged_failures: list[dict[str, Any]], path: bytes
) -> None:
    """A %-escape that does not decode to UTF-8 gets a plain 400 and logs nothing."""
    conn = server.connect()

    conn.send(b"GET " + path + b" HTTP/1.1\r\nHost: test\r\n\r\n")
    response = await conn.final()

    assert response.status == 400
    assert response.header("x-content-type-options") == "nosniff"
    assert logged_failures == []


def test_a_wheel_with_too_many_members_is_refused(tmp_path: Path) -> None:
    """A wheel whose directory lists more than MAX_MEMBERS entries is refused by count."""
    filename = "example_package-1.0.0-py3-none-any.whl"
    path = tmp_path / filename
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(MAX_MEMBERS + 1):
            archive.writestr(f"e/{index}", b"")

    with pytest.raises(BadUpload, match=f"more than {MAX_MEMBERS} members"):
        inspect_wheel(path, parse_filename(filename))


def test_a_wheel_whose_end_record_understates_its_entries_is_refused(tmp_path: Path) -> None:
    """An end record claiming one entry for a directory of MAX_MEMBERS + 1 is refused by
    counting the directory itself, before zipfile builds an entry (~500 bytes) for each."""
    filename = "example_package-1.0.0-py3-none-any.whl"
    path = tmp_path / filename
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(MAX_MEMBERS + 1):
            archive.writestr(f"e/{index}", b"")
    data = bytearray(path.read_bytes())
    # So many entries take a zip64 end record (56 bytes, before the 20-byte locator and
    # the 22-byte classic end record); its entry counts are 8 bytes at offsets 24 and 32.
    zip64_end = len(data) - 22 - 20 - 56
    assert data[zip64_end:zip64_end + 4] == b"PK\x06\x06"
    data[zip64_end + 24:zip64_end + 40] = (1).to_bytes(8, "little") * 2
    path.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(path).infolist()) == MAX_MEMBERS + 1

    tracemalloc.start()
    try:
        with pytest.raises(BadUpload, match=f"more than {MAX_MEMBERS} members"):
            inspect_wheel(path, parse_filename(filename))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak


class _HeldSerial:
    """A change serial whose reads wait until the test releases them."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.gate: Deferred[None] = Deferred()

    async def current(self) -> int:
        await self.gate
        serial: int = await self._real.current()
        return serial


@pytest_twisted.ensureDeferred
async def test_a_download_whose_client_leaves_during_the_serial_read_logs_nothing(
    env: AppEnv, dist: Path, logged_failures: list[dict[str, Any]]
) -> None:
    """A client that disconnects while the cached read path waits for the change serial
    (a slow PostgreSQL) is simply forgotten: no producer, no traceback; the next
    download of the file is served."""
    source = await env.python_source()
    repo = await env.catalog.create_repo("python", "python", "", "local-admin")
    await env.catalog.subscribe(repo.name, source.name, "local-admin")
    path = build_wheel(dist)
    factory = RequestFactory(env.uploads, local_admin=False)
    site = Site(env.parts.resource(), requestFactory=factory, reactor=task.Clock())
    upload = Connection(site)
    upload.send(wheel_upload(path, source.name, await env.source_token(source)).raw())
    assert (await upload.final()).status == 200
    held = _HeldSerial(env.parts.pages.changes)
    env.parts.pages.changes = held  # type: ignore[assignment]
    get = f"GET /python/latest/files/{path.name} HTTP/1.1\r\nHost: test\r\n\r\n".encode()

    leaving = Connection(site)
    leaving.send(get)
    leaving.disconnect()
    held.gate.callback(None)
    staying = Connection(site)
    staying.send(get)
    response = await staying.final()

    assert response.status == 200 and response.body == path.read_bytes()
    assert logged_failures == []
