"""The UI's Klein app: home, search, repo and package pages, the stylesheet.

URLs (none can clash with ``/{repo}/latest/...``, ``/__api__/`` or ``/upload/``):

    /                                  repos, sources, search box, recent activity
    /search?q=                         packages of every repo matching q
    /repos/{repo}/?q=&page=            a repo's packages, searchable, 50 a page
    /repos/{repo}/packages/{name}/     a package: README or DESCRIPTION, versions, files
    /static/ui.css                     the one stylesheet

The root app hands the UI its requests under any mount point; the UI routes
on the whole path, so its routes read as the URLs users see. Status codes
come from ``pm.responses``; a browser gets them as pages of the same look.

An authenticated repo is shown only to a request whose token covers it: the
other pages leave it out (and the sources only it serves, and what they hold),
and its own pages answer 401 with a Basic challenge, so a browser asks for the
user ``__token__`` and the token as the password, as pip and R send them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import quote, unquote

import attrs
from klein import Klein
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from pm.auth import RepoReaders
from pm.catalog import Catalog, Event, Repo, Source
from pm.errors import BadRequest
from pm.responses import arg, set_html_headers, share_error_handlers
from pm.tokenstore import TokenStore
from pm.ui.listings import Listings
from pm.ui.shelf import PackageEntry, Shelf, Uploaders
from pm.ui.templating import Templates

PAGE_SIZE = 50
RECENT_EVENTS = 20
MAX_QUERY = 200
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PACKAGE_PATH = re.compile(r"/repos/([^/]+)/packages/([^/]+)/?")


def base_url(request: Request) -> str:
    """The scheme and host the browser used, for the install lines it shows.

    The Host header is the client's to choose, so anything but a host name or
    address (and port) is replaced: it ends up in text users copy.
    """
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not _HOST.fullmatch(host):
        host = "localhost"
    return f"{'https' if request.isSecure() else 'http'}://{host}"


@dataclass(frozen=True)
class RepoView:
    repo: Repo
    packages: int
    index_url: str


@dataclass(frozen=True)
class SourceView:
    source: Source
    packages: int
    repos: tuple[str, ...]


@dataclass(frozen=True)
class EventView:
    event: Event
    actor: str
    subject: str


def event_view(event: Event, uploaders: Uploaders) -> EventView:
    # A token's events name it by GUID; people know it by its description.
    subject = uploaders.label(f"token:{event.subject}") if event.action.startswith("token.") \
        else event.subject
    return EventView(event, uploaders.label(event.actor), subject)


def _shown(event: Event, hidden: set[str], secret_kinds: set[str]) -> bool:
    """Whether recent activity may show ``event`` to a visitor from whom the repos and
    sources named in ``hidden`` are hidden. A package event names only its file, not
    its source: while a hidden source holds packages of a kind, that kind's package
    events ("python.", "r.": the repo type) are all left out."""
    kind = event.action.partition(".")[0]
    if kind in ("repo", "source"):
        return event.subject not in hidden
    return kind not in secret_kinds


def search_order(entries: Sequence[PackageEntry], query: str) -> list[PackageEntry]:
    """The entries matching ``query``: exact names first, then prefixes, then the rest."""
    needle = query.lower()

    def rank(e: PackageEntry) -> tuple[int, str]:
        names = (e.name.lower(), e.display_name.lower())
        if needle in names:
            return (0, e.name)
        if any(n.startswith(needle) for n in names):
            return (1, e.name)
        return (2 if any(needle in n for n in names) else 3, e.name)

    return sorted((e for e in entries if e.matches(query)), key=rank)


def _page_number(request: Request) -> int:
    raw = arg(request, "page")
    if raw is None or raw == "":
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"page must be a number from 1 up, not {raw[:20]!r}")
    return int(raw)


def _query(request: Request) -> str:
    return " ".join((arg(request, "q") or "").split())[:MAX_QUERY]


class _WholePath(Resource):
    """Hands the UI's Klein resource the request with its whole path still to route."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: Request) -> Any:
        request.postpath = [*(request.prepath or []), *(request.postpath or [])]
        request.prepath = []
        return self._inner.render(request)


def _error_page(ui: WebUI, request: Request, code: int, message: str) -> bytes:
    return ui.error_page(request, code, message)


@attrs.define
class WebUI:
    """The pages; the catalog, token store and each repo type's shelf are injected."""

    catalog: Catalog
    token_store: TokenStore
    # By repo type.
    shelves: Mapping[str, Shelf]
    listings: Listings
    readers: RepoReaders
    templates: Templates = attrs.field(factory=Templates)
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app, _error_page)

    def resource(self) -> IResource:
        return cast(IResource, _WholePath(self.app.resource()))

    def _page(self, request: Request, template: str, /, **context: Any) -> bytes:
        set_html_headers(request)
        return self.templates.render(template, **context)

    def error_page(self, request: Request, code: int, message: str) -> bytes:
        """What a browser is shown for an error: the message and ways on from here."""
        path = (request.path or b"").decode("utf-8", "replace")
        wanted = _PACKAGE_PATH.fullmatch(path)
        return self.templates.render(
            "error.html", code=code, message=message,
            title={http.NOT_FOUND: "Not found", http.BAD_REQUEST: "Bad request",
                   http.UNAUTHORIZED: "Sign in required", http.FORBIDDEN: "Not allowed",
                   http.INTERNAL_SERVER_ERROR: "Server error"}.get(code, "Error"),
            q=unquote(wanted.group(2)) if wanted else "",
            repo_name=unquote(wanted.group(1)) if wanted else None)

    async def _uploaders(self) -> Uploaders:
        return Uploaders(await self.token_store.list_tokens())

    def _shelf(self, repo: Repo) -> Shelf:
        return self.shelves[repo.type]

    async def _readable(self, request: Request, repos: Sequence[Repo]) -> list[Repo]:
        return await self.readers.readable(repos, request.getHeader(b"authorization"),
                                           local=getattr(request, "local_admin", False))

    async def _readable_repo(self, request: Request, name: str) -> Repo:
        """The named repo, if the request may read it (401 or 403 if not)."""
        repo = await self.catalog.get_repo(name)
        await self.readers.require_read(repo, request.getHeader(b"authorization"),
                                        local=getattr(request, "local_admin", False))
        return repo

    @app.route("/", methods=["GET", "HEAD"])
    async def home(self, request: Request) -> bytes:
        every = await self.catalog.list_repos()
        repos = await self._readable(request, every)
        shown = {r.guid for r in repos}
        hidden = [r for r in every if r.guid not in shown]
        # A source that only hidden repos serve is theirs: it is not listed, and
        # nothing of what it holds is shown.
        served = {s.guid for r in repos for s in r.sources}
        private = {s.guid for r in hidden for s in r.sources} - served
        sources: list[Source] = []
        secret: list[Source] = []
        for source in await self.catalog.list_sources():
            (secret if source.guid in private else sources).append(source)
        base = base_url(request)
        held: dict[str, set[str]] = {s.guid: set() for s in sources}
        secret_kinds: set[str] = set()
        for shelf in self.shelves.values():
            guids = [s.guid for s in sources if s.type == shelf.source_type]
            for guid, package in await shelf.source_packages(guids):
                held[guid].add(package)
            if await shelf.source_packages([s.guid for s in secret
                                            if s.type == shelf.source_type]):
                secret_kinds.add(shelf.repo_type)
        repo_views = [RepoView(r, len(set().union(*(held.get(s.guid, set())
                                                    for s in r.sources))),
                               self._shelf(r).index_url(base, r)) for r in repos]
        source_views = [SourceView(s, len(held[s.guid]),
                                   tuple(r.name for r in repos if s in r.sources))
                        for s in sources]
        uploaders = await self._uploaders()
        events = [event_view(e, uploaders) for e in await self.catalog.events(RECENT_EVENTS)
                  if _shown(e, {r.name for r in hidden} | {s.name for s in secret},
                            secret_kinds)]
        return self._page(request, "home.html", repos=repo_views, sources=source_views,
                          events=events, q="")

    @app.route("/search", methods=["GET", "HEAD"])
    async def search(self, request: Request) -> bytes:
        query = _query(request)
        results = []
        if query:
            for repo in await self._readable(request, await self.catalog.list_repos()):
                found = search_order(await self.listings.entries(self._shelf(repo), repo),
                                     query)
                if found:
                    results.append((repo, found[:PAGE_SIZE], len(found)))
        return self._page(request, "search.html", q=query, results=results)

    @app.route("/repos/", methods=["GET", "HEAD"])
    def repos(self, request: Request) -> bytes:
        request.redirect(b"/")
        return b""

    @app.route("/repos/<repo>/", methods=["GET", "HEAD"])
    async def repo(self, request: Request, repo: str) -> bytes:
        found = await self._readable_repo(request, repo)
        shelf = self._shelf(found)
        query = _query(request)
        entries = await self.listings.entries(shelf, found)
        shown = search_order(entries, query) if query else entries
        pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
        number = min(_page_number(request), pages)
        start = (number - 1) * PAGE_SIZE
        return self._page(
            request, "repo.html", repo=found, q=query, total=len(entries),
            matched=len(shown), entries=shown[start:start + PAGE_SIZE], page=number,
            pages=pages, index_url=shelf.index_url(base_url(request), found),
            install=shelf.install_command(base_url(request), found, "PACKAGE"),
            first=start + 1)

    @app.route("/repos/<repo>/packages/<name>/", methods=["GET", "HEAD"])
    async def package(self, request: Request, repo: str, name: str) -> bytes:
        found = await self._readable_repo(request, repo)
        shelf = self._shelf(found)
        normalized = shelf.normalize(name)
        if normalized != name:
            request.setResponseCode(http.MOVED_PERMANENTLY)
            request.setHeader(b"location", f"../{quote(normalized)}/".encode())
            return b""
        page = await shelf.package_page(found, name, await self._uploaders(),
                                        base_url(request))
        return self._page(request, page.template, q="", **page.context)

    @app.route("/static/ui.css", methods=["GET", "HEAD"])
    def stylesheet(self, request: Request) -> bytes:
        asset = self.templates.stylesheet
        request.setHeader(b"content-type", asset.content_type.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        # The pages link it with its digest, so that URL never changes content.
        versioned = arg(request, "v") == asset.etag
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable"
                          if versioned else b"no-cache")
        if request.setETag(f'"{asset.etag}"'.encode()) == http.CACHED:
            return b""
        return asset.body
