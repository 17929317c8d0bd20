"""R files table contract tests: the same behaviour on SQLite and on PostgreSQL.

The rows of R source packages (``pm.r.files.RFiles``): put (add, unchanged, replace),
the reads the repo pages and the listings make, removal, archiving, and the digests
housekeeping asks about. Every test runs once per database through the ``provider``
fixture, except the races at the end, which only PostgreSQL can run side by side.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted

from pm.catalog import Catalog, Source
from pm.db import Database
from pm.errors import AlreadyExists, Conflict
from pm.packages import PackageRow
from pm.r.ecosystem import RIndex
from pm.r.files import RFiles, RPackageFile
from pm.testing import Clock
from tests.support.records import (
    ACTOR,
    KINDS,
    START,
    UPLOADED_AT,
    Gate,
    GatedDatabase,
    TickingClock,
    both,
    gated_database,
    history,
    table_rows,
)


def r_file(source: Source, package: str = "alpha", version: str = "1.0.0", *,
           content: bytes | None = None, **changes: Any) -> RPackageFile:
    """A complete RPackageFile record whose digests and size derive from ``content``."""
    data = content if content is not None else f"{package} {version}".encode()
    record = RPackageFile(
        source_guid=source.guid,
        package=package,
        version=version,
        filename=f"{package}_{version}.tar.gz",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        fields={"Package": package, "Version": version, "License": "GPL-3",
                "NeedsCompilation": "no"},
        archived=False,
        uploaded_at=UPLOADED_AT,
        uploaded_by="token:ci",
    )
    return replace(record, **changes)


@pytest.fixture
def files(db: Database, clock: Clock) -> RFiles:
    """The R files table under test."""
    return RFiles(db, clock)


async def r_source(catalog: Catalog, name: str = "cran") -> Source:
    return await catalog.create_source(name, "local", ACTOR)


# put ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_round_trips_every_field(catalog: Catalog, files: RFiles) -> None:
    """A recorded file comes back from file() and files() field for field: DESCRIPTION
    fields in their order with non-ASCII text and newlines, a size past 32 bits, the
    archived flag."""
    src = await r_source(catalog)
    fields = {"Package": "alpha", "Version": "1.0.0", "Title": "Ünïcödé — title",
              "Description": "Line one\n  indented\n\nafter a blank", "Imports": "beta, gamma",
              "Authors@R": 'person("A", "B")'}
    record = r_file(src, fields=fields, size=2**40, archived=True)
    assert await files.put(record, "cran", replace=False) == "added"
    stored = await files.file(src.guid, record.filename)
    assert stored == record
    assert stored is not None and list(stored.fields) == list(fields)
    assert await files.files([src.guid]) == [record]


@pytest_twisted.ensureDeferred
async def test_put_adds_and_records_an_event(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """A new filename is added; the event names the uploader, the file and its digest."""
    src = await r_source(catalog)
    record = r_file(src)
    start = len(await history(db))
    assert await files.put(record, "cran", replace=False) == "added"
    assert (await history(db))[start:] == [
        ("token:ci", "r.package.added", record.filename, record.sha256)]


@pytest.mark.parametrize("replace_flag", [False, True])
@pytest_twisted.ensureDeferred
async def test_put_of_the_identical_file_is_unchanged(
    catalog: Catalog, files: RFiles, db: Database, replace_flag: bool
) -> None:
    """The same contents again (with or without replace) are "unchanged": the stored
    row keeps its upload time and uploader, and no event is recorded."""
    src = await r_source(catalog)
    record = r_file(src)
    await files.put(record, "cran", replace=False)
    before = await history(db)
    again = replace(record, uploaded_at=START + 99, uploaded_by="token:other")
    assert await files.put(again, "cran", replace=replace_flag) == "unchanged"
    assert await files.file(src.guid, record.filename) == record
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_put_of_other_contents_without_replace_is_refused(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """Other contents under an existing filename, without replace, raise AlreadyExists
    (a Conflict) naming the file and the source; the row and the log stay as they were."""
    src = await r_source(catalog)
    record = r_file(src, content=b"original")
    await files.put(record, "cran", replace=False)
    before = await history(db)
    impostor = r_file(src, content=b"something else")
    with pytest.raises(AlreadyExists) as caught:
        await files.put(impostor, "cran", replace=False)
    assert isinstance(caught.value, Conflict)
    assert (caught.value.filename, caught.value.source) == ("alpha_1.0.0.tar.gz", "cran")
    assert await files.file(src.guid, record.filename) == record
    assert await files.digests_in_use([impostor.sha256]) == set()
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_put_with_replace_replaces_the_row_in_place(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """With replace, other contents take the row over (every column), the old digest is
    no longer in use, and the event names both digests and the new uploader."""
    src = await r_source(catalog)
    original = r_file(src, content=b"original")
    await files.put(original, "cran", replace=False)
    start = len(await history(db))
    changed = r_file(src, content=b"changed", uploaded_by="alice", uploaded_at=START + 7,
                     fields={"Package": "alpha", "Version": "1.0.0", "License": "MIT"})

    assert await files.put(changed, "cran", replace=True) == "replaced"

    assert await files.file(src.guid, original.filename) == changed
    assert await files.files([src.guid]) == [changed]
    assert await files.digests_in_use([original.sha256, changed.sha256]) == {changed.sha256}
    assert (await history(db))[start:] == [
        ("alice", "r.package.replaced", original.filename,
         f"{original.sha256} -> {changed.sha256}")]


@pytest_twisted.ensureDeferred
async def test_same_filename_in_two_sources_is_two_rows(catalog: Catalog, files: RFiles) -> None:
    """Filenames are unique per source, not across sources."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    assert await files.put(r_file(a, content=b"A"), "a", replace=False) == "added"
    assert await files.put(r_file(b, content=b"B"), "b", replace=False) == "added"
    fa = await files.file(a.guid, "alpha_1.0.0.tar.gz")
    fb = await files.file(b.guid, "alpha_1.0.0.tar.gz")
    assert fa is not None and fb is not None
    assert fa.sha256 != fb.sha256


# Reads -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_file_of_an_unknown_name_or_another_source_is_none(
    catalog: Catalog, files: RFiles
) -> None:
    """file() finds a filename in its own source only."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    await files.put(r_file(a), "a", replace=False)
    assert await files.file(a.guid, "alpha_9.9.tar.gz") is None
    assert await files.file(b.guid, "alpha_1.0.0.tar.gz") is None


@pytest_twisted.ensureDeferred
async def test_files_of_sources_and_of_one_package(catalog: Catalog, files: RFiles) -> None:
    """files() lists the given sources' files ordered by package then filename (of one
    package when named), and nothing for no sources or unknown ones."""
    a, b, c = [await r_source(catalog, n) for n in ("a", "b", "c")]
    records = [r_file(a, "beta", "0.1"), r_file(a, "alpha", "1.9.0"),
               r_file(a, "alpha", "1.10.0"), r_file(b, "alpha", "2.0"),
               r_file(c, "alpha", "3.0")]
    for record in records:
        await files.put(record, "x", replace=False)

    listed = await files.files([a.guid, b.guid])
    assert [(f.package, f.filename) for f in listed] == [
        ("alpha", "alpha_1.10.0.tar.gz"), ("alpha", "alpha_1.9.0.tar.gz"),
        ("alpha", "alpha_2.0.tar.gz"), ("beta", "beta_0.1.tar.gz")]
    assert [f.filename for f in await files.files([a.guid], "alpha")] == [
        "alpha_1.10.0.tar.gz", "alpha_1.9.0.tar.gz"]
    assert await files.files([a.guid], "missing") == []
    assert await files.files([]) == []
    assert await files.files([str(uuid.uuid4())]) == []


@pytest_twisted.ensureDeferred
async def test_rows_one_per_version_with_its_archived_flag(
    catalog: Catalog, files: RFiles
) -> None:
    """rows() gives a PackageRow per file: the package as its own display name, one file,
    and whether it is archived; name= selects one package exactly (R names are
    case-sensitive)."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    await files.put(r_file(a, "alpha", "1.0"), "a", replace=False)
    await files.put(r_file(a, "alpha", "2.0", archived=True), "a", replace=False)
    await files.put(r_file(a, "Alpha", "1.0"), "a", replace=False)
    await files.put(r_file(b, "alpha", "1.0", content=b"b's"), "b", replace=False)

    found = await files.rows([a.guid, b.guid])
    assert sorted(found, key=lambda r: (r.source_guid == b.guid, r.name, r.version)) == [
        PackageRow(a.guid, "Alpha", "Alpha", "1.0", 1, False),
        PackageRow(a.guid, "alpha", "alpha", "1.0", 1, False),
        PackageRow(a.guid, "alpha", "alpha", "2.0", 1, True),
        PackageRow(b.guid, "alpha", "alpha", "1.0", 1, False),
    ]
    assert sorted((r.name, r.version) for r in await files.rows([a.guid], name="alpha")) == [
        ("alpha", "1.0"), ("alpha", "2.0")]
    assert await files.rows([]) == []


@pytest_twisted.ensureDeferred
async def test_rows_search_is_a_case_insensitive_literal_substring(
    catalog: Catalog, files: RFiles
) -> None:
    """search= matches part of the name whatever its case, and takes LIKE's wildcards
    and the escape character literally."""
    src = await r_source(catalog)
    for package in ("data.table", "DataExplorer", "ggplot2", "dataX"):
        await files.put(r_file(src, package, "1.0"), "cran", replace=False)

    async def names(search: str) -> list[str]:
        return sorted(r.name for r in await files.rows([src.guid], search=search))

    assert await names("DATA") == ["DataExplorer", "data.table", "dataX"]
    assert await names("a.t") == ["data.table"]
    assert await names("plot") == ["ggplot2"]
    assert await names("%") == []
    assert await names("data_") == []
    assert await names("d%a") == []
    assert await names("\\") == []
    assert await names("") == ["DataExplorer", "data.table", "dataX", "ggplot2"]


# Removing and archiving --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_versions_removes_those_files_only(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """delete_versions removes the package's files of those versions in that source,
    each as an event with its digest and the comment, and names what it removed;
    versions it does not have are passed over."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    old, new = r_file(a, "alpha", "1.0"), r_file(a, "alpha", "2.0")
    other_package = r_file(a, "beta", "1.0")
    other_source = r_file(b, "alpha", "1.0", content=b"b's")
    for record in (old, new, other_package, other_source):
        await files.put(record, "x", replace=False)
    start = len(await history(db))

    removed = await files.delete_versions(a.guid, "alpha", ["1.0", "9.9"], "alice",
                                          "broken build")

    assert removed == [(old.filename, "1.0")]
    assert await files.files([a.guid]) == [new, other_package]
    assert await files.files([b.guid]) == [other_source]
    assert (await history(db))[start:] == [
        ("alice", "r.package.removed", old.filename, f"{old.sha256} broken build")]
    assert await files.delete_versions(a.guid, "alpha", ["2.0"], "bob", "") == [
        (new.filename, "2.0")]
    assert (await history(db))[-1] == ("bob", "r.package.removed", new.filename, new.sha256)
    assert await files.delete_versions(a.guid, "alpha", ["2.0"], "bob", "") == []


@pytest_twisted.ensureDeferred
async def test_archive_moves_every_live_version_to_the_archive(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """archive() marks every version of the package in that source archived, names the
    ones that were not (by filename), records an event for each, and touches no other
    package or source; archiving again archives nothing."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    already = r_file(a, "alpha", "0.9", archived=True)
    live = [r_file(a, "alpha", "1.9.0"), r_file(a, "alpha", "1.10.0")]
    beta, elsewhere = r_file(a, "beta", "1.0"), r_file(b, "alpha", "1.9.0", content=b"b")
    for record in (already, *live, beta, elsewhere):
        await files.put(record, "x", replace=False)
    start = len(await history(db))

    archived = await files.archive(a.guid, "alpha", "alice")

    assert archived == [("alpha_1.10.0.tar.gz", "1.10.0"), ("alpha_1.9.0.tar.gz", "1.9.0")]
    assert {(f.filename, f.archived) for f in await files.files([a.guid], "alpha")} == {
        ("alpha_0.9.tar.gz", True), ("alpha_1.9.0.tar.gz", True),
        ("alpha_1.10.0.tar.gz", True)}
    assert await files.files([a.guid], "beta") == [beta]
    assert await files.files([b.guid]) == [elsewhere]
    assert (await history(db))[start:] == [
        ("alice", "r.package.archived", "alpha_1.10.0.tar.gz", ""),
        ("alice", "r.package.archived", "alpha_1.9.0.tar.gz", "")]
    assert await files.archive(a.guid, "alpha", "alice") == []
    assert await files.archive(a.guid, "missing", "alice") == []
    assert len(await history(db)) == start + 2


@pytest_twisted.ensureDeferred
async def test_a_source_deleted_takes_its_rows(
    catalog: Catalog, files: RFiles, db: Database
) -> None:
    """Deleting a source through the catalog (delete_source_rows) deletes its R rows
    and no other source's."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    await files.put(r_file(a), "a", replace=False)
    await files.put(r_file(b, content=b"b"), "b", replace=False)
    await catalog.delete_source("a", ACTOR)
    remaining = await table_rows(db, "SELECT source_guid FROM r_packages")
    assert [r["source_guid"] for r in remaining] == [b.guid]


@pytest_twisted.ensureDeferred
async def test_digests_in_use(catalog: Catalog, files: RFiles) -> None:
    """A digest is in use while any source holds a file with it; removing the file or
    its source releases it."""
    a, b = await r_source(catalog, "a"), await r_source(catalog, "b")
    same = b"identical bytes in two sources"
    in_a, in_b = r_file(a, content=same), r_file(b, content=same)
    lone = r_file(a, "beta", "1.0")
    other = hashlib.sha256(b"other").hexdigest()
    assert await files.digests_in_use([in_a.sha256, lone.sha256, other]) == set()
    for record in (in_a, in_b, lone):
        await files.put(record, "x", replace=False)
    assert await files.digests_in_use([in_a.sha256, lone.sha256, other]) == {
        in_a.sha256, lone.sha256}
    await files.delete_versions(a.guid, "beta", ["1.0"], ACTOR, "")
    assert await files.digests_in_use([lone.sha256]) == set()
    await catalog.delete_source("a", ACTOR)
    assert await files.digests_in_use([in_a.sha256]) == {in_a.sha256}
    await catalog.delete_source("b", ACTOR)
    assert await files.digests_in_use([in_a.sha256]) == set()
    assert await files.digests_in_use([]) == set()


@pytest_twisted.ensureDeferred
async def test_index_takes_each_package_from_the_first_source_and_its_highest_live_version(
    catalog: Catalog, files: RFiles
) -> None:
    """RIndex, what the repo pages read: each package from the first subscribed source
    that has it (archived versions count), current = its highest non-archived version by
    R's order, every other file of that source archived; package= reads one package."""
    first, second = await r_source(catalog, "first"), await r_source(catalog, "second")
    await catalog.create_repo("cran", "r", "", ACTOR)
    await catalog.subscribe("cran", "first", ACTOR)
    await catalog.subscribe("cran", "second", ACTOR)
    records = {
        "alpha 1.9.0": r_file(first, "alpha", "1.9.0"),
        "alpha 1.10.0": r_file(first, "alpha", "1.10.0"),
        "alpha 2.0": r_file(first, "alpha", "2.0", archived=True),
        "alpha 3.0 second": r_file(second, "alpha", "3.0"),
        "beta 1.0 second": r_file(second, "beta", "1.0"),
        "gone 1.0": r_file(first, "gone", "1.0", archived=True),
        "gone 2.0 second": r_file(second, "gone", "2.0"),
    }
    for record in records.values():
        await files.put(record, "x", replace=False)
    index = RIndex(files)
    repo = await catalog.get_repo("cran")

    listing = await index.packages(repo)
    alpha = await index.packages(repo, "alpha")

    assert listing.current == [records["alpha 1.10.0"], records["beta 1.0 second"]]
    assert sorted(f.filename for f in listing.archived) == [
        "alpha_1.9.0.tar.gz", "alpha_2.0.tar.gz", "gone_1.0.tar.gz"]
    assert {f.source_guid for f in listing.archived} == {first.guid}
    assert alpha.current == [records["alpha 1.10.0"]]
    assert sorted(f.version for f in alpha.archived) == ["1.9.0", "2.0"]
    empty = await index.packages(await catalog.create_repo("bare", "r", "", ACTOR))
    assert (empty.current, empty.archived) == ([], [])


# Racing transactions (PostgreSQL only) ----------------------------------------------


@pytest.fixture
def racing(pg_url: str) -> Iterator[tuple[Catalog, RFiles, GatedDatabase, str]]:
    """A PostgreSQL R files table whose writes can be raced through a Gate, its catalog,
    and its URL."""
    db = gated_database(pg_url)
    clock = TickingClock()
    yield Catalog(db, KINDS, clock), RFiles(db, clock), db, pg_url
    db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_identical_puts_both_succeed(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> None:
    """Two nodes adding the same new file at once: one adds it, the other is told it is
    unchanged (201 and 200 for the clients), never a constraint error."""
    catalog, files, db, url = racing
    source = await r_source(catalog)
    record = r_file(source)
    db.gate = Gate("INSERT INTO r_packages", url)

    results = await both(files.put(record, "cran", replace=False),
                         files.put(record, "cran", replace=False))
    db.gate = None

    assert sorted(value for _, value in results) == ["added", "unchanged"], results
    assert await files.files([source.guid]) == [record]


@pytest_twisted.ensureDeferred
async def test_concurrent_different_new_files_without_replace(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> None:
    """Two different files under one new filename at once, without replace: one is added,
    the other gets AlreadyExists (409 with the --replace hint), not a driver error."""
    catalog, files, db, url = racing
    source = await r_source(catalog)
    first, second = r_file(source, content=b"first"), r_file(source, content=b"second")
    db.gate = Gate("INSERT INTO r_packages", url)

    results = await both(files.put(first, "cran", replace=False),
                         files.put(second, "cran", replace=False))
    db.gate = None

    losers = [value for ok, value in results if not ok]
    assert [value for ok, value in results if ok] == ["added"], results
    assert len(losers) == 1 and losers[0].check(AlreadyExists), results
    assert "'alpha_1.0.0.tar.gz' already exists in source 'cran'" in str(losers[0].value)
    winner = first if results[0][0] else second
    assert await files.files([source.guid]) == [winner]


@pytest_twisted.ensureDeferred
async def test_concurrent_different_new_files_with_replace(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> None:
    """Two different files under one new filename at once, both with replace: one is
    added, the other then replaces it, and the row is the replacer's."""
    catalog, files, db, url = racing
    source = await r_source(catalog)
    first, second = r_file(source, content=b"first"), r_file(source, content=b"second")
    db.gate = Gate("INSERT INTO r_packages", url)

    results = await both(files.put(first, "cran", replace=True),
                         files.put(second, "cran", replace=True))
    db.gate = None

    assert all(ok for ok, _ in results), results
    assert sorted(value for _, value in results) == ["added", "replaced"], results
    replacer = first if results[0][1] == "replaced" else second
    replaced = second if replacer is first else first
    assert await files.files([source.guid]) == [replacer]
    assert (await history(db))[-1] == (
        "token:ci", "r.package.replaced", replacer.filename,
        f"{replaced.sha256} -> {replacer.sha256}")


async def _race_two_replacements(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> tuple[list[tuple[bool, Any]], RPackageFile, list[RPackageFile], RFiles, Database]:
    """An existing file replaced by two other files at once, both transactions having
    read the original before either updates it."""
    catalog, files, db, url = racing
    source = await r_source(catalog)
    original = r_file(source, content=b"original")
    await files.put(original, "cran", replace=False)
    contenders = [r_file(source, content=b"one", uploaded_by="alice"),
                  r_file(source, content=b"two", uploaded_by="bob")]
    db.gate = Gate("UPDATE r_packages SET source_guid", url)
    results = await both(files.put(contenders[0], "cran", replace=True),
                         files.put(contenders[1], "cran", replace=True))
    db.gate = None
    return results, original, contenders, files, db


@pytest_twisted.ensureDeferred
async def test_concurrent_replacements_both_succeed_and_the_last_wins(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> None:
    """Two ``rspm add --replace`` of other contents at once: both are told "replaced",
    neither fails, and the row holds whichever committed last, as its event says."""
    results, original, contenders, files, db = await _race_two_replacements(racing)

    assert [value for _, value in results] == ["replaced", "replaced"], results
    (stored,) = await files.files([original.source_guid])
    assert stored in contenders
    events = [e for e in await history(db) if e[1] == "r.package.replaced"]
    assert len(events) == 2
    assert events[-1][0] == stored.uploaded_by
    assert events[-1][3].endswith(f" -> {stored.sha256}")


@pytest_twisted.ensureDeferred
async def test_concurrent_replacements_log_what_each_replaced(
    racing: tuple[Catalog, RFiles, GatedDatabase, str],
) -> None:
    """The event log keeps every replaced digest: the second replacement's event names
    the digest of the first replacement, which it overwrote, not the original."""
    _, original, _, _, db = await _race_two_replacements(racing)

    events = [e for e in await history(db) if e[1] == "r.package.replaced"]
    first_to = events[0][3].split(" -> ")[1]
    assert events[0][3].startswith(f"{original.sha256} -> ")
    assert events[1][3].startswith(f"{first_to} -> "), events
