"""A stand-in for the Package Manager server, for testing ``rspm`` without one.

A stdlib ``http.server`` in a thread, on 127.0.0.1 (a free port), on a unix
socket or over TLS, speaking HTTP/1.1 with keep-alive like the real server.
Each answer comes from a route: a fixed :class:`Reply`, or a function of the
:class:`FakeRequest` (which may read the body, stream it, or cut the
connection part-way).  Every request is recorded, with the connection it came
on, so tests can check what was sent and how connections were reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from click.testing import CliRunner, Result

from cli.main import main
from pm import __version__

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """An answer: JSON ``value`` (or ``raw`` bytes), with a status and maybe a reason.

    ``close`` announces Connection: close; ``hang_up`` closes the connection
    after answering without saying so, as a server timing out an idle
    keep-alive connection does.
    """

    status: int = 200
    value: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    reason: str | None = None
    close: bool = False
    hang_up: bool = False
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, message: str) -> Reply:
    """The server's JSON error answer."""
    return Reply(status, {"error": message, "code": status})


class Dropped(Exception):
    """Raised by FakeRequest.drop: the connection is cut without an answer."""


class FakeRequest:
    """One request as the fake received it; the body is read on demand."""

    def __init__(self, handler: BaseHTTPRequestHandler, connection: int) -> None:
        parts = urlsplit(handler.path)
        self.method = handler.command
        self.path = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.headers: Message = handler.headers
        self.connection = connection
        self.length = int(handler.headers.get("Content-Length") or 0)
        self.received = 0
        self.body = b""
        self._rfile = handler.rfile

    def stream(self, limit: int | None = None) -> Iterator[bytes]:
        """The rest of the body (up to ``limit`` bytes of it), READ_SIZE at a time."""
        left = self.length - self.received
        if limit is not None:
            left = min(left, limit)
        while left > 0:
            chunk = self._rfile.read(min(READ_SIZE, left))
            if not chunk:
                raise Dropped("the client closed the connection mid-body")
            self.received += len(chunk)
            left -= len(chunk)
            yield chunk

    def read(self) -> bytes:
        """The whole body, kept as ``body``."""
        self.body += b"".join(self.stream())
        return self.body

    def json(self) -> Any:
        return json.loads(self.read())

    def digest(self) -> tuple[str, int]:
        """The sha256 and size of the body, read without keeping it."""
        sha = hashlib.sha256()
        size = 0
        for chunk in self.stream():
            sha.update(chunk)
            size += len(chunk)
        return sha.hexdigest(), size

    def drop(self, after: int) -> None:
        """Read ``after`` bytes of the body, then cut the connection."""
        for _ in self.stream(after):
            pass
        raise Dropped(f"dropped after {after} bytes")

    def parts(self) -> list[Part]:
        """The body parsed as multipart/form-data."""
        return parse_multipart(self.read(), self.headers.get("Content-Type", ""))


Route = Callable[[FakeRequest], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def setup(self) -> None:
        super().setup()
        if self.connection.family != socket.AF_UNIX:
            # Headers and body go in two writes: without this, Nagle and delayed
            # ACKs hold every answer back by some 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_id = self.server.fake.connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake.disconnected(self.connection)

    def do_GET(self) -> None:
        self.server.fake.dispatch(self)

    do_POST = do_DELETE = do_PUT = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: failures show up in the test's assertions."""


class _TCPServer(ThreadingHTTPServer):
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: connections the client breaks (on purpose, in tests) are not errors here."""


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet, as for TCP."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeServer:
    """Start with ``with FakeServer() as server:``; routes are keyed by (method, path)."""

    def __init__(self, *, unix_socket: Path | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], Reply | Route] = {
            ("GET", "/__api__/status"): Reply(200, {"version": __version__,
                                                     "database": "sqlite"}),
        }
        self.requests: list[FakeRequest] = []
        self.unix_socket = unix_socket
        self._ids = count(1)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        server: _TCPServer | _UnixServer
        if unix_socket is not None:
            server = _UnixServer(str(unix_socket), _Handler)
        else:
            server = _TCPServer(("127.0.0.1", 0), _Handler)
            if tls is not None:
                server.socket = tls.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-pm",
                                        kwargs={"poll_interval": 0.05})
        self.scheme = "https" if tls is not None else "http"

    @property
    def address(self) -> str:
        assert isinstance(self._server, _TCPServer), "a unix socket has no address"
        return f"{self.scheme}://127.0.0.1:{self._server.server_port}"

    def on(self, method: str, path: str, route: Reply | Route) -> None:
        self.routes[(method, path)] = route

    def __enter__(self) -> FakeServer:
        # The socket listens from construction: connections made before
        # serve_forever runs just wait in the backlog.
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._server.shutdown()
        with self._lock:
            for sock in self._open:
                # Wakes handler threads blocked reading an idle kept-alive connection.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)

    # Called from the handler threads --------------------------------------------

    def connected(self, sock: socket.socket) -> int:
        with self._lock:
            self._open.add(sock)
            return next(self._ids)

    def disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def dispatch(self, handler: _Handler) -> None:
        request = FakeRequest(handler, handler.connection_id)
        with self._lock:
            self.requests.append(request)
        route = self.routes.get((request.method, request.path),
                                error(404, f"no route for {request.method} {request.path}"))
        try:
            reply = route(request) if callable(route) else route
            # Like the real server: answer only once the whole body is in.
            request.read()
        except Dropped:
            handler.close_connection = True
            return
        raw = reply.raw if reply.raw is not None else json.dumps(reply.value).encode()
        handler.send_response(reply.status, reply.reason)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in reply.headers:
            handler.send_header(name, value)
        if reply.close:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(raw)
        handler.wfile.flush()
        if reply.close or reply.hang_up:
            handler.close_connection = True

    # For tests -----------------------------------------------------------------

    def made(self, method: str, path: str) -> list[FakeRequest]:
        """The requests received for ``method`` and ``path``."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def connections(self) -> list[int]:
        return [r.connection for r in self.requests]


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    headers: dict[str, str]
    data: bytes = field(repr=False)


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body, asserting the framing is exactly right."""
    assert content_type.startswith("multipart/form-data; boundary="), content_type
    delimiter = b"--" + content_type.split("boundary=", 1)[1].encode()
    assert body.startswith(delimiter + b"\r\n"), body[:100]
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n"), body[-100:]
    inner = body[len(delimiter) + 2:-(len(delimiter) + 6)]
    parts = []
    for chunk in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator, chunk[:200]
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        params = dict(
            p.strip().split("=", 1) for p in headers["Content-Disposition"].split(";")[1:]
        )
        filename = params.get("filename")
        parts.append(Part(params["name"].strip('"'),
                          filename.strip('"') if filename is not None else None, headers, data))
    return parts


# Running rspm against the fake -------------------------------------------------------

# Variables a developer's shell may have set that would change what rspm does.
CLEAN_ENV: dict[str, str | None] = {
    "PACKAGEMANAGER_ADDRESS": None,
    "PACKAGEMANAGER_TOKEN": None,
    "PACKAGEMANAGER_CONFIG": None,
    "SSL_CERT_FILE": None,
    "SSL_CERT_DIR": None,
}
TOKEN = "secret-token-value"


def socket_config(directory: Path) -> Path:
    """A server config file whose admin socket is ``directory``/rstudio-pm.sock."""
    path = directory / "rstudio-pm.gcfg"
    path.write_text(f"[Server]\nSockFileDir = {directory}\n")
    return path


def rspm(*args: str, server: FakeServer | None = None, token: str | None = TOKEN,
         env: dict[str, str | None] | None = None) -> Result:
    """Run ``rspm args`` in-process; with a TCP ``server``, remotely against it."""
    environment = dict(CLEAN_ENV)
    if server is not None and server.unix_socket is None:
        environment["PACKAGEMANAGER_ADDRESS"] = server.address
        environment["PACKAGEMANAGER_TOKEN"] = token
    environment.update(env or {})
    return CliRunner(mix_stderr=False).invoke(main, list(args), env=environment,
                                              catch_exceptions=False)
