"""The read path: index pages and file lookups cached at the database's change serial.

Index pages and files are most of a package server's load. A page handler asks
:meth:`Pages.page` for its answer, which is made once per change serial
(``pm.changes``) and kept in a bounded :class:`~pm.pagecache.PageCache`.
:class:`FastReads`, in front of the Klein app, answers a GET or HEAD under
``/{repo}/latest/`` from that cache without routing when it can; otherwise
the request goes on to the app. Both read the serial for every request, so a
cached answer is never one the database has moved past, on any node.

An authenticated repo's pages are cached too, but under keys that no request
path can spell, and FastReads looks up the other keys alone: such a page is
only ever answered by the app, after it has read the repo and checked the
request's token. Which of the two a page is depends on the repo as read after
the serial the page is stored at; a change to the repo writes an event, so a
page stored as public at a serial is served only while the repo is as it was.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from pm.changes import ChangeSerial
from pm.pagecache import CacheKey, Page, PageCache, cache_key
from pm.served import StoredFile

_READS = (b"GET", b"HEAD")
# Files up to this size are kept in the cache with their bytes, and sent like a
# page: most wheels and tarballs a CI job fetches are small.
SMALL_FILE = 64 * 1024
_CACHED_UNDER = b"/latest/"
# Clients and proxies may keep index pages and files, but must revalidate
# (If-None-Match) before reusing them: a new upload changes the index at once.
REVALIDATE = (b"cache-control", b"max-age=0, must-revalidate")


# Request paths start with "/", so keys with this prefix are no request's own.
_PRIVATE = "private:"
# Attributes this module keeps on a request: the serial read for it, and what
# the app admitted it to (Admission).
_SERIAL = "_pm_read_serial"
_ADMISSION = "_pm_read_admission"


@dataclass(frozen=True)
class Admission:
    """The app's word on a request for a repo's page: the serial read before the repo
    was, and whether the repo, as read then, is one anyone may read."""

    serial: int
    public: bool


def _key(request: Request, public: bool) -> CacheKey:
    path, accept = cache_key(request.path or b"", request.getHeader(b"accept"))
    return (path if public else _PRIVATE + path, accept)


class Pages:
    """What page handlers use: the cache, at the serial read for this request."""

    def __init__(self, cache: PageCache, changes: ChangeSerial) -> None:
        self.cache = cache
        self.changes = changes

    async def serial(self, request: Request) -> int:
        """The change serial for this request: read once, by FastReads or here."""
        serial: int | None = getattr(request, _SERIAL, None)
        if serial is None:
            serial = await self.changes.current()
            setattr(request, _SERIAL, serial)
        return serial

    def admit(self, request: Request, serial: int, *, public: bool) -> None:
        """Record that the app let the request in to a repo it read after ``serial``."""
        setattr(request, _ADMISSION, Admission(serial, public))

    async def page(self, request: Request, make: Callable[[], Awaitable[Page]]) -> Page:
        # The serial first: the page may then show changes newer than it (and
        # be made again next time), never older ones. A request the app did not
        # admit is kept as private: it is never answered before routing.
        admission: Admission | None = getattr(request, _ADMISSION, None)
        if admission is None:
            admission = Admission(await self.serial(request), public=False)
        key = _key(request, admission.public)
        page = self.cache.get(key, admission.serial)
        if page is None:
            page = await make()
            self.cache.put(key, admission.serial, page)
        return page

    async def cached(self, request: Request) -> Page | None:
        """The page for a request before routing: only a public repo's."""
        return self.cache.get(_key(request, public=True), await self.serial(request))


def file_page(path: Path, etag: str, content_type: str) -> Page:
    """A stored file's answer; a small one's bytes are read here, once, into the page."""
    body = None
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size <= SMALL_FILE:
            body = f.read()
    return Page(etag=f'"{etag}"'.encode(), content_type=content_type.encode(), file=path,
                body=body, headers=(REVALIDATE,))


def not_modified(request: Request, etag: bytes) -> bool:
    """Set ``etag``; True (and 304) if If-None-Match names it.

    Twisted's ``setETag`` splits the header on spaces and compares strictly, so
    ``"a", "b"`` and a proxy's weak ``W/"a"`` never matched. RFC 9110 compares
    If-None-Match weakly, by the opaque tag.
    """
    request.setHeader(b"etag", etag)
    header = request.getHeader(b"if-none-match")
    if header is None:
        return False
    tags = {t.strip().removeprefix(b"W/") for t in header.split(b",")}
    if b"*" in tags or etag.removeprefix(b"W/") in tags:
        request.setResponseCode(http.NOT_MODIFIED)
        return True
    return False


def respond(request: Request, page: Page) -> bytes | IResource:
    """The answer for ``page``: 304, the body, or the file's resource."""
    request.setHeader(b"content-type", page.content_type)
    for name, value in page.headers:
        request.setHeader(name, value)
    if not_modified(request, page.etag):
        return b""
    if page.file is not None and (page.body is None or request.getHeader(b"range")):
        return cast(IResource, StoredFile(page.file, page.content_type.decode()))
    assert page.body is not None
    return page.body


@implementer(IResource)
class FastReads:
    """Wraps the app's root resource; a leaf, so the site hands every request here."""

    isLeaf = True
    log = Logger()

    def __init__(self, app: IResource, pages: Pages) -> None:
        self._app = app
        self._pages = pages

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        raise NotImplementedError("a leaf resource")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("a leaf resource")

    def render(self, request: Request) -> Any:
        if request.method not in _READS or _CACHED_UNDER not in (request.path or b""):
            return cast(Any, self._app).render(request)
        Deferred.fromCoroutine(self._render(request)).addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _render(self, request: Request) -> None:
        try:
            page = await self._pages.cached(request)
        except Exception:
            # The app answers the same request with the right status (503).
            page = None
        if getattr(request, "_disconnected", False):
            # The client left while the serial was read: nobody to answer, and a
            # file producer could not register with a channel that is gone.
            return
        answer = self._app if page is None else respond(request, page)
        body = answer if isinstance(answer, bytes) else cast(Any, answer).render(request)
        if body is not NOT_DONE_YET:
            _finish(request, body)

    def _failed(self, failure: Any, request: Request) -> None:
        self.log.failure("serving {path} failed", failure, path=request.path)
        if not request.startedWriting:
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            _finish(request, b"500 Internal server error: see the server log\n")


def _finish(request: Request, body: bytes) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    # A 304 carries no length: RFC 9110 allows only the 200's, which caches
    # would otherwise store as the page's size.
    if not request.startedWriting and request.code != http.NOT_MODIFIED:
        request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
