"""Authenticated repos: who may read their index, files and pages, and how they are made.

The whole in-memory server (``appfixture``) is driven through StubTreq with the
cached read path in front of the app, as the listeners serve it, so a page cached
for one client is seen to be (or not to be) answered to the next. Content is
recorded straight into the tables with its blobs written, as ``test_reads`` does.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_twisted
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from pm.accesslog import redact, redacted_log_formatter
from pm.assembly import assemble
from pm.catalog import Catalog, Repo, Source
from pm.config import parse_config
from pm.db import Database
from pm.errors import ConfigError
from pm.r.files import RPackageFile
from pm.testing import Clock
from tests.support.fakeserver import FakeServer, Reply, rspm
from tests.support.records import ACTOR, KINDS, START, migrated_dialect, python_file
from tests.unit.appfixture import AppEnv, app_env, in_thread
from tests.unit.test_app import Client, LocalAdmin, basic
from tests.unit.test_ui import BROWSER, parse

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
WHEEL = "secret_demo-1.0-py3-none-any.whl"
TARBALL = "secretR_1.0.tar.gz"
OLD_TARBALL = "secretR_0.9.tar.gz"
PYTHON_PATHS = (
    "/private/latest/simple/",
    "/private/latest/simple/secret-demo/",
    f"/private/latest/files/{WHEEL}",
    f"/private/latest/files/{WHEEL}.asc",
    f"/private/latest/files/{WHEEL}.metadata",
)
R_PATHS = (
    "/rprivate/latest/src/contrib/PACKAGES",
    "/rprivate/latest/src/contrib/PACKAGES.gz",
    "/rprivate/latest/src/contrib/PACKAGES.rds",
    "/rprivate/latest/src/contrib/Meta/archive.rds",
    f"/rprivate/latest/src/contrib/{TARBALL}",
    f"/rprivate/latest/src/contrib/Archive/secretR/{OLD_TARBALL}",
)
EVERY_PATH = PYTHON_PATHS + R_PATHS


@dataclass
class Site:
    """A server with an authenticated Python repo, an authenticated R repo and a public
    Python repo, each fed by a source of its own that holds one package."""

    env: AppEnv
    client: Client
    private: Repo
    rprivate: Repo
    public: Repo
    secret_source: Source


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _python_package(env: AppEnv, source: Source, filename: str, project: str) -> None:
    content = b"wheel bytes of " + filename.encode()
    signature = b"-----BEGIN PGP SIGNATURE-----\n" + filename.encode()
    metadata = b"Metadata-Version: 2.1\nName: " + project.encode() + b"\n"
    record = python_file(source, filename, project=project, content=content,
                         metadata_sha256=_sha256(metadata), signature_sha256=_sha256(signature))
    env.blobs.write_bytes(content, record.sha256, "")
    env.blobs.write_bytes(signature, _sha256(signature), ".asc")
    env.blobs.write_bytes(metadata, _sha256(metadata), ".metadata")
    await env.python_files.add(record, source.name)


async def _r_package(env: AppEnv, source: Source, version: str, *, archived: bool) -> None:
    content = f"tarball of secretR {version}".encode()
    record = RPackageFile(
        source_guid=source.guid, package="secretR", version=version,
        filename=f"secretR_{version}.tar.gz", size=len(content), sha256=_sha256(content),
        md5=hashlib.md5(content).hexdigest(),
        fields={"Package": "secretR", "Version": version, "License": "GPL-3"},
        archived=archived, uploaded_at=1_700_000_000.0, uploaded_by="local-admin")
    env.blobs.write_bytes(content, record.sha256, "")
    await env.parts.r.files.put(record, source.name, replace=False)


async def build_site(env: AppEnv) -> Site:
    catalog = env.catalog
    secret = await env.python_source("secret-src")
    open_source = await env.python_source("open-src")
    r_source = await env.r_source("secret-r-src")
    private = await catalog.create_repo("private", "python", "", "local-admin", True)
    rprivate = await catalog.create_repo("rprivate", "r", "", "local-admin", True)
    public = await catalog.create_repo("public", "python", "", "local-admin")
    for repo, source in ((private, secret), (rprivate, r_source), (public, open_source)):
        await catalog.subscribe(repo.name, source.name, "local-admin")
    await _python_package(env, secret, WHEEL, "secret-demo")
    await _python_package(env, open_source, "open_demo-1.0-py3-none-any.whl", "open-demo")
    await _r_package(env, r_source, "0.9", archived=True)
    await _r_package(env, r_source, "1.0", archived=False)
    return Site(env, Client(env.parts.resource()), await catalog.get_repo("private"),
                await catalog.get_repo("rprivate"), await catalog.get_repo("public"), secret)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """The in-memory server with API tokens enabled."""
    with app_env(tmp_path) as built:
        yield built


@pytest_twisted.async_fixture
async def site(env: AppEnv) -> Site:
    """The repos and packages of :class:`Site`."""
    return await build_site(env)


async def _reader(site: Site, *repos: Repo) -> str:
    """A repos:read token for exactly these repos."""
    return await site.env.token("repos:read", tuple(r.guid for r in repos))


def _repo_of(site: Site, path: str) -> Repo:
    return site.rprivate if path.startswith("/rprivate/") else site.private


# Reading an authenticated repo ---------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_PATH)
@pytest_twisted.ensureDeferred
async def test_no_token_is_401_with_a_basic_challenge(site: Site, path: str) -> None:
    """Index pages, files, .asc, .metadata and the R index and tarballs of an
    authenticated repo answer 401 without credentials, with a Basic challenge (what
    makes pip, uv and browsers send theirs) and the reason in the status line."""
    reply = await site.client.get(path)
    assert reply.code == 401
    assert reply.header("WWW-Authenticate") == 'Basic realm="packagemanager"'
    assert "requires authentication" in reply.phrase and "__token__" in reply.phrase


@pytest.mark.parametrize("path", EVERY_PATH)
@pytest_twisted.ensureDeferred
async def test_a_covering_token_reads_by_basic_and_by_bearer(site: Site, path: str) -> None:
    """A repos:read token for the repo reads every page and file, sent as the password
    of __token__ (pip, uv, R) or as Bearer (curl); the bytes are the public ones."""
    token = await _reader(site, _repo_of(site, path))
    by_basic = await site.client.get(path, headers={"Authorization": basic(token)})
    by_bearer = await site.client.get(path, token=token)
    assert by_basic.code == by_bearer.code == 200, by_basic.text
    assert by_basic.body == by_bearer.body and by_basic.body


@pytest.mark.parametrize("path", EVERY_PATH)
@pytest_twisted.ensureDeferred
async def test_a_token_that_does_not_cover_the_repo_is_403(site: Site, path: str) -> None:
    """A repos:read token for another repo, and a sources:write token (even for the
    repo's own source), are valid but do not allow reading: 403 naming the repo."""
    other = await _reader(site, site.public)
    writer = await site.env.source_token(site.secret_source)
    for token in (other, writer):
        reply = await site.client.get(path, headers={"Authorization": basic(token)})
        assert reply.code == 403, reply.text
        assert f"does not allow reading repo '{_repo_of(site, path).name}'" in reply.phrase


@pytest_twisted.ensureDeferred
async def test_all_repos_and_admin_tokens_and_the_admin_socket_read(site: Site) -> None:
    """repos:read for '*' and global:admin read any authenticated repo; the local
    administrator on the admin socket needs no token."""
    path = f"/private/latest/files/{WHEEL}"
    for token in (await site.env.token("repos:read", None), await site.env.token()):
        assert (await site.client.get(path, token=token)).code == 200
    local = Client(LocalAdmin(site.env.parts.resource()))  # type: ignore[arg-type]
    assert (await local.get(path)).code == 200


@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_401(site: Site) -> None:
    """A revoked, forged or unrecorded token, another Basic user name and a malformed
    header are all 401 for an authenticated repo."""
    path = "/private/latest/simple/"
    revoked = await _reader(site, site.private)
    await site.env.token_store.revoke_token(site.env.issued[-1], "local-admin")
    unrecorded = await site.env.token("repos:read", (site.private.guid,), record=False)
    forged = revoked[:-4] + ("AAAA" if not revoked.endswith("AAAA") else "BBBB")
    for header in (basic(revoked), basic(unrecorded), basic(forged), "Bearer x.y.z",
                   "Basic X19fX186", "Digest abc"):
        reply = await site.client.get(path, headers={"Authorization": header})
        assert reply.code == 401, (header, reply.text)
    wrong_user = await site.client.get(path, headers={
        "Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()})
    assert wrong_user.code == 401 and "__token__" in wrong_user.phrase


@pytest_twisted.ensureDeferred
async def test_a_public_repo_ignores_whatever_credentials_come(site: Site) -> None:
    """A repo that is not authenticated is read with no token, and a stale or malformed
    Authorization header (a netrc sends it to every URL of the host) does not stop it."""
    path = "/public/latest/simple/open-demo/"
    for headers in ({}, {"Authorization": "Bearer stale.token.value"},
                    {"Authorization": "Digest nonsense"}):
        assert (await site.client.get(path, headers=headers)).code == 200


@pytest_twisted.ensureDeferred
async def test_tokens_disabled_make_an_authenticated_repo_say_so(tmp_path: Path) -> None:
    """With [Authentication] APITokenAuth off, nobody reads an authenticated repo over
    TCP, and the 401 names the setting."""
    with app_env(tmp_path, tokens_enabled=False) as env:
        await env.catalog.create_repo("private", "python", "", "local-admin", True)
        reply = await Client(env.parts.resource()).get("/private/latest/simple/")
    assert reply.code == 401 and "APITokenAuth" in reply.phrase


@pytest_twisted.ensureDeferred
async def test_an_unknown_repo_is_still_404(site: Site) -> None:
    """Authentication is asked for repos that exist; an unknown name is 404 as before."""
    assert (await site.client.get("/nowhere/latest/simple/")).code == 404


# The cache in front of the app ----------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_PATH)
@pytest_twisted.ensureDeferred
async def test_a_page_cached_for_a_token_is_never_answered_without_one(
        site: Site, path: str) -> None:
    """A page made for a covering token is cached (the next such request is a hit), yet
    a request without a token is still 401 and one with another repo's token 403: the
    answer before routing never serves an authenticated repo."""
    token = await _reader(site, _repo_of(site, path))
    cache = site.env.parts.pages.cache
    first = await site.client.get(path, token=token, headers=JSON)
    hits = cache.hits
    again = await site.client.get(path, token=token, headers=JSON)
    assert first.code == again.code == 200 and again.body == first.body
    assert cache.hits > hits
    assert (await site.client.get(path, headers=JSON)).code == 401
    other = await _reader(site, site.public)
    assert (await site.client.get(path, token=other, headers=JSON)).code == 403


@pytest_twisted.ensureDeferred
async def test_public_pages_are_still_answered_before_routing(site: Site) -> None:
    """A public repo's cached page is answered by the read path itself: the repo is not
    read from the catalog again for it."""
    path = "/public/latest/simple/open-demo/"
    assert (await site.client.get(path)).code == 200
    reads: list[str] = []
    get_repo = site.env.catalog.get_repo

    async def counting(name: str) -> Repo:
        reads.append(name)
        return await get_repo(name)

    site.env.catalog.get_repo = counting  # type: ignore[method-assign]
    assert (await site.client.get(path)).code == 200
    assert reads == []


@pytest_twisted.ensureDeferred
async def test_editing_a_repo_takes_effect_on_the_next_request_on_every_node(
        site: Site) -> None:
    """A public repo's page is cached on two nodes sharing the database; made
    authenticated through one, the very next anonymous request to the other is 401.
    Made public again, it is read without a token again."""
    env = site.env
    other = assemble(env.database, env.blobs, env.authority, env.signatures, env.clock,
                     in_thread, 3600.0)
    node_b = Client(other.resource())
    path = "/public/latest/simple/open-demo/"
    for node in (site.client, node_b):
        assert (await node.get(path)).code == 200
        assert (await node.get(path)).code == 200

    admin = await env.token()
    edited = await site.client.post("/__api__/repos/public", token=admin,
                                    body={"authenticated": True})
    assert edited.code == 200 and edited.json()["authenticated"] is True
    for node in (node_b, site.client):
        assert (await node.get(path)).code == 401

    await other.catalog.edit_repo("public", "local-admin", authenticated=False)
    for node in (site.client, node_b):
        assert (await node.get(path)).code == 200


@pytest_twisted.ensureDeferred
async def test_a_repo_made_authenticated_while_its_page_is_made_is_protected(
        site: Site) -> None:
    """The repo is read as public, then made authenticated before its page is stored:
    the page is filed under the serial read before the repo, which the change moved
    past, so the next anonymous request is 401, not that page from the cache."""
    path = "/public/latest/simple/open-demo/"
    catalog = site.env.catalog
    get_repo = catalog.get_repo

    async def then_edited(name: str) -> Repo:
        repo = await get_repo(name)
        catalog.get_repo = get_repo  # type: ignore[method-assign]
        await catalog.edit_repo(name, "local-admin", authenticated=True)
        return repo

    catalog.get_repo = then_edited  # type: ignore[method-assign]
    assert (await site.client.get(path)).code == 200
    assert (await site.client.get(path)).code == 401


# Creating and editing -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_creates_and_edits_authenticated_repos(env: AppEnv) -> None:
    """POST /__api__/repos takes authenticated (default false); POST /__api__/repos/{name}
    changes it and the description; every repo's JSON says authenticated; each change
    is an event."""
    client = Client(env.parts.resource())
    admin = await env.token()
    made = await client.post("/__api__/repos", token=admin,
                             body={"name": "team", "type": "r", "authenticated": True})
    plain = await client.post("/__api__/repos", token=admin,
                              body={"name": "open", "type": "python"})
    assert made.code == plain.code == 201
    assert made.json()["authenticated"] is True and plain.json()["authenticated"] is False

    edited = await client.post("/__api__/repos/team", token=admin,
                               body={"authenticated": False, "description": "for all"})
    assert edited.code == 200
    assert (edited.json()["authenticated"], edited.json()["description"]) == (False, "for all")
    listed = await client.get("/__api__/repos", token=admin)
    assert {r["name"]: r["authenticated"] for r in listed.json()} == {"open": False,
                                                                     "team": False}
    events = [(e["action"], e["subject"], e["detail"]) for e in
              (await client.get("/__api__/events", token=admin)).json()]
    assert ("repo.edited", "team", "authenticated=false description") in events
    assert ("repo.created", "team", "r authenticated") in events


@pytest_twisted.ensureDeferred
async def test_an_edit_that_changes_nothing_records_nothing(env: AppEnv) -> None:
    """Setting what is already set answers the repo and writes no event."""
    await env.catalog.create_repo("team", "python", "", "local-admin", True)
    before = len(await env.catalog.events())
    repo = await env.catalog.edit_repo("team", "local-admin", authenticated=True)
    assert repo.authenticated and len(await env.catalog.events()) == before


@pytest.mark.parametrize(("body", "code", "message"), [
    ({"authenticated": "yes"}, 400, "'authenticated' must be true or false"),
    ({"authenticated": 1}, 400, "'authenticated' must be true or false"),
    ({"description": 5}, 400, "'description' must be a string"),
])
@pytest_twisted.ensureDeferred
async def test_api_refuses_values_that_are_not_booleans(env: AppEnv, body: dict[str, object],
                                                        code: int, message: str) -> None:
    """authenticated is a JSON true or false, on creation and on edit; 400 otherwise."""
    client = Client(env.parts.resource())
    admin = await env.token()
    await env.catalog.create_repo("team", "python", "", "local-admin")
    created = await client.post("/__api__/repos", token=admin,
                                body={"name": "x", "type": "python", **body})
    edited = await client.post("/__api__/repos/team", token=admin, body=body)
    for reply in (edited, created) if "authenticated" in body else (edited,):
        assert reply.code == code and message in reply.error


@pytest_twisted.ensureDeferred
async def test_editing_needs_admin_and_an_existing_repo(site: Site) -> None:
    """A repos:read token may read the repo but not change it (403); an unknown repo is
    404."""
    reader = await _reader(site, site.private)
    refused = await site.client.post("/__api__/repos/private", token=reader,
                                     body={"authenticated": False})
    assert refused.code == 403
    missing = await site.client.post("/__api__/repos/nowhere", token=await site.env.token(),
                                     body={"authenticated": True})
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_listing_an_authenticated_repos_packages_needs_a_covering_token(
        site: Site) -> None:
    """GET /__api__/repos/{repo}/packages of an authenticated repo: 403 for a token that
    does not cover it (a sources:write token for its source too), 200 for one that does;
    a public repo's listing is as before."""
    path = "/__api__/repos/private/packages"
    writer = await site.env.source_token(site.secret_source)
    assert (await site.client.get(path, token=writer)).code == 403
    listing = await site.client.get(path, token=await _reader(site, site.private))
    assert listing.code == 200
    assert [p["name"] for p in listing.json()["packages"]] == ["Secret-Demo"]
    assert (await site.client.get("/__api__/repos/public/packages", token=writer)).code == 200


@pytest_twisted.ensureDeferred
async def test_new_repos_auth_by_default_is_the_default_of_create(env: AppEnv) -> None:
    """With NewReposAuthByDefault, a repo created without saying so is authenticated;
    saying so either way wins."""
    catalog = Catalog(env.database, [env.parts.python.kind, env.parts.r.kind], env.clock,
                      new_repos_authenticated=True)
    assert (await catalog.create_repo("a", "python", "", "local-admin")).authenticated
    assert not (await catalog.create_repo("b", "python", "", "local-admin",
                                          False)).authenticated
    assert not (await env.catalog.create_repo("c", "python", "", "local-admin")).authenticated
    assert (await env.catalog.get_repo("a")).authenticated


@pytest_twisted.ensureDeferred
async def test_the_catalog_keeps_authenticated_on_each_database(
        provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """On SQLite and PostgreSQL alike (migration 0008), a repo is created authenticated
    or not, read back as it was made, and edited; the edit is one event, and making a
    repo authenticated is followed by a second one, written after the edit committed,
    that moves the change serial past every read made before it."""
    database = Database(migrated_dialect(provider, tmp_path, request))
    try:
        catalog = Catalog(database, KINDS, Clock(START))
        made = await catalog.create_repo("team", "python", "", ACTOR, True)
        await catalog.create_repo("open", "r", "", ACTOR)
        assert [(r.name, r.authenticated) for r in await catalog.list_repos()] == [
            ("open", False), ("team", True)]
        assert await catalog.get_repo("team") == made
        edited = await catalog.edit_repo("team", ACTOR, authenticated=False)
        assert edited == replace(made, authenticated=False)
        assert (await catalog.get_repo("team")).authenticated is False
        assert (await catalog.events(1))[0].detail == "authenticated=false"
        await catalog.edit_repo("open", ACTOR, authenticated=True)
        protected, edited_event = await catalog.events(2)
        assert (edited_event.action, edited_event.detail) == ("repo.edited",
                                                              "authenticated=true")
        assert (protected.action, protected.subject) == ("repo.protected", "open")
        assert protected.id > edited_event.id
    finally:
        database.close()


def test_new_repos_auth_by_default_config() -> None:
    """[Authentication] NewReposAuthByDefault is false by default, a boolean, and a bare
    key means true; a bad value names the file, line and key."""
    assert parse_config("", "x.gcfg").new_repos_auth_by_default is False
    on = parse_config("[Authentication]\nNewReposAuthByDefault = yes\n", "x.gcfg")
    bare = parse_config("[authentication]\nnewreposauthbydefault\n", "x.gcfg")
    assert on.new_repos_auth_by_default is bare.new_repos_auth_by_default is True
    with pytest.raises(ConfigError) as info:
        parse_config("[Authentication]\nNewReposAuthByDefault = maybe\n", "x.gcfg")
    assert str(info.value).startswith(
        'x.gcfg:2: [Authentication] NewReposAuthByDefault = "maybe": not a boolean')


# The web UI ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_home_and_search_hide_what_a_visitor_cannot_read(site: Site) -> None:
    """A visitor sees neither the authenticated repos nor the sources only they serve,
    nor their package names (in lists, search or recent activity: a package event does
    not say its source, so while a hidden source holds packages of a kind no event of
    that kind is shown); a covering token sent as a browser sends it (Basic) shows
    everything."""
    hidden = ("secret-demo", "secret_demo", "secretr", "secret-src", "secret-r-src",
              "private")
    home = parse(await site.client.get("/", headers=BROWSER)).text.lower()
    found = parse(await site.client.get("/search?q=secret", headers=BROWSER)).text.lower()
    for text in (home, found):
        assert not [name for name in hidden if name in text], text
    assert "public" in home and "open-src" in home and "open_demo" not in home

    token = await site.env.token("repos:read", None)
    headers = {**BROWSER, "Authorization": basic(token)}
    home = parse(await site.client.get("/", headers=headers)).text
    found = parse(await site.client.get("/search?q=secret", headers=headers)).text
    assert all(name in home for name in ("private", "rprivate", "secret-src", WHEEL,
                                         "open_demo", TARBALL))
    assert "secret-demo" in found.lower() or "secret_demo" in found.lower()


@pytest_twisted.ensureDeferred
async def test_a_stale_token_on_home_shows_the_public_repos(site: Site) -> None:
    """Credentials that are not valid count as none on pages that list repos: the home
    page is the visitor's, not an error."""
    headers = {**BROWSER, "Authorization": "Bearer not.a.token"}
    reply = await site.client.get("/", headers=headers)
    assert reply.code == 200 and "private" not in re.sub(r"\s+", " ", parse(reply).text)


@pytest.mark.parametrize("path", ["/repos/private/", "/repos/private/packages/secret-demo/",
                                  "/repos/rprivate/packages/secretR/"])
@pytest_twisted.ensureDeferred
async def test_an_authenticated_repos_pages_ask_a_browser_to_sign_in(site: Site,
                                                                     path: str) -> None:
    """Without a token a browser gets a 401 page with a Basic challenge (it then asks
    for user and password) that names no package; another repo's token gets 403; a
    covering token gets the page."""
    refused = await site.client.get(path, headers=BROWSER)
    assert refused.code == 401
    assert refused.header("WWW-Authenticate") == 'Basic realm="packagemanager"'
    assert refused.header("content-type") == "text/html; charset=utf-8"
    assert "Sign in required" in parse(refused).text
    other = await _reader(site, site.public)
    assert (await site.client.get(path, headers={**BROWSER, "Authorization": basic(other)})
            ).code == 403
    token = await _reader(site, site.private, site.rprivate)
    shown = await site.client.get(path, headers={**BROWSER, "Authorization": basic(token)})
    assert shown.code == 200, shown.text


# The access log --------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ('"GET /x/?token=abc.def&q=1 HTTP/1.1"', '"GET /x/?token=***&q=1 HTTP/1.1"'),
    ("/x?a=1&api_key=s3cret;Password=hunter2", "/x?a=1&api_key=***;Password=***"),
    ("/x?to%6Ben=s3cret", "/x?to%6Ben=***"),
    ("GET http://__token__:s3cret@host/python/ HTTP/1.1",
     "GET http://__token__:***@host/python/ HTTP/1.1"),
    ("/files/eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl/x", "/files/***/x"),
    ("/python/latest/simple/?page=2&q=token", "/python/latest/simple/?page=2&q=token"),
])
def test_redact_takes_credentials_out_of_log_lines(line: str, expected: str) -> None:
    """Query values of secret-named parameters, URL passwords and anything shaped like
    a JWT become ***; everything else is left as it was."""
    assert redact(line) == expected


def test_the_access_log_line_has_no_token() -> None:
    """The Site's formatter writes the combined log format with the token in the URL and
    in the referrer replaced."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2lnbmF0dXJl"
    request = server.Request(DummyChannel())
    request.uri = f"/python/latest/simple/?token={token}".encode()
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.setResponseCode(200)
    request.requestHeaders.setRawHeaders(b"referer", [f"http://h/?t={token}".encode()])
    line = redacted_log_formatter("[01/Jan/2026:00:00:00 +0000]", request)
    assert token not in line
    assert '"GET /python/latest/simple/?token=*** HTTP/1.1" 200' in line


# rspm -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "sent"), [
    (("--authenticated",), True),
    (("--authenticated=true",), True),
    (("--authenticated=false",), False),
    (("--no-authenticated",), False),
    ((), None),
])
def test_rspm_create_repo_sends_authenticated(args: tuple[str, ...], sent: bool | None) -> None:
    """create repo sends authenticated as given (Posit's --authenticated, with or without
    =true/false, and --no-authenticated), and leaves it out, for the server's default,
    when neither is given."""
    with FakeServer() as server:
        server.on("POST", "/__api__/repos", Reply(201, {
            "name": "team", "type": "python", "guid": "g", "authenticated": bool(sent)}))
        result = rspm("create", "repo", "--name=team", "--type=python", *args, server=server)
    assert result.exit_code == 0, result.output
    body = server.made("POST", "/__api__/repos")[0].json()
    assert body.get("authenticated") == sent and ("authenticated" in body) == (sent is not None)


def test_rspm_edit_repo() -> None:
    """edit repo posts what changes to /__api__/repos/{name} and says what reading the
    repo needs now; with nothing to change, or both flags, it stops before sending."""
    with FakeServer() as server:
        server.on("POST", "/__api__/repos/team", Reply(200, {
            "name": "team", "type": "r", "authenticated": True}))
        done = rspm("edit", "repo", "--name=team", "--authenticated", server=server)
        nothing = rspm("edit", "repo", "--name=team", server=server)
        both = rspm("edit", "repo", "--name=team", "--authenticated", "--no-authenticated",
                    server=server)
    assert done.exit_code == 0, done.output
    assert done.stdout == "Repo 'team' changed: reading it needs a repos:read token\n"
    assert server.made("POST", "/__api__/repos/team")[0].json() == {"authenticated": True}
    assert len(server.made("POST", "/__api__/repos/team")) == 1
    assert nothing.exit_code == both.exit_code == 1
    assert "say what to change" in nothing.stderr and "not both" in both.stderr
