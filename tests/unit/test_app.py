"""The Klein app through ``treq.testing.StubTreq``: JSON API, authentication, simple index.

Requests made through StubTreq come in as a TCP client would (not the local
administrator), so admin routes need a ``global:admin`` token; ``LocalAdmin``
marks requests the way the admin unix socket's request factory does. The
database (SQLite through adbapi) and the thread pool are real: every response
is awaited while the reactor runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

import jwt
import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from pm import __version__
from pm.tokens import Grant, TokenAuthority, generate_key
from tests.support.packages import build_sdist, build_wheel, multipart_body, upload_fields
from tests.unit.appfixture import ADDRESS, START, AppEnv, Signer, app_env

T = TypeVar("T")

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
PIP_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01"


# A client for the app ------------------------------------------------------------------


@dataclass
class Reply:
    """A complete response."""

    code: int
    phrase: str
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    @property
    def error(self) -> str:
        value = self.json()["error"]
        assert isinstance(value, str)
        return value


class Client:
    """StubTreq, pumped while the real reactor runs the database and threads."""

    def __init__(self, resource: IResource | Resource) -> None:
        # StubTreq builds its request methods at run time.
        self.stub: Any = StubTreq(resource)

    async def _pump(self, deferred: Deferred[T], timeout: float = 30.0) -> T:
        done: list[bool] = []

        def mark(result: T) -> T:
            done.append(True)
            return result

        deferred.addBoth(mark)
        deadline = time.monotonic() + timeout
        while not done:
            if time.monotonic() > deadline:
                raise AssertionError("no response from the app")
            self.stub.flush()
            await deferLater(reactor, 0.002, lambda: None)
        return await deferred

    async def request(self, method: str, path: str, *, token: str | None = None,
                      body: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        response = await self._pump(self.stub.request(
            method, f"http://test{path}", headers=sent, data=data, allow_redirects=False,
        ))
        content = await self._pump(self.stub.content(response))
        return Reply(response.code, response.phrase.decode("latin-1"), response.headers, content)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)


class LocalAdmin(Resource):
    """Marks every request as the admin socket's request factory does."""

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: Request) -> Any:
        request.local_admin = True  # type: ignore[attr-defined]
        return self._inner.render(request)


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()


async def publish(client: Client, token: str, source: str, path: Path, *,
                  name: str = "example-package", version: str = "1.0.0",
                  signature: bytes | None = None) -> Reply:
    """What ``twine upload`` sends, through the app's non-streaming fallback."""
    files = [("content", path.name, path.read_bytes())]
    if signature is not None:
        files.append(("gpg_signature", f"{path.name}.asc", signature))
    data, content_type = multipart_body(upload_fields(path, name, version), files)
    return await client.post(f"/upload/pypi/{source}/", data=data,
                             headers={"Content-Type": content_type,
                                      "Authorization": basic(token)})


async def setup_repo(client: Client, admin: str, *, repo: str = "python",
                     sources: tuple[str, ...] = ("uploads",)) -> None:
    """Sources, a Python repo, and its subscriptions in order, through the API."""
    for name in sources:
        reply = await client.post("/__api__/sources", token=admin,
                                  body={"name": name, "type": "local-python"})
        assert reply.code == 201, reply
    reply = await client.post("/__api__/repos", token=admin,
                              body={"name": repo, "type": "python"})
    assert reply.code == 201, reply
    for name in sources:
        reply = await client.post(f"/__api__/repos/{repo}/subscriptions", token=admin,
                                  body={"source": name})
        assert reply.code == 200, reply


async def create_token(client: Client, admin: str, **body: Any) -> Reply:
    return await client.post("/__api__/tokens", token=admin, body=body)


# Fixtures ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A fresh in-memory server with API tokens enabled."""
    with app_env(tmp_path) as built:
        yield built


@pytest.fixture
def client(env: AppEnv) -> Client:
    """A TCP client of that server."""
    return Client(env.app.resource())


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """Where test distributions are built (outside the server's DataDir)."""
    path = tmp_path / "dist"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer]:
    """One OpenPGP signing key for the module; the server does not trust it."""
    made = Signer()
    yield made
    made.close()


# Status ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_reports_version_database_and_uptime(env: AppEnv, client: Client) -> None:
    """GET /__api__/status needs no token and answers JSON with version, database,
    uptime measured on the injected clock, the cache and the uploads in flight."""
    env.clock.advance(12.5)

    reply = await client.get("/__api__/status")

    assert reply.code == 200
    assert reply.header("content-type") == "application/json"
    status = reply.json()
    assert status.pop("cache") == {"entries": 0, "bytes": 0, "max_bytes": 64 * 1024 * 1024,
                                   "hits": 0, "misses": 0}
    assert status.pop("uploads") == {"in_flight": 0, "limit": 128}
    assert status == {"version": __version__, "database": "sqlite", "uptime": 12.5,
                      "api_token_auth": True}


# Sources and repos ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_and_list_sources_and_repos(env: AppEnv, client: Client) -> None:
    """Creating a source or a repo answers 201 with it; the listings then include it."""
    admin = await env.token()

    source = await client.post("/__api__/sources", token=admin,
                               body={"name": "uploads", "type": "local-python"})
    repo = await client.post("/__api__/repos", token=admin,
                             body={"name": "python", "type": "python", "description": "ours"})

    assert source.code == 201
    assert source.json()["name"] == "uploads"
    assert source.json()["type"] == "local-python"
    assert str(uuid.UUID(source.json()["guid"])) == source.json()["guid"]
    assert repo.code == 201
    assert {k: repo.json()[k] for k in ("name", "type", "description", "sources")} == {
        "name": "python", "type": "python", "description": "ours", "sources": []}
    sources = await client.get("/__api__/sources", token=admin)
    assert [s["name"] for s in sources.json()] == ["uploads"]
    repos = await client.get("/__api__/repos", token=admin)
    assert [r["name"] for r in repos.json()] == ["python"]


@pytest.mark.parametrize("kind", ["sources", "repos"])
@pytest_twisted.ensureDeferred
async def test_duplicate_name_is_409_with_the_reason(
    env: AppEnv, client: Client, kind: str
) -> None:
    """Creating a source or repo whose name is taken answers 409; "already exists" is in
    the JSON error and in the HTTP reason phrase (which curl and the CLI print)."""
    admin = await env.token()
    body = {"name": "dup", "type": "local-python" if kind == "sources" else "python"}
    assert (await client.post(f"/__api__/{kind}", token=admin, body=body)).code == 201

    reply = await client.post(f"/__api__/{kind}", token=admin, body=body)

    assert reply.code == 409
    assert "already exists" in reply.error
    assert reply.json()["code"] == 409
    assert "already exists" in reply.phrase


@pytest.mark.parametrize(("method", "path", "body", "code", "message"), [
    ("POST", "/__api__/sources", {"name": "x", "type": "conda"}, 400, "unknown source type"),
    ("GET", "/__api__/sources", None, 401, "authentication required"),
    ("POST", "/__api__/repos/none/subscriptions", {"source": "x"}, 404, "no repo named"),
    ("DELETE", "/__api__/sources/none", None, 404, "no source named 'none'"),
])
@pytest_twisted.ensureDeferred
async def test_api_errors_carry_the_message_in_the_reason_phrase(
    env: AppEnv, client: Client, method: str, path: str, body: Any, code: int, message: str
) -> None:
    """Every JSON API error puts its message in the reason phrase too, as the error
    handler means to, so clients that print only the status line say why."""
    token = None if code == 401 else await env.token()

    reply = await client.request(method, path, token=token, body=body)

    assert reply.code == code
    assert message in reply.error
    assert message in reply.phrase


@pytest_twisted.ensureDeferred
async def test_unknown_types_are_400_listing_the_valid_ones(env: AppEnv, client: Client) -> None:
    """An unknown source or repo type answers 400 naming every valid type."""
    admin = await env.token()

    source = await client.post("/__api__/sources", token=admin,
                               body={"name": "x", "type": "conda"})
    repo = await client.post("/__api__/repos", token=admin, body={"name": "x", "type": "npm"})

    assert source.code == 400
    assert "'conda'" in source.error
    assert "local, local-python" in source.error
    assert repo.code == 400
    assert "'npm'" in repo.error
    assert "python, r" in repo.error
    assert await env.catalog.list_sources() == []
    assert await env.catalog.list_repos() == []


@pytest_twisted.ensureDeferred
async def test_subscribe_keeps_the_order(env: AppEnv, client: Client) -> None:
    """Subscribing a repo to sources keeps them in subscription order; a missing source
    answers 404 listing the sources, an R source cannot feed a Python repo (400), and
    subscribing twice answers 409."""
    admin = await env.token()
    await setup_repo(client, admin, sources=("second", "first"))
    assert (await client.post("/__api__/sources", token=admin,
                              body={"name": "cran", "type": "local"})).code == 201

    repos = await client.get("/__api__/repos", token=admin)
    missing = await client.post("/__api__/repos/python/subscriptions", token=admin,
                                body={"source": "nope"})
    r_source = await client.post("/__api__/repos/python/subscriptions", token=admin,
                                 body={"source": "cran"})
    twice = await client.post("/__api__/repos/python/subscriptions", token=admin,
                              body={"source": "first"})

    assert repos.json()[0]["sources"] == ["second", "first"]
    assert missing.code == 404
    assert "cran, first, second" in missing.error
    assert r_source.code == 400
    assert twice.code == 409


# Routing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/no/such/page"),
    ("GET", "/favicon.ico"),
    ("GET", "/python/latest/simple/example-package/extra/"),
    ("GET", "/python/../python/latest/simple/"),
    ("POST", "/upload/pypi/uploads/../uploads"),
    ("GET", "/__api__/nothing"),
])
@pytest_twisted.ensureDeferred
async def test_unrouted_url_is_404(client: Client, method: str, path: str) -> None:
    """A URL no route matches answers 404 (not a 500 "see the server log")."""
    reply = await client.request(method, path)

    assert reply.code == 404, reply


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/__api__/status"),
    ("PUT", "/__api__/sources"),
    ("GET", "/upload/pypi/uploads/"),
])
@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405(client: Client, method: str, path: str) -> None:
    """A known URL with a method it does not take answers 405 with an Allow header."""
    reply = await client.request(method, path)

    assert reply.code == 405, reply
    assert reply.header("allow")


@pytest_twisted.ensureDeferred
async def test_project_url_without_trailing_slash_redirects(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """/simple/<project> without its trailing slash redirects to the URL with it."""
    await published(env, client, dist, signer)

    reply = await client.get("/python/latest/simple/example-package")

    assert reply.code in (301, 308), reply
    location = reply.header("location")
    assert location is not None
    assert urljoin("http://test/python/latest/simple/example-package", location) == (
        "http://test/python/latest/simple/example-package/")


# Authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/__api__/sources"), ("POST", "/__api__/sources"), ("GET", "/__api__/repos"),
    ("GET", "/__api__/tokens"), ("POST", "/__api__/tokens"), ("GET", "/__api__/events"),
    ("POST", "/__api__/tokens/revoke"), ("POST", "/__api__/repos/python/subscriptions"),
])
@pytest_twisted.ensureDeferred
async def test_no_token_is_401_with_www_authenticate(
    client: Client, method: str, path: str
) -> None:
    """An admin route without a token answers 401, asks for credentials, and says how."""
    reply = await client.request(method, path, body={"name": "x", "type": "local-python"})

    assert reply.code == 401
    assert reply.header("www-authenticate") == 'Basic realm="packagemanager"'
    assert "authentication required" in reply.error
    assert reply.json()["code"] == 401


@pytest_twisted.ensureDeferred
async def test_source_token_on_admin_route_is_403(env: AppEnv, client: Client) -> None:
    """A valid sources:write token is not enough for an admin route: 403."""
    source = await env.python_source()
    token = await env.source_token(source)

    listing = await client.get("/__api__/sources", token=token)
    creation = await client.post("/__api__/sources", token=token,
                                 body={"name": "mine", "type": "local-python"})

    assert listing.code == 403
    assert "global:admin" in listing.error
    assert creation.code == 403
    assert [s.name for s in await env.catalog.list_sources()] == ["uploads"]


@pytest_twisted.ensureDeferred
async def test_forged_and_unrecorded_tokens_are_401(env: AppEnv, client: Client) -> None:
    """A token signed with another key, a tampered one, an unrecorded one and garbage
    are all refused with 401."""
    guid = str(uuid.uuid4())
    forged, _ = TokenAuthority(generate_key(), ADDRESS, env.clock).mint(
        Grant("global:admin", ()), guid=guid, expires_in=None)
    await env.token_store.create_token(guid, "", "global:admin", (), None, "local-admin")
    good = await env.token("sources:write", None)
    header, payload, signature = good.split(".")
    claims_json = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims_json["scopes"] = {"global": "admin"}
    raised = base64.urlsafe_b64encode(json.dumps(claims_json).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{raised}.{signature}"
    unrecorded = await env.token(record=False)

    replies = {name: await client.get("/__api__/sources", token=token) for name, token in (
        ("forged", forged), ("tampered", tampered), ("unrecorded", unrecorded),
        ("garbage", "not-a-jwt"),
    )}

    assert {name: r.code for name, r in replies.items()} == dict.fromkeys(replies, 401)
    assert "signature" in replies["forged"].error
    assert "signature" in replies["tampered"].error
    assert "not known" in replies["unrecorded"].error
    assert all(r.header("www-authenticate") for r in replies.values())


@pytest_twisted.ensureDeferred
async def test_revoked_token_is_401(env: AppEnv, client: Client) -> None:
    """A token revoked through the API is refused at once, though its signature is fine."""
    admin = await env.token()
    created = await create_token(client, admin, scope="global:admin", description="ci")
    token, guid = created.json()["token"], created.json()["guid"]
    assert (await client.get("/__api__/sources", token=token)).code == 200

    revoked = await client.post("/__api__/tokens/revoke", token=admin, body={"guid": guid})
    refused = await client.get("/__api__/sources", token=token)

    assert revoked.code == 200
    assert revoked.json()["guid"] == guid
    assert revoked.json()["revoked"] == env.clock()
    assert refused.code == 401
    assert "revoked" in refused.error


@pytest_twisted.ensureDeferred
async def test_an_expired_token_can_be_revoked_by_its_value(env: AppEnv, client: Client) -> None:
    """Revoking by the token's value needs only a token this server signed: an expired one
    is revoked too; one signed by another key is refused naming the reason."""
    admin = await env.token(expires_in=30 * 86400)
    created = await create_token(client, admin, scope="global:admin", expires="1h")
    assert created.code == 201, created
    env.clock.advance(7200)

    revoked = await client.post("/__api__/tokens/revoke", token=admin,
                                body={"token": created.json()["token"]})
    forged = TokenAuthority(generate_key(), ADDRESS, env.clock).mint(
        Grant("global:admin", ()), guid=str(uuid.uuid4()), expires_in=None)[0]
    refused = await client.post("/__api__/tokens/revoke", token=admin, body={"token": forged})

    assert revoked.code == 200, revoked
    assert revoked.json()["guid"] == created.json()["guid"]
    assert revoked.json()["revoked"] == env.clock()
    assert refused.code == 400
    assert "signature is invalid" in refused.error


@pytest_twisted.ensureDeferred
async def test_expired_token_is_401(env: AppEnv, client: Client) -> None:
    """A token created with --expires=1h works for an hour, then answers 401."""
    admin = await env.token()
    created = await create_token(client, admin, scope="global:admin", expires="1h")
    token = created.json()["token"]
    assert created.json()["expires"] == START + 3600

    env.clock.advance(3599)
    before = await client.get("/__api__/sources", token=token)
    env.clock.advance(2)
    after = await client.get("/__api__/sources", token=token)

    assert before.code == 200
    assert after.code == 401
    assert "expired" in after.error


@pytest_twisted.ensureDeferred
async def test_tokens_disabled_refuses_tokens_naming_the_setting(tmp_path: Path) -> None:
    """With APITokenAuth off, a request carrying a token answers 401 with a message that
    names [Authentication] APITokenAuth, and the status says tokens are off."""
    with app_env(tmp_path, tokens_enabled=False) as env:
        client = Client(env.app.resource())
        token, _ = TokenAuthority(generate_key(), ADDRESS, env.clock).mint(
            Grant("global:admin", ()), guid=str(uuid.uuid4()), expires_in=None)

        reply = await client.get("/__api__/sources", token=token)
        status = await client.get("/__api__/status")

    assert reply.code == 401
    assert "[Authentication] APITokenAuth" in reply.error
    assert reply.header("www-authenticate")
    assert status.json()["api_token_auth"] is False


@pytest_twisted.ensureDeferred
async def test_tokens_disabled_without_a_token_names_the_setting(tmp_path: Path) -> None:
    """With APITokenAuth off, a TCP request without a token is told that tokens are
    disabled ([Authentication] APITokenAuth), not to send a token that cannot work."""
    with app_env(tmp_path, tokens_enabled=False) as env:
        reply = await Client(env.app.resource()).get("/__api__/sources")

    assert reply.code == 401
    assert "[Authentication] APITokenAuth" in reply.error


@pytest_twisted.ensureDeferred
async def test_tokens_disabled_token_creation_is_409_naming_the_setting(tmp_path: Path) -> None:
    """With APITokenAuth off, the local administrator asking for a token gets 409 naming
    [Authentication] APITokenAuth; nothing is recorded."""
    with app_env(tmp_path, tokens_enabled=False) as env:
        local = Client(LocalAdmin(env.app.resource()))
        sources = await local.get("/__api__/sources")
        reply = await local.post("/__api__/tokens", body={"scope": "global:admin"})
        recorded = await env.token_store.list_tokens()

    assert sources.code == 200
    assert reply.code == 409
    assert "[Authentication] APITokenAuth" in reply.error
    assert recorded == []


# The token API ---------------------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    value = jwt.decode(token, options={"verify_signature": False})
    assert isinstance(value, dict)
    return value


@pytest_twisted.ensureDeferred
async def test_create_token_with_each_scope(env: AppEnv, client: Client) -> None:
    """Each scope mints a token whose claims name the targets' GUIDs, lists the target
    names, and is accepted by the server; an unknown scope answers 400 listing them."""
    admin = await env.token()
    await setup_repo(client, admin)
    source = await env.catalog.get_source("uploads")
    repo = await env.catalog.get_repo("python")

    write = await create_token(client, admin, scope="sources:write", sources="uploads",
                               description="CI for uploads")
    read = await create_token(client, admin, scope="repos:read", repos="python")
    full = await create_token(client, admin, scope="global:admin")
    default = await create_token(client, admin, sources="uploads")
    unknown = await create_token(client, admin, scope="everything")

    assert (write.code, read.code, full.code, default.code) == (201, 201, 201, 201)
    assert write.json()["scope"] == "sources:write"
    assert write.json()["targets"] == ["uploads"]
    assert write.json()["description"] == "CI for uploads"
    assert write.json()["created_by"] == "token:" + _claims(admin)["jti"]
    assert _claims(write.json()["token"])["scopes"] == {"sources": source.guid}
    assert _claims(write.json()["token"])["jti"] == write.json()["guid"]
    assert _claims(write.json()["token"])["aud"] == "packagemanager"
    assert "exp" not in _claims(write.json()["token"])
    assert _claims(read.json()["token"])["scopes"] == {"repos": repo.guid}
    assert read.json()["targets"] == ["python"]
    assert _claims(full.json()["token"])["scopes"] == {"global": "admin"}
    assert default.json()["scope"] == "sources:write"
    assert unknown.code == 400
    assert all(s in unknown.error for s in ("sources:write", "repos:read", "global:admin"))
    assert (await client.get("/__api__/sources", token=full.json()["token"])).code == 200
    assert (await client.get("/__api__/sources", token=write.json()["token"])).code == 403


@pytest_twisted.ensureDeferred
async def test_create_token_for_all_or_several_sources(env: AppEnv, client: Client) -> None:
    """--sources='*' grants every source; a comma list grants exactly those, in order;
    '*' mixed with names and no sources at all answer 400."""
    admin = await env.token()
    await setup_repo(client, admin, sources=("a", "b", "c"))
    guids = {s.name: s.guid for s in await env.catalog.list_sources()}

    everything = await create_token(client, admin, scope="sources:write", sources="*")
    several = await create_token(client, admin, scope="sources:write", sources="c, a")
    mixed = await create_token(client, admin, scope="sources:write", sources="*,a")
    none = await create_token(client, admin, scope="sources:write")

    assert everything.code == 201
    assert everything.json()["targets"] == "*"
    assert _claims(everything.json()["token"])["scopes"] == {"sources": "*"}
    assert several.code == 201
    assert several.json()["targets"] == ["c", "a"]
    assert _claims(several.json()["token"])["scopes"] == {"sources": [guids["c"], guids["a"]]}
    assert mixed.code == 400
    assert none.code == 400
    assert "--sources" in none.error


@pytest_twisted.ensureDeferred
async def test_create_token_for_unknown_source_is_404_listing_sources(
    env: AppEnv, client: Client
) -> None:
    """Naming a source that does not exist answers 404 listing the sources that do;
    the same for repos; no token is recorded."""
    admin = await env.token()
    await setup_repo(client, admin, sources=("alpha", "beta"))

    source = await create_token(client, admin, scope="sources:write", sources="alpha,gamma")
    repo = await create_token(client, admin, scope="repos:read", repos="cran")

    assert source.code == 404
    assert "'gamma'" in source.error
    assert "(sources: alpha, beta)" in source.error
    assert repo.code == 404
    assert "'cran'" in repo.error
    assert "python" in repo.error
    assert len(await env.token_store.list_tokens()) == 1


@pytest.mark.parametrize("expires", ["tomorrow", "0d", "-1h", "1w", "1.5h", "10", "999999d"])
@pytest_twisted.ensureDeferred
async def test_bad_expires_is_400(env: AppEnv, client: Client, expires: str) -> None:
    """An --expires value that is not <n>s/m/h/d or never (or is absurdly long) is 400."""
    admin = await env.token()

    reply = await create_token(client, admin, scope="global:admin", expires=expires)

    assert reply.code == 400
    assert "--expires" in reply.error
    assert len(await env.token_store.list_tokens()) == 1


@pytest_twisted.ensureDeferred
async def test_list_tokens_with_filters(env: AppEnv, client: Client) -> None:
    """GET /__api__/tokens lists every token; ?expired= and ?revoked= take yes or no and
    combine; another value answers 400."""
    admin = await env.token()
    admin_guid = _claims(admin)["jti"]
    forever = (await create_token(client, admin, scope="global:admin")).json()
    hourly = (await create_token(client, admin, scope="global:admin", expires="1h")).json()
    revoked = (await create_token(client, admin, scope="global:admin", expires="1d")).json()
    await client.post("/__api__/tokens/revoke", token=admin, body={"guid": revoked["guid"]})
    env.clock.advance(2 * 3600)

    async def listed(query: str = "") -> list[str]:
        reply = await client.get(f"/__api__/tokens{query}", token=admin)
        assert reply.code == 200, reply
        return sorted(t["guid"] for t in reply.json())

    assert await listed() == sorted([admin_guid, forever["guid"], hourly["guid"],
                                     revoked["guid"]])
    assert await listed("?expired=yes") == [hourly["guid"]]
    assert await listed("?expired=no") == sorted([admin_guid, forever["guid"], revoked["guid"]])
    assert await listed("?revoked=yes") == [revoked["guid"]]
    assert await listed("?revoked=no&expired=no") == sorted([admin_guid, forever["guid"]])
    assert await listed("?revoked=yes&expired=yes") == []
    everything = (await client.get("/__api__/tokens", token=admin)).json()
    assert all("token" not in t for t in everything)
    entry = next(t for t in everything if t["guid"] == hourly["guid"])
    assert (entry["expired"], entry["expires"], entry["revoked"]) == (True, START + 3600, None)
    bad = await client.get("/__api__/tokens?expired=maybe", token=admin)
    assert bad.code == 400
    assert "yes or no" in bad.error


@pytest_twisted.ensureDeferred
async def test_revoke_by_token(env: AppEnv, client: Client) -> None:
    """A token can be revoked by presenting the token itself; revoking an unknown GUID is
    404, a malformed token 400, and a request naming nothing 400."""
    admin = await env.token()
    created = (await create_token(client, admin, scope="global:admin")).json()

    reply = await client.post("/__api__/tokens/revoke", token=admin,
                              body={"token": created["token"]})
    unknown = await client.post("/__api__/tokens/revoke", token=admin,
                                body={"guid": str(uuid.uuid4())})
    malformed = await client.post("/__api__/tokens/revoke", token=admin,
                                  body={"token": "not-a-token"})
    nothing = await client.post("/__api__/tokens/revoke", token=admin, body={})

    assert reply.code == 200
    assert reply.json()["guid"] == created["guid"]
    assert reply.json()["revoked"] is not None
    assert (await client.get("/__api__/sources", token=created["token"])).code == 401
    assert unknown.code == 404
    assert malformed.code == 400
    assert "cannot revoke" in malformed.error
    assert nothing.code == 400


@pytest_twisted.ensureDeferred
async def test_token_events_are_logged(env: AppEnv, client: Client) -> None:
    """Creating and revoking a token through the API each leave an event row."""
    admin = await env.token()
    created = (await create_token(client, admin, scope="global:admin")).json()
    await client.post("/__api__/tokens/revoke", token=admin, body={"guid": created["guid"]})

    events = (await client.get("/__api__/events", token=admin)).json()

    mine = [(e["action"], e["actor"]) for e in events if e["subject"] == created["guid"]]
    actor = "token:" + _claims(admin)["jti"]
    assert mine == [("token.revoked", actor), ("token.created", actor)]


# Uploads through StubTreq (the route's non-streaming fallback) ---------------------------------


@pytest_twisted.ensureDeferred
async def test_upload_then_identical_then_different(
    env: AppEnv, client: Client, dist: Path
) -> None:
    """An upload answers 200; the identical file again answers 200; another file under the
    same name answers 400 with "File already exists" in the reason phrase."""
    admin = await env.token()
    await setup_repo(client, admin)
    token = (await create_token(client, admin, sources="uploads")).json()["token"]
    path = build_wheel(dist)
    original = path.read_bytes()

    first = await publish(client, token, "uploads", path)
    again = await publish(client, token, "uploads", path)
    other_dir = dist / "other"
    other_dir.mkdir()
    changed = build_wheel(other_dir, payload_size=64)
    different = await publish(client, token, "uploads", changed)

    assert first.code == 200
    assert first.body == f"OK: {path.name} added to uploads\n".encode()
    assert again.code == 200
    assert b"already in uploads with the same contents" in again.body
    assert different.code == 400
    assert "File already exists" in different.phrase
    rows = await env.python_rows()
    assert [r["sha256"] for r in rows] == [hashlib.sha256(original).hexdigest()]
    assert env.temp_files() == []


# The simple index ------------------------------------------------------------------------------


@dataclass
class Published:
    wheel: Path
    sdist: Path
    newer: Path
    signature: bytes


async def published(env: AppEnv, client: Client, dist: Path, signer: Signer) -> Published:
    """example-package 1.0.0 (wheel, sdist) and 1.1.0 (signed wheel) in repo 'python'."""
    admin = await env.token()
    await setup_repo(client, admin)
    token = (await create_token(client, admin, sources="uploads")).json()["token"]
    wheel = build_wheel(dist)
    sdist = build_sdist(dist)
    newer = build_wheel(dist, version="1.1.0", requires_python=">=3.9,<4")
    signature = signer.sign(newer)
    for path, version, sig in ((wheel, "1.0.0", None), (sdist, "1.0.0", None),
                               (newer, "1.1.0", signature)):
        reply = await publish(client, token, "uploads", path, version=version, signature=sig)
        assert reply.code == 200, reply
        env.clock.advance(60)
    return Published(wheel, sdist, newer, signature)


def _metadata_of(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("accept", "expected"), [
    (None, TEXT_HTML),
    ("", TEXT_HTML),
    ("text/html", TEXT_HTML),
    ("*/*", TEXT_HTML),
    (JSON_V1, JSON_V1),
    ("application/vnd.pypi.simple.latest+json", JSON_V1),
    ("Application/VND.PyPI.Simple.V1+JSON", JSON_V1),
    (HTML_V1, HTML_V1),
    ("application/vnd.pypi.simple.latest+html", HTML_V1),
    (PIP_ACCEPT, JSON_V1),
    (f"{JSON_V1};q=0.2, text/html;q=0.8", TEXT_HTML),
    (f"text/html;q=0.1, {JSON_V1}", JSON_V1),
    (f"{JSON_V1};q=0.5, text/html", TEXT_HTML),
    (f"text/html, {JSON_V1}", TEXT_HTML),
    (f"application/xml, {HTML_V1};q=0.3", HTML_V1),
    ("application/xml, */*;q=0.1", TEXT_HTML),
])
@pytest_twisted.ensureDeferred
async def test_index_content_negotiation(
    env: AppEnv, client: Client, dist: Path, signer: Signer, accept: str | None, expected: str
) -> None:
    """The root and project pages answer the representation the Accept header prefers
    (PEP 691: q-values, then order), with Vary: Accept."""
    await published(env, client, dist, signer)
    headers = {} if accept is None else {"Accept": accept}

    root = await client.get("/python/latest/simple/", headers=headers)
    project = await client.get("/python/latest/simple/example-package/", headers=headers)

    for reply in (root, project):
        assert reply.code == 200, reply
        assert reply.header("content-type") == expected
        assert reply.header("vary") == "Accept"
        if expected == JSON_V1:
            assert reply.json()["meta"] == {"api-version": "1.1"}
        else:
            assert b'<meta name="pypi:repository-version" content="1.1">' in reply.body


@pytest.mark.parametrize("accept", [
    "application/xml", "application/vnd.pypi.simple.v2+json", "text/plain",
    f"{JSON_V1};q=0", f"{JSON_V1};q=0, text/html;q=0",
])
@pytest_twisted.ensureDeferred
async def test_index_unsupported_accept_is_406(
    env: AppEnv, client: Client, dist: Path, signer: Signer, accept: str
) -> None:
    """An Accept header that allows none of the offered types answers 406, naming them."""
    await published(env, client, dist, signer)

    root = await client.get("/python/latest/simple/", headers={"Accept": accept})
    project = await client.get("/python/latest/simple/example-package/",
                               headers={"Accept": accept})

    for reply in (root, project):
        assert reply.code == 406
        assert JSON_V1.encode() in reply.body


@pytest_twisted.ensureDeferred
async def test_index_root_lists_projects(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """The root page links each project by its normalized name (HTML) and lists it (JSON)."""
    await published(env, client, dist, signer)

    page = await client.get("/python/latest/simple/")
    listing = await client.get("/python/latest/simple/", headers={"Accept": JSON_V1})

    assert b'<a href="example-package/">example-package</a>' in page.body
    assert listing.json()["projects"] == [{"name": "example-package"}]
    resolved = urljoin("http://test/python/latest/simple/", "example-package/")
    assert (await client.get(resolved.removeprefix("http://test"))).code == 200


@pytest_twisted.ensureDeferred
async def test_project_json_has_pep700_and_pep658_fields(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """The PEP 691 JSON page carries versions, size and upload-time (PEP 700), hashes,
    requires-python, core-metadata (PEP 658/714) and gpg-sig."""
    files = await published(env, client, dist, signer)

    reply = await client.get("/python/latest/simple/example-package/",
                             headers={"Accept": JSON_V1})

    page = reply.json()
    assert page["meta"] == {"api-version": "1.1"}
    assert page["name"] == "example-package"
    assert page["versions"] == ["1.0.0", "1.1.0"]
    by_name = {f["filename"]: f for f in page["files"]}
    # Oldest version first; within one, by filename.
    assert list(by_name) == [files.wheel.name, files.sdist.name, files.newer.name]
    for index, path in enumerate((files.wheel, files.sdist, files.newer)):
        entry = by_name[path.name]
        data = path.read_bytes()
        assert entry["url"] == f"../../files/{path.name}"
        assert entry["hashes"] == {"sha256": _sha256(data)}
        assert entry["size"] == len(data)
        uploaded = datetime.fromtimestamp(START + 60 * index, UTC)
        assert entry["upload-time"] == uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert entry["yanked"] is False
    wheel = by_name[files.wheel.name]
    assert wheel["requires-python"] == ">=3.8"
    assert wheel["core-metadata"] == {"sha256": _sha256(_metadata_of(files.wheel))}
    assert wheel["dist-info-metadata"] == wheel["core-metadata"]
    assert wheel["gpg-sig"] is False
    assert by_name[files.newer.name]["requires-python"] == ">=3.9,<4"
    assert by_name[files.newer.name]["gpg-sig"] is True


@pytest_twisted.ensureDeferred
async def test_project_html_attributes(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """The PEP 503 page links each file with its sha256 fragment, an HTML-escaped
    data-requires-python, data-core-metadata and data-gpg-sig."""
    files = await published(env, client, dist, signer)

    reply = await client.get("/python/latest/simple/example-package/")

    text = reply.body.decode()
    assert "<title>Links for example-package</title>" in text
    wheel_sha = _sha256(files.wheel.read_bytes())
    metadata_sha = _sha256(_metadata_of(files.wheel))
    assert (
        f'<a href="../../files/{files.wheel.name}#sha256={wheel_sha}" '
        f'data-requires-python="&gt;=3.8" '
        f'data-dist-info-metadata="sha256={metadata_sha}" '
        f'data-core-metadata="sha256={metadata_sha}" '
        f'data-gpg-sig="false">{files.wheel.name}</a>'
    ) in text
    newer = next(line for line in text.splitlines() if files.newer.name + "#" in line)
    assert 'data-requires-python="&gt;=3.9,&lt;4"' in newer
    assert 'data-gpg-sig="true"' in newer
    assert ">=3.9" not in newer


@pytest.mark.parametrize("spelling", ["Example_Package", "example.package", "EXAMPLE-package",
                                      "example__package"])
@pytest_twisted.ensureDeferred
async def test_non_normalized_project_redirects(
    env: AppEnv, client: Client, dist: Path, signer: Signer, spelling: str
) -> None:
    """A project URL that is not PEP 503-normalized answers 301 to the normalized one."""
    await published(env, client, dist, signer)
    url = f"http://test/python/latest/simple/{spelling}/"

    reply = await client.get(url.removeprefix("http://test"))

    assert reply.code == 301
    location = reply.header("location")
    assert location is not None
    assert urljoin(url, location) == "http://test/python/latest/simple/example-package/"


@pytest_twisted.ensureDeferred
async def test_unknown_repo_project_and_r_repo_are_404(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """An unknown repo, an unknown project and an R repo have no simple index: 404."""
    await published(env, client, dist, signer)
    admin = await env.token()
    assert (await client.post("/__api__/repos", token=admin,
                              body={"name": "cran", "type": "r"})).code == 201

    for path in ("/nope/latest/simple/", "/nope/latest/simple/example-package/",
                 "/python/latest/simple/missing/", "/cran/latest/simple/",
                 "/cran/latest/simple/example-package/",
                 "/nope/latest/files/example_package-1.0.0-py3-none-any.whl",
                 "/python/latest/files/missing-1.0.tar.gz",
                 "/python/latest/files/not-a-distribution.txt"):
        reply = await client.get(path)
        assert reply.code == 404, path


@pytest_twisted.ensureDeferred
async def test_error_answers_are_never_sniffed(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """Every error answer, from the admin API (JSON) or from the repo pages (text), says
    X-Content-Type-Options: nosniff, so no browser renders an error body as a page."""
    await published(env, client, dist, signer)

    replies = {
        "api 401": await client.get("/__api__/sources"),
        "api 404": await client.request("DELETE", "/__api__/sources/none",
                                        token=await env.token()),
        "unknown repo": await client.get("/nope/latest/simple/"),
        "unknown project": await client.get("/python/latest/simple/missing/"),
        "unknown file": await client.get("/python/latest/files/missing-1.0.tar.gz"),
        "406": await client.get("/python/latest/simple/", headers={"Accept": "text/plain"}),
    }

    assert {k: r.code for k, r in replies.items()} == {
        "api 401": 401, "api 404": 404, "unknown repo": 404, "unknown project": 404,
        "unknown file": 404, "406": 406}
    for name, reply in replies.items():
        assert reply.header("x-content-type-options") == "nosniff", name
    assert replies["api 404"].header("content-type") == "application/json"
    assert replies["unknown project"].header("content-type") == "text/plain; charset=utf-8"
    assert replies["unknown project"].text.startswith("404 no project 'missing'")


@pytest_twisted.ensureDeferred
async def test_file_download_with_etag(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """A file downloads byte for byte with an ETag; If-None-Match with that ETag answers
    304 with no body, another ETag the file again."""
    files = await published(env, client, dist, signer)
    path = f"/python/latest/files/{files.wheel.name}"

    reply = await client.get(path)
    etag = reply.header("etag")
    cached = await client.get(path, headers={"If-None-Match": etag or ""})
    stale = await client.get(path, headers={"If-None-Match": '"0000"'})
    sdist = await client.get(f"/python/latest/files/{files.sdist.name}")

    assert reply.code == 200
    assert reply.body == files.wheel.read_bytes()
    assert reply.header("content-type") == "application/zip"
    assert etag == f'"{_sha256(files.wheel.read_bytes())}"'
    assert cached.code == 304
    assert cached.body == b""
    assert stale.code == 200
    assert stale.body == files.wheel.read_bytes()
    assert sdist.body == files.sdist.read_bytes()
    assert sdist.header("content-type") == "application/gzip"


@pytest_twisted.ensureDeferred
async def test_metadata_and_signature_urls(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """<file>.metadata serves the core metadata whose hash the index announces;
    <file>.asc serves the uploaded signature, and is 404 for an unsigned file."""
    files = await published(env, client, dist, signer)
    base = "/python/latest/files/"

    metadata = await client.get(f"{base}{files.wheel.name}.metadata")
    signature = await client.get(f"{base}{files.newer.name}.asc")
    unsigned = await client.get(f"{base}{files.wheel.name}.asc")
    cached = await client.get(f"{base}{files.wheel.name}.metadata",
                              headers={"If-None-Match": metadata.header("etag") or ""})

    assert metadata.code == 200
    assert metadata.body == _metadata_of(files.wheel)
    assert metadata.header("etag") == f'"{_sha256(metadata.body)}"'
    assert signature.code == 200
    assert signature.body == files.signature
    assert signature.header("content-type") == "application/pgp-signature"
    assert unsigned.code == 404
    assert cached.code == 304
    rows = {r["filename"]: r for r in await env.python_rows()}
    assert signer.fingerprint.endswith(rows[files.newer.name]["signature_keyid"])
    assert rows[files.newer.name]["signature_trusted"] == 0


@pytest_twisted.ensureDeferred
async def test_first_subscribed_source_wins_a_project(
    env: AppEnv, client: Client, dist: Path
) -> None:
    """With two sources subscribed, a project in both is served only from the first
    subscribed (whatever the upload order); a project only in the second still shows."""
    admin = await env.token()
    await setup_repo(client, admin, sources=("first", "second"))
    token = (await create_token(client, admin, sources="*")).json()["token"]
    (dist / "1").mkdir()
    (dist / "2").mkdir()
    old = build_wheel(dist / "2", version="1.0.0")
    only_second = build_wheel(dist / "2", name="other-package", version="3.0")
    new = build_wheel(dist / "1", version="2.0.0")
    assert (await publish(client, token, "second", old)).code == 200
    assert (await publish(client, token, "second", only_second, name="other-package",
                          version="3.0")).code == 200
    assert (await publish(client, token, "first", new, version="2.0.0")).code == 200

    root = (await client.get("/python/latest/simple/", headers={"Accept": JSON_V1})).json()
    project = (await client.get("/python/latest/simple/example-package/",
                                headers={"Accept": JSON_V1})).json()
    other = (await client.get("/python/latest/simple/other-package/",
                              headers={"Accept": JSON_V1})).json()
    shadowed = await client.get(f"/python/latest/files/{old.name}")
    served = await client.get(f"/python/latest/files/{new.name}")

    assert root["projects"] == [{"name": "example-package"}, {"name": "other-package"}]
    assert project["versions"] == ["2.0.0"]
    assert [f["filename"] for f in project["files"]] == [new.name]
    assert [f["filename"] for f in other["files"]] == [only_second.name]
    assert shadowed.code == 404
    assert served.body == new.read_bytes()


@pytest_twisted.ensureDeferred
async def test_reupload_adds_a_missing_signature_and_keeps_an_existing_one(
    env: AppEnv, client: Client, dist: Path, signer: Signer
) -> None:
    """Re-uploading an identical unsigned file with a signature gives it that signature
    (served at <file>.asc, shown in the index); a later re-upload with another signature
    answers 200 and keeps the first; one with a broken signature is refused."""
    files = await published(env, client, dist, signer)
    token = (await create_token(client, await env.token(), sources="uploads")).json()["token"]
    first = signer.sign(files.wheel)
    second = signer.sign(files.wheel, "--digest-algo", "SHA512")
    assert first != second

    added = await publish(client, token, "uploads", files.wheel, signature=first)
    again = await publish(client, token, "uploads", files.wheel, signature=second)
    broken = await publish(client, token, "uploads", files.wheel,
                           signature=b"this is not an OpenPGP signature\n")

    assert added.code == 200 and "its signature was added" in added.text
    assert again.code == 200 and "signature" not in again.text
    assert broken.code == 400 and "Invalid signature" in broken.phrase
    served = await client.get(f"/python/latest/files/{files.wheel.name}.asc")
    assert served.code == 200 and served.body == first
    page = await client.get("/python/latest/simple/example-package/")
    assert f'href="../../files/{files.wheel.name}#' in page.text
    assert page.text.count('data-gpg-sig="true"') == 2
    rows = {r["filename"]: r for r in await env.python_rows()}
    assert signer.fingerprint.endswith(rows[files.wheel.name]["signature_keyid"])
    assert env.temp_files() == []
