"""The HTTP request that streams uploads instead of buffering them.

twisted.web collects a whole body (in memory, or a temp file past 100 kB) and
then parses multipart into memory. For an upload route this request keeps no
body at all: from the moment the headers are in, each chunk goes to an
:class:`~pm.upload.UploadReceiver`, which writes the file part to its blob as
it arrives.
"""

from __future__ import annotations

import io
from typing import Any, Protocol, runtime_checkable

from twisted.web import http, server
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from pm.upload import UploadReceiver, UploadTarget


class Uploads(Protocol):
    def match(self, method: bytes, path: bytes) -> UploadTarget | None: ...

    def receive(
        self, target: UploadTarget, headers: Headers, *, local: bool, pause: Any, resume: Any
    ) -> UploadReceiver: ...


@runtime_checkable
class ReadSized(Protocol):
    """A transport that reads up to ``bufferSize`` bytes at a time (TCP and UNIX ones)."""

    bufferSize: int


# Every route but the upload takes at most a small JSON object.
MAX_BODY = 1024 * 1024
# How much an upload's connection reads from its socket at a time.
UPLOAD_READ_SIZE = 1024 * 1024


class StreamingRequest(server.Request):
    """A request that knows whether it came over the admin socket.

    Bodies of other routes are capped at MAX_BODY: past it the rest is dropped
    as it arrives and the answer is 413, so nobody can make the server spool
    an endless body to disk.
    """

    def __init__(self, channel: HTTPChannel, *, uploads: Uploads, local_admin: bool) -> None:
        # Never parse multipart into request.args: uploads are parsed as they
        # stream, and no other route takes a form.
        super().__init__(channel, parsePOSTFormSubmission=False)
        self._uploads = uploads
        self.local_admin = local_admin
        self.upload: UploadReceiver | None = None
        self._too_large = False

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
        transport = self.channel.transport
        assert transport is not None
        upload = self.upload = self._uploads.receive(
            target,
            self.requestHeaders,
            local=self.local_admin,
            pause=transport.pauseProducing,
            resume=transport.resumeProducing,
        )
        # Whatever ends the request (a response, a disconnect, a route that
        # never ran), an upload that did not complete leaves nothing behind.
        self.notifyFinish().addBoth(lambda _: upload.abort())
        if isinstance(transport, ReadSized):
            self._read_large_once_authorized(upload, transport)

    def _read_large_once_authorized(self, upload: UploadReceiver, transport: ReadSized) -> None:
        """Read the upload's connection UPLOAD_READ_SIZE at a time, for this request only.

        Twisted reads 64 KiB at a time; each read costs a trip through the HTTP
        channel, the parser and the writer, which at gigabytes is most
        of the reactor's work. Only once the token is accepted, so a client
        without one still gets at most a 64 KiB read past the held-back bytes.
        """
        default = transport.bufferSize

        def widen() -> None:
            transport.bufferSize = UPLOAD_READ_SIZE

        def restore(_: object) -> None:
            transport.bufferSize = default

        upload.when_authorized(widen)
        self.notifyFinish().addBoth(restore)

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            self.upload.feed(data)
        elif not self._too_large:
            assert self.content is not None
            if self.content.tell() + len(data) > MAX_BODY:
                # A chunked body announced no length; it is cut off here.
                self._too_large = True
                self.content.seek(0)
                self.content.truncate()
            else:
                super().handleContentChunk(data)

    def process(self) -> None:
        if self._too_large:
            self.setResponseCode(http.REQUEST_ENTITY_TOO_LARGE,
                                 f"Request body over {MAX_BODY} bytes".encode())
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(f"413 request bodies are limited to {MAX_BODY} bytes here\n".encode())
            self.finish()
            return
        super().process()


class RequestFactory:
    """``Site(requestFactory=...)``: builds requests for one listener."""

    def __init__(self, uploads: Uploads, *, local_admin: bool) -> None:
        self._uploads = uploads
        self._local_admin = local_admin

    def __call__(self, channel: HTTPChannel, queued: object = None) -> StreamingRequest:
        return StreamingRequest(channel, uploads=self._uploads, local_admin=self._local_admin)
