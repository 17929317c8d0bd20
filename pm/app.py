"""The web application: routes, authentication and HTTP status codes.

One Klein app serves both listeners. A request that came over the admin unix
socket is the local administrator (file permissions are the check); a request
over TCP must carry a token whose grant allows the action. Domain exceptions
from below become status codes here and nowhere else.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, cast

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, static
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException

from pm import __version__
from pm.auth import LOCAL_ADMIN, Principal, TokenChecker
from pm.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PackageManagerError,
    StoreUnavailable,
    Unauthorized,
)
from pm.python import index as index_mod
from pm.python.dists import normalize_name
from pm.python.index import NotAcceptable, PythonIndex
from pm.store import Store, TokenRecord
from pm.tokens import Grant, parse_expires, parse_scope, token_from_headers
from pm.upload import UploadService

_STATUS: tuple[tuple[type[PackageManagerError], int], ...] = (
    (BadRequest, http.BAD_REQUEST),
    (Unauthorized, http.UNAUTHORIZED),
    (Forbidden, http.FORBIDDEN),
    (NotFound, http.NOT_FOUND),
    (NotAcceptable, http.NOT_ACCEPTABLE),
    (Conflict, http.CONFLICT),
    (StoreUnavailable, http.SERVICE_UNAVAILABLE),
)


def status_for(error: PackageManagerError) -> int:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return http.INTERNAL_SERVER_ERROR


def _reason(message: str) -> bytes:
    # twine and curl print the reason phrase, so the message goes there too;
    # it must be one line of printable ASCII.
    line = "".join(c if " " <= c < "\x7f" else " " for c in message)
    return line[:300].encode("ascii")


def _json(request: Request, value: Any, code: int = http.OK, reason: bytes | None = None) -> bytes:
    request.setResponseCode(code, reason)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value, indent=2).encode() + b"\n"


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


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


@attrs.define
class PackageManagerApp:
    store: Store
    tokens: TokenChecker
    uploads: UploadService
    index: PythonIndex
    clock: Callable[[], float]
    started_at: float
    log: ClassVar[Logger] = Logger()
    app: ClassVar[Klein] = Klein()

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

    # Errors ------------------------------------------------------------------

    @app.handle_errors(PackageManagerError)
    def domain_error(self, request: Request, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, PackageManagerError)
        code = status_for(error)
        if code == http.INTERNAL_SERVER_ERROR:
            self.log.failure("request failed", failure)
        reason = _reason(error.message)
        if code == http.UNAUTHORIZED:
            request.setHeader(b"www-authenticate", b'Basic realm="packagemanager"')
        path = request.path or b""
        if path.startswith(b"/__api__/"):
            return _json(request, {"error": error.message, "code": code}, code, reason)
        request.setResponseCode(code, reason)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"{code} {error.message}\n".encode()

    @app.handle_errors(Exception)
    def unexpected_error(self, request: Request, failure: Failure) -> bytes:
        if failure.check(HTTPException):
            # Klein's own routing answers (404, 405, slash redirects).
            failure.raiseException()
        self.log.failure("unhandled error in {uri}", failure, uri=request.uri)
        request.setResponseCode(http.INTERNAL_SERVER_ERROR, b"Internal server error")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"500 Internal server error: see the server log\n"

    # Status --------------------------------------------------------------------

    @app.route("/__api__/status", methods=["GET"])
    async def status(self, request: Request) -> bytes:
        await self.store.ping()
        return _json(request, {
            "version": __version__,
            "database": self.store.provider,
            "uptime": round(self.clock() - self.started_at, 3),
            "api_token_auth": self.tokens.enabled,
        })

    # Sources and repos ---------------------------------------------------------

    @app.route("/__api__/sources", methods=["GET"])
    async def list_sources(self, request: Request) -> bytes:
        await self.admin(request)
        return _json(request, [s.to_json() for s in await self.store.list_sources()])

    @app.route("/__api__/sources", methods=["POST"])
    async def create_source(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        source = await self.store.create_source(
            str(body.get("name", "")), str(body.get("type", "")), actor
        )
        return _json(request, source.to_json(), http.CREATED)

    @app.route("/__api__/sources/<name>", methods=["DELETE"])
    async def delete_source(self, request: Request, name: str) -> bytes:
        actor = (await self.admin(request)).actor
        source = await self.store.delete_source(name, actor)
        return _json(request, source.to_json())

    @app.route("/__api__/repos", methods=["GET"])
    async def list_repos(self, request: Request) -> bytes:
        await self.admin(request)
        return _json(request, [r.to_json() for r in await self.store.list_repos()])

    @app.route("/__api__/repos", methods=["POST"])
    async def create_repo(self, request: Request) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        repo = await self.store.create_repo(
            str(body.get("name", "")), str(body.get("type", "")),
            str(body.get("description", "")), actor,
        )
        return _json(request, repo.to_json(), http.CREATED)

    @app.route("/__api__/repos/<name>/subscriptions", methods=["POST"])
    async def subscribe(self, request: Request, name: str) -> bytes:
        actor = (await self.admin(request)).actor
        body = _body(request)
        repo = await self.store.subscribe(name, str(body.get("source", "")), actor)
        return _json(request, repo.to_json())

    @app.route("/__api__/events", methods=["GET"])
    async def events(self, request: Request) -> bytes:
        await self.admin(request)
        return _json(request, [e.to_json() for e in await self.store.events()])

    # Tokens --------------------------------------------------------------------

    @app.route("/__api__/tokens", methods=["POST"])
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
        record = await self.store.create_token(
            guid, str(body.get("description", "")), scope, targets, claims.expires_at, actor
        )
        listing = await self._token_json([record])
        return _json(request, {"token": token, **listing[0]}, http.CREATED)

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
            return tuple(s.guid for s in await self.store.sources_by_name(names))
        repos = {r.name: r.guid for r in await self.store.list_repos()}
        missing = [n for n in names if n not in repos]
        if missing:
            raise NotFound(
                f"no repo named {', '.join(map(repr, missing))} "
                f"(repos: {', '.join(repos) or 'none yet'})"
            )
        return tuple(repos[n] for n in names)

    async def _token_json(self, records: list[TokenRecord]) -> list[dict[str, Any]]:
        names = {s.guid: s.name for s in await self.store.list_sources()}
        names.update({r.guid: r.name for r in await self.store.list_repos()})
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

    @app.route("/__api__/tokens", methods=["GET"])
    async def list_tokens(self, request: Request) -> bytes:
        await self.admin(request)
        listing = await self._token_json(await self.store.list_tokens())
        for flag, field in (("expired", "expired"), ("revoked", "revoked")):
            wanted = _arg(request, flag)
            if wanted is None:
                continue
            if wanted not in ("yes", "no"):
                raise BadRequest(f"--{flag} takes yes or no, not '{wanted}'")
            listing = [t for t in listing if bool(t[field]) == (wanted == "yes")]
        return _json(request, listing)

    @app.route("/__api__/tokens/revoke", methods=["POST"])
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
        record = await self.store.revoke_token(str(guid), actor)
        return _json(request, (await self._token_json([record]))[0])

    # Uploads -------------------------------------------------------------------

    @app.route("/upload/pypi/<source>", methods=["POST"])
    @app.route("/upload/pypi/<source>/", methods=["POST"])
    async def upload(self, request: Request, source: str) -> bytes:
        receiver = getattr(request, "upload", None)
        if receiver is None:
            # A request built by a plain Site (test harnesses) buffered its
            # body; stream it through the same receiver.
            receiver = self.uploads.receive(
                source, request.requestHeaders, local=getattr(request, "local_admin", False)
            )
            assert request.content is not None
            request.content.seek(0)
            while chunk := request.content.read(65536):
                receiver.feed(chunk)
        result = await receiver.finish()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return result.message().encode()

    # The simple index ---------------------------------------------------------

    @app.route("/<repo>/latest/simple/", methods=["GET", "HEAD"])
    async def simple_root(self, request: Request, repo: str) -> bytes:
        content_type = index_mod.negotiate(_accept(request))
        names = await self.index.projects(repo)
        return _index_response(request, content_type,
                               index_mod.render_projects(names, content_type))

    @app.route("/<repo>/latest/simple/<project>/", methods=["GET", "HEAD"])
    async def simple_project(self, request: Request, repo: str, project: str) -> bytes:
        normalized = normalize_name(project)
        if normalized != project:
            request.setResponseCode(http.MOVED_PERMANENTLY)
            request.setHeader(b"location", f"../{normalized}/".encode())
            return b""
        content_type = index_mod.negotiate(_accept(request))
        files = await self.index.project_files(repo, project)
        return _index_response(request, content_type,
                               index_mod.render_project(project, files, content_type))

    @app.route("/<repo>/latest/files/<filename>", methods=["GET", "HEAD"])
    async def file(self, request: Request, repo: str, filename: str) -> IResource | bytes:
        companion = next((s for s in (".asc", ".metadata") if filename.endswith(s)), "")
        served = await self.index.file(repo, filename.removesuffix(companion) if companion
                                       else filename, companion)
        if request.setETag(f'"{served.etag}"'.encode()) == http.CACHED:
            return b""
        resource = static.File(str(served.path))
        resource.type = served.content_type
        resource.encoding = None
        return cast(IResource, resource)

    @app.route("/", methods=["GET"])
    async def home(self, request: Request) -> bytes:
        repos = await self.store.list_repos()
        items = "\n".join(
            f'<li><a href="/{r.name}/latest/simple/">{r.name}</a> ({r.type})</li>'
            if r.type == "python" else f"<li>{r.name} ({r.type})</li>"
            for r in repos
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            f"<!DOCTYPE html><html><head><title>Package Manager</title></head><body>"
            f"<h1>Package Manager {__version__}</h1><ul>{items}</ul></body></html>\n"
        ).encode()


def _accept(request: Request) -> str | None:
    value = request.getHeader(b"accept")
    return value.decode("latin-1") if value else None


def _index_response(request: Request, content_type: str, body: bytes) -> bytes:
    request.setHeader(b"content-type", content_type.encode())
    request.setHeader(b"vary", b"Accept")
    return body
