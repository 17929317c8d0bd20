"""pm.served.StoredFile on real connections: sendfile on plain TCP, reads through TLS;
whole files, ranges, HEAD, ETag/304, and a client leaving mid-file."""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as installed_reactor
from twisted.internet import ssl as twisted_ssl
from twisted.internet.threads import deferToThread
from twisted.web import resource, server

import pm.served
from pm.fastreads import file_page, respond
from pm.served import SendfileProducer
from pm.service import tls_options
from tests.support.server import TlsFiles, make_tls_files
from tests.unit.appfixture import wait_until

reactor: Any = installed_reactor
MiB = 1024 * 1024
SIZE = 8 * MiB + 12345
ETAG = "0123abcd"


class OneFile(resource.Resource):
    """Answers every GET and HEAD as FastReads answers a cached file: respond(), then the
    StoredFile it hands back."""

    isLeaf = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._page = file_page(path, ETAG, "application/zip")

    def render(self, request: server.Request) -> Any:
        answer = respond(request, self._page)
        return answer if isinstance(answer, bytes) else cast(Any, answer).render(request)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    port: int
    tls: TlsFiles | None
    sendfile_calls: list[int]

    def get(self, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
        """One request on a fresh connection (run it in a thread: it blocks)."""
        if self.tls is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=30)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=self.tls.context())
        try:
            conn.request(method, "/file.whl", headers=headers or {})
            answer = conn.getresponse()
            return Reply(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                         answer.read())
        finally:
            conn.close()


@pytest.fixture
def content(tmp_path: Path) -> Path:
    path = tmp_path / "file.whl"
    path.write_bytes(os.urandom(SIZE))
    return path


def _counting_sendfile(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def _listen(path: Path, tls: TlsFiles | None) -> Any:
    """The listening port (an IListeningPort) serving ``path`` on 127.0.0.1."""
    site = server.Site(OneFile(path))
    if tls is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        options: twisted_ssl.CertificateOptions = tls_options(tls.certificate, tls.key)
        port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    return port


@pytest.fixture(params=["tcp", "tls"])
def served(request: pytest.FixtureRequest, content: Path, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The file served over plain TCP, then over TLS."""
    tls = make_tls_files(tmp_path / "tls") if request.param == "tls" else None
    calls = _counting_sendfile(monkeypatch)
    port = _listen(content, tls)
    yield Served(port.getHost().port, tls, calls)
    pytest_twisted.blockon(port.stopListening())


async def _in_thread(work: Callable[[], Reply]) -> Reply:
    reply: Reply = await deferToThread(work)
    return reply


def _sendfile_used(served: Served) -> None:
    if served.tls is None:
        assert served.sendfile_calls and all(n > 0 for n in served.sendfile_calls)
    else:
        assert served.sendfile_calls == []


@pytest_twisted.ensureDeferred
async def test_the_whole_file(served: Served, content: Path) -> None:
    """GET sends every byte, with Content-Length and the ETag; over plain TCP by
    sendfile, through TLS without it."""
    reply = await _in_thread(served.get)
    assert reply.status == 200
    assert reply.headers["content-length"] == str(SIZE)
    assert reply.headers["etag"] == f'"{ETAG}"'
    assert reply.body == content.read_bytes()
    _sendfile_used(served)


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=100-199", 100, 200),
    ("bytes=5000000-", 5000000, SIZE),
    ("bytes=-1000", SIZE - 1000, SIZE),
])
@pytest_twisted.ensureDeferred
async def test_one_range(served: Served, content: Path, header: str, start: int,
                         end: int) -> None:
    """A single byte range gets 206 with exactly those bytes and their Content-Range."""
    reply = await _in_thread(lambda: served.get(headers={"Range": header}))
    assert reply.status == 206
    assert reply.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert reply.body == content.read_bytes()[start:end]
    _sendfile_used(served)


@pytest_twisted.ensureDeferred
async def test_several_ranges_and_unsatisfiable_ones(served: Served, content: Path) -> None:
    """Several ranges get the whole file (200); a range past the end gets 416 and no
    body."""
    whole = await _in_thread(lambda: served.get(headers={"Range": "bytes=0-9,20-29"}))
    assert whole.status == 200 and whole.body == content.read_bytes()
    past = await _in_thread(lambda: served.get(headers={"Range": f"bytes={SIZE + 10}-"}))
    assert past.status == 416 and past.body == b""
    assert past.headers["content-range"] == f"bytes */{SIZE}"


@pytest_twisted.ensureDeferred
async def test_head_and_if_none_match(served: Served) -> None:
    """HEAD has the GET's headers and no body; If-None-Match with the ETag gets 304 and
    nothing is sent from the file."""
    head = await _in_thread(lambda: served.get("HEAD"))
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(SIZE)
    cached = await _in_thread(lambda: served.get(headers={"If-None-Match": f'"{ETAG}"'}))
    assert cached.status == 304 and cached.body == b""
    assert served.sendfile_calls == []


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest_twisted.ensureDeferred
async def test_a_client_leaving_mid_file_leaves_no_file_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that closes its connection after the first MiB of a large file: the
    server stops sending and closes the file and the connection."""
    big = tmp_path / "big.whl"
    with open(big, "wb") as f:
        f.truncate(256 * MiB)
    calls = _counting_sendfile(monkeypatch)
    # Kept here, the producer cannot close its file by being collected: it must do so.
    producers: list[SendfileProducer] = []

    class Recorded(SendfileProducer):
        def start(self) -> None:
            producers.append(self)
            super().start()

    monkeypatch.setattr(pm.served, "SendfileProducer", Recorded)
    port = _listen(big, None)
    try:
        before = _open_fds()

        def read_a_little() -> int:
            with socket.create_connection(("127.0.0.1", port.getHost().port), 30) as sock:
                sock.sendall(b"GET /big.whl HTTP/1.1\r\nHost: x\r\n\r\n")
                got = 0
                while got < MiB:
                    got += len(sock.recv(65536))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                return got

        assert await deferToThread(read_a_little) >= MiB
        await wait_until(lambda: _open_fds() <= before, what="the server's fds to close")
        assert str(big) not in {os.path.realpath(f"/proc/self/fd/{fd}")
                                for fd in _open_fds()}
        assert 0 < sum(calls) < 256 * MiB
        (producer,) = producers
        assert producer.fileObject.closed and producer.request is None
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_tls_client_leaving_mid_file_leaves_no_file_open(
        tmp_path: Path) -> None:
    """The same through TLS, where the file is read a MiB at a time."""
    big = tmp_path / "big.whl"
    with open(big, "wb") as f:
        f.truncate(256 * MiB)
    tls = make_tls_files(tmp_path / "tls")
    port = _listen(big, tls)
    try:
        before = _open_fds()

        def read_a_little() -> int:
            raw = socket.create_connection(("127.0.0.1", port.getHost().port), 30)
            with tls.context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(b"GET /big.whl HTTP/1.1\r\nHost: x\r\n\r\n")
                got = 0
                while got < MiB:
                    got += len(sock.recv(65536))
                return got

        assert await deferToThread(read_a_little) >= MiB
        await wait_until(lambda: _open_fds() <= before, what="the server's fds to close")
    finally:
        await port.stopListening()

