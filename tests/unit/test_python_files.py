"""Python files table contract tests: the same behaviour on SQLite and on PostgreSQL.

The rows of Python distributions (``pm.python.files.PythonFiles``), read as a repo
shows them: the first subscribed source that has a project wins it. Every test here
runs once per database through the ``provider`` fixture, except the few at the end
that race two transactions, which only PostgreSQL can run side by side (SQLite
serialises writers through one connection).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import pytest_twisted

from pm.catalog import Catalog
from pm.db import Database
from pm.errors import AlreadyExists, Conflict
from pm.packages import PackageRow
from pm.python.files import PythonFiles
from pm.testing import Clock
from tests.support.records import (
    ACTOR,
    KINDS,
    START,
    Gate,
    GatedDatabase,
    TickingClock,
    both,
    gated_database,
    history,
    python_file,
)


@pytest.fixture
def files(db: Database, clock: Clock) -> PythonFiles:
    """The Python files table under test."""
    return PythonFiles(db, clock)


@pytest_twisted.ensureDeferred
async def test_add_round_trips_every_field(catalog: Catalog, files: PythonFiles) -> None:
    """A recorded file comes back from file and project_files field for field."""
    src = await catalog.create_source("py", "local-python", ACTOR)
    record = python_file(
        src, "demo-1.0-py3-none-any.whl",
        signature_sha256="ab" * 32, signature_keyid="0123456789ABCDEF",
        signature_trusted=True, yanked=True, requires_python=None, summary=None,
        metadata_sha256=None, size=2**40,
    )
    assert await files.add(record) is True
    assert await files.file(src.guid, record.filename) == record
    assert await files.project_files([src.guid], "demo") == [record]


@pytest.mark.parametrize("trusted", [None, True, False])
@pytest_twisted.ensureDeferred
async def test_signature_trust_round_trips(
    catalog: Catalog, files: PythonFiles, trusted: bool | None
) -> None:
    """signature_trusted keeps its three states: unsigned, trusted, unknown key."""
    src = await catalog.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz", signature_trusted=trusted)
    await files.add(record)
    stored = await files.file(src.guid, record.filename)
    assert stored is not None
    assert stored.signature_trusted is trusted
    assert stored.yanked is False


@pytest_twisted.ensureDeferred
async def test_identical_file_again_is_not_new(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """Adding the identical file again returns False and records nothing more."""
    src = await catalog.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz")
    assert await files.add(record) is True
    before = await history(db)
    assert await files.add(replace(record, uploaded_at=START + 99)) is False
    assert await files.project_files([src.guid], "demo") == [record]
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_different_file_under_an_existing_name_is_refused(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """A different sha256 under an existing filename raises AlreadyExists (a Conflict)
    naming the file and the source; the recorded file stays as it was."""
    src = await catalog.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz", content=b"original")
    await files.add(record, "py")
    before = await history(db)
    impostor = python_file(src, "demo-1.0.tar.gz", content=b"something else")
    with pytest.raises(AlreadyExists) as caught:
        await files.add(impostor, "py")
    assert isinstance(caught.value, Conflict)
    assert (caught.value.filename, caught.value.source) == ("demo-1.0.tar.gz", "py")
    assert "'demo-1.0.tar.gz' already exists in source 'py'" in caught.value.message
    assert await files.file(src.guid, record.filename) == record
    assert await files.digests_in_use([impostor.sha256]) == set()
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_same_filename_in_two_sources_is_allowed(
    catalog: Catalog, files: PythonFiles
) -> None:
    """Filenames are unique per source, not across sources."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    assert await files.add(python_file(a, "demo-1.0.tar.gz", content=b"A"))
    assert await files.add(python_file(b, "demo-1.0.tar.gz", content=b"B"))
    fa = await files.file(a.guid, "demo-1.0.tar.gz")
    fb = await files.file(b.guid, "demo-1.0.tar.gz")
    assert fa is not None and fb is not None
    assert fa.sha256 != fb.sha256


@pytest_twisted.ensureDeferred
async def test_project_files_lists_one_project_of_one_source_by_filename(
    catalog: Catalog, files: PythonFiles
) -> None:
    """project_files returns a project's files in one source, ordered by filename."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    names_in_a = ["demo-2.0.tar.gz", "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    for filename in names_in_a:
        await files.add(python_file(a, filename, version=filename.split("-")[1]
                                    .removesuffix(".tar.gz")))
    await files.add(python_file(a, "other-1.0.tar.gz", project="other"))
    await files.add(python_file(b, "demo-3.0.tar.gz", version="3.0"))

    listed = await files.project_files([a.guid], "demo")
    assert [f.filename for f in listed] == sorted(names_in_a)
    assert {f.source_guid for f in listed} == {a.guid}
    assert await files.project_files([a.guid], "missing") == []


@pytest_twisted.ensureDeferred
async def test_file_unknown_is_none(catalog: Catalog, files: PythonFiles) -> None:
    """file() of an unknown filename (or of another source's file) is None."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    await files.add(python_file(a, "demo-1.0.tar.gz"))
    assert await files.file(a.guid, "demo-9.9.tar.gz") is None
    assert await files.file(b.guid, "demo-1.0.tar.gz") is None


@pytest_twisted.ensureDeferred
async def test_projects_first_subscribed_source_wins(
    catalog: Catalog, files: PythonFiles
) -> None:
    """A project in several sources is served from the first of them in precedence order."""
    first = await catalog.create_source("first", "local-python", ACTOR)
    second = await catalog.create_source("second", "local-python", ACTOR)
    await files.add(python_file(first, "shared-1.0.tar.gz", project="shared",
                                display_name="Shared", content=b"1"))
    await files.add(python_file(second, "shared-2.0.tar.gz", project="shared",
                                version="2.0", display_name="SHARED", content=b"2"))
    await files.add(python_file(second, "only-1.0.tar.gz", project="only",
                                display_name="Only"))

    assert await files.projects([first.guid, second.guid]) == {
        "shared": ("Shared", first.guid),
        "only": ("Only", second.guid),
    }
    assert await files.projects([second.guid, first.guid]) == {
        "shared": ("SHARED", second.guid),
        "only": ("Only", second.guid),
    }
    assert await files.projects([first.guid]) == {"shared": ("Shared", first.guid)}
    assert await files.projects([]) == {}
    assert await files.projects([str(uuid.uuid4())]) == {}


@pytest_twisted.ensureDeferred
async def test_repo_precedence_follows_subscription_order(
    catalog: Catalog, files: PythonFiles
) -> None:
    """The repo's source order, fed to projects, decides which source wins."""
    late = await catalog.create_source("a-late", "local-python", ACTOR)
    early = await catalog.create_source("z-early", "local-python", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)
    await catalog.subscribe("pypi", "z-early", ACTOR)
    await catalog.subscribe("pypi", "a-late", ACTOR)
    await files.add(python_file(late, "demo-1.0.tar.gz", content=b"late"))
    await files.add(python_file(early, "demo-1.0.tar.gz", content=b"early"))
    repo = await catalog.get_repo("pypi")
    winners = await files.projects([s.guid for s in repo.sources])
    assert winners["demo"][1] == early.guid


@pytest_twisted.ensureDeferred
async def test_project_files_take_the_first_source_that_has_the_project(
    catalog: Catalog, files: PythonFiles
) -> None:
    """Only the files of the first listed source holding the project are returned."""
    first = await catalog.create_source("first", "local-python", ACTOR)
    second = await catalog.create_source("second", "local-python", ACTOR)
    await files.add(python_file(second, "demo-1.0.tar.gz", content=b"2"))
    await files.add(python_file(second, "demo-2.0.tar.gz", version="2.0", content=b"2b"))
    await files.add(python_file(second, "other-1.0.tar.gz", project="other"))
    assert [f.filename for f in await files.project_files(
        [first.guid, second.guid], "demo")] == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    await files.add(python_file(first, "demo-1.0.tar.gz", content=b"1"))
    found = await files.project_files([first.guid, second.guid], "demo")
    assert [(f.source_guid, f.filename) for f in found] == [(first.guid, "demo-1.0.tar.gz")]
    assert await files.project_files([second.guid, first.guid], "demo") != found
    assert await files.project_files([first.guid], "missing") == []
    assert await files.project_files([], "demo") == []


@pytest_twisted.ensureDeferred
async def test_digests_in_use(catalog: Catalog, files: PythonFiles) -> None:
    """A digest is in use while any source holds a file, metadata or signature with it."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    same = b"identical bytes in two sources"
    record = python_file(a, "demo-1.0.tar.gz", content=same, signature_sha256="cd" * 32)
    assert record.metadata_sha256 is not None
    digests = [record.sha256, record.metadata_sha256, "cd" * 32]
    other = hashlib.sha256(b"other").hexdigest()
    assert await files.digests_in_use([*digests, other]) == set()
    await files.add(record)
    await files.add(python_file(b, "demo-1.0.tar.gz", content=same))
    assert await files.digests_in_use([*digests, other]) == set(digests)
    await catalog.delete_source("a", ACTOR)
    assert await files.digests_in_use(digests) == set(digests[:2])
    await catalog.delete_source("b", ACTOR)
    assert await files.digests_in_use(digests) == set()
    assert await files.digests_in_use([]) == set()


@pytest_twisted.ensureDeferred
async def test_add_signature_only_to_an_unsigned_file(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """A recorded file without a signature takes one (recorded with its key and trust,
    and as an event); the next is refused with False and changes nothing."""
    src = await catalog.create_source("a", "local-python", ACTOR)
    record = python_file(src, "demo-1.0-py3-none-any.whl")
    await files.add(record)

    assert await files.add_signature(record, "ab" * 32, "KEY1", False, "token:ci")
    assert not await files.add_signature(record, "cd" * 32, "KEY2", True, "token:ci")

    found = await files.file(src.guid, record.filename)
    assert found is not None
    assert (found.signature_sha256, found.signature_keyid, found.signature_trusted) == (
        "ab" * 32, "KEY1", False)
    assert (await history(db))[-1] == (
        "token:ci", "python.signature.added", record.filename, "ab" * 32)


# Replacing, listing and removing (what ``rspm add --replace`` and ``rspm remove`` use) --


@pytest_twisted.ensureDeferred
async def test_put_adds_keeps_or_replaces(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """put() of a new filename adds it, of the identical file changes nothing, and of
    other contents under the name replaces the row; each change is an event, the
    replacement's naming both digests."""
    src = await catalog.create_source("py", "local-python", ACTOR)
    original = python_file(src, "demo-1.0.tar.gz", content=b"original")
    changed = python_file(src, "demo-1.0.tar.gz", content=b"changed", uploaded_by="alice")
    start = len(await history(db))

    assert await files.put(original) == "added"
    assert await files.put(replace(original, uploaded_at=START + 99)) == "unchanged"
    assert await files.file(src.guid, original.filename) == original
    assert await files.put(changed) == "replaced"

    assert await files.file(src.guid, original.filename) == changed
    assert await files.project_files([src.guid], "demo") == [changed]
    assert await files.digests_in_use([original.sha256, changed.sha256]) == {changed.sha256}
    assert (await history(db))[start:] == [
        ("token:ci", "python.file.added", original.filename, original.sha256),
        ("alice", "python.file.replaced", original.filename,
         f"{original.sha256} -> {changed.sha256}"),
    ]


@pytest_twisted.ensureDeferred
async def test_rows_count_files_per_version_of_each_source(
    catalog: Catalog, files: PythonFiles
) -> None:
    """rows() gives one row per source, project and version with its number of files;
    name= picks one project and search= matches part of the normalized name, taking
    LIKE's wildcards literally."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    await files.add(python_file(a, "demo-1.0.tar.gz"))
    await files.add(python_file(a, "demo-1.0-py3-none-any.whl"))
    await files.add(python_file(a, "demo-2.0.tar.gz", version="2.0"))
    await files.add(python_file(a, "my_tool-1.0.tar.gz", project="my-tool"))
    await files.add(python_file(b, "demo-1.0.tar.gz", content=b"b's"))

    found = await files.rows([a.guid, b.guid])

    assert sorted(found, key=lambda r: (r.source_guid == b.guid, r.name, r.version)) == [
        PackageRow(a.guid, "demo", "Demo", "1.0", 2, False),
        PackageRow(a.guid, "demo", "Demo", "2.0", 1, False),
        PackageRow(a.guid, "my-tool", "My-Tool", "1.0", 1, False),
        PackageRow(b.guid, "demo", "Demo", "1.0", 1, False),
    ]
    assert {(r.name, r.version) for r in await files.rows([a.guid], name="demo")} == {
        ("demo", "1.0"), ("demo", "2.0")}
    assert [r.name for r in await files.rows([a.guid], search="My_T")] == ["my-tool"]
    assert await files.rows([a.guid], search="%") == []
    assert await files.rows([a.guid], search="d%o") == []
    assert await files.rows([]) == []


@pytest_twisted.ensureDeferred
async def test_delete_versions_removes_those_files_only(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """delete_versions removes the project's files of those versions in that source,
    each as an event carrying its digest and the comment, and names what it removed."""
    a = await catalog.create_source("a", "local-python", ACTOR)
    b = await catalog.create_source("b", "local-python", ACTOR)
    wheel = python_file(a, "demo-1.0-py3-none-any.whl")
    sdist = python_file(a, "demo-1.0.tar.gz")
    newer = python_file(a, "demo-2.0.tar.gz", version="2.0")
    for record in (wheel, sdist, newer, python_file(b, "demo-1.0.tar.gz", content=b"b's")):
        await files.add(record)
    start = len(await history(db))

    removed = await files.delete_versions(a.guid, "demo", ["1.0"], "alice", "broken build")

    assert removed == [(wheel.filename, "1.0"), (sdist.filename, "1.0")]
    assert await files.project_files([a.guid], "demo") == [newer]
    assert [f.filename for f in await files.project_files([b.guid], "demo")] == [
        "demo-1.0.tar.gz"]
    assert (await history(db))[start:] == [
        ("alice", "python.file.removed", wheel.filename, f"{wheel.sha256} broken build"),
        ("alice", "python.file.removed", sdist.filename, f"{sdist.sha256} broken build"),
    ]
    assert await files.delete_versions(a.guid, "demo", ["9.9"], "alice", "") == []


# Racing transactions (PostgreSQL only) ----------------------------------------------


@pytest.fixture
def racing(pg_url: str) -> Iterator[tuple[Catalog, PythonFiles, GatedDatabase, str]]:
    """A PostgreSQL files table whose writes can be raced through a Gate, its catalog,
    and its URL."""
    db = gated_database(pg_url)
    clock = TickingClock()
    yield Catalog(db, KINDS, clock), PythonFiles(db, clock), db, pg_url
    db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_identical_uploads_both_succeed(
    racing: tuple[Catalog, PythonFiles, GatedDatabase, str],
) -> None:
    """Two nodes recording the same file at once: one adds it, the other is told it was
    already there (200 for both clients), never a constraint error."""
    catalog, files, db, url = racing
    source = await catalog.create_source("pkgs", "local-python", ACTOR)
    record = python_file(source, "demo-1.0.tar.gz")
    db.gate = Gate("INSERT INTO python_files", url)

    results = await both(files.add(record), files.add(record))
    db.gate = None

    assert sorted(value for _, value in results) == [False, True], results
    assert [f.filename for f in await files.project_files([source.guid], "demo")] == [
        "demo-1.0.tar.gz"]


@pytest_twisted.ensureDeferred
async def test_concurrent_different_uploads_of_one_filename(
    racing: tuple[Catalog, PythonFiles, GatedDatabase, str],
) -> None:
    """Two different files under one filename at once: one wins, the other gets
    AlreadyExists (which the upload routes answer with 400 "File already exists" or 409),
    not a driver error."""
    catalog, files, db, url = racing
    source = await catalog.create_source("pkgs", "local-python", ACTOR)
    first = python_file(source, "demo-1.0.tar.gz", content=b"first")
    second = python_file(source, "demo-1.0.tar.gz", content=b"second")
    db.gate = Gate("INSERT INTO python_files", url)

    results = await both(files.add(first, "pkgs"), files.add(second, "pkgs"))
    db.gate = None

    losers = [value for ok, value in results if not ok]
    assert [value for ok, value in results if ok] == [True], results
    assert len(losers) == 1 and losers[0].check(AlreadyExists), results
    assert "'demo-1.0.tar.gz' already exists in source 'pkgs'" in str(losers[0].value)


@pytest_twisted.ensureDeferred
async def test_concurrent_identical_puts_both_succeed(
    racing: tuple[Catalog, PythonFiles, GatedDatabase, str],
) -> None:
    """Two nodes putting the same new file at once (``rspm add --replace`` run twice):
    one adds it, the other is told it is unchanged, never a constraint error."""
    catalog, files, db, url = racing
    source = await catalog.create_source("pkgs", "local-python", ACTOR)
    record = python_file(source, "demo-1.0.tar.gz")
    db.gate = Gate("INSERT INTO python_files", url)

    results = await both(files.put(record), files.put(record))
    db.gate = None

    assert sorted(value for _, value in results) == ["added", "unchanged"], results
    assert await files.project_files([source.guid], "demo") == [record]
