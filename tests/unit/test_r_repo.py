"""R repositories and ``rspm add`` of R packages, through the whole in-memory server.

Packages are added the way ``rspm add`` sends them: ``POST /__api__/sources/{source}/
packages`` streamed through the server's own request factory (``test_upload``'s
harness); the repo pages under ``/{repo}/latest/src/contrib/`` are read through
StubTreq (``test_app``'s client). The tarballs are real ``R CMD build`` output, built once
for the module; hostile ones are made by hand. What the index files hold is checked
against ``pm.r.cran``'s renderers fed from the tarballs themselves, and field by field;
that R reads them is shown elsewhere (``test_r_cran``, the integration tests).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pm.catalog import Source
from pm.housekeeping import Swept
from pm.r.cran import (
    ArchivedFile,
    IndexEntry,
    render_archive_rds,
    render_packages,
    render_packages_gz,
    render_packages_rds,
)
from pm.r.description import parse_description
from tests.support.packages import build_wheel, multipart_body
from tests.support.rpackages import build_r_package
from tests.unit.appfixture import START, AppEnv, app_env
from tests.unit.test_app import Client
from tests.unit.test_upload import BOUNDARY, Response, Server, public_site, request_head

CONTRIB = "/cran/latest/src/contrib"
INDEX_FILES = ("PACKAGES", "PACKAGES.gz", "PACKAGES.rds", "Meta/archive.rds")

# Spread over lines as people write them; URL is not an index field.
BETA_EXTRA = """\
Depends: R (>= 3.5.0),
    methods
Suggests: testthat (>= 3.0.0),
    knitr
LinkingTo: utils
URL: http://localhost/not-in-packages
"""


# The tarballs ------------------------------------------------------------------------


@dataclass(frozen=True)
class RTarballs:
    """Built once per module: two versions of alpha (1.10.0 is the higher by R's order,
    the lower by string order), alpha 1.10.0 built again (other bytes), and beta."""

    alpha_old: Path  # alpha 1.9.0
    alpha: Path  # alpha 1.10.0
    alpha_rebuilt: Path  # alpha 1.10.0 again, other contents
    beta: Path  # beta 0.1-1, Imports alpha, more index fields


def build_tarballs(root: Path) -> RTarballs:
    (root / "a").mkdir()
    (root / "b").mkdir()
    return RTarballs(
        alpha_old=build_r_package(root / "a", "alpha", "1.9.0"),
        alpha=build_r_package(root / "a", "alpha", "1.10.0"),
        alpha_rebuilt=build_r_package(
            root / "b", "alpha", "1.10.0",
            code='alpha_hello <- function() "hello again from alpha"\n'),
        beta=build_r_package(root / "a", "beta", "0.1-1", imports=["alpha"],
                             description_extra=BETA_EXTRA),
    )


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> RTarballs:
    """The module's R CMD build output."""
    return build_tarballs(tmp_path_factory.mktemp("rpkgs"))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def description_of(path: Path) -> bytes:
    package = path.name.split("_")[0]
    with tarfile.open(path) as tar:
        member = tar.extractfile(f"{package}/DESCRIPTION")
        assert member is not None
        return member.read()


def entry(path: Path) -> IndexEntry:
    """What PACKAGES must say of a tarball: its DESCRIPTION and its own digests."""
    data = path.read_bytes()
    package, version = path.name.removesuffix(".tar.gz").split("_", 1)
    return IndexEntry(package=package, version=version,
                      fields=parse_description(description_of(path)).fields,
                      md5=hashlib.md5(data).hexdigest(), sha256=sha256_of(data),
                      size=len(data))


def dcf_records(text: str) -> list[dict[str, str]]:
    """The records of a DCF file, continuation lines joined with a space."""
    records = []
    for block in text.strip("\n").split("\n\n") if text.strip() else []:
        record: dict[str, str] = {}
        last = ""
        for line in block.split("\n"):
            if line.startswith((" ", "\t")):
                record[last] += " " + line.strip()
            else:
                last, _, value = line.partition(": ")
                record[last] = value
        records.append(record)
    return records


def must_revalidate(cache_control: str | None) -> bool:
    """Whether a Cache-Control value makes every cache ask the server before reuse."""
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    return "no-cache" in directives or {"max-age=0", "must-revalidate"} <= directives


def tar_gz(members: Sequence[tuple[str, bytes]], *, symlinks: Sequence[tuple[str, str]] = ()
           ) -> bytes:
    """A .tar.gz made by hand, holding exactly these members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in symlinks:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


GOOD_DESCRIPTION = b"Package: alpha\nVersion: 1.0.0\nLicense: GPL-3\nNeedsCompilation: no\n"


# The server ----------------------------------------------------------------------------


@dataclass
class Harness:
    """One in-memory server, its StubTreq client and its streaming Site."""

    env: AppEnv
    client: Client
    site: Server

    async def add(self, source: str, filename: str, data: bytes, *, token: str | None,
                  fields: Sequence[tuple[str, str]] = (),
                  parts: Sequence[tuple[str, str, bytes]] = ()) -> Response:
        """What ``rspm add`` sends: form fields, then the file (and any other parts)."""
        body, content_type = multipart_body(list(fields), [("content", filename, data),
                                                           *parts], BOUNDARY)
        auth = (f"Authorization: Bearer {token}",) if token is not None else ()
        conn = self.site.connect()
        conn.send(request_head(f"/__api__/sources/{source}/packages",
                               content_type=content_type, token=None, length=len(body),
                               extra=auth) + body, 4096)
        return await conn.final()

    async def add_file(self, source: str, path: Path, *, token: str | None,
                       replace: bool = False) -> Response:
        fields = [("sha256_digest", sha256_of(path.read_bytes()))]
        if replace:
            fields.append(("replace", "true"))
        return await self.add(source, path.name, path.read_bytes(), token=token,
                              fields=fields)

    async def r_repo(self, repo: str = "cran", sources: Sequence[str] = ("cran-local",)
                     ) -> list[Source]:
        """R sources (made unless they exist) and an r repo subscribed to them in order."""
        made = []
        existing = {s.name: s for s in await self.env.catalog.list_sources()}
        for name in sources:
            made.append(existing.get(name) or await self.env.r_source(name))
        await self.env.catalog.create_repo(repo, "r", "", "local-admin")
        for name in sources:
            await self.env.catalog.subscribe(repo, name, "local-admin")
        return made

    async def r_rows(self) -> list[dict[str, Any]]:
        return await self.env.database.read(
            lambda tx: tx.all("SELECT * FROM r_packages ORDER BY filename"))

    async def nothing_kept(self, stored_before: Sequence[Path] = ()) -> None:
        """A refused upload leaves no new file, no temp file and no row."""
        assert self.env.stored_files() == list(stored_before)
        assert self.env.temp_files() == []


def response_json(response: Response) -> Any:
    return json.loads(response.body)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A fresh in-memory server with API tokens enabled."""
    with app_env(tmp_path) as env:
        yield Harness(env, Client(env.app.resource()), public_site(env))


async def published(h: Harness, t: RTarballs) -> tuple[Source, str]:
    """Repo 'cran' on source 'cran-local' holding alpha 1.9.0 (added at START + 10),
    alpha 1.10.0 and beta 0.1-1; the source's token."""
    (source,) = await h.r_repo()
    token = await h.env.source_token(source)
    for offset, path in ((10, t.alpha_old), (20, t.alpha), (30, t.beta)):
        h.env.clock.now = START + offset
        response = await h.add_file(source.name, path, token=token)
        assert response.status == 201, response
    return source, token


# PACKAGES and friends ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_packages_lists_the_current_version_of_each_package(
    harness: Harness, tarballs: RTarballs
) -> None:
    """PACKAGES holds one record per package, its highest version by R's order (1.10.0
    over 1.9.0), exactly as render_packages writes the tarballs' own DESCRIPTION and
    digests."""
    await published(harness, tarballs)

    reply = await harness.client.get(f"{CONTRIB}/PACKAGES")

    assert reply.code == 200, reply
    assert reply.body == render_packages([entry(tarballs.alpha), entry(tarballs.beta)])
    assert reply.header("content-type") == "text/plain; charset=utf-8"
    assert must_revalidate(reply.header("cache-control"))
    assert reply.header("etag") == f'"{sha256_of(reply.body)}"'


@pytest_twisted.ensureDeferred
async def test_packages_fields_digests_and_sizes(harness: Harness, tarballs: RTarballs) -> None:
    """Each record carries the index fields of DESCRIPTION (and no others), the MD5sum
    of the tarball file itself, its SHA256 and its Filesize."""
    await published(harness, tarballs)

    alpha, beta = dcf_records((await harness.client.get(f"{CONTRIB}/PACKAGES")).text)

    for record, path in ((alpha, tarballs.alpha), (beta, tarballs.beta)):
        data = path.read_bytes()
        assert record["MD5sum"] == hashlib.md5(data).hexdigest()
        assert record["SHA256"] == sha256_of(data)
        assert record["Filesize"] == str(len(data))
        assert record["License"] == "GPL-3"
        assert record["NeedsCompilation"] == "no"
        assert not {"Title", "Description", "URL", "Packaged", "Author", "Maintainer",
                    "Encoding", "Authors@R"} & set(record)
    assert (alpha["Package"], alpha["Version"]) == ("alpha", "1.10.0")
    assert (beta["Package"], beta["Version"]) == ("beta", "0.1-1")
    assert beta["Imports"] == "alpha"
    assert beta["Depends"] == "R (>= 3.5.0), methods"
    assert beta["Suggests"] == "testthat (>= 3.0.0), knitr"
    assert beta["LinkingTo"] == "utils"
    assert "Imports" not in alpha
    assert list(alpha) == ["Package", "Version", "License", "MD5sum", "NeedsCompilation",
                           "SHA256", "Filesize"]


@pytest_twisted.ensureDeferred
async def test_packages_gz_and_rds_hold_the_same_index(
    harness: Harness, tarballs: RTarballs
) -> None:
    """PACKAGES.gz is PACKAGES gzipped (without a timestamp) and PACKAGES.rds the matrix
    R saves, both of the current versions only."""
    await published(harness, tarballs)
    entries = [entry(tarballs.alpha), entry(tarballs.beta)]

    plain = await harness.client.get(f"{CONTRIB}/PACKAGES")
    compressed = await harness.client.get(f"{CONTRIB}/PACKAGES.gz")
    matrix = await harness.client.get(f"{CONTRIB}/PACKAGES.rds")

    assert compressed.code == matrix.code == 200
    assert gzip.decompress(compressed.body) == plain.body
    assert compressed.body == render_packages_gz(plain.body)
    assert compressed.header("content-type") == "application/gzip"
    # StubTreq shows an absent Content-Encoding as empty.
    assert not compressed.header("content-encoding")
    assert matrix.body == render_packages_rds(entries)
    assert matrix.header("content-type") == "application/octet-stream"


@pytest_twisted.ensureDeferred
async def test_archive_rds_lists_every_older_version(
    harness: Harness, tarballs: RTarballs
) -> None:
    """Meta/archive.rds lists each package's versions other than the current one, with
    their sizes and upload times: here alpha 1.9.0 only."""
    await published(harness, tarballs)

    reply = await harness.client.get(f"{CONTRIB}/Meta/archive.rds")

    assert reply.code == 200, reply
    size = tarballs.alpha_old.stat().st_size
    assert reply.body == render_archive_rds(
        {"alpha": [ArchivedFile("alpha", "1.9.0", size, START + 10)]})
    assert reply.header("content-type") == "application/octet-stream"
    assert reply.header("etag") == f'"{sha256_of(reply.body)}"'


@pytest_twisted.ensureDeferred
async def test_an_empty_repo_has_empty_indexes(harness: Harness) -> None:
    """A repo with no packages (or no sources) answers every index file, empty."""
    await harness.r_repo()
    await harness.env.catalog.create_repo("bare", "r", "", "local-admin")

    for repo in ("cran", "bare"):
        base = f"/{repo}/latest/src/contrib"
        replies = {name: await harness.client.get(f"{base}/{name}") for name in INDEX_FILES}
        assert {name: r.code for name, r in replies.items()} == dict.fromkeys(INDEX_FILES, 200)
        assert replies["PACKAGES"].body == b""
        assert gzip.decompress(replies["PACKAGES.gz"].body) == b""
        assert replies["PACKAGES.rds"].body == render_packages_rds([])
        assert replies["Meta/archive.rds"].body == render_archive_rds({})


@pytest.mark.parametrize("name", INDEX_FILES)
@pytest_twisted.ensureDeferred
async def test_index_files_revalidate_with_their_etag(
    harness: Harness, tarballs: RTarballs, name: str
) -> None:
    """Every index file has a strong ETag (its sha256) and must be revalidated before
    reuse: If-None-Match with the ETag answers 304 with no body; after a change the old
    ETag gets the new file, with a new ETag."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    await harness.add_file(source.name, tarballs.alpha_old, token=token)
    await harness.add_file(source.name, tarballs.beta, token=token)
    url = f"{CONTRIB}/{name}"

    first = await harness.client.get(url)
    etag = first.header("etag") or ""
    cached = await harness.client.get(url, headers={"If-None-Match": etag})
    await harness.add_file(source.name, tarballs.alpha, token=token)
    changed = await harness.client.get(url, headers={"If-None-Match": etag})

    assert etag == f'"{sha256_of(first.body)}"'
    assert must_revalidate(first.header("cache-control"))
    assert (cached.code, cached.body) == (304, b"")
    assert cached.header("etag") == etag
    assert changed.code == 200
    assert changed.body != first.body
    assert changed.header("etag") == f'"{sha256_of(changed.body)}"' != etag


@pytest.mark.parametrize("form", ['{etag}, "other"', '"other",{etag}', "W/{etag}"],
                         ids=["list-first", "list-no-space", "weak"])
@pytest.mark.parametrize("name", ["PACKAGES", "alpha_1.10.0.tar.gz"])
@pytest_twisted.ensureDeferred
async def test_if_none_match_takes_lists_and_weak_tags(
    harness: Harness, tarballs: RTarballs, name: str, form: str
) -> None:
    """If-None-Match is a comma-separated list compared weakly (RFC 9110 13.1.2): a list
    holding the ETag, or its weak form (as a gzipping proxy such as nginx sends it back),
    answers 304."""
    await published(harness, tarballs)
    url = f"{CONTRIB}/{name}"
    etag = (await harness.client.get(url)).header("etag") or ""

    reply = await harness.client.get(url, headers={"If-None-Match": form.format(etag=etag)})

    assert (reply.code, reply.body) == (304, b"")


@pytest_twisted.ensureDeferred
async def test_head_of_an_index_file_and_a_tarball(
    harness: Harness, tarballs: RTarballs
) -> None:
    """HEAD answers 200 with the headers of GET (ETag included) and no body."""
    await published(harness, tarballs)

    for url in (f"{CONTRIB}/PACKAGES", f"{CONTRIB}/{tarballs.alpha.name}"):
        got = await harness.client.get(url)
        head = await harness.client.request("HEAD", url)
        assert (head.code, head.body) == (200, b""), url
        assert head.header("etag") == got.header("etag"), url
        assert head.header("content-type") == got.header("content-type"), url


# Tarballs --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_current_tarball_downloads_with_an_etag(
    harness: Harness, tarballs: RTarballs
) -> None:
    """A current version downloads from src/contrib/ byte for byte, as a gzip file with
    no Content-Encoding, with its sha256 as ETag; If-None-Match with it answers 304,
    another ETag the file."""
    await published(harness, tarballs)
    url = f"{CONTRIB}/{tarballs.alpha.name}"
    data = tarballs.alpha.read_bytes()

    reply = await harness.client.get(url)
    cached = await harness.client.get(url, headers={"If-None-Match": f'"{sha256_of(data)}"'})
    stale = await harness.client.get(url, headers={"If-None-Match": '"0000"'})
    beta = await harness.client.get(f"{CONTRIB}/{tarballs.beta.name}")

    assert reply.code == 200, reply
    assert reply.body == data
    assert reply.header("content-type") == "application/x-gzip"
    assert not reply.header("content-encoding")
    assert reply.header("etag") == f'"{sha256_of(data)}"'
    assert (cached.code, cached.body) == (304, b"")
    assert (stale.code, stale.body) == (200, data)
    assert beta.body == tarballs.beta.read_bytes()


@pytest_twisted.ensureDeferred
async def test_older_versions_download_from_the_archive_only(
    harness: Harness, tarballs: RTarballs
) -> None:
    """An older version is served under Archive/{pkg}/ (with its ETag and 304), not
    under src/contrib/; the current one is not under Archive/."""
    await published(harness, tarballs)
    old = tarballs.alpha_old
    url = f"{CONTRIB}/Archive/alpha/{old.name}"

    archived = await harness.client.get(url)
    cached = await harness.client.get(url, headers={"If-None-Match": archived.header("etag")
                                                    or ""})
    not_current = await harness.client.get(f"{CONTRIB}/{old.name}")
    current_in_archive = await harness.client.get(f"{CONTRIB}/Archive/alpha/"
                                                  f"{tarballs.alpha.name}")

    assert archived.code == 200, archived
    assert archived.body == old.read_bytes()
    assert archived.header("content-type") == "application/x-gzip"
    assert archived.header("etag") == f'"{sha256_of(old.read_bytes())}"'
    assert (cached.code, cached.body) == (304, b"")
    assert not_current.code == 404
    assert current_in_archive.code == 404


@pytest.mark.parametrize("path", [
    "nothere_1.0.tar.gz",
    "alpha_9.9.9.tar.gz",
    "alpha_1.tar.gz",
    "alpha-1.10.0.tar.gz",
    "alpha_1.10.0.zip",
    "evil.txt",
    "%2e%2e",
    "..%2fPACKAGES",
    "Archive/beta/alpha_1.9.0.tar.gz",
    "Archive/alpha/alpha_9.9.tar.gz",
    "Archive/alpha/notes.txt",
    "Archive/nothere/nothere_1.0.tar.gz",
    "Meta/other.rds",
])
@pytest_twisted.ensureDeferred
async def test_files_the_repo_does_not_hold_are_404(
    harness: Harness, tarballs: RTarballs, path: str
) -> None:
    """Anything under src/contrib/ that is no index and no tarball the repo serves there
    is 404, never a server error or another file."""
    await published(harness, tarballs)

    reply = await harness.client.get(f"{CONTRIB}/{path}")

    assert reply.code == 404, reply


@pytest_twisted.ensureDeferred
async def test_unknown_repo_and_python_repo_have_no_r_pages(harness: Harness) -> None:
    """src/contrib/ of an unknown repo, or of a Python repo, is 404."""
    await harness.r_repo()
    await harness.env.catalog.create_repo("python", "python", "", "local-admin")

    for url in ("/nowhere/latest/src/contrib/PACKAGES",
                "/python/latest/src/contrib/PACKAGES",
                "/python/latest/src/contrib/alpha_1.0.tar.gz"):
        assert (await harness.client.get(url)).code == 404, url


# Which source wins ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_first_subscribed_source_wins_a_package(
    harness: Harness, tarballs: RTarballs
) -> None:
    """A package in two sources is served only from the first the repo subscribes to:
    its current version, and no file of the other source, not even in the archive."""
    first, second = await harness.r_repo("cran", ("first", "second"))
    await harness.r_repo("reversed", ("second", "first"))
    for source, paths in ((first, [tarballs.alpha_old]),
                          (second, [tarballs.alpha, tarballs.beta])):
        token = await harness.env.source_token(source)
        for path in paths:
            assert (await harness.add_file(source.name, path, token=token)).status == 201

    packages = await harness.client.get(f"{CONTRIB}/PACKAGES")
    archive = await harness.client.get(f"{CONTRIB}/Meta/archive.rds")
    newer = await harness.client.get(f"{CONTRIB}/{tarballs.alpha.name}")
    newer_archived = await harness.client.get(f"{CONTRIB}/Archive/alpha/{tarballs.alpha.name}")
    older = await harness.client.get(f"{CONTRIB}/{tarballs.alpha_old.name}")
    other_order = await harness.client.get("/reversed/latest/src/contrib/PACKAGES")

    assert packages.body == render_packages([entry(tarballs.alpha_old), entry(tarballs.beta)])
    assert archive.body == render_archive_rds({})
    assert (newer.code, newer_archived.code) == (404, 404)
    assert older.body == tarballs.alpha_old.read_bytes()
    assert other_order.body == render_packages([entry(tarballs.alpha), entry(tarballs.beta)])


@pytest_twisted.ensureDeferred
async def test_a_package_with_every_version_archived_leaves_packages(
    harness: Harness, tarballs: RTarballs
) -> None:
    """With every version archived a package is no longer in PACKAGES (not even from a
    later source), and all its versions are in archive.rds and under Archive/."""
    source, _ = await published(harness, tarballs)
    later = await harness.env.r_source("later")
    await harness.env.catalog.subscribe("cran", "later", "local-admin")
    later_token = await harness.env.source_token(later)
    assert (await harness.add_file("later", tarballs.alpha_rebuilt,
                                   token=later_token)).status == 201
    await harness.env.parts.r.files.archive(source.guid, "alpha", "local-admin")

    packages = await harness.client.get(f"{CONTRIB}/PACKAGES")
    archive = await harness.client.get(f"{CONTRIB}/Meta/archive.rds")
    downloads = [await harness.client.get(f"{CONTRIB}/Archive/alpha/{p.name}")
                 for p in (tarballs.alpha_old, tarballs.alpha)]
    current = await harness.client.get(f"{CONTRIB}/{tarballs.alpha.name}")

    assert packages.body == render_packages([entry(tarballs.beta)])
    sizes = {p: p.stat().st_size for p in (tarballs.alpha_old, tarballs.alpha)}
    assert archive.body == render_archive_rds({"alpha": [
        ArchivedFile("alpha", "1.9.0", sizes[tarballs.alpha_old], START + 10),
        ArchivedFile("alpha", "1.10.0", sizes[tarballs.alpha], START + 20)]})
    assert [d.body for d in downloads] == [tarballs.alpha_old.read_bytes(),
                                           tarballs.alpha.read_bytes()]
    assert current.code == 404


# rspm add of R packages ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_answers_201_then_200_for_the_identical_file(
    harness: Harness, tarballs: RTarballs
) -> None:
    """A new package answers 201 with what was recorded; the identical file again 200
    "unchanged". The row holds the file's digests and DESCRIPTION, the blob its bytes."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    data = tarballs.beta.read_bytes()
    harness.env.clock.now = START + 5

    added = await harness.add_file(source.name, tarballs.beta, token=token)
    again = await harness.add_file(source.name, tarballs.beta, token=token)

    expected = {"source": "cran-local", "filename": "beta_0.1-1.tar.gz", "name": "beta",
                "version": "0.1-1", "sha256": sha256_of(data), "size": len(data),
                "signature_added": False}
    assert added.status == 201, added
    assert added.header("content-type") == "application/json"
    assert response_json(added) == {"status": "added", **expected}
    assert again.status == 200, again
    assert response_json(again) == {"status": "unchanged", **expected}
    (row,) = await harness.r_rows()
    assert (row["package"], row["version"], row["filename"], row["size"], row["sha256"],
            row["md5"], row["archived"], row["uploaded_at"]) == (
        "beta", "0.1-1", "beta_0.1-1.tar.gz", len(data), sha256_of(data),
        hashlib.md5(data).hexdigest(), 0, START + 5)
    assert row["uploaded_by"].startswith("token:")
    assert json.loads(row["fields"]) == parse_description(description_of(tarballs.beta)).fields
    assert harness.env.blobs.path_for(sha256_of(data)).read_bytes() == data
    assert harness.env.temp_files() == []


@pytest_twisted.ensureDeferred
async def test_add_without_any_form_field(harness: Harness, tarballs: RTarballs) -> None:
    """The file alone (no digest, no replace) is enough: its name and DESCRIPTION say
    the rest."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)

    reply = await harness.add(source.name, tarballs.alpha.name, tarballs.alpha.read_bytes(),
                              token=token)

    assert reply.status == 201, reply
    assert (response_json(reply)["name"], response_json(reply)["version"]) == (
        "alpha", "1.10.0")


@pytest_twisted.ensureDeferred
async def test_other_contents_under_an_existing_name_is_409_with_a_replace_hint(
    harness: Harness, tarballs: RTarballs
) -> None:
    """Another tarball of the same name is refused with 409, saying it exists and how to
    replace it; the recorded file stays, and the new bytes are not kept."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    await harness.add_file(source.name, tarballs.alpha, token=token)
    stored = harness.env.stored_files()

    reply = await harness.add_file(source.name, tarballs.alpha_rebuilt, token=token)

    assert reply.status == 409, reply
    assert "'alpha_1.10.0.tar.gz' already exists in source 'cran-local'" in reply.reason
    assert "--replace" in reply.reason
    assert response_json(reply) == {"error": reply.reason, "code": 409}
    assert [r["sha256"] for r in await harness.r_rows()] == [
        sha256_of(tarballs.alpha.read_bytes())]
    await harness.nothing_kept(stored)


@pytest_twisted.ensureDeferred
async def test_replace_takes_the_name_over_and_the_repo_serves_the_new_file(
    harness: Harness, tarballs: RTarballs
) -> None:
    """With replace=true other contents answer 201 "replaced": the repo serves the new
    bytes and PACKAGES their digests; the old blob is left to housekeeping, which
    removes it."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    await harness.add_file(source.name, tarballs.alpha, token=token)
    old_sha = sha256_of(tarballs.alpha.read_bytes())
    new = tarballs.alpha_rebuilt.read_bytes()

    reply = await harness.add_file(source.name, tarballs.alpha_rebuilt, token=token,
                                   replace=True)
    served = await harness.client.get(f"{CONTRIB}/{tarballs.alpha.name}")
    packages = await harness.client.get(f"{CONTRIB}/PACKAGES")

    assert reply.status == 201, reply
    assert response_json(reply)["status"] == "replaced"
    assert response_json(reply)["sha256"] == sha256_of(new)
    assert served.body == new
    assert packages.body == render_packages([entry(tarballs.alpha_rebuilt)])
    assert await harness.env.housekeep() == Swept(temp_files=0, blobs=1)
    assert not harness.env.blobs.path_for(old_sha).exists()
    assert harness.env.stored_files() == [harness.env.blobs.path_for(sha256_of(new))]


@pytest_twisted.ensureDeferred
async def test_replace_of_a_new_or_identical_file(harness: Harness, tarballs: RTarballs) -> None:
    """replace=true adds a new file (201 "added") and leaves an identical one as it is
    (200 "unchanged")."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)

    first = await harness.add_file(source.name, tarballs.alpha, token=token, replace=True)
    second = await harness.add_file(source.name, tarballs.alpha, token=token, replace=True)

    assert (first.status, response_json(first)["status"]) == (201, "added")
    assert (second.status, response_json(second)["status"]) == (200, "unchanged")
    assert len(await harness.r_rows()) == 1


@dataclass(frozen=True)
class Bad:
    """A refused R upload: filename, bytes, extra fields/parts, and the reason shown."""

    filename: str
    data: bytes
    reason: str
    fields: tuple[tuple[str, str], ...] = ()
    parts: tuple[tuple[str, str, bytes], ...] = ()


def _renamed(tarballs: RTarballs, name: str) -> tuple[str, bytes]:
    return name, tarballs.alpha.read_bytes()


BAD_BY_HAND = {
    "empty-file": Bad("alpha_1.0.0.tar.gz", b"", "The uploaded file is empty."),
    "not-gzip": Bad("alpha_1.0.0.tar.gz", b"just some text\n" * 20,
                    "not a gzip-compressed tar archive"),
    "gzip-not-tar": Bad("alpha_1.0.0.tar.gz", gzip.compress(b"x" * 3000),
                        "Invalid package file"),
    "no-description": Bad("alpha_1.0.0.tar.gz", tar_gz([("alpha/R/alpha.R", b"f <- 1\n")]),
                          "alpha/DESCRIPTION not found"),
    "description-at-top": Bad("alpha_1.0.0.tar.gz", tar_gz([("DESCRIPTION", GOOD_DESCRIPTION)]),
                              "alpha/DESCRIPTION not found"),
    "member-outside-package": Bad(
        "alpha_1.0.0.tar.gz",
        tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION), ("other/file.R", b"x\n")]),
        "archive member 'other/file.R' is outside the package directory 'alpha/'"),
    "parent-directory-member": Bad(
        "alpha_1.0.0.tar.gz",
        tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION), ("alpha/../../evil", b"x\n")]),
        "refers to a parent directory"),
    "absolute-member": Bad(
        "alpha_1.0.0.tar.gz",
        tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION), ("/etc/evil", b"x\n")]),
        "has an absolute path"),
    "symlink-outside": Bad(
        "alpha_1.0.0.tar.gz",
        tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION)],
               symlinks=[("alpha/link", "../../etc/passwd")]),
        "links outside the archive"),
    "version-disagrees": Bad(
        "alpha_1.0.1.tar.gz", tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION)]),
        "Version '1.0.0' in alpha/DESCRIPTION does not match the filename "
        "'alpha_1.0.1.tar.gz'"),
    "package-disagrees": Bad(
        "alpha_1.0.0.tar.gz",
        tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION.replace(b"alpha", b"beta"))]),
        "Package 'beta' in alpha/DESCRIPTION does not match the filename"),
    "not-dcf": Bad("alpha_1.0.0.tar.gz",
                   tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION + b"this is no field\n")]),
                   "alpha/DESCRIPTION is not in DCF format: line 5"),
    "no-version-field": Bad("alpha_1.0.0.tar.gz",
                            tar_gz([("alpha/DESCRIPTION", b"Package: alpha\n")]),
                            "alpha/DESCRIPTION has no Version field"),
    "wheel": Bad("example_package-1.0.0-py3-none-any.whl", b"PK\x03\x04 not really",
                 "R source packages are .tar.gz files"),
    "python-sdist-name": Bad("example-package-1.0.0.tar.gz",
                             tar_gz([("example-package-1.0.0/PKG-INFO", b"Name: x\n")]),
                             "expected <package>_<version>.tar.gz"),
    "invalid-version": Bad("alpha_1.tar.gz", b"x", "'1' is not a valid R package version"),
    "invalid-name": Bad("2alpha_1.0.tar.gz", b"x", "'2alpha' is not a valid R package name"),
    "slash-in-name": Bad("dir/alpha_1.0.tar.gz", b"x", "'/' or '\\' in the name"),
    "digest-disagrees": Bad("alpha_1.0.0.tar.gz",
                            tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION)]),
                            "The digest supplied does not match a digest calculated from the "
                            "uploaded file (sha256_digest)",
                            fields=(("sha256_digest", "0" * 64),)),
    "signature": Bad("alpha_1.0.0.tar.gz", tar_gz([("alpha/DESCRIPTION", GOOD_DESCRIPTION)]),
                     "signatures are kept for Python packages only",
                     parts=(("gpg_signature", "alpha_1.0.0.tar.gz.asc", b"-----BEGIN PGP"),)),
}


@pytest.mark.parametrize("bad", list(BAD_BY_HAND.values()), ids=list(BAD_BY_HAND))
@pytest_twisted.ensureDeferred
async def test_a_bad_r_package_is_400_with_the_reason_and_nothing_is_kept(
    harness: Harness, bad: Bad
) -> None:
    """Each kind of bad R package is refused with 400, the reason in the status line and
    the JSON body, and leaves no row, no stored file and no temp file."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)

    reply = await harness.add(source.name, bad.filename, bad.data, token=token,
                              fields=bad.fields, parts=bad.parts)

    assert reply.status == 400, reply
    assert bad.reason in reply.reason, reply
    assert bad.reason in response_json(reply)["error"]
    assert await harness.r_rows() == []
    await harness.nothing_kept()
    assert (await harness.client.get(f"{CONTRIB}/PACKAGES")).body == b""


@pytest_twisted.ensureDeferred
async def test_a_real_tarball_under_another_name_is_refused(
    harness: Harness, tarballs: RTarballs
) -> None:
    """R CMD build output renamed to another version or package does not match its
    DESCRIPTION: 400, nothing kept."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    data = tarballs.alpha.read_bytes()

    other_version = await harness.add(source.name, "alpha_1.10.1.tar.gz", data, token=token)
    other_package = await harness.add(source.name, "gamma_1.10.0.tar.gz", data, token=token)

    assert other_version.status == 400, other_version
    assert "Version '1.10.0' in alpha/DESCRIPTION does not match" in other_version.reason
    assert other_package.status == 400, other_package
    assert "gamma/DESCRIPTION not found" in other_package.reason
    assert await harness.r_rows() == []
    await harness.nothing_kept()


@pytest_twisted.ensureDeferred
async def test_a_wheel_sent_to_an_r_source_is_refused(harness: Harness, tmp_path: Path) -> None:
    """A real wheel sent to an R source with rspm add is 400 saying R takes .tar.gz source
    packages; no row of either kind and no file is kept."""
    (source,) = await harness.r_repo()
    token = await harness.env.source_token(source)
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = build_wheel(dist)

    reply = await harness.add_file(source.name, wheel, token=token)

    assert reply.status == 400, reply
    assert "Invalid R package filename" in reply.reason
    assert "R source packages are .tar.gz files" in reply.reason
    assert await harness.r_rows() == []
    assert await harness.env.python_rows() == []
    await harness.nothing_kept()


# Who may add -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_without_a_token_is_401(harness: Harness, tarballs: RTarballs) -> None:
    """No token: 401 saying how to send one, with WWW-Authenticate; nothing kept."""
    (source,) = await harness.r_repo()

    reply = await harness.add_file(source.name, tarballs.alpha, token=None)

    assert reply.status == 401, reply
    assert "authentication required" in reply.reason
    assert "Authorization: Bearer" in reply.reason
    assert reply.header("www-authenticate") == 'Basic realm="packagemanager"'
    assert await harness.r_rows() == []
    await harness.nothing_kept()


@pytest_twisted.ensureDeferred
async def test_add_with_a_token_for_another_source_is_403(
    harness: Harness, tarballs: RTarballs
) -> None:
    """A token for another source, or a repos:read token, is 403 naming the source."""
    (source,) = await harness.r_repo()
    other = await harness.env.r_source("someone-elses")

    for token in (await harness.env.source_token(other),
                  await harness.env.token("repos:read", None)):
        reply = await harness.add_file(source.name, tarballs.alpha, token=token)
        assert reply.status == 403, reply
        assert "does not allow publishing to source 'cran-local'" in reply.reason
    assert await harness.r_rows() == []
    await harness.nothing_kept()


@pytest_twisted.ensureDeferred
async def test_add_to_an_unknown_source(harness: Harness, tarballs: RTarballs) -> None:
    """An unknown source is 404 for a token that may publish anywhere (admin, or every
    source), and 403 for a token limited to other sources, which learns nothing of which
    sources exist."""
    mine = await harness.env.r_source("mine")

    for token in (await harness.env.token(), await harness.env.token("sources:write", None)):
        reply = await harness.add_file("nowhere", tarballs.alpha, token=token)
        assert reply.status == 404, reply
        assert "no source named 'nowhere'" in reply.reason
    limited = await harness.add_file("nowhere", tarballs.alpha,
                                     token=await harness.env.source_token(mine))
    assert limited.status == 403, limited
    assert "does not allow publishing to source 'nowhere'" in limited.reason
    assert await harness.r_rows() == []
    await harness.nothing_kept()
