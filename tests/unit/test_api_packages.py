"""The packages part of the JSON API, for R and Python sources alike.

``GET /__api__/sources/{s}``, listing a source's or a repo's packages (search, count,
page), ``rspm remove`` (``packages/remove`` with ``@all``, ``@current``, ``@1.2.3``),
``rspm archive`` (``packages/archive``), and ``rspm add`` of Python distributions, with
the statuses each answers when refused. Additions go through the streaming upload path
and everything else through StubTreq, on one in-memory server (``test_r_repo``'s
harness); the R tarballs are real ``R CMD build`` output, built once for the module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pm.catalog import Source
from pm.housekeeping import Swept
from pm.r.cran import ArchivedFile, render_archive_rds, render_packages
from tests.support.packages import build_sdist, build_wheel, multipart_body, upload_fields
from tests.unit.appfixture import START, Signer, app_env
from tests.unit.test_app import Client, Reply, basic
from tests.unit.test_r_repo import (
    CONTRIB,
    GOOD_DESCRIPTION,
    Harness,
    RTarballs,
    build_tarballs,
    entry,
    response_json,
    sha256_of,
    tar_gz,
)
from tests.unit.test_upload import public_site

SOURCE_API = "/__api__/sources/cran-local"
PY_API = "/__api__/sources/uploads"


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> RTarballs:
    """The module's R CMD build output."""
    return build_tarballs(tmp_path_factory.mktemp("rpkgs"))


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer]:
    """One OpenPGP signing key for the module; the server does not trust it."""
    made = Signer()
    yield made
    made.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A fresh in-memory server with API tokens enabled."""
    with app_env(tmp_path / "server") as env:
        yield Harness(env, Client(env.app.resource()), public_site(env))


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """Where test distributions are built (outside the server's DataDir)."""
    path = tmp_path / "dist"
    path.mkdir()
    return path


async def r_published(h: Harness, t: RTarballs) -> tuple[Source, str]:
    """Repo 'cran' on source 'cran-local' holding alpha 1.9.0 (added at START + 10),
    alpha 1.10.0 (START + 20) and beta 0.1-1; the source's token."""
    (source,) = await h.r_repo()
    token = await h.env.source_token(source)
    for offset, path in ((10, t.alpha_old), (20, t.alpha), (30, t.beta)):
        h.env.clock.now = START + offset
        assert (await h.add_file(source.name, path, token=token)).status == 201
    return source, token


async def python_repo(h: Harness, sources: tuple[str, ...] = ("uploads",)) -> list[Source]:
    """local-python sources and a python repo 'python' subscribed to them in order."""
    made = [await h.env.python_source(name) for name in sources]
    await h.env.catalog.create_repo("python", "python", "", "local-admin")
    for name in sources:
        await h.env.catalog.subscribe("python", name, "local-admin")
    return made


def summary(name: str, version: str | None, versions: list[str], *,
            archived: list[str] | None = None, files: int | None = None,
            source: str = "cran-local") -> dict[str, Any]:
    return {"name": name, "version": version, "versions": versions,
            "archived": archived or [], "files": len(versions) if files is None else files,
            "source": source}


def names(reply: Reply) -> list[str]:
    return [p["name"] for p in reply.json()["packages"]]


# GET /__api__/sources/{source} ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_source_for_those_who_may_publish_to_it(harness: Harness) -> None:
    """A source is shown to a token that may publish to it and to an admin; a token for
    another source is 403, no token 401."""
    source = await harness.env.r_source()
    other = await harness.env.r_source("other")
    client = harness.client

    mine = await client.get(SOURCE_API, token=await harness.env.source_token(source))
    admin = await client.get(SOURCE_API, token=await harness.env.token())
    foreign = await client.get(SOURCE_API, token=await harness.env.source_token(other))
    anonymous = await client.get(SOURCE_API)

    assert mine.code == 200, mine
    assert mine.json() == {"guid": source.guid, "name": "cran-local", "type": "local",
                           "created": source.created_at}
    assert admin.json() == mine.json()
    assert foreign.code == 403
    assert "does not allow publishing to source 'cran-local'" in foreign.error
    assert anonymous.code == 401
    assert anonymous.header("www-authenticate") == 'Basic realm="packagemanager"'


@pytest_twisted.ensureDeferred
async def test_get_unknown_source(harness: Harness) -> None:
    """An unknown source is 404 for a token that could publish to it, and 403 for a token
    limited to other sources (which learns nothing of which sources exist)."""
    mine = await harness.env.r_source()
    for token in (await harness.env.token(), await harness.env.token("sources:write", None)):
        reply = await harness.client.get("/__api__/sources/nowhere", token=token)
        assert reply.code == 404, reply
        assert reply.error == "no source named 'nowhere'"
    limited = await harness.client.get("/__api__/sources/nowhere",
                                       token=await harness.env.source_token(mine))
    assert limited.code == 403, limited
    assert limited.error == "the token does not allow publishing to source 'nowhere'"


# Listing ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_source_packages_lists_r_packages_with_their_versions(
    harness: Harness, tarballs: RTarballs
) -> None:
    """A source's listing has each package once: its current version, every version in
    R's order, how many files, and the source; sorted by name, paged by 100."""
    _, token = await r_published(harness, tarballs)

    reply = await harness.client.get(f"{SOURCE_API}/packages", token=token)

    assert reply.code == 200, reply
    assert reply.json() == {
        "packages": [summary("alpha", "1.10.0", ["1.9.0", "1.10.0"]),
                     summary("beta", "0.1-1", ["0.1-1"])],
        "total": 2, "page": 1, "count": 100,
    }


@pytest.mark.parametrize(("query", "expected"), [
    ("ALP", ["alpha"]),
    ("a", ["alpha", "beta"]),
    ("et", ["beta"]),
    ("%", []),
    ("_", []),
    ("gamma", []),
])
@pytest_twisted.ensureDeferred
async def test_source_packages_search(
    harness: Harness, tarballs: RTarballs, query: str, expected: list[str]
) -> None:
    """search= keeps the packages whose name contains it, whatever the case; LIKE's
    wildcards are taken literally."""
    _, token = await r_published(harness, tarballs)

    reply = await harness.client.get(f"{SOURCE_API}/packages?search={query.replace('%', '%25')}",
                                     token=token)

    assert reply.code == 200, reply
    assert names(reply) == expected
    assert reply.json()["total"] == len(expected)


@pytest_twisted.ensureDeferred
async def test_source_packages_count_and_page(harness: Harness, tarballs: RTarballs) -> None:
    """count= and page= cut the sorted listing into pages; total counts them all; a page
    past the end is empty."""
    _, token = await r_published(harness, tarballs)
    url = f"{SOURCE_API}/packages"

    pages = [await harness.client.get(f"{url}?count=1&page={n}", token=token)
             for n in (1, 2, 3)]

    assert [names(p) for p in pages] == [["alpha"], ["beta"], []]
    assert [(p.json()["total"], p.json()["page"], p.json()["count"]) for p in pages] == [
        (2, 1, 1), (2, 2, 1), (2, 3, 1)]
    empty = await harness.client.get(f"{url}?count=&page=", token=token)
    assert (empty.json()["page"], empty.json()["count"]) == (1, 100)


@pytest.mark.parametrize(("query", "message"), [
    ("count=0", "--count must be between 1 and 1000"),
    ("count=1001", "--count must be between 1 and 1000"),
    ("count=-5", "--count must be between 1 and 1000"),
    ("count=ten", "--count takes a number, not 'ten'"),
    ("page=0", "--page starts at 1"),
    ("page=1.5", "--page takes a number, not '1.5'"),
])
@pytest.mark.parametrize("route", ["sources/cran-local", "repos/cran"])
@pytest_twisted.ensureDeferred
async def test_bad_count_or_page_is_400(
    harness: Harness, route: str, query: str, message: str
) -> None:
    """A count or page that is no number, or out of range, is 400 with the reason."""
    await harness.r_repo()

    reply = await harness.client.get(f"/__api__/{route}/packages?{query}",
                                     token=await harness.env.token())

    assert reply.code == 400, reply
    assert reply.error == message
    assert message in reply.phrase


@pytest_twisted.ensureDeferred
async def test_listing_a_source_needs_a_token_for_it(harness: Harness) -> None:
    """A source's packages are listed for a token of that source only: 401 without one,
    403 for another source's, 404 for an unknown source."""
    source = await harness.env.r_source()
    other = await harness.env.r_source("other")
    url = f"{SOURCE_API}/packages"

    assert (await harness.client.get(url)).code == 401
    foreign = await harness.client.get(url, token=await harness.env.source_token(other))
    assert foreign.code == 403
    assert (await harness.client.get(url, token=await harness.env.source_token(source))
            ).code == 200
    unknown = await harness.client.get("/__api__/sources/nowhere/packages",
                                       token=await harness.env.token())
    assert unknown.code == 404


@pytest_twisted.ensureDeferred
async def test_repo_packages_first_source_wins(harness: Harness, tarballs: RTarballs) -> None:
    """A repo's listing takes each package from the first subscribed source that has it,
    naming that source; an unknown repo is 404 and no token 401."""
    first, second = await harness.r_repo("cran", ("first", "second"))
    for source, paths in ((first, [tarballs.alpha_old]),
                          (second, [tarballs.alpha, tarballs.beta])):
        token = await harness.env.source_token(source)
        for path in paths:
            assert (await harness.add_file(source.name, path, token=token)).status == 201
    admin = await harness.env.token()

    reply = await harness.client.get("/__api__/repos/cran/packages", token=admin)
    searched = await harness.client.get("/__api__/repos/cran/packages?search=BET",
                                        token=admin)

    assert reply.code == 200, reply
    assert reply.json()["packages"] == [
        summary("alpha", "1.9.0", ["1.9.0"], source="first"),
        summary("beta", "0.1-1", ["0.1-1"], source="second"),
    ]
    assert names(searched) == ["beta"]
    assert (await harness.client.get("/__api__/repos/nowhere/packages", token=admin)
            ).code == 404
    assert (await harness.client.get("/__api__/repos/cran/packages")).code == 401


@pytest_twisted.ensureDeferred
async def test_repo_packages_of_python_counts_files_per_version(
    harness: Harness, dist: Path
) -> None:
    """A Python repo's listing counts a version's wheel and sdist as two files, and
    orders versions as PEP 440 does."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)
    for path in (build_wheel(dist), build_sdist(dist), build_wheel(dist, version="1.10.0"),
                 build_wheel(dist, version="1.9.0")):
        assert (await harness.add_file(source.name, path, token=token)).status == 201

    reply = await harness.client.get("/__api__/repos/python/packages",
                                     token=await harness.env.token())

    assert reply.json()["packages"] == [summary(
        "example-package", "1.10.0", ["1.0.0", "1.9.0", "1.10.0"], files=4, source="uploads")]


# Removing --------------------------------------------------------------------------------


async def remove(h: Harness, token: str, body: Any, source: str = "cran-local") -> Reply:
    return await h.client.post(f"/__api__/sources/{source}/packages/remove", token=token,
                               body=body)


@pytest_twisted.ensureDeferred
async def test_remove_one_version_of_an_r_package(harness: Harness, tarballs: RTarballs) -> None:
    """name@1.9.0 removes that file: it leaves the listing, archive.rds and Archive/, the
    current version stays, the event carries the comment, and housekeeping then frees the
    blob."""
    _, token = await r_published(harness, tarballs)

    reply = await remove(harness, token, {"name": "alpha", "version": "1.9.0",
                                          "comment": "broken build"})

    assert reply.code == 200, reply
    assert reply.json() == {"source": "cran-local", "name": "alpha", "removed": [
        {"filename": "alpha_1.9.0.tar.gz", "version": "1.9.0"}]}
    listing = await harness.client.get(f"{SOURCE_API}/packages", token=token)
    assert listing.json()["packages"][0] == summary("alpha", "1.10.0", ["1.10.0"])
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == render_packages(
        [entry(tarballs.alpha), entry(tarballs.beta)])
    assert (await harness.client.get(f"{CONTRIB}/Meta/archive.rds")).body == \
        render_archive_rds({})
    assert (await harness.client.get(f"{CONTRIB}/Archive/alpha/alpha_1.9.0.tar.gz")
            ).code == 404
    (event, *_) = await harness.env.catalog.events()
    assert (event.action, event.subject) == ("r.package.removed", "alpha_1.9.0.tar.gz")
    assert event.detail == f"{sha256_of(tarballs.alpha_old.read_bytes())} broken build"
    assert await harness.env.housekeep() == Swept(temp_files=0, blobs=1)


@pytest_twisted.ensureDeferred
async def test_remove_current_makes_the_next_version_current(
    harness: Harness, tarballs: RTarballs
) -> None:
    """name@current removes the highest version; the next one becomes current and moves
    from the archive to src/contrib/."""
    _, token = await r_published(harness, tarballs)

    reply = await remove(harness, token, {"name": "alpha", "version": "current"})

    assert reply.json()["removed"] == [{"filename": "alpha_1.10.0.tar.gz",
                                        "version": "1.10.0"}]
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == render_packages(
        [entry(tarballs.alpha_old), entry(tarballs.beta)])
    now_current = await harness.client.get(f"{CONTRIB}/{tarballs.alpha_old.name}")
    assert now_current.body == tarballs.alpha_old.read_bytes()
    assert (await harness.client.get(f"{CONTRIB}/{tarballs.alpha.name}")).code == 404


@pytest_twisted.ensureDeferred
async def test_remove_all_versions(harness: Harness, tarballs: RTarballs) -> None:
    """name@all removes every version, in version order; the package is gone."""
    _, token = await r_published(harness, tarballs)

    reply = await remove(harness, token, {"name": "alpha", "version": "all"})

    assert reply.json()["removed"] == [
        {"filename": "alpha_1.9.0.tar.gz", "version": "1.9.0"},
        {"filename": "alpha_1.10.0.tar.gz", "version": "1.10.0"}]
    listing = await harness.client.get(f"{SOURCE_API}/packages", token=token)
    assert names(listing) == ["beta"]
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == render_packages(
        [entry(tarballs.beta)])


@pytest.mark.parametrize(("body", "code", "message"), [
    ({"name": "alpha", "version": "3.0"}, 404,
     "package 'alpha' has no version '3.0' (versions: 1.9.0, 1.10.0)"),
    ({"name": "Alpha", "version": "all"}, 404, "no package 'Alpha' in this source"),
    ({"name": "gamma", "version": "current"}, 404, "no package 'gamma' in this source"),
    ({"version": "all"}, 400, "name the package to remove: --name=PKG@VERSION"),
    ({"name": "", "version": "all"}, 400, "name the package to remove: --name=PKG@VERSION"),
])
@pytest_twisted.ensureDeferred
async def test_remove_what_is_not_there(
    harness: Harness, tarballs: RTarballs, body: dict[str, str], code: int, message: str
) -> None:
    """Removing a version or package that is not there is 404 saying what there is (R
    names are case-sensitive); no name is 400. Nothing is removed."""
    _, token = await r_published(harness, tarballs)

    reply = await remove(harness, token, body)

    assert reply.code == code, reply
    assert reply.error == message
    listing = await harness.client.get(f"{SOURCE_API}/packages", token=token)
    assert [p["versions"] for p in listing.json()["packages"]] == [["1.9.0", "1.10.0"],
                                                                   ["0.1-1"]]


@pytest.mark.parametrize("body", [{"name": "alpha"}, {"name": "alpha", "version": ""}])
@pytest_twisted.ensureDeferred
async def test_remove_without_a_version_is_400_saying_what_to_give(
    harness: Harness, tarballs: RTarballs, body: dict[str, str]
) -> None:
    """A remove that names no version is a malformed request, as one naming no package
    is: 400 saying to give @all, @current or a version, not 404 "no version ''"."""
    _, token = await r_published(harness, tarballs)

    reply = await remove(harness, token, body)

    assert reply.code == 400, reply
    assert "@all" in reply.error and "@current" in reply.error


@pytest_twisted.ensureDeferred
async def test_remove_current_when_all_are_archived_is_404(
    harness: Harness, tarballs: RTarballs
) -> None:
    """@current of an archived package is 404 saying every version is archived; a named
    archived version can still be removed."""
    _, token = await r_published(harness, tarballs)
    await harness.client.post(f"{SOURCE_API}/packages/archive", token=token,
                              body={"name": "alpha"})

    current = await remove(harness, token, {"name": "alpha", "version": "current"})
    named = await remove(harness, token, {"name": "alpha", "version": "1.9.0"})

    assert current.code == 404, current
    assert current.error == "package 'alpha' has no current version (all are archived)"
    assert named.code == 200, named
    assert named.json()["removed"] == [{"filename": "alpha_1.9.0.tar.gz", "version": "1.9.0"}]


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "the request body is not valid JSON"),
    (b'["alpha", "all"]', "the request body must be a JSON object"),
])
@pytest_twisted.ensureDeferred
async def test_remove_with_a_body_that_is_no_json_object_is_400(
    harness: Harness, data: bytes, message: str
) -> None:
    """A body that is not a JSON object is 400 saying so."""
    source = await harness.env.r_source()
    reply = await harness.client.post(f"{SOURCE_API}/packages/remove",
                                      token=await harness.env.source_token(source), data=data,
                                      headers={"Content-Type": "application/json"})
    assert reply.code == 400, reply
    assert reply.error == message


@pytest.mark.parametrize("action", ["remove", "archive"])
@pytest_twisted.ensureDeferred
async def test_remove_and_archive_need_a_token_for_the_source(
    harness: Harness, tarballs: RTarballs, action: str
) -> None:
    """Removing or archiving is 401 without a token, 403 with another source's, 404 for an
    unknown source; nothing changes."""
    await r_published(harness, tarballs)
    other = await harness.env.r_source("other")
    body = {"name": "alpha", "version": "all"}
    url = f"{SOURCE_API}/packages/{action}"

    anonymous = await harness.client.post(url, body=body)
    foreign = await harness.client.post(url, body=body,
                                        token=await harness.env.source_token(other))
    unknown = await harness.client.post(f"/__api__/sources/nowhere/packages/{action}",
                                        body=body, token=await harness.env.token())

    assert anonymous.code == 401, anonymous
    assert foreign.code == 403, foreign
    assert "does not allow publishing to source 'cran-local'" in foreign.error
    assert unknown.code == 404, unknown
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == render_packages(
        [entry(tarballs.alpha), entry(tarballs.beta)])


@pytest_twisted.ensureDeferred
async def test_remove_python_versions_by_any_spelling_of_the_name(
    harness: Harness, dist: Path
) -> None:
    """A Python project is named as the user spells it (normalised as PEP 503 does):
    @1.0.0 removes the version's wheel and sdist, @current the highest by PEP 440, and
    an unknown version is 404 listing the versions."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)
    wheel, sdist = build_wheel(dist), build_sdist(dist)
    newer = build_wheel(dist, version="1.10.0")
    middle = build_wheel(dist, version="1.9.0")
    for path in (wheel, sdist, newer, middle):
        assert (await harness.add_file(source.name, path, token=token)).status == 201

    one = await remove(harness, token, {"name": "Example_Package", "version": "1.0.0"},
                       "uploads")
    current = await remove(harness, token, {"name": "example.package", "version": "current"},
                           "uploads")
    missing = await remove(harness, token, {"name": "example-package", "version": "2.0"},
                           "uploads")

    assert one.code == 200, one
    assert one.json() == {"source": "uploads", "name": "example-package", "removed": [
        {"filename": wheel.name, "version": "1.0.0"},
        {"filename": sdist.name, "version": "1.0.0"}]}
    assert current.json()["removed"] == [{"filename": newer.name, "version": "1.10.0"}]
    assert missing.code == 404
    assert missing.error == "package 'example-package' has no version '2.0' (versions: 1.9.0)"
    assert [r["filename"] for r in await harness.env.python_rows()] == [middle.name]
    assert (await harness.client.get(f"/python/latest/files/{wheel.name}")).code == 404


# Archiving -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_archive_moves_every_version_of_an_r_package_to_the_archive(
    harness: Harness, tarballs: RTarballs
) -> None:
    """Archiving moves every version still current or older: the package leaves PACKAGES
    and src/contrib/, stays installable from Archive/, is listed with no current version;
    archiving it again is 404."""
    _, token = await r_published(harness, tarballs)
    url = f"{SOURCE_API}/packages/archive"

    reply = await harness.client.post(url, token=token, body={"name": "alpha"})
    again = await harness.client.post(url, token=token, body={"name": "alpha"})

    assert reply.code == 200, reply
    assert reply.json() == {"source": "cran-local", "name": "alpha", "archived": [
        {"filename": "alpha_1.10.0.tar.gz", "version": "1.10.0"},
        {"filename": "alpha_1.9.0.tar.gz", "version": "1.9.0"}]}
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == render_packages(
        [entry(tarballs.beta)])
    assert (await harness.client.get(f"{CONTRIB}/{tarballs.alpha.name}")).code == 404
    for path in (tarballs.alpha_old, tarballs.alpha):
        served = await harness.client.get(f"{CONTRIB}/Archive/alpha/{path.name}")
        assert served.body == path.read_bytes(), path.name
    sizes = {p: p.stat().st_size for p in (tarballs.alpha_old, tarballs.alpha)}
    assert (await harness.client.get(f"{CONTRIB}/Meta/archive.rds")).body == \
        render_archive_rds({"alpha": [
            ArchivedFile("alpha", "1.9.0", sizes[tarballs.alpha_old], START + 10),
            ArchivedFile("alpha", "1.10.0", sizes[tarballs.alpha], START + 20)]})
    listing = await harness.client.get(f"{SOURCE_API}/packages", token=token)
    assert listing.json()["packages"][0] == summary(
        "alpha", None, ["1.9.0", "1.10.0"], archived=["1.9.0", "1.10.0"])
    assert again.code == 404, again
    assert again.error == ("package 'alpha' has no current version in source 'cran-local' "
                           "(not added, or archived already)")


@pytest_twisted.ensureDeferred
async def test_a_version_added_after_archiving_is_current(
    harness: Harness, tarballs: RTarballs
) -> None:
    """After archiving, a newly added version is the package's current one again; the
    archived versions stay in the archive."""
    _, token = await r_published(harness, tarballs)
    await harness.client.post(f"{SOURCE_API}/packages/archive", token=token,
                              body={"name": "alpha"})
    description = GOOD_DESCRIPTION.replace(b"1.0.0", b"2.0.0")
    newer = tar_gz([("alpha/DESCRIPTION", description)])

    added = await harness.add("cran-local", "alpha_2.0.0.tar.gz", newer, token=token)

    assert added.status == 201, added
    listing = await harness.client.get(f"{SOURCE_API}/packages", token=token)
    assert listing.json()["packages"][0] == summary(
        "alpha", "2.0.0", ["1.9.0", "1.10.0", "2.0.0"], archived=["1.9.0", "1.10.0"])
    packages = (await harness.client.get(f"{CONTRIB}/PACKAGES")).text
    assert "Package: alpha\nVersion: 2.0.0\n" in packages
    assert f"MD5sum: {hashlib.md5(newer).hexdigest()}" in packages
    served = await harness.client.get(f"{CONTRIB}/alpha_2.0.0.tar.gz")
    assert served.body == newer


@pytest.mark.parametrize(("body", "code", "message"), [
    ({"name": "gamma"}, 404, "package 'gamma' has no current version in source 'cran-local' "
                             "(not added, or archived already)"),
    ({}, 400, "name the package to archive: --name=PKG"),
])
@pytest_twisted.ensureDeferred
async def test_archive_what_is_not_there(
    harness: Harness, tarballs: RTarballs, body: dict[str, str], code: int, message: str
) -> None:
    """Archiving an unknown package is 404, and naming none 400."""
    _, token = await r_published(harness, tarballs)
    reply = await harness.client.post(f"{SOURCE_API}/packages/archive", token=token,
                                      body=body)
    assert reply.code == code, reply
    assert reply.error == message


@pytest_twisted.ensureDeferred
async def test_archive_in_a_python_source_is_400_explaining_there_is_none(
    harness: Harness, dist: Path
) -> None:
    """Python packages have no archive: 400 saying so and what to do instead; the files
    stay in the index."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)
    wheel = build_wheel(dist)
    await harness.add_file(source.name, wheel, token=token)

    reply = await harness.client.post(f"{PY_API}/packages/archive", token=token,
                                      body={"name": "example-package"})

    assert reply.code == 400, reply
    assert "source 'uploads' holds Python packages, which have no archive" in reply.error
    assert "rspm remove package" in reply.error
    assert (await harness.client.get(f"/python/latest/files/{wheel.name}")).body == \
        wheel.read_bytes()


# rspm add of Python distributions ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_python_wheel_and_sdist_without_form_fields(
    harness: Harness, dist: Path
) -> None:
    """A wheel and an sdist sent alone (no name, version or digest fields) are added
    (201), their project and version taken from the filename, and served by the repo."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)

    for path in (build_wheel(dist, "My.Tool", "2.0"), build_sdist(dist, "My.Tool", "2.0")):
        reply = await harness.add(source.name, path.name, path.read_bytes(), token=token)
        assert reply.status == 201, reply
        assert response_json(reply) == {
            "status": "added", "source": "uploads", "filename": path.name, "name": "my-tool",
            "version": "2.0", "sha256": sha256_of(path.read_bytes()),
            "size": path.stat().st_size, "signature_added": False}
        served = await harness.client.get(f"/python/latest/files/{path.name}")
        assert served.body == path.read_bytes()
    listing = await harness.client.get(f"{PY_API}/packages", token=token)
    assert listing.json()["packages"] == [summary("My.Tool", "2.0", ["2.0"], files=2,
                                                  source="uploads")]


@pytest_twisted.ensureDeferred
async def test_add_python_replace_semantics(harness: Harness, dist: Path) -> None:
    """The identical file again is 200 "unchanged" (with replace or not); other contents
    under the name are 409 with the --replace hint, and with replace=true 201 "replaced",
    after which the repo serves the new bytes."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)
    original = build_wheel(dist)
    (dist / "other").mkdir()
    changed = build_wheel(dist / "other", payload_size=100)
    assert changed.name == original.name

    first = await harness.add_file(source.name, original, token=token, replace=True)
    same = await harness.add_file(source.name, original, token=token)
    same_replace = await harness.add_file(source.name, original, token=token, replace=True)
    refused = await harness.add_file(source.name, changed, token=token)
    replaced = await harness.add_file(source.name, changed, token=token, replace=True)

    assert (first.status, response_json(first)["status"]) == (201, "added")
    assert (same.status, response_json(same)["status"]) == (200, "unchanged")
    assert (same_replace.status, response_json(same_replace)["status"]) == (200, "unchanged")
    assert refused.status == 409, refused
    assert f"'{original.name}' already exists in source 'uploads'" in refused.reason
    assert "--replace" in refused.reason
    assert (replaced.status, response_json(replaced)["status"]) == (201, "replaced")
    assert [r["sha256"] for r in await harness.env.python_rows()] == [
        sha256_of(changed.read_bytes())]
    served = await harness.client.get(f"/python/latest/files/{original.name}")
    assert served.body == changed.read_bytes()


@pytest_twisted.ensureDeferred
async def test_add_python_with_a_signature(
    harness: Harness, dist: Path, signer: Signer
) -> None:
    """A signature part is checked and kept with the file, and served as <file>.asc; the
    same file re-added with a signature when it had none gets it (signature_added)."""
    (source,) = await python_repo(harness)
    token = await harness.env.source_token(source)
    signed, unsigned = build_wheel(dist), build_sdist(dist)
    signature = signer.sign(signed)

    first = await harness.add(source.name, signed.name, signed.read_bytes(), token=token,
                              parts=[("gpg_signature", f"{signed.name}.asc", signature)])
    await harness.add(source.name, unsigned.name, unsigned.read_bytes(), token=token)
    late = signer.sign(unsigned)
    again = await harness.add(source.name, unsigned.name, unsigned.read_bytes(), token=token,
                              parts=[("gpg_signature", f"{unsigned.name}.asc", late)])

    assert first.status == 201, first
    served = await harness.client.get(f"/python/latest/files/{signed.name}.asc")
    assert served.code == 200
    assert served.body == signature
    rows = {r["filename"]: r for r in await harness.env.python_rows()}
    assert signer.fingerprint.endswith(rows[signed.name]["signature_keyid"])
    assert again.status == 200, again
    assert response_json(again)["signature_added"] is True
    assert (await harness.client.get(f"/python/latest/files/{unsigned.name}.asc")
            ).body == late


@pytest.mark.parametrize("which", ["alpha", "beta"])
@pytest_twisted.ensureDeferred
async def test_an_r_package_sent_to_a_python_source_is_refused(
    harness: Harness, tarballs: RTarballs, which: str
) -> None:
    """An R source package sent to a Python source is 400, and nothing is kept."""
    (source,) = await python_repo(harness)
    path = getattr(tarballs, which)

    reply = await harness.add_file(source.name, path,
                                   token=await harness.env.source_token(source))

    assert reply.status == 400, reply
    assert await harness.env.python_rows() == []
    assert await harness.r_rows() == []
    await harness.nothing_kept()


@pytest.mark.parametrize("which", ["alpha", "beta"])
@pytest_twisted.ensureDeferred
async def test_an_r_package_sent_to_a_python_source_is_told_why(
    harness: Harness, tarballs: RTarballs, which: str
) -> None:
    """The refusal says why, as the other direction does ("R source packages are .tar.gz
    files"): the source takes Python packages, and R packages go to an R source."""
    (source,) = await python_repo(harness)
    path = getattr(tarballs, which)

    reply = await harness.add_file(source.name, path,
                                   token=await harness.env.source_token(source))

    assert reply.status == 400, reply
    assert "Python" in reply.reason, reply.reason
    assert "R " in reply.reason, reply.reason


@pytest_twisted.ensureDeferred
async def test_warehouse_upload_to_an_r_source_is_refused(
    harness: Harness, dist: Path
) -> None:
    """twine's route (/upload/pypi/{source}) refuses an R source with 400 saying it takes
    no Python packages, before storing anything."""
    source = await harness.env.r_source()
    wheel = build_wheel(dist)
    data, content_type = multipart_body(
        upload_fields(wheel, "example-package", "1.0.0"),
        [("content", wheel.name, wheel.read_bytes())])

    reply = await harness.client.post(f"/upload/pypi/{source.name}/", data=data, headers={
        "Content-Type": content_type, "Authorization": basic(await harness.env.token())})

    assert reply.code == 400, reply
    assert ("source 'cran-local' is of type 'local' and cannot take Python packages; "
            "upload to a local-python source") in reply.phrase
    assert await harness.env.python_rows() == []
    assert await harness.r_rows() == []
    await harness.nothing_kept()
