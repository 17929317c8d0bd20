"""The R ecosystem as the core sees it: local sources, r repos, a CRAN-like layout.

Under ``/{repo}/latest/src/contrib/`` it serves what ``install.packages()``,
``available.packages()``, pak and ``remotes::install_version()`` read:
``PACKAGES`` (plain, ``.gz`` and ``.rds``), the current tarballs, older ones in
``Archive/{pkg}/`` and ``Meta/archive.rds``. Every index is rendered from the
database, so all nodes sharing it serve the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import attrs
from klein import Klein
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm.blobs import BlobStore
from pm.catalog import Repo, Source, SourceKind
from pm.errors import BadUpload, NotFound
from pm.fastreads import REVALIDATE, Pages, file_page, respond
from pm.packages import PackageRow
from pm.pagecache import Page
from pm.r import cran, description
from pm.r.files import RFiles, RPackageFile
from pm.r.publish import RPublisher
from pm.responses import share_error_handlers
from pm.upload import Publisher

SOURCE_TYPE = "local"
REPO_TYPE = "r"


@dataclass(frozen=True)
class RepoPackages:
    """A repo's R packages: the current file of each, and every other file (archived)."""

    current: list[RPackageFile]
    archived: list[RPackageFile]


class RIndex:
    """Reads the files a repo serves from its subscribed sources, in order."""

    def __init__(self, files: RFiles) -> None:
        self._files = files

    async def packages(self, repo: Repo, package: str | None = None) -> RepoPackages:
        order = {s.guid: i for i, s in enumerate(repo.sources)}
        rows = await self._files.files(list(order), package)
        by_package: dict[str, list[RPackageFile]] = {}
        for row in rows:
            by_package.setdefault(row.package, []).append(row)
        current: list[RPackageFile] = []
        archived: list[RPackageFile] = []
        for name in sorted(by_package):
            winner = min((r.source_guid for r in by_package[name]), key=order.__getitem__)
            mine = [r for r in by_package[name] if r.source_guid == winner]
            live = [r for r in mine if not r.archived]
            top = max(live, key=lambda r: description.r_version_key(r.version)) \
                if live else None
            if top is not None:
                current.append(top)
            archived.extend(r for r in mine if r is not top)
        return RepoPackages(current, archived)


class REcosystem:
    """R's share of the server: rows, checks, and the CRAN-like repository."""

    blob_suffixes = ("",)
    index_path = "src/contrib/PACKAGES"

    def __init__(self, files: RFiles, blobs: BlobStore, publisher: RPublisher,
                 pages: Pages) -> None:
        self.files = files
        self.pages = pages
        self.index = RIndex(files)
        self._blobs = blobs
        self._publisher = publisher
        self.kind = SourceKind(SOURCE_TYPE, REPO_TYPE, files.delete_source_rows)

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def normalize(self, name: str) -> str:
        return name

    def version_key(self, version: str) -> Any:
        return description.r_version_key(version)

    async def rows(self, source_guids: Sequence[str], *, name: str | None = None,
                   search: str | None = None) -> list[PackageRow]:
        return await self.files.rows(source_guids, name=name, search=search)

    async def delete_versions(self, source: Source, name: str, versions: Sequence[str],
                              actor: str, comment: str) -> list[tuple[str, str]]:
        return await self.files.delete_versions(source.guid, name, versions, actor, comment)

    async def archive(self, source: Source, name: str, actor: str) -> list[tuple[str, str]]:
        archived = await self.files.archive(source.guid, name, actor)
        if not archived:
            raise NotFound(f"package '{name[:100]}' has no current version in source "
                           f"'{source.name}' (not added, or archived already)")
        return archived

    async def digests_in_use(self, digests: Sequence[str]) -> set[str]:
        return await self.files.digests_in_use(digests)

    def repo_resource(self, repo: Repo) -> IResource:
        return RRepoPages(repo, self.index, self._blobs, self.pages).resource()


def _entry(f: RPackageFile) -> cran.IndexEntry:
    return cran.IndexEntry(package=f.package, version=f.version, fields=f.fields, md5=f.md5,
                           sha256=f.sha256, size=f.size)


@attrs.define
class RRepoPages:
    """``/{repo}/latest/src/contrib/...`` of one repo."""

    repo: Repo
    index: RIndex
    blobs: BlobStore
    pages: Pages
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app)

    def resource(self) -> IResource:
        return cast(IResource, self.app.resource())

    async def _index(self, request: Request, content_type: bytes,
                     render: Callable[[RepoPackages], bytes]) -> bytes | IResource:
        async def make() -> Page:
            body = render(await self.index.packages(self.repo))
            return Page(etag=f'"{hashlib.sha256(body).hexdigest()}"'.encode(),
                        content_type=content_type, body=body, headers=(REVALIDATE,))

        return respond(request, await self.pages.page(request, make))

    @app.route("/src/contrib/PACKAGES", methods=["GET", "HEAD"])
    async def packages(self, request: Request) -> bytes | IResource:
        return await self._index(request, b"text/plain; charset=utf-8", lambda listing:
                                 cran.render_packages([_entry(f) for f in listing.current]))

    @app.route("/src/contrib/PACKAGES.gz", methods=["GET", "HEAD"])
    async def packages_gz(self, request: Request) -> bytes | IResource:
        return await self._index(request, b"application/gzip", lambda listing:
                                 cran.render_packages_gz(cran.render_packages(
                                     [_entry(f) for f in listing.current])))

    @app.route("/src/contrib/PACKAGES.rds", methods=["GET", "HEAD"])
    async def packages_rds(self, request: Request) -> bytes | IResource:
        return await self._index(request, b"application/octet-stream", lambda listing:
                                 cran.render_packages_rds([_entry(f) for f in listing.current]))

    @app.route("/src/contrib/Meta/archive.rds", methods=["GET", "HEAD"])
    async def archive_rds(self, request: Request) -> bytes | IResource:
        return await self._index(request, b"application/octet-stream", _archive_rds)

    @app.route("/src/contrib/<filename>", methods=["GET", "HEAD"])
    async def current(self, request: Request, filename: str) -> bytes | IResource:
        name = _tarball_name(filename, self.repo)

        async def make() -> Page:
            listing = await self.index.packages(self.repo, name.package)
            return self._file_page(filename, listing.current)

        return respond(request, await self.pages.page(request, make))

    @app.route("/src/contrib/Archive/<package>/<filename>", methods=["GET", "HEAD"])
    async def archived(self, request: Request, package: str,
                       filename: str) -> bytes | IResource:
        name = _tarball_name(filename, self.repo)
        if name.package != package:
            raise NotFound(f"no file {filename[:100]!r} in the archive of '{package[:100]}'")

        async def make() -> Page:
            listing = await self.index.packages(self.repo, name.package)
            return self._file_page(filename, listing.archived)

        return respond(request, await self.pages.page(request, make))

    def _file_page(self, filename: str, files: list[RPackageFile]) -> Page:
        found = next((f for f in files if f.filename == filename), None)
        if found is None:
            raise NotFound(f"no file {filename[:100]!r} in repo '{self.repo.name}'")
        return file_page(self.blobs.path_for(found.sha256), found.sha256, "application/x-gzip")


def _archive_rds(listing: RepoPackages) -> bytes:
    archived: dict[str, list[cran.ArchivedFile]] = {}
    for f in listing.archived:
        archived.setdefault(f.package, []).append(
            cran.ArchivedFile(f.package, f.version, f.size, f.uploaded_at))
    return cran.render_archive_rds(archived)


def _tarball_name(filename: str, repo: Repo) -> description.RFilename:
    try:
        return description.parse_filename(filename)
    except BadUpload:
        raise NotFound(f"no file {filename[:100]!r} in repo '{repo.name}'") from None
