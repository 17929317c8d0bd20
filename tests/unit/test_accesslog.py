"""pm.accesslog.AccessLog: buffered, timed flushes, reopen on a signal, file modes."""

from __future__ import annotations

import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web import server
from twisted.web.http import datetimeToLogString
from twisted.web.pages import notFound
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import implementer, provider

import pm.accesslog
from pm.accesslog import FILE_MODE, AccessLog, AccessLoggedSite

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl"
# 2026-01-01T00:00:00Z
START = 1767225600.0


@implementer(IReactorThreads)
class Reactor(Clock):
    """A clock that also takes calls "from a thread" and runs them on :meth:`turn`."""

    def __init__(self) -> None:
        super().__init__()
        self.advance(START)
        self.from_threads: list[Callable[[], Any]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.from_threads.append(lambda: f(*args, **kwargs))

    def turn(self) -> None:
        calls, self.from_threads = self.from_threads, []
        for call in calls:
            call()


def request(path: str = "/python/latest/simple/", code: int = 200) -> server.Request:
    made = server.Request(DummyChannel())
    made.uri = path.encode()
    made.method = b"GET"
    made.clientproto = b"HTTP/1.1"
    made.setResponseCode(code)
    made.requestHeaders.setRawHeaders(b"user-agent", [b"pip/25.0"])
    return made


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "access.log"


@pytest.fixture
def access(path: Path, reactor: Reactor) -> Iterator[AccessLog]:
    made = AccessLog(path, reactor)
    made.open()
    made.start()
    yield made
    made.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_lines_wait_for_the_timer_then_are_written_in_combined_format(
        access: AccessLog, path: Path, reactor: Reactor) -> None:
    """A line is buffered, not written, until the one-second timer flushes it; it is the
    combined log format with the clock's time."""
    access.log(request("/python/latest/simple/idxpkg/", 404))
    assert path.read_text() == ""
    reactor.advance(0.5)
    assert path.read_text() == ""
    reactor.advance(0.5)
    assert lines(path) == ['"192.168.1.1" - - [01/Jan/2026:00:00:00 +0000] '
                           '"GET /python/latest/simple/idxpkg/ HTTP/1.1" 404 - "-" "pip/25.0"']


def test_lines_are_redacted(access: AccessLog, path: Path, reactor: Reactor) -> None:
    """A token in the query string, in a referrer or as a URL password is not written."""
    made = request(f"/python/latest/simple/?token={TOKEN}")
    made.requestHeaders.setRawHeaders(b"referer", [f"http://u:{TOKEN}@h/".encode()])
    access.log(made)
    access.log(request(f"/files/{TOKEN}/x.whl"))
    reactor.advance(1)
    text = path.read_text()
    assert TOKEN not in text and "eyJ" not in text
    assert '"GET /python/latest/simple/?token=*** HTTP/1.1" 200' in text
    assert '"http://u:***@h/"' in text
    assert '"GET /files/***/x.whl HTTP/1.1"' in text


def test_the_timestamp_is_formatted_once_a_second(
        access: AccessLog, path: Path, reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests within one second share one formatted timestamp; the next second formats
    the next."""
    formatted: list[float] = []

    def counting(seconds: float) -> str:
        formatted.append(seconds)
        return str(datetimeToLogString(seconds))

    monkeypatch.setattr(pm.accesslog, "datetimeToLogString", counting)
    for _ in range(3):
        access.log(request())
        reactor.advance(0.2)
    reactor.advance(0.5)
    access.log(request())
    reactor.advance(1)
    assert formatted == [START, START + 1]
    stamps = [line.split(" ")[3] for line in lines(path)]
    assert stamps == ["[01/Jan/2026:00:00:00"] * 3 + ["[01/Jan/2026:00:00:01"]


def test_close_writes_what_is_buffered_and_stops_the_timer(
        path: Path, reactor: Reactor) -> None:
    """close() (at shutdown) writes every buffered line; no timer is left behind, and a
    line after it is dropped without an error."""
    access = AccessLog(path, reactor)
    access.open()
    access.start()
    for number in range(100):
        access.log(request(f"/{number}"))
    access.close()
    assert len(lines(path)) == 100
    assert reactor.getDelayedCalls() == []
    access.log(request("/late"))
    assert len(lines(path)) == 100


def test_a_full_buffer_is_written_before_the_timer(path: Path, reactor: Reactor) -> None:
    """More than the buffer holds is written at once: memory between flushes is bounded."""
    access = AccessLog(path, reactor, buffer_size=4096)
    access.open()
    for number in range(200):
        access.log(request(f"/{number}"))
    assert len(path.read_bytes()) > 4096
    access.close()
    assert len(lines(path)) == 200


def test_the_file_and_its_directory_are_made_private(access: AccessLog, path: Path) -> None:
    """The file is created 0640 (less if the umask says so), its directory 0750."""
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & ~FILE_MODE == 0 and mode & 0o600 == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o007 == 0


def test_an_existing_file_is_appended_to(path: Path, reactor: Reactor) -> None:
    """A restart continues the file; nothing already in it is lost."""
    path.parent.mkdir()
    path.write_text("earlier\n")
    access = AccessLog(path, reactor)
    access.open()
    access.log(request())
    access.close()
    assert lines(path)[0] == "earlier" and len(lines(path)) == 2


def test_reopen_continues_in_a_new_file_after_a_rotation(
        access: AccessLog, path: Path, reactor: Reactor) -> None:
    """After logrotate renames the file, reopen() writes what was buffered to the old
    file and every later line to a new one at the configured path."""
    access.log(request("/before"))
    rotated = path.with_name("access.log.1")
    path.rename(rotated)
    access.reopen()
    access.log(request("/after"))
    reactor.advance(1)
    assert [line.split('"')[3] for line in lines(rotated)] == ["GET /before HTTP/1.1"]
    assert [line.split('"')[3] for line in lines(path)] == ["GET /after HTTP/1.1"]
    assert stat.S_IMODE(path.stat().st_mode) & ~FILE_MODE == 0


def test_a_failed_reopen_keeps_the_old_file(access: AccessLog, path: Path,
                                            reactor: Reactor) -> None:
    """When the new file cannot be made, lines keep going to the file already open."""
    rotated = path.with_name("access.log.1")
    path.rename(rotated)
    path.mkdir()
    access.reopen()
    access.log(request("/still"))
    reactor.advance(1)
    assert path.is_dir()
    assert len(lines(rotated)) == 1


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1])
def test_a_signal_reopens_the_file_on_the_reactors_next_turn(
        access: AccessLog, path: Path, reactor: Reactor, signum: signal.Signals) -> None:
    """SIGHUP and SIGUSR1 reopen the file, from the reactor's loop rather than from inside
    the signal handler, and a handler installed before still runs."""
    seen: list[int] = []
    before = {s: signal.signal(s, lambda number, frame: seen.append(number))
              for s in (signal.SIGHUP, signal.SIGUSR1)}
    try:
        access.reopen_on((signal.SIGHUP, signal.SIGUSR1))
        rotated = path.with_name("access.log.1")
        path.rename(rotated)
        signal.raise_signal(signum)
        assert seen == [signum]
        assert not path.exists()
        reactor.turn()
        access.log(request("/after"))
        reactor.advance(1)
        assert len(lines(path)) == 1 and lines(rotated) == []
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_write_error_is_reported_once_and_raises_nothing(reactor: Reactor) -> None:
    """When the disk is full, requests still finish: the error is logged once, not once
    per line."""
    errors: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "packagemanager.accesslog":
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        access = AccessLog(Path("/dev/full"), reactor, buffer_size=1024)
        access.open()
        access.start()
        for _ in range(50):
            access.log(request())
            reactor.advance(0.5)
        access.close()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(errors) == 1
    assert "cannot write" in errors[0]["log_format"]


def test_the_site_hands_its_lines_to_the_access_log(
        access: AccessLog, path: Path, reactor: Reactor) -> None:
    """AccessLoggedSite writes a finished request's line to its AccessLog, not twistd's."""
    site = AccessLoggedSite(notFound(), access)
    site.log(request("/via/site", 304))
    reactor.advance(1)
    assert '"GET /via/site HTTP/1.1" 304' in path.read_text()
