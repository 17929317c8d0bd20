"""A real server against hostile requests: refused uploads, odd URLs, the admin socket.

Each test speaks raw HTTP over a socket, so what the server sends and when
(a 100 Continue, an early answer, a close) is seen exactly as a client sees it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pm.upload import DRAIN_LIMIT
from tests.support.packages import multipart_body
from tests.support.server import ServerProcess

BOUNDARY = "pmhostileboundary0123456789"


@pytest.fixture
def sqlite_server(make_server: type[ServerProcess]) -> Iterator[ServerProcess]:
    """One started server on SQLite."""
    yield make_server().start()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, deadline: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline)."""
    sock.settimeout(0.2)
    chunks: list[bytes] = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_head(sock: socket.socket, deadline: float = 10.0) -> bytes:
    """Bytes up to the end of the first response's headers."""
    sock.settimeout(deadline)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def upload_head(length: int, *, expect: bool) -> bytes:
    lines = ["POST /upload/pypi/local-python-src/ HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
             f"Content-Length: {length}"]
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_expect_100_continue_without_a_token_is_refused_without_a_100(
    sqlite_server: ServerProcess,
) -> None:
    """An upload with ``Expect: 100-continue`` and no token is answered 401 at once,
    with no 100 Continue before it, and the connection is closed."""
    sqlite_server.setup_python()
    with connect(sqlite_server) as sock:
        sock.sendall(upload_head(100 * 1024 * 1024, expect=True))
        answer = read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"100 Continue" not in answer


def test_a_refused_body_is_read_only_up_to_the_bound(sqlite_server: ServerProcess) -> None:
    """A refused 100 MB upload without Expect is answered and closed after about
    DRAIN_LIMIT body bytes: the client cannot send it all, and sees the 401."""
    sqlite_server.setup_python()
    total = 100 * 1024 * 1024
    piece = b"x" * 65536
    sent = 0
    started = time.monotonic()
    with connect(sqlite_server) as sock:
        sock.sendall(upload_head(total, expect=False))
        try:
            while sent < total:
                sent += sock.send(piece)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        answer = read_until_closed(sock)

    assert sent < total, "the server read the whole refused body"
    # What the kernel buffers on both ends is all that gets past the bound.
    assert sent < DRAIN_LIMIT + 16 * 1024 * 1024, sent
    assert time.monotonic() - started < 15
    assert answer == b"" or answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_the_admin_socket_answers_a_request_without_host(sqlite_server: ServerProcess) -> None:
    """The admin socket serves a request with no Host header (HTTP/1.0) like any other."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(sqlite_server.socket_path))
        sock.sendall(b"GET /__api__/status HTTP/1.0\r\n\r\n")
        answer = read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.0 200 "), answer[:300]
    assert "Traceback" not in sqlite_server.log()


def test_an_invalid_percent_escape_is_a_client_error_without_a_traceback(
    sqlite_server: ServerProcess,
) -> None:
    """``%ff`` (not UTF-8 once decoded) in a URL gets a 4xx and logs no traceback."""
    sqlite_server.setup_python()
    for path in ("/python/latest/simple/%ff/", "/%ff", "/__api__/sources/%ff"):
        with connect(sqlite_server) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n".encode())
            answer = read_until_closed(sock)
        assert answer[9:10] == b"4", (path, answer[:300])
    assert "Traceback" not in sqlite_server.log()


def test_a_long_name_in_a_404_is_not_echoed_whole(sqlite_server: ServerProcess) -> None:
    """A 10,000-character name in a URL is cut short in the 404 that names it."""
    sqlite_server.setup_python()
    name = "a" * 10_000
    for path in (f"/python/latest/simple/{name}/", f"/{name}/latest/simple/",
                 f"/__api__/sources/{name}", f"/__api__/repos/{name}"):
        response = sqlite_server.get(path)
        assert 400 <= response.status < 500, (path[:40], response.status)
        assert name not in response.body.decode(errors="replace"), path[:40]


def test_a_zip_with_200000_entries_is_refused_quickly(
    sqlite_server: ServerProcess, tmp_path: Path
) -> None:
    """A wheel of 200,000 empty entries is refused within seconds, saying it has too many."""
    token = sqlite_server.setup_python()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(200_000):
            archive.writestr(f"e/{index}", b"")
    content = buffer.getvalue()
    filename = "example_package-1.0.0-py3-none-any.whl"
    body, content_type = multipart_body(
        [(":action", "file_upload"), ("protocol_version", "1"), ("name", "example-package"),
         ("version", "1.0.0"), ("filetype", "bdist_wheel"), ("pyversion", "py3"),
         ("metadata_version", "2.1"), ("sha256_digest", hashlib.sha256(content).hexdigest())],
        [("content", filename, content)], BOUNDARY)
    credentials = base64.b64encode(f"__token__:{token}".encode()).decode()
    head = (f"POST /upload/pypi/local-python-src/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n").encode()

    started = time.monotonic()
    with connect(sqlite_server) as sock:
        sock.sendall(head + body)
        answer = read_until_closed(sock, deadline=30)
    elapsed = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"more than 100000 members" in answer, answer[:300]
    assert elapsed < 10, elapsed
