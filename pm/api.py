"""The JSON API under ``/__api__/`` that ``rspm`` and scripts use.

A request over the admin unix socket is the local administrator (file
permissions are the check); over TCP it must carry a token whose grant allows
the action. Paths here are relative to ``/__api__``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import attrs
from klein import Klein
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request

from pm import __version__
from pm.auth import LOCAL_ADMIN, Principal, TokenChecker
from pm.catalog import Catalog, Source
from pm.download import ClientDownloads
from pm.ecosystem import Ecosystem
from pm.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from pm.filerows import UNCHANGED
from pm.packages import paginate, select_versions, summarize
from pm.responses import arg, json_body, share_error_handlers
from pm.tokens import Grant, parse_expires, parse_scope, token_from_headers
from pm.tokenstore import TokenRecord, TokenStore
from pm.upload import UploadService


def _body(request: Request) -> dict[str, Any]:
    assert request.content is not None
    request.content.seek(0)
    raw = request.content.read()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    return value


def _flag(body: dict[str, Any], name: str) -> bool | None:
    """A JSON true/false of the body, or None when it is absent."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise BadRequest(f"'{name}' must be true or false, not {json.dumps(value)[:40]}")


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"'{name}' must be a string")


def _int_arg(request: Request, name: str) -> int | None:
    value = arg(request, name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"--{name} takes a number, not {value[:20]!r}") from None


@attrs.define
class AdminApi:
    catalog: Catalog
    token_store: TokenStore
    tokens: TokenChecker
    uploads: UploadService
    # By source type.
    ecosystems: Mapping[str, Ecosystem]
    clock: Callable[[], float]
    started_at: float
    downloads: ClientDownloads
    # The page cache's figures, for /__api__/status.
    cache_stats: Callable[[], dict[str, Any]]
    app: ClassVar[Klein] = Klein()
    share_error_handlers(app)

    def resource(self) -> IResource:
        return cast(IResource, self.app.resource())

    # Authentication --------------------------------------------------------

    async def principal(self, request: Request) -> Principal:
        if getattr(request, "local_admin", False):
            return LOCAL_ADMIN
        token = token_from_headers(request.getHeader(b"authorization"))
        if token is None:
            self.tokens.require_enabled()
            raise Unauthorized(
                "authentication required: send an API token as 'Authorization: Bearer <token>'"
            )
        return await self.tokens.check(token)

    async def admin(self, request: Request) -> Principal:
        principal = await self.principal(request)
        principal.require_admin()
        return principal

    async def writable_source(self, request: Request, name: str) -> tuple[Principal, Source]:
        """The named source, if the caller may publish to it."""
        principal = await self.principal(request)
        try:
            source = await self.catalog.get_source(name)
        except NotFound:
            # A token limited to other sources learns nothing about which exist.
            claims = principal.claims
            if claims is not None and claims.grant.targets is not None \
                    and not principal.is_admin:
                raise Forbidden(f"the token does not allow publishing to source "
                                f"'{name[:100]}'") from None
            raise
        principal.require_source_write(source)
        return principal, source

    def _ecosystem(self, source_type: str) -> Ecosystem:
        return self.ecosystems[source_type]

    # Status --------------------------------------------------------------------

    @app.route("/status", methods=["GET"])
    async def status(self, request: Request) -> bytes:
        await self.catalog.ping()
        return json_body(request, {
            "version": __version__,
            "database": self.catalog.provider,
            "uptime": round(self.clock() - self.started_at, 3),
            "api_token_auth": self.tokens.enabled,
            "cache": self.cache_stats(),
            "uploads": {"in_flight": self.uploads.slots.in_flight,
                        "limit": self.uploads.limits.max_uploads},
        })

    # Sources and repos ---------------------------------------------------------

    @app.route("/sources", methods=["GET"])
    async def list_sources(self, request: Request) -> bytes:
        await self.admin(request)
        return json_body(request, [s.to_json() for s in await self.catalog.list_sources()])

    @app.route("/sources", methods=["POST"])
    async def create_source(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        source = await self.catalog.create_source(
            str(body.get("name", "")), str(body.get("type", "")), actor
        )
        return json_body(request, source.to_json(), http.CREATED)

    @app.route("/sources/<name>", methods=["GET"])
    async def get_source(self, request: Request, name: str) -> bytes:
        _, source = await self.writable_source(request, name)
        return json_body(request, source.to_json())

    @app.route("/sources/<name>", methods=["DELETE"])
    async def delete_source(self, request: Request, name: str) -> bytes:
        actor = (await self.admin(request)).actor
        source = await self.catalog.delete_source(name, actor)
        return json_body(request, source.to_json())

    @app.route("/repos", methods=["GET"])
    async def list_repos(self, request: Request) -> bytes:
        await self.admin(request)
        return json_body(request, [r.to_json() for r in await self.catalog.list_repos()])

    @app.route("/repos", methods=["POST"])
    async def create_repo(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        repo = await self.catalog.create_repo(
            str(body.get("name", "")), str(body.get("type", "")),
            str(body.get("description", "")), actor, _flag(body, "authenticated"),
        )
        return json_body(request, repo.to_json(), http.CREATED)

    @app.route("/repos/<name>", methods=["POST"])
    async def edit_repo(self, request: Request, name: str) -> bytes:
        """``rspm edit repo``: what the body gives (authenticated, description) changes."""
        actor = (await self.admin(request)).actor
        body = _body(request)
        repo = await self.catalog.edit_repo(name, actor, authenticated=_flag(body, "authenticated"),
                                            description=_text(body, "description"))
        return json_body(request, repo.to_json())

    @app.route("/repos/<name>/subscriptions", methods=["POST"])
    async def subscribe(self, request: Request, name: str) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        repo = await self.catalog.subscribe(name, str(body.get("source", "")), actor)
        return json_body(request, repo.to_json())

    @app.route("/events", methods=["GET"])
    async def events(self, request: Request) -> bytes:
        await self.admin(request)
        return json_body(request, [e.to_json() for e in await self.catalog.events()])

    # Packages ------------------------------------------------------------------

    @app.route("/sources/<name>/packages", methods=["POST"])
    async def add_package(self, request: Request, name: str) -> bytes:
        receiver = getattr(request, "upload", None)
        if receiver is None:
            # A request built by a plain Site (test harnesses) buffered its
            # body; stream it through the same receiver.
            receiver = self.uploads.receive_buffered(request)
        result = await receiver.finish()
        code = http.OK if result.status == UNCHANGED else http.CREATED
        return json_body(request, result.to_json(), code)

    @app.route("/sources/<name>/packages", methods=["GET"])
    async def source_packages(self, request: Request, name: str) -> bytes:
        _, source = await self.writable_source(request, name)
        ecosystem = self._ecosystem(source.type)
        rows = await ecosystem.rows([source.guid], search=arg(request, "search"))
        summaries = summarize(rows, [source.guid], {source.guid: source.name},
                              ecosystem.version_key)
        page = paginate(summaries, _int_arg(request, "count"), _int_arg(request, "page"))
        return json_body(request, page.to_json())

    @app.route("/repos/<name>/packages", methods=["GET"])
    async def repo_packages(self, request: Request, name: str) -> bytes:
        principal = await self.principal(request)
        repo = await self.catalog.get_repo(name)
        principal.require_repo_read(repo)
        ecosystem = next(e for e in self.ecosystems.values() if e.kind.repo_type == repo.type)
        guids = [s.guid for s in repo.sources]
        rows = await ecosystem.rows(guids, search=arg(request, "search"))
        summaries = summarize(rows, guids, {s.guid: s.name for s in repo.sources},
                              ecosystem.version_key)
        page = paginate(summaries, _int_arg(request, "count"), _int_arg(request, "page"))
        return json_body(request, page.to_json())

    @app.route("/sources/<name>/packages/remove", methods=["POST"])
    async def remove_package(self, request: Request, name: str) -> bytes:
        principal, source = await self.writable_source(request, name)
        body = _body(request)
        ecosystem = self._ecosystem(source.type)
        package = ecosystem.normalize(str(body.get("name") or ""))
        if not package:
            raise BadRequest("name the package to remove: --name=PKG@VERSION")
        selector = str(body.get("version") or "")
        if not selector:
            raise BadRequest("say which versions: --name=PKG@all, PKG@current or PKG@1.2.3")
        rows = await ecosystem.rows([source.guid], name=package)
        versions = select_versions(package, selector, rows,
                                   ecosystem.version_key)
        removed = await ecosystem.delete_versions(source, package, versions, principal.actor,
                                                  str(body.get("comment") or ""))
        return json_body(request, {"source": source.name, "name": package, "removed": [
            {"filename": f, "version": v} for f, v in removed]})

    @app.route("/sources/<name>/packages/archive", methods=["POST"])
    async def archive_package(self, request: Request, name: str) -> bytes:
        principal, source = await self.writable_source(request, name)
        body = _body(request)
        ecosystem = self._ecosystem(source.type)
        package = ecosystem.normalize(str(body.get("name") or ""))
        if not package:
            raise BadRequest("name the package to archive: --name=PKG")
        archived = await ecosystem.archive(source, package, principal.actor)
        return json_body(request, {"source": source.name, "name": package, "archived": [
            {"filename": f, "version": v} for f, v in archived]})

    # Tokens --------------------------------------------------------------------

    @app.route("/tokens", methods=["POST"])
    async def create_token(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        if self.tokens.authority is None:
            raise Conflict(
                "cannot create a token: API tokens are disabled on this server; set "
                "[Authentication] APITokenAuth = true in its configuration file and restart it"
            )
        body = _body(request)
        scope = parse_scope(str(body.get("scope") or "sources:write"))
        expires_in = parse_expires(str(body.get("expires") or "never"))
        targets = await self._targets(scope, body)
        grant = Grant(scope=scope, targets=targets)
        guid = str(uuid.uuid4())
        token, claims = self.tokens.authority.mint(grant, guid=guid, expires_in=expires_in)
        record = await self.token_store.create_token(
            guid, str(body.get("description", "")), scope, targets, claims.expires_at, actor
        )
        listing = await self._token_json([record])
        return json_body(request, {"token": token, **listing[0]}, http.CREATED)

    async def _targets(self, scope: str, body: dict[str, Any]) -> tuple[str, ...] | None:
        if scope == "global:admin":
            if body.get("sources") or body.get("repos"):
                raise BadRequest("--sources and --repos do not apply to --scope=global:admin")
            return ()
        option = "sources" if scope == "sources:write" else "repos"
        names = [n.strip() for n in str(body.get(option) or "").split(",") if n.strip()]
        if not names:
            raise BadRequest(f"--{option} is required with --scope={scope} (names, or '*')")
        if names == ["*"]:
            return None
        if "*" in names:
            raise BadRequest(f"--{option}='*' cannot be combined with names")
        if option == "sources":
            return tuple(s.guid for s in await self.catalog.sources_by_name(names))
        repos = {r.name: r.guid for r in await self.catalog.list_repos()}
        missing = [n for n in names if n not in repos]
        if missing:
            raise NotFound(
                f"no repo named {', '.join(map(repr, missing))} "
                f"(repos: {', '.join(repos) or 'none yet'})"
            )
        return tuple(repos[n] for n in names)

    async def _token_json(self, records: list[TokenRecord]) -> list[dict[str, Any]]:
        names = {s.guid: s.name for s in await self.catalog.list_sources()}
        names.update({r.guid: r.name for r in await self.catalog.list_repos()})
        now = self.clock()
        return [
            {
                "guid": r.guid,
                "description": r.description,
                "scope": r.scope,
                "targets": "*" if r.targets is None
                else [names.get(t, f"{t} (deleted)") for t in r.targets],
                "created": r.created_at,
                "created_by": r.created_by,
                "expires": r.expires_at,
                "expired": r.expires_at is not None and r.expires_at <= now,
                "revoked": r.revoked_at,
                "last_used": r.last_used_at,
            }
            for r in records
        ]

    @app.route("/tokens", methods=["GET"])
    async def list_tokens(self, request: Request) -> bytes:
        await self.admin(request)
        listing = await self._token_json(await self.token_store.list_tokens())
        for flag, field in (("expired", "expired"), ("revoked", "revoked")):
            wanted = arg(request, flag)
            if wanted is None:
                continue
            if wanted not in ("yes", "no"):
                raise BadRequest(f"--{flag} takes yes or no, not '{wanted}'")
            listing = [t for t in listing if bool(t[field]) == (wanted == "yes")]
        return json_body(request, listing)

    @app.route("/tokens/revoke", methods=["POST"])
    async def revoke_token(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        guid = body.get("guid")
        if body.get("token"):
            authority = self.tokens.require_enabled()
            try:
                guid = authority.verify(str(body["token"]), any_time=True).guid
            except Unauthorized as e:
                raise BadRequest(f"cannot revoke: {e.message}") from None
        if not guid:
            raise BadRequest("name the token to revoke with --guid or --token")
        record = await self.token_store.revoke_token(str(guid), actor)
        return json_body(request, (await self._token_json([record]))[0])

    # The client ----------------------------------------------------------------

    @app.route("/download", methods=["GET"])
    async def download(self, request: Request) -> bytes:
        """The ``rspm`` client for ``?os=`` (linux by default), for any valid token."""
        await self.principal(request)
        client = await self.downloads.client(arg(request, "os"))
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-disposition",
                          f"attachment; filename={client.filename}".encode())
        request.setHeader(b"cache-control", b"private, no-cache")
        if request.setETag(f'"{client.etag}"'.encode()) == http.CACHED:
            return b""
        return client.body
