"""``[Limits]``: sizes, header and body times, and concurrent uploads, each refused with
its own status and reason, leaving nothing behind and the server serving.

The public Site is driven over a StringTransport (see test_upload); its channels'
timers run on a ``task.Clock`` the tests advance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from pm.errors import ServerBusy, TooManyUploads
from pm.limits import RETRY_AFTER, Limits, UploadSlots
from pm.upload import DRAIN_LIMIT, PENDING_LIMIT
from tests.support.packages import build_wheel
from tests.unit.appfixture import AppEnv, app_env, wait_until
from tests.unit.test_upload import (
    GatedChecker,
    GatedPythonFiles,
    Server,
    chunked,
    nothing_kept,
    public_site,
    request_head,
    status_answers,
    wheel_upload,
)

SMALL = Limits(max_upload_size=1024 * 1024, max_field_size=4096, max_header_size=4096,
               header_timeout=10.0, min_body_rate=1024, rate_window=5.0,
               max_uploads=2, max_uploads_per_token=1)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A server with small limits, whose token checks can be held back."""
    with app_env(tmp_path, checker=GatedChecker, python_files=GatedPythonFiles,
                 limits=SMALL) as built:
        yield built


@pytest.fixture
def server(env: AppEnv) -> Server:
    return public_site(env)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    path = tmp_path / "dist"
    path.mkdir()
    return path


# Upload slots, in memory --------------------------------------------------------------


def test_slots_refuse_past_the_server_limit_then_free() -> None:
    """Past MaxUploads the next upload is ServerBusy with Retry-After; a released slot
    lets the next one in, and releasing twice frees one slot only."""
    slots = UploadSlots(Limits(max_uploads=2, max_uploads_per_token=0))
    first, _ = slots.acquire("a"), slots.acquire("b")
    with pytest.raises(ServerBusy) as busy:
        slots.acquire("c")
    assert busy.value.retry_after == RETRY_AFTER
    assert "2 uploads" in busy.value.message
    first.release()
    first.release()
    slots.acquire("c")
    assert slots.in_flight == 2
    with pytest.raises(ServerBusy):
        slots.acquire("d")


def test_slots_refuse_past_one_tokens_limit() -> None:
    """Past MaxUploadsPerToken that token is TooManyUploads; other tokens still get in."""
    slots = UploadSlots(Limits(max_uploads=0, max_uploads_per_token=2))
    slots.acquire("a")
    held = slots.acquire("a")
    with pytest.raises(TooManyUploads) as too_many:
        slots.acquire("a")
    assert too_many.value.retry_after == RETRY_AFTER
    slots.acquire("b")
    held.release()
    slots.acquire("a")


def test_the_local_administrator_is_never_refused_a_slot() -> None:
    """The admin socket's uploads (holder None) count but are never refused."""
    slots = UploadSlots(Limits(max_uploads=1, max_uploads_per_token=1))
    slots.acquire(None)
    slots.acquire(None)
    assert slots.in_flight == 2
    with pytest.raises(ServerBusy):
        slots.acquire("a")


# Sizes ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_content_length_over_the_limit_is_413_before_the_body(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A Content-Length over MaxUploadSize is refused 413 without a 100 Continue and
    before any body byte: the limit is in the reason, nothing is kept."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    conn = server.connect()

    conn.send(request_head(f"/upload/pypi/{source.name}/", content_type=None, token=token,
                           length=SMALL.max_upload_size + 1, expect=True))
    response = await conn.final()

    assert response.status == 413, response
    assert f"at most {SMALL.max_upload_size} bytes" in response.reason
    assert b"100 Continue" not in conn.transport.value()
    await nothing_kept(env)
    assert path.exists()
    assert (await status_answers(server)).status == 200


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_is_cut_off_at_the_limit(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A chunked upload that grows past MaxUploadSize is answered 413 mid-body (once the
    drain bound past the limit is read) and its connection closed; its temp file is gone
    and no row is written."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=SMALL.max_upload_size + 2 * DRAIN_LIMIT)
    body, content_type = wheel_upload(path, source.name, token).encode()
    conn = server.connect()

    conn.send(request_head(f"/upload/pypi/{source.name}/", content_type=content_type,
                           token=token, length=None))
    # Sent once the token is accepted, as a paused transport would hold it back.
    await wait_until(lambda: env.uploads.slots.in_flight == 1, what="the upload's slot")
    conn.send(chunked(body, 65536))
    response = await conn.final()

    assert response.status == 413, response
    assert response.header("connection") == "close"
    assert f"over {SMALL.max_upload_size} bytes" in response.reason
    await wait_until(lambda: not conn.transport.connected, what="the close")
    await nothing_kept(env)


@pytest_twisted.ensureDeferred
async def test_a_field_over_the_configured_size_is_413(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A form field longer than MaxFieldSize is refused 413, naming the field."""
    source = await env.python_source()
    token = await env.source_token(source)
    upload = wheel_upload(build_wheel(dist), source.name, token)
    upload.fields.append(("description", "x" * (SMALL.max_field_size + 1)))
    conn = server.connect()

    conn.send(upload.raw())
    response = await conn.final()

    assert response.status == 413, response
    assert "Field 'description' is too large" in response.reason
    await nothing_kept(env)


@pytest_twisted.ensureDeferred
async def test_headers_over_the_limit_are_431(server: Server) -> None:
    """Request headers past MaxHeaderSize get 431 and the connection is closed."""
    conn = server.connect()

    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n"
              + b"X-Padding: " + b"p" * 1000 + b"\r\n" * 1
              + b"".join(b"X-More-%d: %s\r\n" % (i, b"q" * 500) for i in range(8)) + b"\r\n")
    response = await conn.final()

    assert response.status == 431, response
    assert b"4096 bytes" in response.body
    assert not conn.transport.connected


@pytest_twisted.ensureDeferred
async def test_one_header_line_over_the_limit_is_431(server: Server) -> None:
    """A single line longer than MaxHeaderSize (never ended) gets 431, not a silent close."""
    conn = server.connect()

    conn.send(b"GET /" + b"a" * (SMALL.max_header_size + 10))
    response = await conn.final()

    assert response.status == 431, response
    assert not conn.transport.connected


# Slow clients --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_headers_sent_a_byte_at_a_time_time_out(server: Server) -> None:
    """A client trickling its headers (slowloris) gets 408 once HeaderTimeout passes,
    although each byte came well within the idle timeout; the connection is closed."""
    conn = server.connect()
    head = b"GET /__api__/status HTTP/1.1\r\nHost: test\r\nX-Slow: "

    for byte in range(int(SMALL.header_timeout) - 1):
        conn.send(head[byte:byte + 1])
        server.clock.advance(1)
    assert conn.transport.connected
    server.clock.advance(1.5)
    response = await conn.final()

    assert response.status == 408, response
    assert b"headers took over 10 seconds" in response.body
    assert not conn.transport.connected


@pytest_twisted.ensureDeferred
async def test_a_silent_connection_must_send_its_headers_in_time(server: Server) -> None:
    """A connection that sends nothing at all is answered 408 after HeaderTimeout."""
    conn = server.connect()

    server.clock.advance(SMALL.header_timeout + 0.1)

    assert (await conn.final()).status == 408
    assert not conn.transport.connected


@pytest_twisted.ensureDeferred
async def test_a_kept_alive_connection_waits_idle_without_a_header_deadline(
    server: Server,
) -> None:
    """Between requests only the idle timeout applies: a keep-alive connection that waits
    longer than HeaderTimeout before its next request is served normally."""
    conn = server.connect()
    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    assert (await conn.final()).status == 200

    server.clock.advance(SMALL.header_timeout * 3)
    assert conn.transport.connected
    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    await wait_until(lambda: len(conn.responses()) == 2, what="the second answer")

    assert [r.status for r in conn.responses()] == [200, 200]


@pytest_twisted.ensureDeferred
async def test_a_trickling_upload_body_is_408_and_leaves_nothing(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """An upload body arriving slower than MinBodyRate over a window is answered 408, the
    connection closed, its temp file removed; the next upload of the file succeeds."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    raw = wheel_upload(path, source.name, token).raw()
    head_end = raw.index(b"\r\n\r\n") + 4
    conn = server.connect()

    conn.send(raw[:head_end + 2000])
    await wait_until(lambda: len(env.temp_files()) == 1, what="the temp file")
    for second in range(int(SMALL.rate_window) + 1):
        conn.send(raw[head_end + 2000 + second:head_end + 2001 + second])
        server.clock.advance(1)
    response = await conn.final()

    assert response.status == 408, response
    assert b"slower than 1024 bytes a second" in response.body
    assert not conn.transport.connected
    await wait_until(lambda: env.temp_files() == [], what="the temp file to go")
    await nothing_kept(env)
    again = server.connect()
    again.send(raw)
    assert (await again.final()).status == 200


@pytest_twisted.ensureDeferred
async def test_a_body_the_server_holds_back_is_not_a_slow_body(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """While the server itself keeps the connection paused (a token check that takes long,
    past PENDING_LIMIT held bytes), the body-rate window does not count against the client."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=PENDING_LIMIT * 2)
    raw = wheel_upload(path, source.name, token).raw()
    head_end = raw.index(b"\r\n\r\n") + 4
    gate: Deferred[None] = Deferred()
    server.checker.gate = gate
    conn = server.connect()

    conn.send(raw[:head_end + PENDING_LIMIT + 8192])
    assert conn.transport.producerState == "paused"
    server.clock.advance(SMALL.rate_window * 3)
    assert conn.transport.connected
    server.checker.gate = None
    gate.callback(None)
    await wait_until(lambda: conn.transport.producerState == "producing",
                     what="the transport to be resumed")
    conn.send(raw[head_end + PENDING_LIMIT + 8192:])

    assert (await conn.final()).status == 200


# Concurrent uploads --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_tokens_second_upload_at_once_is_429_and_the_third_is_503(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """With one upload of a token in flight its next one gets 429 with Retry-After; another
    token's upload is taken; past MaxUploads a third token gets 503 with Retry-After. Once
    the first finishes, the token's upload is taken again."""
    source = await env.python_source()
    tokens = [await env.source_token(source) for _ in range(3)]
    # pkg0 and pkg3 with the first token, pkg1 with the second, pkg2 with the third.
    owners = [tokens[0], tokens[1], tokens[2], tokens[0]]
    raws = [wheel_upload(build_wheel(dist, f"pkg{i}"), source.name, owners[i],
                         name=f"pkg{i}").raw() for i in range(4)]
    first = server.connect()
    first.send(raws[0][:-10])
    await wait_until(lambda: env.uploads.slots.in_flight == 1, what="the first upload's slot")

    same_token = server.connect()
    same_token.send(raws[3])
    refused = await same_token.final()
    other_token = server.connect()
    other_token.send(raws[1][:-10])
    await wait_until(lambda: env.uploads.slots.in_flight == 2, what="the second upload's slot")
    third_token = server.connect()
    third_token.send(raws[2])
    busy = await third_token.final()

    assert (refused.status, refused.header("retry-after")) == (429, str(RETRY_AFTER))
    assert "this token already has 1 uploads in flight" in refused.reason
    assert (busy.status, busy.header("retry-after")) == (503, str(RETRY_AFTER))
    assert "2 uploads" in busy.reason
    first.send(raws[0][-10:])
    other_token.send(raws[1][-10:])
    assert (await first.final()).status == 200
    assert (await other_token.final()).status == 200
    await wait_until(lambda: env.uploads.slots.in_flight == 0, what="the slots to free")
    again = server.connect()
    again.send(raws[3])
    assert (await again.final()).status == 200
    assert sorted(r["project"] for r in await env.python_rows()) == ["pkg0", "pkg1", "pkg3"]


@pytest_twisted.ensureDeferred
async def test_a_disconnected_upload_frees_its_slot(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A client that goes away mid-upload gives its slot back at once."""
    source = await env.python_source()
    token = await env.source_token(source)
    raw = wheel_upload(build_wheel(dist), source.name, token).raw()
    conn = server.connect()
    conn.send(raw[:-10])
    await wait_until(lambda: env.uploads.slots.in_flight == 1, what="the upload's slot")

    conn.disconnect()

    assert env.uploads.slots.in_flight == 0
    again = server.connect()
    again.send(raw)
    assert (await again.final()).status == 200
