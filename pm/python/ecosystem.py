"""The Python ecosystem as the core sees it: local-python sources, python repos.

Its repo pages are PEP 503/691 simple index and the files under
``/{repo}/latest/``: a Klein app of its own, bound to one repo per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import attrs
from klein import Klein
from packaging.version import InvalidVersion, Version
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm.blobs import BlobStore
from pm.catalog import Repo, Source, SourceKind
from pm.errors import BadRequest
from pm.fastreads import REVALIDATE, Pages, file_page, respond
from pm.packages import PackageRow
from pm.pagecache import Page
from pm.python import index as simple
from pm.python.dists import normalize_name
from pm.python.files import PythonFiles
from pm.python.index import PythonIndex
from pm.python.publish import PythonPublisher
from pm.responses import accept, share_error_handlers
from pm.upload import Publisher

SOURCE_TYPE = "local-python"
REPO_TYPE = "python"


def version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


class PythonEcosystem:
    """Python's share of the server: rows, checks, and the simple index."""

    blob_suffixes = ("", ".metadata", ".asc")
    index_path = "simple/"

    def __init__(self, files: PythonFiles, blobs: BlobStore,
                 publisher: PythonPublisher, pages: Pages) -> None:
        self.files = files
        self.index = PythonIndex(files, blobs)
        self.pages = pages
        self.python_publisher = publisher
        self.kind = SourceKind(SOURCE_TYPE, REPO_TYPE, files.delete_source_rows)

    @property
    def publisher(self) -> Publisher:
        return self.python_publisher.add

    def normalize(self, name: str) -> str:
        return normalize_name(name)

    def version_key(self, version: str) -> Any:
        return version_key(version)

    async def rows(self, source_guids: Sequence[str], *, name: str | None = None,
                   search: str | None = None) -> list[PackageRow]:
        return await self.files.rows(source_guids, name=name, search=search)

    async def delete_versions(self, source: Source, name: str, versions: Sequence[str],
                              actor: str, comment: str) -> list[tuple[str, str]]:
        return await self.files.delete_versions(source.guid, name, versions, actor, comment)

    async def archive(self, source: Source, name: str, actor: str) -> list[tuple[str, str]]:
        raise BadRequest(
            f"source '{source.name}' holds Python packages, which have no archive: "
            "every version stays in the index; remove a version with 'rspm remove package'"
        )

    async def digests_in_use(self, digests: Sequence[str]) -> set[str]:
        return await self.files.digests_in_use(digests)

    def repo_resource(self, repo: Repo) -> IResource:
        return PythonRepoPages(repo, self.index, self.pages).resource()


@attrs.define
class PythonRepoPages:
    """``/{repo}/latest/simple/...`` and ``/{repo}/latest/files/...`` of one repo."""

    repo: Repo
    index: PythonIndex
    pages: Pages
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app)

    def resource(self) -> IResource:
        return cast(IResource, self.app.resource())

    @app.route("/simple/", methods=["GET", "HEAD"])
    async def simple_root(self, request: Request) -> bytes | IResource:
        content_type = simple.negotiate(accept(request))

        async def make() -> Page:
            names = await self.index.projects(self.repo)
            return _index_page(simple.render_projects(names, content_type), content_type)

        return respond(request, await self.pages.page(request, make))

    @app.route("/simple/<project>/", methods=["GET", "HEAD"])
    async def simple_project(self, request: Request, project: str) -> bytes | IResource:
        normalized = normalize_name(project)
        if normalized != project:
            request.setResponseCode(http.MOVED_PERMANENTLY)
            request.setHeader(b"location", f"../{normalized}/".encode())
            return b""
        content_type = simple.negotiate(accept(request))

        async def make() -> Page:
            files = await self.index.project_files(self.repo, project)
            return _index_page(simple.render_project(project, files, content_type),
                               content_type)

        return respond(request, await self.pages.page(request, make))

    @app.route("/files/<filename>", methods=["GET", "HEAD"])
    async def file(self, request: Request, filename: str) -> bytes | IResource:
        companion = next((s for s in (".asc", ".metadata") if filename.endswith(s)), "")

        async def make() -> Page:
            served = await self.index.file(self.repo, filename.removesuffix(companion)
                                           if companion else filename, companion)
            return file_page(served.path, served.etag, served.content_type)

        return respond(request, await self.pages.page(request, make))


def _index_page(body: bytes, content_type: str) -> Page:
    """A strong ETag of the bytes: pip and uv revalidate their caches with it."""
    return Page(etag=f'"{hashlib.sha256(body).hexdigest()}"'.encode(),
                content_type=content_type.encode(), body=body,
                headers=((b"vary", b"Accept"), REVALIDATE))
