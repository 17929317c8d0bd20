"""The root of the web layer: mounts the admin API, the repos, uploads and the UI.

One Klein app serves both listeners; each part is a Klein app of its own
sharing the error handlers of ``pm.responses``, where status codes are chosen.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import ClassVar, cast

import attrs
from klein import Klein
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm import __version__
from pm.api import AdminApi
from pm.catalog import Catalog
from pm.ecosystem import Ecosystem
from pm.responses import share_error_handlers
from pm.upload import UploadService


@attrs.define
class PackageManagerApp:
    catalog: Catalog
    api: AdminApi
    uploads: UploadService
    # By repo type.
    repo_ecosystems: Mapping[str, Ecosystem]
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app)

    def resource(self) -> IResource:
        return cast(IResource, self.app.resource())

    @app.route("/__api__/", branch=True)
    def admin_api(self, request: Request) -> IResource:
        return self.api.resource()

    @app.route("/upload/pypi/<source>", methods=["POST"])
    @app.route("/upload/pypi/<source>/", methods=["POST"])
    async def upload(self, request: Request, source: str) -> bytes:
        receiver = getattr(request, "upload", None)
        if receiver is None:
            receiver = self.uploads.receive_buffered(request)
        result = await receiver.finish()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return result.message().encode()

    @app.route("/<repo>/latest/", branch=True)
    async def repo(self, request: Request, repo: str) -> IResource:
        found = await self.catalog.get_repo(repo)
        return self.repo_ecosystems[found.type].repo_resource(found)

    @app.route("/", methods=["GET"])
    async def home(self, request: Request) -> bytes:
        repos = await self.catalog.list_repos()
        items = "\n".join(
            f'<li><a href="/{html.escape(r.name)}/latest/'
            f'{self.repo_ecosystems[r.type].index_path}">{html.escape(r.name)}</a>'
            f" ({html.escape(r.type)})</li>"
            for r in repos
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            f"<!DOCTYPE html><html><head><title>Package Manager</title></head><body>"
            f"<h1>Package Manager {__version__}</h1><ul>{items}</ul></body></html>\n"
        ).encode()
