"""The HTTP request that streams uploads instead of buffering them.

twisted.web collects a whole body (in memory, or a temp file past 100 kB) and
then parses multipart into memory. For an upload route this request keeps no
body at all: from the moment the headers are in, each chunk goes to an
:class:`~pm.upload.UploadReceiver`, which writes the file part to its blob as
it arrives.

An upload is refused as soon as its token or source is: a client that asked
``Expect: 100-continue`` gets no 100 before the token is accepted, and the
refusal is answered at once; a client that sends its body regardless has at
most :data:`~pm.upload.DRAIN_LIMIT` of it read before the answer and the close.

Every connection goes through a :class:`GuardedChannel`, which holds clients
to ``[Limits]``: headers within ``HeaderTimeout`` and ``MaxHeaderSize``, bodies
at ``MinBodyRate`` or faster, so a client sending a byte a second holds a
connection for seconds, not forever.

Once its token is accepted, an upload's connection reads up to
:data:`UPLOAD_READ_SIZE` at a time, and a short read (see :data:`PACED_READ`)
leaves it unread for :data:`READ_PAUSE`: a client that writes in small pieces
(uv publish writes 4 to 16 KiB at a time) would otherwise make every read, and
so every trip through the HTTP channel, the parser and the writer, carry only
the few KiB that arrived since the last one.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote_to_bytes

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.base import DelayedCall
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from pm.limits import Limits
from pm.upload import UploadReceiver, UploadTarget


class Uploads(Protocol):
    def match(self, method: bytes, path: bytes) -> UploadTarget | None: ...

    def receive(
        self, target: UploadTarget, headers: Headers, *, local: bool, length: int | None,
        pause: Any, resume: Any
    ) -> UploadReceiver: ...


@runtime_checkable
class ReadSized(Protocol):
    """A transport that reads up to ``bufferSize`` bytes at a time (TCP and UNIX ones)."""

    bufferSize: int


@runtime_checkable
class SocketHandled(Protocol):
    """A transport over a socket of its own (TCP and UNIX ones)."""

    def getHandle(self) -> object: ...


# Every route but the upload takes at most a small JSON object.
MAX_BODY = 1024 * 1024
# How much an upload's connection reads from its socket at a time, at most.
UPLOAD_READ_SIZE = 1024 * 1024
# What the upload connections of a listener read in one reactor turn together,
# roughly (see UploadReads); and the least one reads at a time (Twisted's own).
UPLOAD_TURN_BYTES = 8 * 1024 * 1024
MIN_UPLOAD_READ = 64 * 1024
# An upload's read shorter than PACED_READ and than 1/PACED_SHARE of its
# socket's receive buffer is followed by READ_PAUSE without reads, so the next
# one takes what the kernel buffered meanwhile (150 KiB on average for uv
# publish here). Only while the buffer was nearly empty: a read that took a
# good part of it means the buffer, not the client, is the limit, and pausing
# then would keep the client waiting and TCP from growing the buffer.
PACED_READ = UPLOAD_READ_SIZE // 4
PACED_SHARE = 8
READ_PAUSE = 0.001
# What the admin socket's requests are addressed to when they name no host.
LOCAL_HOST = b"localhost"


class TransportHolds:
    """Pauses a transport while anyone holds it, resumes it when nobody does.

    An upload's receiver (the token check, the writer's backlog) and the pacing
    of short reads hold it on their own, so neither resumes the other's pause.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._count = 0

    def hold(self) -> None:
        self._count += 1
        if self._count == 1:
            self._transport.pauseProducing()

    def release(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._transport.resumeProducing()


class _DropBody:
    """The channel's body decoder once a refusal is answered: the rest is dropped."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def noMoreData(self) -> None:
        pass


class UploadReads:
    """How much each upload connection of a listener reads at a time.

    One upload alone reads UPLOAD_READ_SIZE at a time (see
    ``StreamingRequest._read_large_once_authorized``). But the reactor reads
    every readable connection once a turn, and every other request waits for
    the turn to end: 64 uploads whose sockets filled while backpressure held
    them (they hold a MiB and more each) made turns of 50 MiB, 200-400 ms on a
    busy 2-core machine, and an index page took two of them. So the uploads
    streaming at once share UPLOAD_TURN_BYTES a turn.
    """

    def __init__(self) -> None:
        self.streaming = 0

    def size(self) -> int:
        share = UPLOAD_TURN_BYTES // max(1, self.streaming)
        return max(MIN_UPLOAD_READ, min(UPLOAD_READ_SIZE, share))


class StreamingRequest(server.Request):
    """A request that knows whether it came over the admin socket.

    Bodies of other routes are capped at MAX_BODY: past it the rest is dropped
    as it arrives and the answer is 413, so nobody can make the server spool
    an endless body to disk.
    """

    def __init__(self, channel: HTTPChannel, *, uploads: Uploads, local_admin: bool,
                 reads: UploadReads | None = None) -> None:
        # Never parse multipart into request.args: uploads are parsed as they
        # stream, and no other route takes a form.
        super().__init__(channel, parsePOSTFormSubmission=False)
        self._uploads = uploads
        self._reads = reads or UploadReads()
        self._read_sized: ReadSized | None = None
        self.local_admin = local_admin
        self.upload: UploadReceiver | None = None
        self._too_large = False
        self._length: int | None = None
        self._body_read = 0
        # The client waits for 100 Continue, which only an accepted token earns.
        self._continue_held = False
        self._answered_early = False
        self._holds: TransportHolds | None = None
        # Short reads are paced (once the upload reads large): the socket
        # whose receive buffer tells which are short, the call that ends the
        # current pause.
        self._pacing = False
        self._socket: socket.socket | None = None
        self._read_pause: DelayedCall | None = None

    def gotLength(self, length: int | None) -> None:
        # Method and path are only copied onto the request when the body is
        # complete; the channel has them as soon as the request line is read.
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"")
        target = self._uploads.match(method, path)
        if target is None:
            self._too_large = length is not None and length > MAX_BODY
            # Capped at MAX_BODY, so memory, never a temp file.
            self.content = io.BytesIO()
            return
        self.content = io.BytesIO()
        self._length = length
        self._hold_continue()
        transport = self.channel.transport
        assert transport is not None
        holds = self._holds = TransportHolds(transport)
        pause, resume = holds.hold, holds.release
        if isinstance(self.channel, GuardedChannel):
            # A client the server holds back is not a slow client; the pacing
            # of short reads (1 ms at a time) is not holding it back.
            pause = self.channel.server_holds(holds.hold)
            resume = self.channel.server_releases(holds.release)
        upload = self.upload = self._uploads.receive(
            target,
            self.requestHeaders,
            local=self.local_admin,
            length=length,
            pause=pause,
            resume=resume,
        )
        # Whatever ends the request (a response, a disconnect, a route that
        # never ran), an upload that did not complete leaves nothing behind.
        self.notifyFinish().addBoth(lambda _: upload.abort())
        upload.when_authorized(self._send_continue)
        upload.when_refused(self._refused)
        if isinstance(transport, ReadSized):
            self._read_large_once_authorized(upload, transport)

    def _hold_continue(self) -> None:
        """Keep the channel from sending 100 Continue as soon as the headers are in."""
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" \
                and getattr(self.channel, "_version", b"") == b"HTTP/1.1":
            self.requestHeaders.removeHeader(b"expect")
            self._continue_held = True

    def _send_continue(self) -> None:
        if self._continue_held:
            self._continue_held = False
            channel: Any = self.channel
            channel._send100Continue()

    def _refused(self) -> None:
        # With a body still to come a waiting client is answered now; with
        # none the channel runs the request itself.
        if self._continue_held and self._length != 0:
            self._continue_held = False
            self._answer_now()

    def _answer_now(self) -> None:
        """Run the refused upload's route before its body is in, then close the connection.

        The rest of the body goes to a decoder that drops it; a decoder that is
        still parsing this chunk must not report the body complete afterwards,
        or the channel would run the request a second time.
        """
        self._answered_early = True
        channel: Any = self.channel
        if isinstance(channel._transferDecoder, http._ChunkedTransferDecoder):
            channel._transferDecoder.finishCallback = lambda rest: None
        channel._transferDecoder = _DropBody()
        channel.persistent = False
        self.setHeader(b"connection", b"close")
        self.requestReceived(channel._command, channel._path, channel._version)

    def _read_large_once_authorized(self, upload: UploadReceiver, transport: ReadSized) -> None:
        """Read the upload's connection UPLOAD_READ_SIZE at a time, for this request only.

        Twisted reads 64 KiB at a time; each read costs a trip through the HTTP
        channel, the parser and the writer, which at gigabytes is most
        of the reactor's work. Only once the token is accepted, so a client
        without one still gets at most a 64 KiB read past the held-back bytes.
        The size is the listener's :class:`UploadReads` share, set again with
        every chunk as uploads start and end.
        """
        default = transport.bufferSize
        finished = False

        def widen() -> None:
            if finished:
                return
            self._reads.streaming += 1
            self._read_sized = transport
            transport.bufferSize = self._reads.size()
            handle = transport.getHandle() if isinstance(transport, SocketHandled) else None
            self._socket = handle if isinstance(handle, socket.socket) else None
            # A chunked body's chunks are the client's, not the reads: only
            # an identity body's chunk tells how much a read took.
            self._pacing = self._length is not None and self._socket is not None

        def restore(_: object) -> None:
            nonlocal finished
            finished = True
            if self._read_sized is not None:
                self._read_sized = None
                self._reads.streaming -= 1
            transport.bufferSize = default
            self._end_pause()

        upload.when_authorized(widen)
        self.notifyFinish().addBoth(restore)

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            if self._answered_early:
                return
            self.upload.feed(data)
            self._body_read += len(data)
            if self._read_sized is not None:
                self._read_sized.bufferSize = self._reads.size()
            self._pace(len(data))
            # An identity body this chunk completes is answered by the channel.
            if self.upload.drain_exhausted and (
                    self._length is None or self._body_read < self._length):
                self._answer_now()
        elif not self._too_large:
            assert self.content is not None
            if self.content.tell() + len(data) > MAX_BODY:
                # A chunked body announced no length; it is cut off here.
                self._too_large = True
                self.content.seek(0)
                self.content.truncate()
            else:
                super().handleContentChunk(data)

    def _pace(self, read: int) -> None:
        """After a short read, leave the connection unread a while (requestReceived
        ends the pause if that read completed the body)."""
        if not self._pacing or self._read_pause is not None or read >= PACED_READ:
            return
        if self._read_sized is not None and read >= self._read_sized.bufferSize:
            # The read took its whole share of the listener's reads: more is waiting.
            return
        assert self._socket is not None and self._holds is not None
        # Read each time: TCP autotunes it.
        buffered = self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if read * PACED_SHARE < buffered:
            self._holds.hold()
            self._read_pause = self.channel.callLater(READ_PAUSE, self._end_pause)

    def _end_pause(self) -> None:
        """Resume reading now (the pause is up, or there is nothing more to pace)."""
        pause, self._read_pause = self._read_pause, None
        if pause is not None:
            if pause.active():
                pause.cancel()
            assert self._holds is not None
            self._holds.release()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The body is in (or, for an early answer, dropped): nothing more to pace.
        self._pacing = False
        self._end_pause()
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._too_large:
            self._answer_plain(http.REQUEST_ENTITY_TOO_LARGE,
                               f"Request body over {MAX_BODY} bytes",
                               f"request bodies are limited to {MAX_BODY} bytes here")
            return
        try:
            # Klein answers such a path 400 too, but logs a traceback for each.
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            self._answer_plain(http.BAD_REQUEST, "URL not UTF-8",
                               "the URL's %-escapes do not decode to UTF-8")
            return
        super().process()

    def _answer_plain(self, code: int, phrase: str, message: str) -> None:
        self.setResponseCode(code, phrase.encode())
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"x-content-type-options", b"nosniff")
        self.write(f"{code} {message}\n".encode())
        self.finish()

    def getRequestHostname(self) -> bytes:
        # A request over the admin socket may name no host, and a UNIX
        # address has none to fall back on.
        if self.getHeader(b"host") is None \
                and not isinstance(self.getHost(), IPv4Address | IPv6Address):
            return LOCAL_HOST
        host: bytes = super().getRequestHostname()
        return host


class RequestFactory:
    """``Site(requestFactory=...)``: builds requests for one listener."""

    def __init__(self, uploads: Uploads, *, local_admin: bool) -> None:
        self._uploads = uploads
        self._local_admin = local_admin
        self._reads = UploadReads()

    def __call__(self, channel: HTTPChannel, queued: object = None) -> StreamingRequest:
        return StreamingRequest(channel, uploads=self._uploads, local_admin=self._local_admin,
                                reads=self._reads)


# RFC 6585's code, which twisted.web.http does not name.
REQUEST_HEADER_FIELDS_TOO_LARGE = 431


class GuardedChannel(HTTPChannel):
    """An HTTP/1.1 channel that holds each client to the header and body limits.

    Headers: the request line and headers must arrive within ``header_timeout``
    of the connection's start or of the request's first byte, and within
    ``max_header_size`` bytes (431). A body must arrive at ``min_body_rate``
    bytes a second or faster, over each ``rate_window``; a stretch in which the
    server itself held the connection paused (a token check, a disk slower
    than the network) does not count against the client. Too slow is 408 and
    the connection is closed; an upload cut off that way leaves nothing behind,
    like any other disconnect.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self._limits = limits
        self.totalHeadersSize = limits.max_header_size
        self.MAX_LENGTH = limits.max_header_size
        self._awaiting_headers = True
        # IDelayedCall, which mypy cannot call through a zope interface.
        self._header_deadline: Any = None
        self._rate_check: Any = None
        self._window_bytes = 0
        self._reads_held = 0
        self._held_in_window = False
        self._closing = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._expect_headers()

    def dataReceived(self, data: bytes) -> None:
        if self._rate_check is not None:
            self._window_bytes += len(data)
        elif self._awaiting_headers and not self._handlingRequest:
            self._expect_headers()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            # The rest of a buffer that held the refused line.
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(REQUEST_HEADER_FIELDS_TOO_LARGE, b"Request Header Fields Too Large",
                         f"the request line and headers are over {self.totalHeadersSize} "
                         "bytes, this server's limit")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(REQUEST_HEADER_FIELDS_TOO_LARGE, b"Request Header Fields Too Large",
                     f"a request or header line is over {self.MAX_LENGTH} bytes, this "
                     "server's limit")

    def allHeadersReceived(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_deadline()
        super().allHeadersReceived()
        if self.length != 0 and self._limits.min_body_rate and self.transport is not None:
            self._window_bytes = 0
            self._held_in_window = self._reads_held > 0
            self._rate_check = self.callLater(self._limits.rate_window, self._check_rate)

    def allContentReceived(self) -> None:
        self._awaiting_headers = True
        self._cancel_rate_check()
        super().allContentReceived()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_header_deadline()
        self._cancel_rate_check()
        super().connectionLost(reason)

    def server_holds(self, pause: Callable[[], None]) -> Callable[[], None]:
        """``pause``, which stops reading the client's bytes for the server's own
        reasons, made to tell this channel so."""

        def held() -> None:
            self._reads_held += 1
            self._held_in_window = True
            pause()

        return held

    def server_releases(self, resume: Callable[[], None]) -> Callable[[], None]:
        """``resume``, the end of a hold made with :meth:`server_holds`."""

        def released() -> None:
            self._reads_held -= 1
            resume()

        return released

    def _expect_headers(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.callLater(self._limits.header_timeout,
                                                   self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self._refuse(http.REQUEST_TIMEOUT, b"Request Timeout",
                     f"the request's headers took over {self._limits.header_timeout:g} "
                     "seconds to arrive")

    def _check_rate(self) -> None:
        self._rate_check = None
        limits = self._limits
        if not self._held_in_window \
                and self._window_bytes < limits.min_body_rate * limits.rate_window:
            self._refuse(http.REQUEST_TIMEOUT, b"Request Timeout",
                         f"the request's body arrived slower than {limits.min_body_rate} "
                         f"bytes a second over {limits.rate_window:g} seconds")
            return
        self._window_bytes = 0
        self._held_in_window = self._reads_held > 0
        self._rate_check = self.callLater(limits.rate_window, self._check_rate)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _cancel_rate_check(self) -> None:
        if self._rate_check is not None:
            self._rate_check.cancel()
            self._rate_check = None

    def _refuse(self, code: int, phrase: bytes, message: str) -> None:
        """Answer ``code`` unless the request already has an answer, and close."""
        self._cancel_header_deadline()
        self._cancel_rate_check()
        transport: Any = self.transport
        if transport is None or self._closing:
            return
        self._closing = True
        self._log.info("Refusing client {peer}: {message}", peer=str(transport.getPeer()),
                       message=message)
        if not any(getattr(r, "startedWriting", False) for r in self.requests):
            body = f"{code} {message}\n".encode()
            transport.write(b"HTTP/1.1 %d %s\r\nConnection: close\r\n"
                            b"Content-Type: text/plain; charset=utf-8\r\n"
                            b"X-Content-Type-Options: nosniff\r\n"
                            b"Content-Length: %d\r\n\r\n%s"
                            % (code, phrase, len(body), body))
        # Closes once the answer is written, and aborts if the client never reads it.
        self.timeoutConnection()


def guard(site: server.Site, limits: Limits) -> server.Site:
    """``site``, its connections made :class:`GuardedChannel` s held to ``limits``."""
    site.timeOut = limits.idle_timeout
    site.protocol = lambda: GuardedChannel(limits)  # type: ignore[assignment,method-assign,return-value]
    return site
