"""The streaming upload path: ``POST /upload/pypi/{source}`` fed to the server byte by byte.

A real ``twisted.web.server.Site`` with the server's own request factory
(``pm.web.RequestFactory``) is connected to a ``StringTransport``; the raw HTTP
request is pushed through ``dataReceived`` in small pieces, exactly as TCP
would deliver it, and the raw response is read back from the transport. The
database (SQLite through adbapi) and the thread pool are real, so every wait
lets the reactor run until a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import tarfile
import tracemalloc
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from pm import web
from pm.auth import Principal, TokenChecker
from pm.blobs import BLAKE2_256, MD5, PIPELINE_HIGH
from pm.housekeeping import Swept
from pm.python.files import PythonFile, PythonFiles
from pm.tokens import Grant, TokenAuthority, generate_key
from pm.upload import (
    PENDING_LIMIT,
    UploadService,
    UploadTarget,
    digests_to_compute,
)
from pm.web import (
    MAX_BODY,
    MIN_UPLOAD_READ,
    PACED_READ,
    PACED_SHARE,
    READ_PAUSE,
    UPLOAD_READ_SIZE,
    UPLOAD_TURN_BYTES,
    RequestFactory,
    StreamingRequest,
    TransportHolds,
    UploadReads,
    guard,
)
from tests.support.packages import (
    build_sdist,
    build_wheel,
    digests,
    multipart_body,
    upload_fields,
)
from tests.unit.appfixture import AppEnv, Signer, app_env, wait_until

BOUNDARY = "pmtestboundary0123456789"


# The raw HTTP exchange --------------------------------------------------------------


@dataclass
class Response:
    """One HTTP response as read back from the transport."""

    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse_responses(raw: bytes, closed: bool) -> tuple[list[Response], bool]:
    """The responses in ``raw`` and whether the last one is complete."""
    responses: list[Response] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end == -1:
            return responses, False
        status_line, *header_lines = raw[pos:end].decode("latin-1").split("\r\n")
        _version, code, *reason = status_line.split(" ", 2)
        headers: dict[str, list[str]] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(code)
        pos = end + 4
        body = b""
        if 100 <= status < 200 or status in (204, 304):
            pass
        elif "content-length" in headers:
            length = int(headers["content-length"][0])
            if len(raw) - pos < length:
                return responses, False
            body, pos = raw[pos:pos + length], pos + length
        elif headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            chunks = []
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol == -1:
                    return responses, False
                size = int(raw[pos:eol].split(b";")[0], 16)
                if len(raw) < eol + 2 + size + 2:
                    return responses, False
                chunks.append(raw[eol + 2:eol + 2 + size])
                pos = eol + 2 + size + 2
                if size == 0:
                    break
            body = b"".join(chunks)
        else:
            if not closed:
                return responses, False
            body, pos = raw[pos:], len(raw)
        responses.append(Response(status, reason[0] if reason else "", headers, body))
    return responses, True


class SocketTransport(StringTransportWithDisconnection):
    """A StringTransport that, as TCP's, reads ``bufferSize`` at a time from a socket."""

    def __init__(self, handle: socket.socket) -> None:
        super().__init__()
        self.bufferSize = 65536
        self._handle = handle

    def getHandle(self) -> socket.socket:
        return self._handle


class Connection:
    """One client connection to the site over a StringTransport."""

    def __init__(self, site: Site, transport: StringTransportWithDisconnection | None = None
                 ) -> None:
        self.transport = transport or StringTransportWithDisconnection()
        protocol = site.buildProtocol(None)
        assert protocol is not None
        self.protocol = protocol
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes, piece: int = 4096) -> None:
        for start in range(0, len(data), piece):
            self.protocol.dataReceived(data[start:start + piece])

    def responses(self) -> list[Response]:
        return parse_responses(self.transport.value(), not self.transport.connected)[0]

    def _final_ready(self) -> bool:
        responses, complete = parse_responses(self.transport.value(),
                                              not self.transport.connected)
        return complete and bool(responses) and responses[-1].status >= 200

    async def final(self, timeout: float = 30.0) -> Response:
        """The final (non-1xx) response, once it is completely written."""
        await wait_until(self._final_ready, timeout, "the final response")
        return self.responses()[-1]

    def disconnect(self) -> None:
        """The client goes away, as a reset TCP connection would be reported."""
        self.transport.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone("client went away")))


class GatedChecker(TokenChecker):
    """A TokenChecker whose checks wait until the test opens its gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate: Deferred[None] | None = None

    async def check(self, token: str) -> Principal:
        if self.gate is not None:
            await self.gate
        return await super().check(token)


class GatedPythonFiles(PythonFiles):
    """A Python files table that can hold back recording a file with a given sha256."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gates: dict[str, Deferred[None]] = {}
        self.waiting: set[str] = set()

    async def add(self, record: PythonFile, source_name: str = "") -> bool:
        gate = self.gates.get(record.sha256)
        if gate is not None:
            self.waiting.add(record.sha256)
            await gate
        return await super().add(record, source_name)


@dataclass
class Server:
    """The public listener's Site, remembering every request it builds."""

    env: AppEnv
    site: Site
    clock: task.Clock
    requests: list[StreamingRequest] = field(default_factory=list)

    def connect(self, transport: StringTransportWithDisconnection | None = None) -> Connection:
        return Connection(self.site, transport)

    @property
    def checker(self) -> GatedChecker:
        return cast(GatedChecker, self.env.checker)

    @property
    def files(self) -> GatedPythonFiles:
        return cast(GatedPythonFiles, self.env.python_files)


def request_head(path: str, *, content_type: str | None, token: str | None,
                 length: int | None, expect: bool = False,
                 extra: tuple[str, ...] = ()) -> bytes:
    """The request line and headers; ``length`` None means chunked."""
    lines = [f"POST {path} HTTP/1.1", "Host: test", "User-Agent: twine/6.2.0"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if token is not None:
        credentials = base64.b64encode(f"__token__:{token}".encode()).decode()
        lines.append(f"Authorization: Basic {credentials}")
    if expect:
        lines.append("Expect: 100-continue")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in HTTP/1.1 chunked transfer encoding."""
    out = io.BytesIO()
    for start in range(0, len(body), size):
        piece = body[start:start + size]
        out.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    out.write(b"0\r\n\r\n")
    return out.getvalue()


@dataclass
class Upload:
    """What a client sends: form fields, file parts, the token and the target."""

    source: str
    fields: list[tuple[str, str]]
    files: list[tuple[str, str, bytes]]
    token: str | None
    content_type: str | None = None
    body: bytes | None = None
    raw_request: bytes | None = None

    def encode(self) -> tuple[bytes, str | None]:
        body, content_type = multipart_body(self.fields, self.files, BOUNDARY)
        if self.body is not None:
            body = self.body
        return body, content_type if self.content_type is None else self.content_type

    def raw(self, *, piece_chunked: int | None = None, expect: bool = False) -> bytes:
        if self.raw_request is not None:
            return self.raw_request
        body, content_type = self.encode()
        path = f"/upload/pypi/{self.source}/"
        if piece_chunked is not None:
            return request_head(path, content_type=content_type, token=self.token,
                                length=None, expect=expect) + chunked(body, piece_chunked)
        return request_head(path, content_type=content_type, token=self.token,
                            length=len(body), expect=expect) + body


def wheel_upload(path: Path, source: str, token: str | None,
                 name: str = "example-package", version: str = "1.0.0") -> Upload:
    return Upload(source, upload_fields(path, name, version),
                  [("content", path.name, path.read_bytes())], token)


async def nothing_kept(env: AppEnv) -> None:
    """A refused or abandoned upload leaves no file, no temp file and no row."""
    assert env.stored_files() == []
    assert env.temp_files() == []
    assert await env.python_rows() == []


async def status_answers(server: Server) -> Response:
    """A GET /__api__/status on a fresh connection."""
    conn = server.connect()
    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    return await conn.final()


# Fixtures ---------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A fresh in-memory server whose token checks and file records can be held back."""
    with app_env(tmp_path, checker=GatedChecker, python_files=GatedPythonFiles) as built:
        yield built


@pytest.fixture
def server(env: AppEnv) -> Server:
    """The public (TCP) Site: uploads need a token, nothing is local admin."""
    return public_site(env)


def public_site(env: AppEnv) -> Server:
    requests: list[StreamingRequest] = []
    factory = RequestFactory(env.uploads, local_admin=False)

    def request_factory(channel: HTTPChannel, queued: object = None) -> StreamingRequest:
        request = factory(channel, queued)
        requests.append(request)
        return request

    # A Clock of its own keeps the channels' timeouts off the real reactor.
    clock = task.Clock()
    site = guard(Site(env.app.resource(), requestFactory=request_factory, reactor=clock),
                 env.limits)
    return Server(env, site, clock, requests)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """Where test distributions are built (outside the server's DataDir)."""
    path = tmp_path / "dist"
    path.mkdir()
    return path


# Successful uploads ----------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 7, 4096])
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
@pytest_twisted.ensureDeferred
async def test_upload_fed_in_small_pieces_is_stored(
    env: AppEnv, server: Server, dist: Path, piece: int, kind: str
) -> None:
    """A good upload, however finely the bytes are split, answers 200 and is stored."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist) if kind == "wheel" else build_sdist(dist)
    conn = server.connect()

    conn.send(wheel_upload(path, source.name, token).raw(), piece)
    response = await conn.final()

    assert (response.status, response.reason) == (200, "OK"), response
    assert response.body.decode() == f"OK: {path.name} added to uploads\n"
    sha256 = digests(path)["sha256_digest"]
    rows = await env.python_rows()
    assert [(r["filename"], r["sha256"], r["size"], r["project"], r["version"])
            for r in rows] == [(path.name, sha256, path.stat().st_size,
                                "example-package", "1.0.0")]
    assert rows[0]["uploaded_by"].startswith("token:")
    stored = env.blobs.path_for(sha256)
    assert stored.read_bytes() == path.read_bytes()
    assert stored in env.stored_files()
    assert env.temp_files() == []
    assert await env.python_files.file(source.guid, path.name) is not None


@pytest.mark.parametrize("piece", [7, 4096])
@pytest_twisted.ensureDeferred
async def test_rspm_add_upload_is_streamed_and_stored(
    env: AppEnv, server: Server, dist: Path, piece: int
) -> None:
    """``POST /__api__/sources/{source}/packages`` (what ``rspm add`` sends: the file and a
    bearer token) streams through the same receiver: 201 with the JSON result, stored."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    sha256 = digests(path)["sha256_digest"]
    body, content_type = multipart_body([("sha256_digest", sha256)],
                                        [("content", path.name, path.read_bytes())], BOUNDARY)
    conn = server.connect()

    conn.send(request_head(f"/__api__/sources/{source.name}/packages",
                           content_type=content_type, token=None, length=len(body),
                           extra=(f"Authorization: Bearer {token}",)) + body, piece)
    response = await conn.final()

    assert response.status == 201, response
    assert server.requests[-1].upload is not None
    assert json.loads(response.body) == {
        "status": "added", "source": "uploads", "filename": path.name,
        "name": "example-package", "version": "1.0.0", "sha256": sha256,
        "size": path.stat().st_size, "signature_added": False}
    assert [r["sha256"] for r in await env.python_rows()] == [sha256]
    assert env.blobs.path_for(sha256).read_bytes() == path.read_bytes()
    assert env.temp_files() == []


@pytest.mark.parametrize("name", ["a%20b", "x" * 101, "pyth%D0%BEn"],
                         ids=["space", "too-long", "cyrillic-o"])
@pytest.mark.parametrize("route", ["/upload/pypi/{}/", "/__api__/sources/{}/packages"])
@pytest_twisted.ensureDeferred
async def test_upload_to_a_name_no_source_can_have_is_refused(
    env: AppEnv, server: Server, dist: Path, route: str, name: str
) -> None:
    """An upload to a source name no source can have (not 1-100 ASCII letters, digits,
    '-', '_' or '.') is refused with a 4xx, as to any missing source, not a 500; nothing
    is kept."""
    token = await env.token()
    path = build_wheel(dist)
    body, content_type = wheel_upload(path, "unused", token).encode()
    conn = server.connect()

    conn.send(request_head(route.format(name), content_type=content_type, token=None,
                           length=len(body), extra=(f"Authorization: Bearer {token}",)) + body)
    response = await conn.final()

    assert 400 <= response.status < 500, response
    await nothing_kept(env)


@pytest.mark.parametrize(("method", "path", "expected"), [
    (b"POST", b"/upload/pypi/uploads", UploadTarget("warehouse", "uploads")),
    (b"POST", b"/upload/pypi/uploads/", UploadTarget("warehouse", "uploads")),
    (b"post", b"/upload/pypi/my_src.v2/?x=1", UploadTarget("warehouse", "my_src.v2")),
    (b"POST", b"/__api__/sources/cran-local/packages", UploadTarget("add", "cran-local")),
    (b"POST", b"/__api__/sources/cran-local/packages/", UploadTarget("add", "cran-local")),
    (b"GET", b"/upload/pypi/uploads/", None),
    (b"GET", b"/__api__/sources/cran-local/packages", None),
    (b"POST", b"/__api__/sources/cran-local/packages/remove", None),
    (b"POST", b"/__api__/sources", None),
    (b"POST", b"/upload/pypi/a/b", None),
    (b"POST", b"/upload/pypi/", None),
    (b"POST", "/upload/pypi/pyth\N{CYRILLIC SMALL LETTER O}n".encode(), None),
])
def test_match_tells_uploads_from_the_request_line(
    method: bytes, path: bytes, expected: UploadTarget | None
) -> None:
    """Which requests stream through a receiver is known from the method and path alone:
    a POST to Warehouse's route or to a source's packages, naming a valid source."""
    assert UploadService.match(method, path) == expected


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_is_answered_before_the_body(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """With ``Expect: 100-continue`` the server sends 100 Continue, then the final 200."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    body, content_type = wheel_upload(path, source.name, token).encode()
    conn = server.connect()

    conn.send(request_head("/upload/pypi/uploads", content_type=content_type, token=token,
                           length=len(body), expect=True))
    await wait_until(lambda: conn.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n",
                     what="the 100")
    conn.send(body, 7)
    response = await conn.final()

    statuses = [r.status for r in conn.responses()]
    assert statuses == [100, 200]
    assert conn.transport.value().startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert response.status == 200
    assert len(await env.python_rows()) == 1


@pytest_twisted.ensureDeferred
async def test_upload_connection_reads_in_large_pieces(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """An upload's connection reads UPLOAD_READ_SIZE at a time once its token is accepted,
    and Twisted's size again after the response; a refused upload and other requests
    keep Twisted's size throughout."""
    source = await env.python_source()
    token = await env.source_token(source)
    body, content_type = wheel_upload(build_wheel(dist), source.name, token).encode()
    upload, refused, api = server.connect(), server.connect(), server.connect()
    for conn in (upload, refused, api):
        conn.transport.bufferSize = 65536  # type: ignore[attr-defined]

    gate: Deferred[None] = Deferred()
    server.checker.gate = gate

    upload.send(request_head("/upload/pypi/uploads", content_type=content_type, token=token,
                             length=len(body)))
    refused.send(request_head("/upload/pypi/uploads", content_type=content_type,
                              token=token + "x", length=len(body)))
    api.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    assert read_size(upload) == 65536
    server.checker.gate = None
    gate.callback(None)
    await wait_until(lambda: read_size(upload) == UPLOAD_READ_SIZE,
                     what="the upload's read size to grow")
    upload.send(body)
    refused.send(body)

    assert (await upload.final()).status == 200
    assert (await refused.final()).status == 401
    assert [read_size(c) for c in (upload, refused, api)] == [65536] * 3


def test_uploads_streaming_at_once_share_the_bytes_of_a_reactor_turn() -> None:
    """One upload reads UPLOAD_READ_SIZE at a time; many share UPLOAD_TURN_BYTES, down
    to Twisted's 64 KiB and no less."""
    reads = UploadReads()
    sizes = {}
    for streaming in (0, 1, 8, 16, 64, 10_000):
        reads.streaming = streaming
        sizes[streaming] = reads.size()
    assert sizes == {0: UPLOAD_READ_SIZE, 1: UPLOAD_READ_SIZE, 8: UPLOAD_TURN_BYTES // 8,
                     16: UPLOAD_TURN_BYTES // 16, 64: UPLOAD_TURN_BYTES // 64,
                     10_000: MIN_UPLOAD_READ}
    assert UPLOAD_TURN_BYTES // 8 == UPLOAD_READ_SIZE and MIN_UPLOAD_READ == 65536


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads_shrink_their_reads_and_grow_them_back(
    env: AppEnv, server: Server, dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a turn's bytes for one large read, two uploads streaming at once read half
    of it each (the first one from its next chunk on); once both are answered, a
    third upload alone reads it whole again."""
    monkeypatch.setattr(web, "UPLOAD_TURN_BYTES", UPLOAD_READ_SIZE)
    source = await env.python_source()
    token = await env.source_token(source)

    def read_size(conn: Connection) -> int:
        size: int = conn.transport.bufferSize  # type: ignore[attr-defined]
        return size

    def start(version: str) -> tuple[Connection, bytes]:
        wheel = build_wheel(dist, version=version, payload_size=200_000)
        body, content_type = wheel_upload(wheel, source.name, token, version=version).encode()
        conn = server.connect()
        conn.transport.bufferSize = 65536  # type: ignore[attr-defined]
        conn.send(request_head("/upload/pypi/uploads", content_type=content_type,
                               token=token, length=len(body)))
        return conn, body

    first, first_body = start("1.0.0")
    await wait_until(lambda: read_size(first) == UPLOAD_READ_SIZE, what="the first to widen")
    second, second_body = start("2.0.0")
    await wait_until(lambda: read_size(second) == UPLOAD_READ_SIZE // 2,
                     what="the second to read half")
    first.send(first_body[:1000])
    assert read_size(first) == UPLOAD_READ_SIZE // 2
    first.send(first_body[1000:])
    second.send(second_body)
    answers = [await c.final() for c in (first, second)]
    assert [a.status for a in answers] == [200, 200], answers
    assert [read_size(c) for c in (first, second)] == [65536, 65536]

    third, third_body = start("3.0.0")
    await wait_until(lambda: read_size(third) == UPLOAD_READ_SIZE, what="the third to widen")
    third.send(third_body)
    assert (await third.final()).status == 200


def read_size(conn: Connection) -> int:
    size: int = conn.transport.bufferSize  # type: ignore[attr-defined]
    return size


@pytest.fixture
def receiving() -> Iterator[socket.socket]:
    """A socket whose receive buffer holds 512 KiB (as Linux reports it), for the
    pacing of reads to look at."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    with ours, theirs:
        yield ours


async def reading_large(server: Server, head: bytes, handle: socket.socket) -> Connection:
    """A connection over ``handle`` that sent ``head`` and had its token accepted."""
    conn = server.connect(SocketTransport(handle))
    conn.send(head)
    await wait_until(lambda: read_size(conn) == UPLOAD_READ_SIZE,
                     what="the token to be accepted")
    return conn


@pytest_twisted.ensureDeferred
async def test_short_reads_of_an_upload_are_paced(
    env: AppEnv, server: Server, dist: Path, receiving: socket.socket
) -> None:
    """Once an upload reads large, a read shorter than PACED_READ and than 1/PACED_SHARE
    of the socket's receive buffer leaves its connection unread for READ_PAUSE; a long
    read, one that took a good part of the buffer, or one that completes the body, not."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=PACED_READ * 3)
    raw = wheel_upload(path, source.name, token).raw()
    at = raw.index(b"\r\n\r\n") + 4
    clock = cast(task.Clock, server.site.reactor)
    conn = await reading_large(server, raw[:at], receiving)
    share = receiving.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // PACED_SHARE
    assert 4096 < share < PACED_READ

    def read(size: int) -> str:
        nonlocal at
        conn.protocol.dataReceived(raw[at:at + size])
        at += size
        return conn.transport.producerState

    assert read(4096) == "paused"
    clock.advance(READ_PAUSE * 0.9)
    assert conn.transport.producerState == "paused"
    clock.advance(READ_PAUSE * 0.1)
    assert conn.transport.producerState == "producing"
    assert read(PACED_READ) == "producing"
    assert read(share) == "producing"
    assert read(share - 1) == "paused"
    clock.advance(READ_PAUSE)
    assert read(1) == "paused"
    clock.advance(READ_PAUSE)
    assert read(len(raw) - at - 100) == "producing"
    assert read(100) == "producing"

    assert (await conn.final()).status == 200
    assert env.blobs.path_for(digests(path)["sha256_digest"]).read_bytes() == path.read_bytes()
    assert conn.transport.producerState == "producing"


@pytest_twisted.ensureDeferred
async def test_chunked_and_refused_uploads_are_not_paced(
    env: AppEnv, server: Server, dist: Path, receiving: socket.socket
) -> None:
    """Short reads are paced only for an accepted upload with a Content-Length: a
    chunked body's chunks say nothing of the reads, and a refused one is drained."""
    source = await env.python_source()
    token = await env.source_token(source)
    upload = wheel_upload(build_wheel(dist, payload_size=PACED_READ), source.name, token)
    chunked_raw = upload.raw(piece_chunked=1000)
    at = chunked_raw.index(b"\r\n\r\n") + 4
    chunked_conn = await reading_large(server, chunked_raw[:at], receiving)
    refused = server.connect(SocketTransport(receiving))
    refused_raw = replace(upload, token=token + "x").raw()

    states = set()
    for conn, raw, start in ((chunked_conn, chunked_raw, at), (refused, refused_raw, 0)):
        for offset in range(start, len(raw), 4096):
            conn.protocol.dataReceived(raw[offset:offset + 4096])
            states.add(conn.transport.producerState)

    assert states == {"producing"}
    assert (await chunked_conn.final()).status == 200
    assert (await refused.final()).status == 401


@pytest_twisted.ensureDeferred
async def test_disconnect_while_paced_ends_the_pause(
    env: AppEnv, server: Server, dist: Path, receiving: socket.socket
) -> None:
    """A client that goes away while its connection is left unread leaves nothing
    behind, and no pause still to end."""
    source = await env.python_source()
    token = await env.source_token(source)
    raw = wheel_upload(build_wheel(dist, payload_size=PACED_READ), source.name, token).raw()
    at = raw.index(b"\r\n\r\n") + 4
    clock = cast(task.Clock, server.site.reactor)
    conn = await reading_large(server, raw[:at], receiving)
    request = server.requests[-1]
    conn.protocol.dataReceived(raw[at:at + 4096])
    assert conn.transport.producerState == "paused"

    conn.disconnect()

    assert [c for c in clock.getDelayedCalls() if getattr(c.func, "__self__", None) is request] \
        == []
    await wait_until(lambda: env.temp_files() == [], what="the temp blob to go")
    await nothing_kept(env)


def test_transport_resumes_only_when_every_hold_is_released() -> None:
    """The receiver (token check, writer backlog) and the pacing of short reads hold
    an upload's transport apart: it resumes only once neither holds it."""
    transport = StringTransportWithDisconnection()
    holds = TransportHolds(transport)

    holds.hold()
    holds.hold()
    assert transport.producerState == "paused"
    holds.release()
    assert transport.producerState == "paused"
    holds.release()
    assert transport.producerState == "producing"


@pytest.mark.parametrize(("chunk_size", "piece"), [(1000, 7), (65536, 4096), (1, 512)])
@pytest_twisted.ensureDeferred
async def test_chunked_transfer_encoding(
    env: AppEnv, server: Server, dist: Path, chunk_size: int, piece: int
) -> None:
    """A body sent with ``Transfer-Encoding: chunked`` (no Content-Length) is stored intact."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=20_000)
    conn = server.connect()

    conn.send(wheel_upload(path, source.name, token).raw(piece_chunked=chunk_size), piece)
    response = await conn.final()

    assert response.status == 200, response
    sha256 = digests(path)["sha256_digest"]
    assert [r["sha256"] for r in await env.python_rows()] == [sha256]
    assert env.blobs.path_for(sha256).read_bytes() == path.read_bytes()
    assert env.temp_files() == []


@pytest_twisted.ensureDeferred
async def test_body_never_accumulates_in_memory(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A 24 MiB upload goes straight to disk: request.content stays empty, and memory
    stays within the hashing backlog bound (PIPELINE_HIGH), far below the body size."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=24 << 20)
    raw = wheel_upload(path, source.name, token).raw()
    conn = server.connect()
    start = 64 * 1024
    conn.send(raw[:start])
    request = server.requests[-1]
    # Streaming has begun once the content part has a temp file.
    await wait_until(lambda: len(env.temp_files()) == 1, what="the temp blob")

    tail = len(raw) - 1024
    tracemalloc.start()
    try:
        for offset in range(start, tail, 64 * 1024):
            # As a real transport does: no reads while the server has it paused.
            if conn.transport.producerState == "paused":
                await wait_until(lambda: conn.transport.producerState == "producing",
                                 what="the hashing backlog to shrink")
            conn.protocol.dataReceived(raw[offset:min(offset + 64 * 1024, tail)])
            assert request.content is not None
            assert request.content.tell() == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert request.content is not None
    assert len(request.content.getvalue()) == 0
    bound = PIPELINE_HIGH + (2 << 20)
    assert peak < bound < len(raw) / 2, f"{peak} bytes allocated streaming {len(raw)} bytes"
    # Before the body is complete, the temp file already holds what has arrived.
    await wait_until(lambda: env.temp_files()[0].stat().st_size > 16 << 20,
                     what="the hashing job to write what has arrived")
    conn.protocol.dataReceived(raw[tail:])
    response = await conn.final()
    assert response.status == 200, response
    assert [r["size"] for r in await env.python_rows()] == [path.stat().st_size]
    assert env.temp_files() == []


@pytest_twisted.ensureDeferred
async def test_early_bytes_held_and_transport_paused_while_token_is_checked(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """Body bytes that arrive before the token is checked are held (nothing is written);
    past PENDING_LIMIT the transport is paused, and resumed once the check is done."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=PENDING_LIMIT * 2)
    raw = wheel_upload(path, source.name, token).raw()
    head_end = raw.index(b"\r\n\r\n") + 4
    gate: Deferred[None] = Deferred()
    server.checker.gate = gate
    conn = server.connect()

    conn.send(raw[:head_end + PENDING_LIMIT // 2])
    assert conn.transport.producerState == "producing"
    assert env.temp_files() == []
    below = head_end + PENDING_LIMIT
    conn.send(raw[head_end + PENDING_LIMIT // 2:below])
    assert conn.transport.producerState == "producing"
    conn.send(raw[below:below + 8192])
    assert conn.transport.producerState == "paused"
    assert env.temp_files() == []
    assert await env.python_rows() == []

    server.checker.gate = None
    gate.callback(None)
    await wait_until(lambda: conn.transport.producerState == "producing",
                     what="the transport to be resumed")
    # The held bytes were written out in order once the token was accepted.
    assert len(env.temp_files()) == 1
    conn.send(raw[below + 8192:])
    response = await conn.final()

    assert response.status == 200, response
    sha256 = digests(path)["sha256_digest"]
    assert env.blobs.path_for(sha256).read_bytes() == path.read_bytes()
    assert env.temp_files() == []


@pytest_twisted.ensureDeferred
async def test_identical_reupload_is_200_and_different_content_is_400(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """Re-sending the same file answers 200; another file under that name answers 400
    "File already exists" and leaves the stored file as it was."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    first = path.read_bytes()
    upload = wheel_upload(path, source.name, token)

    for expected in ("added to", "was already in"):
        conn = server.connect()
        conn.send(upload.raw(), 997)
        response = await conn.final()
        assert response.status == 200, response
        assert expected in response.body.decode()

    other = dist / "other"
    other.mkdir()
    changed = build_wheel(other, payload_size=100)
    assert changed.name == path.name
    conn = server.connect()
    conn.send(wheel_upload(changed, source.name, token).raw(), 997)
    response = await conn.final()

    assert response.status == 400
    assert "File already exists" in response.reason
    rows = await env.python_rows()
    assert [r["sha256"] for r in rows] == [hashlib.sha256(first).hexdigest()]
    assert env.blobs.path_for(rows[0]["sha256"]).read_bytes() == first
    assert not env.blobs.path_for(digests(changed)["sha256_digest"]).exists()
    assert env.temp_files() == []


@pytest_twisted.ensureDeferred
async def test_losing_a_race_keeps_the_winners_files(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """Two different files under one name race: the one recorded second is refused. Its
    blobs stay until housekeeping, which removes only what no recorded file uses: the
    winner's distribution and its core metadata (identical in both wheels) stay."""
    source = await env.python_source()
    token = await env.source_token(source)
    (dist / "a").mkdir()
    (dist / "b").mkdir()
    winner = build_wheel(dist / "a")
    loser = build_wheel(dist / "b", payload_size=64)
    loser_sha = digests(loser)["sha256_digest"]
    gate: Deferred[None] = Deferred()
    server.files.gates[loser_sha] = gate

    # The loser gets as far as placing its blobs, then waits to be recorded.
    late = server.connect()
    late.send(wheel_upload(loser, source.name, token).raw())
    await wait_until(lambda: loser_sha in server.files.waiting, what="the loser to wait")
    early = server.connect()
    early.send(wheel_upload(winner, source.name, token).raw())
    won = await early.final()
    gate.callback(None)
    lost = await late.final()

    assert won.status == 200, won
    assert lost.status == 400, lost
    assert "File already exists" in lost.reason
    (row,) = await env.python_rows()
    assert row["sha256"] == digests(winner)["sha256_digest"]
    assert env.blobs.path_for(row["sha256"]).read_bytes() == winner.read_bytes()
    assert env.blobs.path_for(row["metadata_sha256"], ".metadata").is_file()
    assert env.temp_files() == []

    assert await env.housekeep() == Swept(temp_files=0, blobs=1)
    assert not env.blobs.path_for(loser_sha).exists()
    assert env.stored_files() == sorted([env.blobs.path_for(row["sha256"]),
                                         env.blobs.path_for(row["metadata_sha256"], ".metadata")])


@pytest_twisted.ensureDeferred
async def test_a_signed_upload_losing_to_an_identical_unsigned_one_adds_its_signature(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """The same file uploaded twice at once, signed and unsigned: when the unsigned one is
    recorded first, the signed one answers 200 and the file gets its signature, as it would
    had it come second."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist)
    sha = digests(path)["sha256_digest"]
    signer = Signer()
    try:
        signature = signer.sign(path)
    finally:
        signer.close()
    signed = wheel_upload(path, source.name, token)
    signed = replace(signed, files=[*signed.files, ("gpg_signature", f"{path.name}.asc",
                                                    signature)])
    gate: Deferred[None] = Deferred()
    server.files.gates[sha] = gate

    late = server.connect()
    late.send(signed.raw())
    await wait_until(lambda: sha in server.files.waiting, what="the signed upload to wait")
    del server.files.gates[sha]
    early = server.connect()
    early.send(wheel_upload(path, source.name, token).raw())
    first = await early.final()
    gate.callback(None)
    second = await late.final()

    assert (first.status, second.status) == (200, 200)
    assert "its signature was added" in second.body.decode()
    (row,) = await env.python_rows()
    assert row["signature_sha256"] == hashlib.sha256(signature).hexdigest()
    assert env.blobs.path_for(row["signature_sha256"], ".asc").read_bytes() == signature
    assert env.temp_files() == []


# Which digests are computed and checked ----------------------------------------------


@pytest.mark.parametrize(("before", "computed"), [
    ({"sha256_digest": "ab"}, set()),
    ({"sha256_digest": "ab", "md5_digest": "cd", "blake2_256_digest": "ef"}, set()),
    ({"blake2_256_digest": "ef", "md5_digest": "cd"}, {BLAKE2_256}),
    ({"md5_digest": "cd"}, {BLAKE2_256, MD5}),
    ({}, {BLAKE2_256, MD5}),
    # A field's value is its first one: an empty first value is no digest.
    ({"sha256_digest": " "}, {BLAKE2_256, MD5}),
], ids=["sha256", "all-three", "blake2-and-md5", "md5", "none-yet", "empty-sha256"])
def test_digests_to_compute_follow_the_fields_before_the_content(
    before: dict[str, str], computed: set[str]
) -> None:
    """Only sha256 once the client sent one; else blake2b when it was sent; else both,
    as whatever arrives after the content must still be checkable."""
    assert digests_to_compute({k: [v] for k, v in before.items()}) == computed


async def upload_ok(server: Server, upload: Upload) -> Response:
    conn = server.connect()
    conn.send(upload.raw(), 65_536)
    response = await conn.final()
    assert response.status == 200, response
    return response


@pytest_twisted.ensureDeferred
async def test_a_matching_sha256_leaves_md5_and_blake2_unchecked(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """With a matching sha256_digest the stored bytes are the client's, so md5 and
    blake2b are neither computed nor checked (wrong ones are accepted) and the row
    records them empty; the published sha256 is the file's."""
    source = await env.python_source()
    path = build_wheel(dist)
    upload = wheel_upload(path, source.name, await env.source_token(source))
    upload = _set_field(_set_field(upload, "md5_digest", "0" * 32), "blake2_256_digest", "0" * 64)

    await upload_ok(server, upload)

    (row,) = await env.python_rows()
    assert (row["sha256"], row["blake2_256"], row["md5"]) == (
        digests(path)["sha256_digest"], "", "")
    assert env.blobs.path_for(row["sha256"]).read_bytes() == path.read_bytes()


@pytest.mark.parametrize(("sent", "recorded"), [
    (("md5_digest",), ("blake2_256_digest", "md5_digest")),
    (("blake2_256_digest",), ("blake2_256_digest",)),
    (("blake2_256_digest", "md5_digest"), ("blake2_256_digest",)),
], ids=["md5", "blake2", "blake2-and-md5"])
@pytest_twisted.ensureDeferred
async def test_without_sha256_the_strongest_digest_is_checked_and_recorded(
    env: AppEnv, server: Server, dist: Path, sent: tuple[str, ...], recorded: tuple[str, ...]
) -> None:
    """Without sha256_digest the digests computed (blake2b alone when it is sent, else
    both) are checked and recorded, the others left empty; sha256 is still the file's."""
    source = await env.python_source()
    path = build_wheel(dist)
    upload = wheel_upload(path, source.name, await env.source_token(source))
    upload = replace(upload, fields=[(k, v) for k, v in upload.fields
                                     if not k.endswith("_digest") or k in sent])

    await upload_ok(server, upload)

    (row,) = await env.python_rows()
    real = digests(path)
    assert row["sha256"] == real["sha256_digest"]
    for field_name, column in (("blake2_256_digest", "blake2_256"), ("md5_digest", "md5")):
        assert row[column] == (real[field_name] if field_name in recorded else "")


@pytest_twisted.ensureDeferred
async def test_digests_after_the_content_are_checked(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A form whose digest fields all come after the file (twine and uv send them
    first) is checked as well: its right digests are accepted and recorded."""
    source = await env.python_source()
    path = build_wheel(dist)
    upload = digests_after_content(wheel_upload(path, source.name,
                                                await env.source_token(source)))

    await upload_ok(server, upload)

    (row,) = await env.python_rows()
    real = digests(path)
    assert (row["sha256"], row["blake2_256"], row["md5"]) == (
        real["sha256_digest"], real["blake2_256_digest"], real["md5_digest"])


def r_tarball(directory: Path, package: str = "hello", version: str = "1.0.0") -> Path:
    """A minimal R source package: ``{package}/DESCRIPTION`` in a tar.gz."""
    path = directory / f"{package}_{version}.tar.gz"
    description = (f"Package: {package}\nVersion: {version}\nTitle: Hello\n"
                   f"License: MIT\n").encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((f"{package}/DESCRIPTION", description),
                           (f"{package}/R/hello.R", b"hello <- function() 'hello'\n" * 500)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("sent", [("sha256_digest",), ()], ids=["sha256", "no-digest"])
@pytest_twisted.ensureDeferred
async def test_an_r_package_records_its_md5_whatever_the_client_sent(
    env: AppEnv, server: Server, dist: Path, sent: tuple[str, ...]
) -> None:
    """An R package added with only a sha256 (what ``rspm add`` sends), or no digest,
    still records the tarball's md5, which PACKAGES publishes as MD5sum."""
    source = await env.r_source()
    token = await env.source_token(source)
    path = r_tarball(dist)
    real = digests(path)
    body, content_type = multipart_body([(k, real[k]) for k in sent],
                                        [("content", path.name, path.read_bytes())], BOUNDARY)
    conn = server.connect()

    conn.send(request_head(f"/__api__/sources/{source.name}/packages",
                           content_type=content_type, token=None, length=len(body),
                           extra=(f"Authorization: Bearer {token}",)) + body, 997)
    response = await conn.final()

    assert response.status == 201, response
    rows = await env.database.read(lambda tx: tx.all("SELECT sha256, md5 FROM r_packages"))
    assert rows == [{"sha256": real["sha256_digest"], "md5": real["md5_digest"]}]
    assert env.temp_files() == []


# Refused uploads -------------------------------------------------------------------


@dataclass
class Case:
    """A broken upload: how to break the good one and what the server must answer."""

    status: int
    reason: str
    change: Callable[[AppEnv, Upload, Path], Awaitable[Upload]]


def _set_field(upload: Upload, name: str, value: str) -> Upload:
    return replace(upload, fields=[(k, value if k == name else v) for k, v in upload.fields])


def _rename(filename: str) -> Callable[[AppEnv, Upload, Path], Awaitable[Upload]]:
    async def change(env: AppEnv, upload: Upload, dist: Path) -> Upload:
        (_, _, data), = upload.files
        return replace(upload, files=[("content", filename, data)])
    return change


def _field(name: str, value: str) -> Callable[[AppEnv, Upload, Path], Awaitable[Upload]]:
    async def change(env: AppEnv, upload: Upload, dist: Path) -> Upload:
        return _set_field(upload, name, value)
    return change


def _content(data: bytes) -> Callable[[AppEnv, Upload, Path], Awaitable[Upload]]:
    """Replace the file with ``data``, sending the digests of ``data``."""
    async def change(env: AppEnv, upload: Upload, dist: Path) -> Upload:
        (_, filename, _), = upload.files
        fake = dist / "fake.bin"
        fake.write_bytes(data)
        upload = replace(upload, files=[("content", filename, data)])
        for key, value in digests(fake).items():
            upload = _set_field(upload, key, value)
        return upload
    return change


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


async def _no_content(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, files=[])


async def _text_plain(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, content_type="text/plain")


async def _no_boundary(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, content_type="multipart/form-data")


async def _unclosed_boundary(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, content_type=f'multipart/form-data; boundary="{BOUNDARY}')


async def _illegal_boundary(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, content_type="multipart/form-data; boundary=a@b{c}")


async def _other_boundary(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, content_type="multipart/form-data; boundary=notthebodysboundary")


async def _truncated(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    body, _ = upload.encode()
    closing = f"--{BOUNDARY}--\r\n".encode()
    assert body.endswith(closing)
    return replace(upload, body=body[:-len(closing)])


async def _no_metadata(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    info = "example_package-1.0.0.dist-info"
    data = _zip({
        "example_package/__init__.py": b"",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/RECORD": b"",
    })
    return await _content(data)(env, upload, dist)


async def _unknown_source(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, source="nowhere", token=await env.token())


async def _r_source(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    await env.r_source("cran-local")
    return replace(upload, source="cran-local", token=await env.token())


async def _big_field(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    value = "x" * (env.limits.max_field_size + 1)
    return replace(upload, fields=[*upload.fields, ("description", value)])


async def _too_many_parts(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    extra = [("classifiers", "Topic :: Utilities")] * env.limits.max_form_parts
    return replace(upload, fields=[*upload.fields, *extra])


async def _bad_signature(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    (_, filename, _), = upload.files
    signature = ("gpg_signature", f"{filename}.asc", b"this is not an OpenPGP signature\n")
    return replace(upload, files=[*upload.files, signature])


async def _no_token(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, token=None)


async def _other_source_token(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    other = await env.python_source("someone-elses")
    return replace(upload, token=await env.source_token(other))


async def _repos_read_token(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    return replace(upload, token=await env.token("repos:read", None))


async def _expired_token(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    source = await env.catalog.get_source(upload.source)
    token = await env.token("sources:write", (source.guid,), expires_in=60)
    env.clock.advance(61)
    return replace(upload, token=token)


async def _revoked_token(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    assert upload.token is not None
    await env.token_store.revoke_token(env.issued[-1], "local-admin")
    return upload


async def _other_username(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    upload = replace(upload, token=None)
    body, content_type = upload.encode()
    credentials = base64.b64encode(f"alice:{await env.token()}".encode()).decode()
    raw = request_head(f"/upload/pypi/{upload.source}/", content_type=content_type,
                       token=None, length=len(body),
                       extra=(f"Authorization: Basic {credentials}",))
    return replace(upload, raw_request=raw + body)


async def _no_digest(env: AppEnv, upload: Upload, dist: Path) -> Upload:
    fields = [(k, v) for k, v in upload.fields if not k.endswith("_digest")]
    return replace(upload, fields=fields)


def _only_digest(name: str, value: str) -> Callable[[AppEnv, Upload, Path], Awaitable[Upload]]:
    """Send ``name`` (set to ``value``) as the only digest."""
    async def change(env: AppEnv, upload: Upload, dist: Path) -> Upload:
        stripped = await _no_digest(env, upload, dist)
        return replace(stripped, fields=[*stripped.fields, (name, value)])
    return change


def digests_after_content(upload: Upload, changes: dict[str, str] | None = None,
                          only: tuple[str, ...] | None = None) -> Upload:
    """The same form with its digest fields (those in ``only``, values changed by
    ``changes``) sent after the content part instead of before it."""
    sent = [(k, (changes or {}).get(k, v)) for k, v in upload.fields
            if k.endswith("_digest") and (only is None or k in only)]
    body, _ = multipart_body([(k, v) for k, v in upload.fields if not k.endswith("_digest")],
                             upload.files, BOUNDARY)
    closing = f"--{BOUNDARY}--\r\n".encode()
    assert body.endswith(closing)
    trailing = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in sent)
    return replace(upload, body=body[:-len(closing)] + trailing + closing)


def _after_content(**changes: str) -> Callable[[AppEnv, Upload, Path], Awaitable[Upload]]:
    """Digests after the content, ``changes`` (field=value) applied; a field set to
    "" is left out."""
    async def change(env: AppEnv, upload: Upload, dist: Path) -> Upload:
        only = tuple(k for k, _ in upload.fields
                     if k.endswith("_digest") and changes.get(k) != "")
        return digests_after_content(upload, changes, only)
    return change


WHEEL = "example_package-1.0.0-py3-none-any.whl"

REFUSED = {
    "missing-content-part": Case(400, "'content' part is missing", _no_content),
    "not-multipart": Case(400, "Content-Type must be multipart/form-data", _text_plain),
    "no-boundary-parameter": Case(400, "without a boundary", _no_boundary),
    "unclosed-boundary": Case(400, "invalid multipart boundary", _unclosed_boundary),
    "illegal-boundary": Case(400, "invalid multipart boundary", _illegal_boundary),
    "body-with-another-boundary": Case(400, "multipart", _other_boundary),
    "truncated-body": Case(400, "truncated multipart body", _truncated),
    "md5-mismatch": Case(400, "does not match a digest calculated from the uploaded file "
                              "(md5_digest)", _only_digest("md5_digest", "0" * 32)),
    "sha256-mismatch": Case(400, "(sha256_digest)", _field("sha256_digest", "0" * 64)),
    "blake2-mismatch": Case(400, "(blake2_256_digest)",
                            _only_digest("blake2_256_digest", "0" * 64)),
    "sha256-mismatch-after-content": Case(400, "(sha256_digest)",
                                          _after_content(sha256_digest="0" * 64)),
    "blake2-mismatch-after-content": Case(400, "(blake2_256_digest)", _after_content(
        sha256_digest="", blake2_256_digest="0" * 64)),
    "md5-mismatch-after-content": Case(400, "(md5_digest)", _after_content(
        sha256_digest="", blake2_256_digest="", md5_digest="0" * 32)),
    "no-digest": Case(400, "Include at least one message digest", _no_digest),
    "slash-in-filename": Case(400, "'/' or '\\' in the name", _rename(f"dist/{WHEEL}")),
    # In a quoted-string "\\" is an escaped backslash: the filename holds one.
    "backslash-in-filename": Case(400, "'/' or '\\' in the name", _rename(f"dist\\\\{WHEEL}")),
    "dotdot-in-filename": Case(400, "'..' in the name",
                               _rename("example_package-1.0.0-py3-none-any..whl")),
    "parent-dir-filename": Case(400, "in the name", _rename(f"../{WHEEL}")),
    "control-char-in-filename": Case(400, "non-printable",
                                     _rename("example_package-1.0.0\x01-py3-none-any.whl")),
    "tab-in-filename": Case(400, "non-printable",
                            _rename("example_package\t-1.0.0-py3-none-any.whl")),
    "del-in-filename": Case(400, "non-printable",
                            _rename("example_package-1.0.0-py3-none-any\x7f.whl")),
    "name-disagrees": Case(400, "Start filename for 'other-package' with 'other_package'",
                           _field("name", "other-package")),
    "version-disagrees": Case(400, "Version in filename should be '2.0' not '1.0.0'",
                              _field("version", "2.0")),
    "filetype-disagrees": Case(400, "Extension .whl is invalid for filetype sdist",
                               _field("filetype", "sdist")),
    "wheel-not-a-zip": Case(400, "not a zip archive", _content(b"definitely not a zip\n" * 50)),
    "wheel-without-metadata": Case(400, "does not contain the required METADATA file",
                                   _no_metadata),
    "unknown-source": Case(404, "no source named 'nowhere'", _unknown_source),
    "r-source": Case(400, "cannot take Python packages", _r_source),
    "field-too-large": Case(413, "Field 'description' is too large", _big_field),
    "too-many-parts": Case(413, "too many multipart parts", _too_many_parts),
    "not-a-signature": Case(400, "Invalid signature", _bad_signature),
    "no-authorization": Case(401, "authentication required", _no_token),
    "token-for-another-source": Case(403, "does not allow publishing to source 'uploads'",
                                     _other_source_token),
    "repos-read-token": Case(403, "does not allow publishing to source 'uploads'",
                             _repos_read_token),
    "expired-token": Case(401, "token has expired", _expired_token),
    "revoked-token": Case(401, "token has been revoked", _revoked_token),
    "basic-auth-not-token-user": Case(401, "use the username __token__", _other_username),
}


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
@pytest_twisted.ensureDeferred
async def test_refused_upload_keeps_nothing(
    env: AppEnv, server: Server, dist: Path, case: Case
) -> None:
    """Each kind of bad upload is answered 4xx with a reason phrase that says why,
    and leaves no stored file, no temp file and no row."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=50_000)
    upload = await case.change(env, wheel_upload(path, source.name, token), dist)
    conn = server.connect()

    conn.send(upload.raw(), 997)
    response = await conn.final()

    assert response.status == case.status, response
    assert case.reason in response.reason, response
    assert case.reason in response.body.decode()
    if case.status == 401:
        assert response.header("www-authenticate") == 'Basic realm="packagemanager"'
    await nothing_kept(env)
    # The refusal was a clean HTTP answer: the server goes on serving.
    assert (await status_answers(server)).status == 200


@pytest_twisted.ensureDeferred
async def test_refused_upload_keeps_the_connection_usable(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A refused upload's body is drained, so the next request on the same
    keep-alive connection is read correctly."""
    source = await env.python_source()
    path = build_wheel(dist, payload_size=PENDING_LIMIT * 2)
    conn = server.connect()

    conn.send(wheel_upload(path, source.name, None).raw(), 4096)
    first = await conn.final()
    conn.send(b"GET /__api__/status HTTP/1.1\r\nHost: test\r\n\r\n")
    await wait_until(lambda: len(conn.responses()) == 2, what="the second response")

    assert [r.status for r in conn.responses()] == [401, 200]
    assert first.status == 401
    assert conn.transport.producerState == "producing"
    await nothing_kept(env)


@pytest.mark.parametrize("send_token", [True, False], ids=["with-token", "without-token"])
@pytest_twisted.ensureDeferred
async def test_upload_with_tokens_disabled_names_the_setting(
    tmp_path: Path, dist: Path, send_token: bool
) -> None:
    """With APITokenAuth off, an upload over TCP answers 401 with a reason naming
    [Authentication] APITokenAuth, whether or not the client sent a token."""
    with app_env(tmp_path / "off", tokens_enabled=False) as env:
        source = await env.python_source()
        token = None
        if send_token:
            key_holder = TokenAuthority(generate_key(), "http://elsewhere", env.clock)
            token, _ = key_holder.mint(Grant("sources:write", None), guid=str(uuid.uuid4()),
                                       expires_in=None)
        conn = public_site(env).connect()
        conn.send(wheel_upload(build_wheel(dist), source.name, token).raw(), 997)
        response = await conn.final()

        assert response.status == 401
        assert "[Authentication] APITokenAuth" in response.reason
        await nothing_kept(env)


# Disconnects -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_body_leaves_nothing(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A client that goes away half way through the body leaves no temp file and no row,
    and the server goes on answering other connections."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=200_000)
    raw = wheel_upload(path, source.name, token).raw()
    conn = server.connect()

    conn.send(raw[:len(raw) // 2], 4096)
    await wait_until(lambda: len(env.temp_files()) == 1, what="the temp blob")
    conn.disconnect()

    assert env.temp_files() == []
    await nothing_kept(env)
    response = await status_answers(server)
    assert response.status == 200
    assert b'"database": "sqlite"' in response.body
    await nothing_kept(env)


@pytest_twisted.ensureDeferred
async def test_disconnect_while_token_is_checked_leaves_nothing(
    env: AppEnv, server: Server, dist: Path
) -> None:
    """A client that goes away before its token is checked: once the check completes,
    the held bytes are dropped, not written."""
    source = await env.python_source()
    token = await env.source_token(source)
    path = build_wheel(dist, payload_size=PENDING_LIMIT * 2)
    raw = wheel_upload(path, source.name, token).raw()
    gate: Deferred[None] = Deferred()
    server.checker.gate = gate
    conn = server.connect()

    conn.send(raw[:len(raw) // 2], 4096)
    receiver = server.requests[-1].upload
    assert receiver is not None
    assert conn.transport.producerState == "paused"
    conn.disconnect()
    server.checker.gate = None
    gate.callback(None)
    # The source is resolved last; the held bytes are dealt with right after.
    await wait_until(lambda: receiver.source is not None, what="the token check")

    await nothing_kept(env)
    assert (await status_answers(server)).status == 200
    await nothing_kept(env)


# Bodies of other routes -----------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_oversized_api_body_is_refused_without_being_kept(
    env: AppEnv, server: Server, declared: bool
) -> None:
    """An API request body over MAX_BODY gets 413, is never spooled, and changes nothing."""
    token = await env.token()
    body = b'{"name": "' + b"x" * (MAX_BODY + 100_000) + b'", "type": "local-python"}'
    conn = server.connect()
    head = request_head("/__api__/sources", content_type="application/json", token=None,
                        length=len(body) if declared else None,
                        extra=(f"Authorization: Bearer {token}",))
    raw = head + (body if declared else chunked(body, 65536))
    conn.send(raw[:-100], 65536)
    # Past the limit nothing of the body is kept, even before it has all arrived.
    request = server.requests[-1]
    assert request.content is not None and len(request.content.getvalue()) == 0
    conn.send(raw[-100:])
    response = await conn.final()

    assert response.status == 413, response
    assert str(MAX_BODY) in response.reason
    assert await env.catalog.list_sources() == []
    assert (await status_answers(server)).status == 200


@pytest_twisted.ensureDeferred
async def test_small_api_body_still_accepted(env: AppEnv, server: Server) -> None:
    """A JSON body under MAX_BODY reaches the route as before."""
    token = await env.token()
    body = b'{"name": "src", "type": "local-python"}'
    conn = server.connect()
    conn.send(request_head("/__api__/sources", content_type="application/json", token=None,
                           length=len(body), extra=(f"Authorization: Bearer {token}",)) + body)
    response = await conn.final()
    assert response.status == 201, response
    assert [s.name for s in await env.catalog.list_sources()] == ["src"]
