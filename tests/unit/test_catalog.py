"""Catalog contract tests: the same behaviour on SQLite and on PostgreSQL.

Sources, repos, subscriptions and the event log (``pm.catalog``). Every test here runs
once per database through the ``provider`` fixture, except the few at the end that race
two transactions, which only PostgreSQL can run side by side (SQLite serialises writers
through one connection).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import pytest_twisted

from pm.catalog import Catalog, Repo, Source, SourceKind
from pm.db import Database, Tx
from pm.errors import BadRequest, Conflict, NotFound
from pm.python.files import PythonFiles
from pm.testing import Clock
from pm.tokenstore import TokenStore
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
    table_rows,
)


@pytest.fixture
def files(db: Database, clock: Clock) -> PythonFiles:
    """The Python files table, on the same database as the catalog."""
    return PythonFiles(db, clock)


@pytest.fixture
def tokens(db: Database, clock: Clock) -> TokenStore:
    """The token store, on the same database as the catalog."""
    return TokenStore(db, clock)


def names(sources: tuple[Source, ...] | list[Source]) -> list[str]:
    return [s.name for s in sources]


def is_guid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# Sources --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_sources(catalog: Catalog, clock: Clock) -> None:
    """Created sources come back from get_source and list_sources (by name) unchanged."""
    python = await catalog.create_source("local-python", "local-python", ACTOR)
    clock.advance(10)
    r = await catalog.create_source("cran-local", "local", ACTOR)

    assert python.name == "local-python"
    assert python.type == "local-python"
    assert python.created_at == START
    assert is_guid(python.guid)
    assert r.created_at == START + 10
    assert python.guid != r.guid

    assert await catalog.get_source("local-python") == python
    assert await catalog.get_source("cran-local") == r
    assert await catalog.list_sources() == [r, python]


@pytest_twisted.ensureDeferred
async def test_list_sources_empty(catalog: Catalog) -> None:
    """A new database has no sources and no repos."""
    assert await catalog.list_sources() == []
    assert await catalog.list_repos() == []


@pytest_twisted.ensureDeferred
async def test_get_unknown_source_is_not_found(catalog: Catalog) -> None:
    """get_source of a name never created raises NotFound naming it."""
    with pytest.raises(NotFound, match="'nope'"):
        await catalog.get_source("nope")


@pytest_twisted.ensureDeferred
async def test_duplicate_source_is_a_conflict_and_changes_nothing(
    catalog: Catalog, db: Database, clock: Clock
) -> None:
    """A second source with an existing name raises Conflict and leaves the first intact."""
    first = await catalog.create_source("pkgs", "local-python", ACTOR)
    before = await history(db)
    clock.advance(5)
    for type_ in ("local-python", "local"):
        with pytest.raises(Conflict, match="already exists"):
            await catalog.create_source("pkgs", type_, "someone-else")
    assert await catalog.list_sources() == [first]
    assert await catalog.get_source("pkgs") == first
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_unknown_source_type_lists_valid_types(catalog: Catalog, db: Database) -> None:
    """An unknown source type raises BadRequest listing the valid types; nothing is made."""
    with pytest.raises(BadRequest) as caught:
        await catalog.create_source("pkgs", "pypi-mirror", ACTOR)
    message = caught.value.message
    assert "pypi-mirror" in message
    assert "local" in message
    assert "local-python" in message
    assert await catalog.list_sources() == []
    assert await history(db) == []


@pytest.mark.parametrize(
    "name",
    ["", "has space", "a/b", "a\\b", "semi;colon", "new\nline", "tab\t", "x" * 101,
     "quote'", "percent%20", "q?x", "hash#", "café", "naïve-2"],
)
@pytest_twisted.ensureDeferred
async def test_invalid_source_and_repo_names_are_refused(
    catalog: Catalog, db: Database, name: str
) -> None:
    """Names outside 1-100 ASCII letters, digits, '-', '_', '.' raise BadRequest; nothing
    is made."""
    with pytest.raises(BadRequest, match="invalid source name"):
        await catalog.create_source(name, "local-python", ACTOR)
    with pytest.raises(BadRequest, match="invalid repo name"):
        await catalog.create_repo(name, "python", "", ACTOR)
    assert await catalog.list_sources() == []
    assert await catalog.list_repos() == []
    assert await history(db) == []


@pytest.mark.parametrize("name", [".", ".."])
@pytest_twisted.ensureDeferred
async def test_dot_segment_names_are_refused(catalog: Catalog, name: str) -> None:
    """'.' and '..' are refused: as a URL path segment clients resolve them away."""
    with pytest.raises(BadRequest, match="invalid source name"):
        await catalog.create_source(name, "local-python", ACTOR)
    with pytest.raises(BadRequest, match="invalid repo name"):
        await catalog.create_repo(name, "python", "", ACTOR)


@pytest.mark.parametrize(
    "name",
    [
        "pyth\N{CYRILLIC SMALL LETTER O}n",
        "\N{FULLWIDTH LATIN SMALL LETTER P}\N{FULLWIDTH LATIN SMALL LETTER Y}"
        "\N{FULLWIDTH LATIN SMALL LETTER T}\N{FULLWIDTH LATIN SMALL LETTER H}"
        "\N{FULLWIDTH LATIN SMALL LETTER O}\N{FULLWIDTH LATIN SMALL LETTER N}",
    ],
    ids=["cyrillic-o", "full-width"],
)
@pytest_twisted.ensureDeferred
async def test_lookalike_names_are_refused(catalog: Catalog, db: Database, name: str) -> None:
    """A name that only looks like "python" (a Cyrillic "o", full-width letters) is
    refused with a message saying names are ASCII, so it cannot sit beside "python" and
    pass for it; the real "python" is still free."""
    with pytest.raises(BadRequest) as source:
        await catalog.create_source(name, "local-python", ACTOR)
    with pytest.raises(BadRequest) as repo:
        await catalog.create_repo(name, "python", "", ACTOR)
    for caught, what in ((source, "source"), (repo, "repo")):
        assert caught.value.message == (
            f"invalid {what} name {name!r}: use 1-100 ASCII letters, digits, '-', '_' or '.'")
    assert await catalog.list_sources() == []
    assert await catalog.list_repos() == []
    assert await history(db) == []
    assert (await catalog.create_source("python", "local-python", ACTOR)).name == "python"
    assert (await catalog.create_repo("python", "python", "", ACTOR)).name == "python"


@pytest.mark.parametrize("name", ["a", "Z9", "local-python", "my_repo.v2", "x" * 100])
@pytest_twisted.ensureDeferred
async def test_valid_names_are_accepted(catalog: Catalog, name: str) -> None:
    """ASCII letters, digits, '-', '_' and '.' up to 100 characters make a valid name."""
    assert (await catalog.create_source(name, "local-python", ACTOR)).name == name
    assert (await catalog.create_repo(name, "python", "", ACTOR)).name == name


@pytest_twisted.ensureDeferred
async def test_sources_by_name_keeps_the_requested_order(catalog: Catalog) -> None:
    """sources_by_name returns the named sources in the order asked for."""
    for name in ("a", "b", "c"):
        await catalog.create_source(name, "local-python", ACTOR)
    assert names(await catalog.sources_by_name(["c", "a"])) == ["c", "a"]
    assert await catalog.sources_by_name([]) == []


@pytest_twisted.ensureDeferred
async def test_sources_by_name_lists_what_exists_when_one_is_missing(catalog: Catalog) -> None:
    """A missing name raises NotFound naming it and listing the sources that exist."""
    with pytest.raises(NotFound, match="none yet"):
        await catalog.sources_by_name(["ghost"])
    await catalog.create_source("real", "local-python", ACTOR)
    with pytest.raises(NotFound) as caught:
        await catalog.sources_by_name(["real", "ghost"])
    assert "'ghost'" in caught.value.message
    assert "real" in caught.value.message


# Repos ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_repos(catalog: Catalog, clock: Clock) -> None:
    """Created repos come back from get_repo and list_repos (by name), with no sources yet."""
    pypi = await catalog.create_repo("pypi", "python", "Our wheels", ACTOR)
    clock.advance(1)
    cran = await catalog.create_repo("cran", "r", "", ACTOR)

    assert pypi == Repo(pypi.guid, "pypi", "python", "Our wheels", START, ())
    assert cran.created_at == START + 1
    assert is_guid(pypi.guid)
    assert await catalog.get_repo("pypi") == pypi
    assert await catalog.list_repos() == [cran, pypi]
    assert pypi.to_json()["sources"] == []


@pytest_twisted.ensureDeferred
async def test_get_unknown_repo_is_not_found(catalog: Catalog) -> None:
    """get_repo of a name never created raises NotFound naming it."""
    with pytest.raises(NotFound, match="'nope'"):
        await catalog.get_repo("nope")


@pytest_twisted.ensureDeferred
async def test_duplicate_repo_is_a_conflict_and_changes_nothing(
    catalog: Catalog, db: Database
) -> None:
    """A second repo with an existing name raises Conflict; the first keeps its fields."""
    first = await catalog.create_repo("pypi", "python", "original", ACTOR)
    before = await history(db)
    with pytest.raises(Conflict, match="already exists"):
        await catalog.create_repo("pypi", "r", "replacement", ACTOR)
    assert await catalog.list_repos() == [first]
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_source_and_repo_may_share_a_name(catalog: Catalog) -> None:
    """Sources and repos are separate namespaces."""
    await catalog.create_source("shared", "local-python", ACTOR)
    await catalog.create_repo("shared", "python", "", ACTOR)
    assert names(await catalog.list_sources()) == ["shared"]
    assert [r.name for r in await catalog.list_repos()] == ["shared"]


@pytest_twisted.ensureDeferred
async def test_unknown_repo_type_lists_valid_types(catalog: Catalog, db: Database) -> None:
    """An unknown repo type raises BadRequest listing python and r; nothing is made."""
    with pytest.raises(BadRequest) as caught:
        await catalog.create_repo("pypi", "conda", "", ACTOR)
    assert "conda" in caught.value.message
    assert "python, r" in caught.value.message
    assert await catalog.list_repos() == []
    assert await history(db) == []


# Subscriptions ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscription_order_is_kept(catalog: Catalog) -> None:
    """A repo lists its sources in the order they were subscribed, not by name."""
    for name in ("alpha", "beta", "gamma"):
        await catalog.create_source(name, "local-python", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)

    after_first = await catalog.subscribe("pypi", "gamma", ACTOR)
    assert names(after_first.sources) == ["gamma"]
    await catalog.subscribe("pypi", "alpha", ACTOR)
    last = await catalog.subscribe("pypi", "beta", ACTOR)

    assert names(last.sources) == ["gamma", "alpha", "beta"]
    assert names((await catalog.get_repo("pypi")).sources) == ["gamma", "alpha", "beta"]
    (listed,) = await catalog.list_repos()
    assert names(listed.sources) == ["gamma", "alpha", "beta"]
    assert listed.to_json()["sources"] == ["gamma", "alpha", "beta"]
    assert listed.sources[0] == await catalog.get_source("gamma")


@pytest_twisted.ensureDeferred
async def test_one_source_feeds_several_repos(catalog: Catalog) -> None:
    """The same source may be subscribed by several repos, each with its own order."""
    await catalog.create_source("a", "local-python", ACTOR)
    await catalog.create_source("b", "local-python", ACTOR)
    await catalog.create_repo("one", "python", "", ACTOR)
    await catalog.create_repo("two", "python", "", ACTOR)
    await catalog.subscribe("one", "a", ACTOR)
    await catalog.subscribe("one", "b", ACTOR)
    await catalog.subscribe("two", "b", ACTOR)
    await catalog.subscribe("two", "a", ACTOR)
    assert names((await catalog.get_repo("one")).sources) == ["a", "b"]
    assert names((await catalog.get_repo("two")).sources) == ["b", "a"]


@pytest_twisted.ensureDeferred
async def test_subscribing_across_ecosystems_is_refused(catalog: Catalog, db: Database) -> None:
    """An R source cannot feed a python repo, nor a python source an R repo."""
    await catalog.create_source("cran-local", "local", ACTOR)
    await catalog.create_source("py-local", "local-python", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)
    await catalog.create_repo("cran", "r", "", ACTOR)
    before = await history(db)

    with pytest.raises(BadRequest) as caught:
        await catalog.subscribe("pypi", "cran-local", ACTOR)
    assert "cran-local" in caught.value.message
    assert "pypi" in caught.value.message
    with pytest.raises(BadRequest):
        await catalog.subscribe("cran", "py-local", ACTOR)

    assert (await catalog.get_repo("pypi")).sources == ()
    assert (await catalog.get_repo("cran")).sources == ()
    assert await history(db) == before
    assert await table_rows(db, "SELECT * FROM subscriptions") == []


@pytest_twisted.ensureDeferred
async def test_subscribe_to_unknown_repo_lists_the_repos(catalog: Catalog) -> None:
    """Subscribing an unknown repo raises NotFound naming it and listing existing repos."""
    await catalog.create_source("src", "local-python", ACTOR)
    with pytest.raises(NotFound, match="none yet"):
        await catalog.subscribe("ghost", "src", ACTOR)
    await catalog.create_repo("zeta", "python", "", ACTOR)
    await catalog.create_repo("alpha", "python", "", ACTOR)
    with pytest.raises(NotFound) as caught:
        await catalog.subscribe("ghost", "src", ACTOR)
    assert "'ghost'" in caught.value.message
    assert "alpha, zeta" in caught.value.message


@pytest_twisted.ensureDeferred
async def test_subscribe_to_unknown_source_lists_the_sources(catalog: Catalog) -> None:
    """Subscribing an unknown source raises NotFound naming it and listing existing sources."""
    await catalog.create_repo("pypi", "python", "", ACTOR)
    with pytest.raises(NotFound, match="none yet"):
        await catalog.subscribe("pypi", "ghost", ACTOR)
    await catalog.create_source("s2", "local-python", ACTOR)
    await catalog.create_source("s1", "local", ACTOR)
    with pytest.raises(NotFound) as caught:
        await catalog.subscribe("pypi", "ghost", ACTOR)
    assert "'ghost'" in caught.value.message
    assert "s1, s2" in caught.value.message
    assert (await catalog.get_repo("pypi")).sources == ()


@pytest_twisted.ensureDeferred
async def test_subscribing_twice_is_a_conflict(catalog: Catalog, db: Database) -> None:
    """Subscribing a repo to a source it already has raises Conflict; order is unchanged."""
    await catalog.create_source("a", "local-python", ACTOR)
    await catalog.create_source("b", "local-python", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)
    await catalog.subscribe("pypi", "a", ACTOR)
    await catalog.subscribe("pypi", "b", ACTOR)
    before = await history(db)
    with pytest.raises(Conflict, match="already subscribed"):
        await catalog.subscribe("pypi", "a", ACTOR)
    assert names((await catalog.get_repo("pypi")).sources) == ["a", "b"]
    assert await history(db) == before


# Deleting sources -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_source_removes_its_subscriptions_and_files(
    catalog: Catalog, files: PythonFiles, db: Database
) -> None:
    """Deleting a source drops it from every repo and forgets its files; others stay."""
    doomed = await catalog.create_source("doomed", "local-python", ACTOR)
    kept = await catalog.create_source("kept", "local-python", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)
    await catalog.create_repo("other", "python", "", ACTOR)
    await catalog.subscribe("pypi", "doomed", ACTOR)
    await catalog.subscribe("pypi", "kept", ACTOR)
    await catalog.subscribe("other", "doomed", ACTOR)
    gone = python_file(doomed, "demo-1.0.tar.gz", content=b"doomed bytes")
    stays = python_file(kept, "demo-1.0.tar.gz", content=b"kept bytes")
    assert await files.add(gone)
    assert await files.add(stays)

    assert await catalog.delete_source("doomed", ACTOR) == doomed

    with pytest.raises(NotFound):
        await catalog.get_source("doomed")
    assert await catalog.list_sources() == [kept]
    assert names((await catalog.get_repo("pypi")).sources) == ["kept"]
    assert (await catalog.get_repo("other")).sources == ()
    assert await files.file(doomed.guid, gone.filename) is None
    assert await files.project_files([doomed.guid], "demo") == []
    assert await files.digests_in_use([gone.sha256]) == set()
    assert await files.file(kept.guid, stays.filename) == stays
    assert await table_rows(db, "SELECT * FROM subscriptions WHERE source_guid = ?",
                            doomed.guid) == []
    assert await table_rows(db, "SELECT id FROM python_files WHERE source_guid = ?",
                            doomed.guid) == []


@pytest_twisted.ensureDeferred
async def test_delete_source_then_recreate_gets_a_new_guid(
    catalog: Catalog, files: PythonFiles
) -> None:
    """A source re-created under a deleted name is a new source with no files."""
    old = await catalog.create_source("pkgs", "local-python", ACTOR)
    await files.add(python_file(old, "demo-1.0.tar.gz"))
    await catalog.delete_source("pkgs", ACTOR)
    new = await catalog.create_source("pkgs", "local-python", ACTOR)
    assert new.guid != old.guid
    assert await files.projects([new.guid]) == {}


@pytest_twisted.ensureDeferred
async def test_delete_unknown_source_is_not_found(catalog: Catalog, db: Database) -> None:
    """Deleting a source that does not exist raises NotFound and records nothing."""
    with pytest.raises(NotFound, match="'ghost'"):
        await catalog.delete_source("ghost", ACTOR)
    assert await history(db) == []


@pytest_twisted.ensureDeferred
async def test_delete_source_deletes_rows_through_its_own_kind(
    db: Database, clock: Clock
) -> None:
    """Deleting a source calls its own kind's delete_rows, with the source's GUID and in
    the delete's transaction (a failure there leaves the source in place), and no other
    kind's."""
    calls: list[tuple[str, str]] = []

    def deleter(kind: str) -> SourceKind:
        def delete_rows(tx: Tx, source_guid: str) -> None:
            calls.append((kind, source_guid))
            if kind == "broken":
                raise RuntimeError("the ecosystem's table is gone")

        return SourceKind(kind, "python", delete_rows)

    catalog = Catalog(db, [deleter("mine"), deleter("other"), deleter("broken")], clock)
    mine = await catalog.create_source("mine", "mine", ACTOR)
    await catalog.create_source("other", "other", ACTOR)
    broken = await catalog.create_source("broken", "broken", ACTOR)
    await catalog.create_repo("pypi", "python", "", ACTOR)
    await catalog.subscribe("pypi", "broken", ACTOR)
    before = await history(db)

    assert await catalog.delete_source("mine", ACTOR) == mine
    assert calls == [("mine", mine.guid)]

    with pytest.raises(RuntimeError):
        await catalog.delete_source("broken", ACTOR)
    assert calls[1:] == [("broken", broken.guid)]
    assert names(await catalog.list_sources()) == ["broken", "other"]
    assert names((await catalog.get_repo("pypi")).sources) == ["broken"]
    assert await history(db) == [*before, (ACTOR, "source.deleted", "mine", "")]


# Events -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_change_records_an_event(
    catalog: Catalog, tokens: TokenStore, files: PythonFiles, db: Database, clock: Clock
) -> None:
    """Each change is an event with who did it, what, to what, and when."""
    src = await catalog.create_source("py", "local-python", "alice")
    clock.advance(1)
    await catalog.create_repo("pypi", "python", "d", "bob")
    clock.advance(1)
    await catalog.subscribe("pypi", "py", "carol")
    clock.advance(1)
    guid = str(uuid.uuid4())
    await tokens.create_token(guid, "for CI", "sources:write", (src.guid,), None, "dave")
    clock.advance(1)
    record = python_file(src, "demo-1.0-py3-none-any.whl", uploaded_by="token:ci")
    await files.add(record)
    clock.advance(1)
    await tokens.revoke_token(guid, "erin")
    clock.advance(1)
    await catalog.delete_source("py", "frank")

    assert await history(db) == [
        ("alice", "source.created", "py", "local-python"),
        ("bob", "repo.created", "pypi", "python"),
        ("carol", "repo.subscribed", "pypi", "py"),
        ("dave", "token.created", guid, "sources:write for CI"),
        ("token:ci", "python.file.added", record.filename, record.sha256),
        ("erin", "token.revoked", guid, ""),
        ("frank", "source.deleted", "py", ""),
    ]
    events = await catalog.events()
    assert [e.at for e in events] == [START + i for i in range(6, -1, -1)]
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    assert events[0].to_json()["action"] == "source.deleted"


@pytest_twisted.ensureDeferred
async def test_events_limit_returns_the_newest(catalog: Catalog) -> None:
    """events(limit) returns only the newest `limit` events, newest first."""
    for i in range(5):
        await catalog.create_source(f"s{i}", "local-python", ACTOR)
    latest = await catalog.events(limit=2)
    assert [e.subject for e in latest] == ["s4", "s3"]


# Transactions -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_failed_transaction_leaves_no_row(catalog: Catalog, db: Database) -> None:
    """An exception inside Database.write after an insert rolls the insert back."""

    class Abort(Exception):
        pass

    def work(tx: Tx) -> None:
        tx.run("INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
               str(uuid.uuid4()), "half", "local-python", START)
        tx.run("INSERT INTO events (at, actor, action, subject, detail)"
               " VALUES (?, ?, ?, ?, ?)", START, ACTOR, "source.created", "half", "")
        raise Abort

    with pytest.raises(Abort):
        await catalog.db.write(work)
    assert await catalog.list_sources() == []
    assert await table_rows(db, "SELECT * FROM sources") == []
    assert await history(db) == []
    # The connection is usable afterwards.
    assert (await catalog.create_source("whole", "local-python", ACTOR)).name == "whole"


@pytest_twisted.ensureDeferred
async def test_ping_and_provider(catalog: Catalog, provider: str) -> None:
    """ping() succeeds on a working database and provider names it."""
    await catalog.ping()
    assert catalog.provider == provider


# Racing transactions (PostgreSQL only) ----------------------------------------------


@pytest.fixture
def racing(pg_url: str) -> Iterator[tuple[Catalog, GatedDatabase, str]]:
    """A PostgreSQL catalog whose writes can be raced through a Gate, and its URL."""
    db = gated_database(pg_url)
    yield Catalog(db, KINDS, TickingClock()), db, pg_url
    db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_subscriptions_get_distinct_positions(
    racing: tuple[Catalog, GatedDatabase, str],
) -> None:
    """Two subscriptions to one repo at the same moment both land, in a definite order."""
    catalog, db, url = racing
    await catalog.create_source("a", "local-python", ACTOR)
    await catalog.create_source("b", "local-python", ACTOR)
    repo = await catalog.create_repo("pypi", "python", "", ACTOR)
    db.gate = Gate("INSERT INTO subscriptions", url)

    results = await both(catalog.subscribe("pypi", "a", ACTOR),
                         catalog.subscribe("pypi", "b", ACTOR))
    db.gate = None

    assert [ok for ok, _ in results] == [True, True], results
    positions = await table_rows(db, "SELECT position FROM subscriptions WHERE repo_guid = ?"
                                     " ORDER BY position", repo.guid)
    assert [p["position"] for p in positions] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_of_one_name_make_one_source(
    racing: tuple[Catalog, GatedDatabase, str],
) -> None:
    """Two nodes creating the same source name at once: one wins, the other gets Conflict."""
    catalog, db, url = racing
    db.gate = Gate("INSERT INTO sources", url)

    results = await both(catalog.create_source("pkgs", "local-python", "node-1"),
                         catalog.create_source("pkgs", "local-python", "node-2"))
    db.gate = None

    winners = [value for ok, value in results if ok]
    losers = [value for ok, value in results if not ok]
    assert len(winners) == 1 and len(losers) == 1, results
    assert losers[0].check(Conflict)
    assert await catalog.list_sources() == winners
    assert [e[1] for e in await history(db)] == ["source.created"]
