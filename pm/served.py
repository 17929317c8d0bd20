"""Sending a stored file: ``sendfile`` on plain TCP, large reads otherwise, one byte
range at most.

Twisted's ``static.File`` reads 64 KiB per call and builds multipart answers
for any number of ranges; a request with a thousand overlapping ranges made it
loop on a negative read length and never answer. A request with several
ranges is answered with the whole file instead (RFC 9110 lets a server ignore
Range). ``static.File`` still decides the status and headers (200, 206, 416,
HEAD, Content-Length, Content-Range); only the body is sent here.

On a plain TCP (or Unix) connection the body goes from the file to the socket
with ``os.sendfile``: no reads into Python, no copies through the transport's
buffer (a 1 GiB download spent most of its reactor time in those). Through TLS
the bytes must pass through OpenSSL, and the file is read a MiB at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.web import static
from twisted.web.server import Request
from zope.interface import implementer

READ_SIZE = 1024 * 1024
# The most one sendfile call is asked for: the kernel sends what the socket's buffer
# takes and says how much, so this only bounds the call.
SENDFILE_SIZE = 1 << 30


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
        transport = request.channel.transport if request.channel is not None else None
        if isinstance(transport, tcp.Connection):
            if isinstance(producer, static.SingleRangeStaticProducer):
                return SendfileProducer(request, fileForReading, transport,
                                        producer.offset, producer.size)
            return SendfileProducer(request, fileForReading, transport, 0,
                                    os.fstat(fileForReading.fileno()).st_size)
        producer.bufferSize = READ_SIZE
        return producer


@implementer(IPushProducer)
class SendfileProducer(static.StaticProducer):
    """Sends ``size`` bytes of ``file`` from ``offset`` straight to the connection's
    socket, whenever the socket can take more.

    The response's headers go through the transport as usual; sendfile starts once
    the transport has sent them. The connection's transport drives it: it is asked
    to say when its (empty) buffer could be written to, and then resumes the request's
    producer, which is this one. The file is closed when the last byte is sent and
    when the client goes away (``stopProducing``), whichever comes first.
    """

    def __init__(self, request: Request, file: BinaryIO, transport: tcp.Connection,
                 offset: int, size: int) -> None:
        super().__init__(request, file)
        self._transport = transport
        self._offset = offset
        self._end = offset + size

    def start(self) -> None:
        self.request.registerProducer(self, True)
        # Twisted writes the status line and headers with the first write.
        self.request.write(b"")
        self._when_writable()

    def _when_writable(self) -> None:
        # The transport resumes its producer (the HTTP channel, which resumes the
        # request's, this one) once it has written everything it holds, if the producer
        # is marked paused: the usual back-pressure path, with nothing in the buffer.
        self._transport.producerPaused = True
        self._transport.startWriting()

    def pauseProducing(self) -> None:
        """Nothing to do: sends happen only when the transport resumes this producer."""

    def resumeProducing(self) -> None:
        request = self.request
        if request is None:
            return
        wanted = min(self._end - self._offset, SENDFILE_SIZE)
        if wanted > 0:
            try:
                sent = os.sendfile(self._transport.fileno(), self.fileObject.fileno(),
                                   self._offset, wanted)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The client went away; the transport notices on its own next read,
                # and is told to stop now.
                self.stopProducing()
                self._transport.abortConnection()
                return
            else:
                if sent == 0:
                    # End of file before the end of the range: the file shrank, and a
                    # response shorter than its Content-Length must not look complete.
                    self.stopProducing()
                    self._transport.abortConnection()
                    return
            self._offset += sent
            request.sentLength += sent
        if self._offset < self._end:
            self._when_writable()
            return
        request.unregisterProducer()
        request.finish()
        self.stopProducing()
