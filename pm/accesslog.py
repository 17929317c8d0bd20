"""The access log: one redacted combined-format line per request, in a file of its own.

Twisted's ``Site`` logs each request line, referrer and user agent; it never
logs the ``Authorization`` header, which is where pip, uv, R and twine put a
token. A token can still reach a line: a URL with ``?token=...``, an absolute
request URI with ``user:password@`` (as a proxy sends it), or a referrer that
carried one. Every line goes through :func:`redact` before it is written.

By default a ``Site`` hands its lines to twistd's log, which formats, writes and
flushes each one through every log observer: about 70 µs a request, the largest
cost of a cached read. :class:`AccessLog` instead appends lines to a buffered
file, flushed about once a second on the reactor's clock and at shutdown, and
reopens the file on a signal so logrotate can move it away.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.http import combinedLogFormatter, datetimeToLogString
from twisted.web.resource import IResource

MASK = "***"
FLUSH_INTERVAL = 1.0
# Written out when full, so a burst between two flushes holds this much at most.
BUFFER_SIZE = 64 * 1024
# Requests carry client addresses and user agents: not for every local user.
FILE_MODE = 0o640
DIRECTORY_MODE = 0o750

# A JWT (our tokens), wherever it appears: base64url header "{"..., payload, signature.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# A query parameter whose (percent-decoded) name says it holds a secret.
_SECRET_NAME = re.compile(r"token|passw|pwd|secret|auth|key|jwt|credential|signature|sig$",
                          re.IGNORECASE)
_PARAMETER = re.compile(r"([?&;])([^=&;?#\s\"]*)=([^&;#\s\"]*)")
# user:password@ in a URL's authority.
_USERINFO = re.compile(r"(://[^/?#\s\"@:]*):[^/?#\s\"@]*@")


def _percent_decoded(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if _SECRET_NAME.search(_percent_decoded(name)):
        value = MASK
    return f"{separator}{name}={value}"


def redact(line: str) -> str:
    """``line`` with JWTs, secret-named query values and URL passwords replaced by ***."""
    line = _USERINFO.sub(rf"\1:{MASK}@", line)
    line = _PARAMETER.sub(_parameter, line)
    return _JWT.sub(MASK, line)


def redacted_log_formatter(timestamp: str, request: Any) -> str:
    """``Site(logFormatter=...)``: the combined log format, redacted."""
    return redact(combinedLogFormatter(timestamp, request))


class AccessLog:
    """Appends a redacted combined-format line per request to the file at ``path``.

    :meth:`open` before serving (it raises OSError if the file cannot be made),
    :meth:`start` once the reactor runs (the flush timer), :meth:`close` at
    shutdown (the last flush). Lines given while the file is closed are dropped.
    ``reactor`` provides IReactorTime (the timestamp and the timer), and IReactorThreads
    for :meth:`reopen_on`.
    """

    def __init__(self, path: Path, reactor: Any, *,
                 flush_interval: float = FLUSH_INTERVAL, buffer_size: int = BUFFER_SIZE) -> None:
        assert IReactorTime.providedBy(reactor)
        self.path = path
        self._reactor = reactor
        self._interval = flush_interval
        self._buffer_size = buffer_size
        self._file: TextIO | None = None
        self._timer: LoopingCall | None = None
        self._second = -1
        self._timestamp = ""
        self._failing = False
        self._log = Logger(namespace="packagemanager.accesslog")

    def _open_file(self) -> TextIO:
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     FILE_MODE)
        return open(fd, "a", buffering=self._buffer_size, encoding="utf-8",
                    errors="backslashreplace", newline="\n")

    def open(self) -> None:
        """Open the file for appending, creating it (and its directory) if need be."""
        self._file = self._open_file()

    def start(self) -> None:
        """Flush every ``flush_interval`` seconds of the reactor's clock."""
        self._timer = LoopingCall(self.flush)
        self._timer.clock = self._reactor
        self._timer.start(self._interval, now=False)

    def log(self, request: http.Request) -> None:
        """Buffer the line of a finished ``request``."""
        if self._file is None:
            return
        now = int(self._reactor.seconds())
        if now != self._second:
            self._second = now
            self._timestamp = datetimeToLogString(now)
        try:
            self._file.write(redacted_log_formatter(self._timestamp, request) + "\n")
        except OSError as e:
            self._failed(e)

    def flush(self) -> None:
        """Write out what is buffered."""
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as e:
            self._failed(e)
            return
        if self._failing:
            self._failing = False
            self._log.info("access log {path}: writing again", path=self.path)

    def _failed(self, error: OSError) -> None:
        # A full disk must not fail requests or repeat a message per request.
        if not self._failing:
            self._failing = True
            self._log.error("access log {path}: cannot write ({error}); lines are lost "
                            "until it can", path=self.path, error=error.strerror or error)

    def reopen(self) -> None:
        """Flush, then continue in a file opened anew at ``path`` (after logrotate moved
        the old one away); if it cannot be opened, keep the old one."""
        if self._file is None:
            return
        try:
            fresh = self._open_file()
        except OSError as e:
            self._log.error("access log {path}: cannot reopen ({error}); still writing to "
                            "the file opened before", path=self.path, error=e.strerror or e)
            return
        self.flush()
        old, self._file = self._file, fresh
        self._close(old)

    def reopen_on(self, signals: Iterable[signal.Signals]) -> None:
        """Reopen on each of ``signals``, after any handler installed before (twistd
        rotates its own ``--logfile`` on SIGUSR1)."""
        assert IReactorThreads.providedBy(self._reactor)
        call_from_thread = self._reactor.callFromThread
        for signum in signals:
            previous = signal.getsignal(signum)

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                # Runs between any two bytecodes of the reactor thread: the reopen waits
                # for the reactor's next turn rather than cut into a write.
                call_from_thread(self.reopen)
                if callable(previous):
                    previous(number, frame)

            signal.signal(signum, handler)

    def close(self) -> None:
        """Stop the timer, write out the buffer and close the file."""
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None
        if self._file is not None:
            old, self._file = self._file, None
            self._close(old)

    def _close(self, file: TextIO) -> None:
        try:
            file.close()
        except OSError as e:
            self._failed(e)


class AccessLoggedSite(server.Site):
    """A ``Site`` whose access lines go to an :class:`AccessLog`, not to twistd's log."""

    def __init__(self, resource: IResource, access_log: AccessLog, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.access_log = access_log

    def log(self, request: http.Request) -> None:
        self.access_log.log(request)
