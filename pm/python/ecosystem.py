"""The Python ecosystem as the core sees it: local-python sources, python repos.

Its repo pages are PEP 503/691 simple index and the files under
``/{repo}/latest/``: a Klein app of its own, bound to one repo per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import attrs
from klein import Klein
from packaging.version import InvalidVersion, Version
from twisted.web import http, static
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm.blobs import BlobStore
from pm.catalog import Repo, Source, SourceKind
from pm.errors import BadRequest
from pm.packages import PackageRow
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
                 publisher: PythonPublisher) -> None:
        self.files = files
        self.index = PythonIndex(files, blobs)
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
        return PythonRepoPages(repo, self.index).resource()


@attrs.define
class PythonRepoPages:
    """``/{repo}/latest/simple/...`` and ``/{repo}/latest/files/...`` of one repo."""

    repo: Repo
    index: PythonIndex
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app)

    def resource(self) -> IResource:
        return cast(IResource, self.app.resource())

    @app.route("/simple/", methods=["GET", "HEAD"])
    async def simple_root(self, request: Request) -> bytes:
        content_type = simple.negotiate(accept(request))
        names = await self.index.projects(self.repo)
        return _index_response(request, content_type,
                               simple.render_projects(names, content_type))

    @app.route("/simple/<project>/", methods=["GET", "HEAD"])
    async def simple_project(self, request: Request, project: str) -> bytes:
        normalized = normalize_name(project)
        if normalized != project:
            request.setResponseCode(http.MOVED_PERMANENTLY)
            request.setHeader(b"location", f"../{normalized}/".encode())
            return b""
        content_type = simple.negotiate(accept(request))
        files = await self.index.project_files(self.repo, project)
        return _index_response(request, content_type,
                               simple.render_project(project, files, content_type))

    @app.route("/files/<filename>", methods=["GET", "HEAD"])
    async def file(self, request: Request, filename: str) -> IResource | bytes:
        companion = next((s for s in (".asc", ".metadata") if filename.endswith(s)), "")
        served = await self.index.file(self.repo, filename.removesuffix(companion)
                                       if companion else filename, companion)
        if request.setETag(f'"{served.etag}"'.encode()) == http.CACHED:
            return b""
        resource = static.File(str(served.path))
        resource.type = served.content_type
        resource.encoding = None
        return cast(IResource, resource)


def _index_response(request: Request, content_type: str, body: bytes) -> bytes:
    request.setHeader(b"content-type", content_type.encode())
    request.setHeader(b"vary", b"Accept")
    return body
