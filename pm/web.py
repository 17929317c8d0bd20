"""The HTTP request that streams uploads instead of buffering them.

twisted.web collects a whole body (in memory, or a temp file past 100 kB) and
then parses multipart into memory. For an upload route this request keeps no
body at all: from the moment the headers are in, each chunk goes to an
:class:`~pm.upload.UploadReceiver`, which writes the file part to its blob as
it arrives.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from pm.upload import UploadReceiver


class Uploads(Protocol):
    def match(self, method: bytes, path: bytes) -> str | None: ...

    def receive(
        self, source_name: str, headers: Headers, *, local: bool, pause: Any, resume: Any
    ) -> UploadReceiver: ...


class StreamingRequest(server.Request):
    """A request that knows whether it came over the admin socket."""

    def __init__(self, channel: HTTPChannel, *, uploads: Uploads, local_admin: bool) -> None:
        # Never parse multipart into request.args: uploads are parsed as they
        # stream, and no other route takes a form.
        super().__init__(channel, parsePOSTFormSubmission=False)
        self._uploads = uploads
        self.local_admin = local_admin
        self.upload: UploadReceiver | None = None

    def gotLength(self, length: int | None) -> None:
        # Method and path are only copied onto the request when the body is
        # complete; the channel has them as soon as the request line is read.
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"")
        source = self._uploads.match(method, path)
        if source is None:
            super().gotLength(length)
            return
        self.content = io.BytesIO()
        transport = self.channel.transport
        assert transport is not None
        upload = self.upload = self._uploads.receive(
            source,
            self.requestHeaders,
            local=self.local_admin,
            pause=transport.pauseProducing,
            resume=transport.resumeProducing,
        )
        # Whatever ends the request (a response, a disconnect, a route that
        # never ran), an upload that did not complete leaves nothing behind.
        self.notifyFinish().addBoth(lambda _: upload.abort())

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            self.upload.feed(data)
        else:
            super().handleContentChunk(data)


class RequestFactory:
    """``Site(requestFactory=...)``: builds requests for one listener."""

    def __init__(self, uploads: Uploads, *, local_admin: bool) -> None:
        self._uploads = uploads
        self._local_admin = local_admin

    def __call__(self, channel: HTTPChannel, queued: object = None) -> StreamingRequest:
        return StreamingRequest(channel, uploads=self._uploads, local_admin=self._local_admin)
