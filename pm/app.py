"""The root of the web layer: mounts the admin API, the repos, uploads and the UI.

One Klein app serves both listeners; each part is a Klein app of its own
sharing the error handlers of ``pm.responses``, where status codes are chosen.
The UI owns ``/``, ``/search``, ``/repos/...`` and ``/static/...``; a browser
that reaches no route at all gets the UI's error page too. Every page under
``/{repo}/latest/`` (index, files, ``.asc``, ``.metadata``, the R repository)
is handed out here, so this is where an authenticated repo's token is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, cast

import attrs
from klein import Klein
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm.api import AdminApi
from pm.auth import RepoReaders
from pm.catalog import Catalog
from pm.ecosystem import Ecosystem
from pm.fastreads import Pages
from pm.responses import share_error_handlers
from pm.ui import WebUI
from pm.upload import UploadService


def _error_page(root: PackageManagerApp, request: Request, code: int, message: str) -> bytes:
    return root.ui.error_page(request, code, message)


@attrs.define
class PackageManagerApp:
    catalog: Catalog
    api: AdminApi
    uploads: UploadService
    # By repo type.
    repo_ecosystems: Mapping[str, Ecosystem]
    ui: WebUI
    readers: RepoReaders
    pages: Pages
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app, _error_page)

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
        # The serial before the repo: what the pages cache of this request is
        # filed under must not be older than the repo's state it was checked by.
        serial = await self.pages.serial(request)
        found = await self.catalog.get_repo(repo)
        await self.readers.require_read(found, request.getHeader(b"authorization"),
                                        local=getattr(request, "local_admin", False))
        self.pages.admit(request, serial, public=not found.authenticated)
        return self.repo_ecosystems[found.type].repo_resource(found)

    # The UI's URLs one by one rather than a branch under /repos/: a repo may be
    # named "repos", and its /repos/latest/simple/ must still reach the index.
    @app.route("/", endpoint="ui_home")
    @app.route("/search", endpoint="ui_search")
    @app.route("/repos/", endpoint="ui_repos")
    @app.route("/repos/<repo>/", endpoint="ui_repo")
    @app.route("/repos/<repo>/packages/<name>/", endpoint="ui_package")
    @app.route("/static/ui.css", endpoint="ui_static")
    def web_ui(self, request: Request, **path: str) -> IResource:
        return self.ui.resource()
