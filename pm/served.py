"""Sending a stored file: large reads, one byte range at most.

Twisted's ``static.File`` reads 64 KiB per call and builds multipart answers
for any number of ranges; a request with a thousand overlapping ranges made it
loop on a negative read length and never answer. A request with several
ranges is answered with the whole file instead (RFC 9110 lets a server ignore
Range), and the file is read a MiB at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web import static
from twisted.web.server import Request

READ_SIZE = 1024 * 1024


class StoredFile(static.File):
    def __init__(self, path: Path, content_type: str) -> None:
        super().__init__(str(path))
        self.type = content_type
        self.encoding = None

    def makeProducer(self, request: Request, fileForReading: Any) -> Any:
        byte_range = request.getHeader(b"range")
        if byte_range is not None and b"," in byte_range:
            request.requestHeaders.removeHeader(b"range")
        producer = super().makeProducer(request, fileForReading)
        producer.bufferSize = READ_SIZE
        return producer
