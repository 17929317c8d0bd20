"""Store contract tests: the same behaviour on SQLite and on PostgreSQL.

Every test here runs once per database through the ``provider`` fixture, except the
few at the end that race two transactions, which only PostgreSQL can run side by
side (SQLite serialises writers through one connection).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import psycopg2
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from pm.db import Database, Dialect, Tx, migrate, postgres_dialect, sqlite_dialect
from pm.errors import BadRequest, BadUpload, Conflict, NotFound
from pm.store import Repo, Source, Store, TokenRecord
from tests.support.records import python_file

START = 1_700_000_000.25
ACTOR = "admin@unix"
EventTuple = tuple[str, str, str, str]


class FakeClock:
    """A clock that moves only when told to, so recorded times are exact."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class TickingClock:
    """A thread-safe clock that returns a later time on every call."""

    def __init__(self, now: float = START) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += 1.0
            return self._now


def make_dialect(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Dialect:
    if provider == "postgres":
        return postgres_dialect(request.getfixturevalue("pg_url"))
    return sqlite_dialect(tmp_path / "db")


@pytest.fixture
def dialect(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Dialect:
    """A freshly migrated, empty database: SQLite in tmp_path, then PostgreSQL."""
    d = make_dialect(provider, tmp_path, request)
    migrate(d)
    return d


@pytest.fixture
def clock() -> FakeClock:
    """The store's injected clock."""
    return FakeClock()


@pytest.fixture
def store(dialect: Dialect, clock: FakeClock) -> Iterator[Store]:
    """A Store over a real adbapi pool; the pool is closed after the test."""
    db = Database(dialect)
    yield Store(db, clock)
    db.close()


async def rows(store: Store, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Read rows straight from the tables, bypassing the store's own queries."""
    return await store.db.read(lambda tx: tx.all(sql, *params))


async def history(store: Store) -> list[EventTuple]:
    """Every event, oldest first, as (actor, action, subject, detail)."""
    return [(e.actor, e.action, e.subject, e.detail) for e in reversed(await store.events(1000))]


def names(sources: tuple[Source, ...] | list[Source]) -> list[str]:
    return [s.name for s in sources]




def is_guid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# Sources --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_sources(store: Store, clock: FakeClock) -> None:
    """Created sources come back from get_source and list_sources (by name) unchanged."""
    python = await store.create_source("local-python", "local-python", ACTOR)
    clock.advance(10)
    r = await store.create_source("cran-local", "local", ACTOR)

    assert python.name == "local-python"
    assert python.type == "local-python"
    assert python.created_at == START
    assert is_guid(python.guid)
    assert r.created_at == START + 10
    assert python.guid != r.guid

    assert await store.get_source("local-python") == python
    assert await store.get_source("cran-local") == r
    assert await store.list_sources() == [r, python]


@pytest_twisted.ensureDeferred
async def test_list_sources_empty(store: Store) -> None:
    """A new database has no sources and no repos."""
    assert await store.list_sources() == []
    assert await store.list_repos() == []


@pytest_twisted.ensureDeferred
async def test_get_unknown_source_is_not_found(store: Store) -> None:
    """get_source of a name never created raises NotFound naming it."""
    with pytest.raises(NotFound, match="'nope'"):
        await store.get_source("nope")


@pytest_twisted.ensureDeferred
async def test_duplicate_source_is_a_conflict_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """A second source with an existing name raises Conflict and leaves the first intact."""
    first = await store.create_source("pkgs", "local-python", ACTOR)
    before = await history(store)
    clock.advance(5)
    for type_ in ("local-python", "local"):
        with pytest.raises(Conflict, match="already exists"):
            await store.create_source("pkgs", type_, "someone-else")
    assert await store.list_sources() == [first]
    assert await store.get_source("pkgs") == first
    assert await history(store) == before


@pytest_twisted.ensureDeferred
async def test_unknown_source_type_lists_valid_types(store: Store) -> None:
    """An unknown source type raises BadRequest listing the valid types; nothing is made."""
    with pytest.raises(BadRequest) as caught:
        await store.create_source("pkgs", "pypi-mirror", ACTOR)
    message = caught.value.message
    assert "pypi-mirror" in message
    assert "local" in message
    assert "local-python" in message
    assert await store.list_sources() == []
    assert await history(store) == []


@pytest.mark.parametrize(
    "name",
    ["", "has space", "a/b", "a\\b", "semi;colon", "new\nline", "tab\t", "x" * 101,
     "quote'", "percent%20", "q?x", "hash#"],
)
@pytest_twisted.ensureDeferred
async def test_invalid_source_and_repo_names_are_refused(store: Store, name: str) -> None:
    """Names outside 1-100 letters, digits, '-', '_', '.' raise BadRequest; nothing is made."""
    with pytest.raises(BadRequest, match="invalid source name"):
        await store.create_source(name, "local-python", ACTOR)
    with pytest.raises(BadRequest, match="invalid repo name"):
        await store.create_repo(name, "python", "", ACTOR)
    assert await store.list_sources() == []
    assert await store.list_repos() == []
    assert await history(store) == []


@pytest.mark.parametrize("name", [".", ".."])
@pytest_twisted.ensureDeferred
async def test_dot_segment_names_are_refused(store: Store, name: str) -> None:
    """'.' and '..' are refused: as a URL path segment clients resolve them away."""
    with pytest.raises(BadRequest, match="invalid source name"):
        await store.create_source(name, "local-python", ACTOR)
    with pytest.raises(BadRequest, match="invalid repo name"):
        await store.create_repo(name, "python", "", ACTOR)


@pytest.mark.parametrize("name", ["a", "Z9", "local-python", "my_repo.v2", "x" * 100])
@pytest_twisted.ensureDeferred
async def test_valid_names_are_accepted(store: Store, name: str) -> None:
    """Letters, digits, '-', '_' and '.' up to 100 characters make a valid name."""
    assert (await store.create_source(name, "local-python", ACTOR)).name == name
    assert (await store.create_repo(name, "python", "", ACTOR)).name == name


@pytest_twisted.ensureDeferred
async def test_sources_by_name_keeps_the_requested_order(store: Store) -> None:
    """sources_by_name returns the named sources in the order asked for."""
    for name in ("a", "b", "c"):
        await store.create_source(name, "local-python", ACTOR)
    assert names(await store.sources_by_name(["c", "a"])) == ["c", "a"]
    assert await store.sources_by_name([]) == []


@pytest_twisted.ensureDeferred
async def test_sources_by_name_lists_what_exists_when_one_is_missing(store: Store) -> None:
    """A missing name raises NotFound naming it and listing the sources that exist."""
    with pytest.raises(NotFound, match="none yet"):
        await store.sources_by_name(["ghost"])
    await store.create_source("real", "local-python", ACTOR)
    with pytest.raises(NotFound) as caught:
        await store.sources_by_name(["real", "ghost"])
    assert "'ghost'" in caught.value.message
    assert "real" in caught.value.message


# Repos ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_repos(store: Store, clock: FakeClock) -> None:
    """Created repos come back from get_repo and list_repos (by name), with no sources yet."""
    pypi = await store.create_repo("pypi", "python", "Our wheels", ACTOR)
    clock.advance(1)
    cran = await store.create_repo("cran", "r", "", ACTOR)

    assert pypi == Repo(pypi.guid, "pypi", "python", "Our wheels", START, ())
    assert cran.created_at == START + 1
    assert is_guid(pypi.guid)
    assert await store.get_repo("pypi") == pypi
    assert await store.list_repos() == [cran, pypi]
    assert pypi.to_json()["sources"] == []


@pytest_twisted.ensureDeferred
async def test_get_unknown_repo_is_not_found(store: Store) -> None:
    """get_repo of a name never created raises NotFound naming it."""
    with pytest.raises(NotFound, match="'nope'"):
        await store.get_repo("nope")


@pytest_twisted.ensureDeferred
async def test_duplicate_repo_is_a_conflict_and_changes_nothing(store: Store) -> None:
    """A second repo with an existing name raises Conflict; the first keeps its fields."""
    first = await store.create_repo("pypi", "python", "original", ACTOR)
    before = await history(store)
    with pytest.raises(Conflict, match="already exists"):
        await store.create_repo("pypi", "r", "replacement", ACTOR)
    assert await store.list_repos() == [first]
    assert await history(store) == before


@pytest_twisted.ensureDeferred
async def test_source_and_repo_may_share_a_name(store: Store) -> None:
    """Sources and repos are separate namespaces."""
    await store.create_source("shared", "local-python", ACTOR)
    await store.create_repo("shared", "python", "", ACTOR)
    assert names(await store.list_sources()) == ["shared"]
    assert [r.name for r in await store.list_repos()] == ["shared"]


@pytest_twisted.ensureDeferred
async def test_unknown_repo_type_lists_valid_types(store: Store) -> None:
    """An unknown repo type raises BadRequest listing python and r; nothing is made."""
    with pytest.raises(BadRequest) as caught:
        await store.create_repo("pypi", "conda", "", ACTOR)
    assert "conda" in caught.value.message
    assert "python, r" in caught.value.message
    assert await store.list_repos() == []
    assert await history(store) == []


# Subscriptions ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscription_order_is_kept(store: Store) -> None:
    """A repo lists its sources in the order they were subscribed, not by name."""
    for name in ("alpha", "beta", "gamma"):
        await store.create_source(name, "local-python", ACTOR)
    await store.create_repo("pypi", "python", "", ACTOR)

    after_first = await store.subscribe("pypi", "gamma", ACTOR)
    assert names(after_first.sources) == ["gamma"]
    await store.subscribe("pypi", "alpha", ACTOR)
    last = await store.subscribe("pypi", "beta", ACTOR)

    assert names(last.sources) == ["gamma", "alpha", "beta"]
    assert names((await store.get_repo("pypi")).sources) == ["gamma", "alpha", "beta"]
    (listed,) = await store.list_repos()
    assert names(listed.sources) == ["gamma", "alpha", "beta"]
    assert listed.to_json()["sources"] == ["gamma", "alpha", "beta"]
    assert listed.sources[0] == await store.get_source("gamma")


@pytest_twisted.ensureDeferred
async def test_one_source_feeds_several_repos(store: Store) -> None:
    """The same source may be subscribed by several repos, each with its own order."""
    await store.create_source("a", "local-python", ACTOR)
    await store.create_source("b", "local-python", ACTOR)
    await store.create_repo("one", "python", "", ACTOR)
    await store.create_repo("two", "python", "", ACTOR)
    await store.subscribe("one", "a", ACTOR)
    await store.subscribe("one", "b", ACTOR)
    await store.subscribe("two", "b", ACTOR)
    await store.subscribe("two", "a", ACTOR)
    assert names((await store.get_repo("one")).sources) == ["a", "b"]
    assert names((await store.get_repo("two")).sources) == ["b", "a"]


@pytest_twisted.ensureDeferred
async def test_subscribing_across_ecosystems_is_refused(store: Store) -> None:
    """An R source cannot feed a python repo, nor a python source an R repo."""
    await store.create_source("cran-local", "local", ACTOR)
    await store.create_source("py-local", "local-python", ACTOR)
    await store.create_repo("pypi", "python", "", ACTOR)
    await store.create_repo("cran", "r", "", ACTOR)
    before = await history(store)

    with pytest.raises(BadRequest) as caught:
        await store.subscribe("pypi", "cran-local", ACTOR)
    assert "cran-local" in caught.value.message
    assert "pypi" in caught.value.message
    with pytest.raises(BadRequest):
        await store.subscribe("cran", "py-local", ACTOR)

    assert (await store.get_repo("pypi")).sources == ()
    assert (await store.get_repo("cran")).sources == ()
    assert await history(store) == before
    assert await rows(store, "SELECT * FROM subscriptions") == []


@pytest_twisted.ensureDeferred
async def test_subscribe_to_unknown_repo_lists_the_repos(store: Store) -> None:
    """Subscribing an unknown repo raises NotFound naming it and listing existing repos."""
    await store.create_source("src", "local-python", ACTOR)
    with pytest.raises(NotFound, match="none yet"):
        await store.subscribe("ghost", "src", ACTOR)
    await store.create_repo("zeta", "python", "", ACTOR)
    await store.create_repo("alpha", "python", "", ACTOR)
    with pytest.raises(NotFound) as caught:
        await store.subscribe("ghost", "src", ACTOR)
    assert "'ghost'" in caught.value.message
    assert "alpha, zeta" in caught.value.message


@pytest_twisted.ensureDeferred
async def test_subscribe_to_unknown_source_lists_the_sources(store: Store) -> None:
    """Subscribing an unknown source raises NotFound naming it and listing existing sources."""
    await store.create_repo("pypi", "python", "", ACTOR)
    with pytest.raises(NotFound, match="none yet"):
        await store.subscribe("pypi", "ghost", ACTOR)
    await store.create_source("s2", "local-python", ACTOR)
    await store.create_source("s1", "local", ACTOR)
    with pytest.raises(NotFound) as caught:
        await store.subscribe("pypi", "ghost", ACTOR)
    assert "'ghost'" in caught.value.message
    assert "s1, s2" in caught.value.message
    assert (await store.get_repo("pypi")).sources == ()


@pytest_twisted.ensureDeferred
async def test_subscribing_twice_is_a_conflict(store: Store) -> None:
    """Subscribing a repo to a source it already has raises Conflict; order is unchanged."""
    await store.create_source("a", "local-python", ACTOR)
    await store.create_source("b", "local-python", ACTOR)
    await store.create_repo("pypi", "python", "", ACTOR)
    await store.subscribe("pypi", "a", ACTOR)
    await store.subscribe("pypi", "b", ACTOR)
    before = await history(store)
    with pytest.raises(Conflict, match="already subscribed"):
        await store.subscribe("pypi", "a", ACTOR)
    assert names((await store.get_repo("pypi")).sources) == ["a", "b"]
    assert await history(store) == before


# Deleting sources --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_source_removes_its_subscriptions_and_files(store: Store) -> None:
    """Deleting a source drops it from every repo and forgets its files; others stay."""
    doomed = await store.create_source("doomed", "local-python", ACTOR)
    kept = await store.create_source("kept", "local-python", ACTOR)
    await store.create_repo("pypi", "python", "", ACTOR)
    await store.create_repo("other", "python", "", ACTOR)
    await store.subscribe("pypi", "doomed", ACTOR)
    await store.subscribe("pypi", "kept", ACTOR)
    await store.subscribe("other", "doomed", ACTOR)
    gone = python_file(doomed, "demo-1.0.tar.gz", content=b"doomed bytes")
    stays = python_file(kept, "demo-1.0.tar.gz", content=b"kept bytes")
    assert await store.add_python_file(gone)
    assert await store.add_python_file(stays)

    assert await store.delete_source("doomed", ACTOR) == doomed

    with pytest.raises(NotFound):
        await store.get_source("doomed")
    assert await store.list_sources() == [kept]
    assert names((await store.get_repo("pypi")).sources) == ["kept"]
    assert (await store.get_repo("other")).sources == ()
    assert await store.python_file(doomed.guid, gone.filename) is None
    assert await store.python_project_files([doomed.guid], "demo") == []
    assert await store.python_digests_in_use([gone.sha256]) == set()
    assert await store.python_file(kept.guid, stays.filename) == stays
    assert await rows(store, "SELECT * FROM subscriptions WHERE source_guid = ?",
                      doomed.guid) == []
    assert await rows(store, "SELECT id FROM python_files WHERE source_guid = ?",
                      doomed.guid) == []


@pytest_twisted.ensureDeferred
async def test_delete_source_then_recreate_gets_a_new_guid(store: Store) -> None:
    """A source re-created under a deleted name is a new source with no files."""
    old = await store.create_source("pkgs", "local-python", ACTOR)
    await store.add_python_file(python_file(old, "demo-1.0.tar.gz"))
    await store.delete_source("pkgs", ACTOR)
    new = await store.create_source("pkgs", "local-python", ACTOR)
    assert new.guid != old.guid
    assert await store.python_projects([new.guid]) == {}


@pytest_twisted.ensureDeferred
async def test_delete_unknown_source_is_not_found(store: Store) -> None:
    """Deleting a source that does not exist raises NotFound and records nothing."""
    with pytest.raises(NotFound, match="'ghost'"):
        await store.delete_source("ghost", ACTOR)
    assert await history(store) == []


# Events -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_change_records_an_event(store: Store, clock: FakeClock) -> None:
    """Each change is an event with who did it, what, to what, and when."""
    src = await store.create_source("py", "local-python", "alice")
    clock.advance(1)
    await store.create_repo("pypi", "python", "d", "bob")
    clock.advance(1)
    await store.subscribe("pypi", "py", "carol")
    clock.advance(1)
    guid = str(uuid.uuid4())
    await store.create_token(guid, "for CI", "sources:write", (src.guid,), None, "dave")
    clock.advance(1)
    record = python_file(src, "demo-1.0-py3-none-any.whl", uploaded_by="token:ci")
    await store.add_python_file(record)
    clock.advance(1)
    await store.revoke_token(guid, "erin")
    clock.advance(1)
    await store.delete_source("py", "frank")

    assert await history(store) == [
        ("alice", "source.created", "py", "local-python"),
        ("bob", "repo.created", "pypi", "python"),
        ("carol", "repo.subscribed", "pypi", "py"),
        ("dave", "token.created", guid, "sources:write for CI"),
        ("token:ci", "python.file.added", record.filename, record.sha256),
        ("erin", "token.revoked", guid, ""),
        ("frank", "source.deleted", "py", ""),
    ]
    events = await store.events()
    assert [e.at for e in events] == [START + i for i in range(6, -1, -1)]
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    assert events[0].to_json()["action"] == "source.deleted"


@pytest_twisted.ensureDeferred
async def test_events_limit_returns_the_newest(store: Store) -> None:
    """events(limit) returns only the newest `limit` events, newest first."""
    for i in range(5):
        await store.create_source(f"s{i}", "local-python", ACTOR)
    latest = await store.events(limit=2)
    assert [e.subject for e in latest] == ["s4", "s3"]


# Tokens ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_tokens(store: Store, clock: FakeClock) -> None:
    """A created token record comes back from get_token and list_tokens (oldest first)."""
    g1, g2 = str(uuid.uuid4()), str(uuid.uuid4())
    first = await store.create_token(g1, "CI uploads", "sources:write", ("src-guid",),
                                     START + 86_400, "admin")
    clock.advance(10)
    second = await store.create_token(g2, "", "repos:read", None, None, "admin")

    assert first == TokenRecord(g1, "CI uploads", "sources:write", ("src-guid",), START,
                                "admin", START + 86_400, None, None)
    assert second.created_at == START + 10
    assert await store.get_token(g1) == first
    assert await store.get_token(g2) == second
    assert await store.list_tokens() == [first, second]


@pytest_twisted.ensureDeferred
async def test_get_unknown_token_is_none(store: Store) -> None:
    """get_token of an unknown GUID returns None, not an error."""
    assert await store.get_token(str(uuid.uuid4())) is None


@pytest.mark.parametrize("targets", [None, (), ("one",), ("b-guid", "a-guid", "c-guid")])
@pytest_twisted.ensureDeferred
async def test_token_targets_round_trip(
    store: Store, targets: tuple[str, ...] | None
) -> None:
    """Targets come back exactly: None (every one) stays None, a tuple keeps its order."""
    guid = str(uuid.uuid4())
    await store.create_token(guid, "", "sources:write", targets, None, ACTOR)
    record = await store.get_token(guid)
    assert record is not None
    assert record.targets == targets
    assert (await store.list_tokens())[0].targets == targets


@pytest_twisted.ensureDeferred
async def test_duplicate_token_guid_is_a_conflict(store: Store) -> None:
    """A second token with an existing GUID is refused and the first is unchanged."""
    guid = str(uuid.uuid4())
    first = await store.create_token(guid, "first", "sources:write", None, None, ACTOR)
    before = await history(store)
    with pytest.raises(Conflict):
        await store.create_token(guid, "second", "repos:read", ("x",), None, ACTOR)
    assert await store.list_tokens() == [first]
    assert await history(store) == before


@pytest_twisted.ensureDeferred
async def test_revoke_token_keeps_the_first_time(store: Store, clock: FakeClock) -> None:
    """Revoking sets revoked_at once; revoking again returns the first time, no new event."""
    guid = str(uuid.uuid4())
    await store.create_token(guid, "", "sources:write", None, None, ACTOR)
    clock.advance(100)
    revoked = await store.revoke_token(guid, ACTOR)
    assert revoked.revoked_at == START + 100
    clock.advance(100)
    again = await store.revoke_token(guid, "someone-else")
    assert again.revoked_at == START + 100
    assert again == revoked
    stored = await store.get_token(guid)
    assert stored is not None
    assert stored.revoked_at == START + 100
    assert [e for e in await history(store) if e[1] == "token.revoked"] == [
        (ACTOR, "token.revoked", guid, "")
    ]


@pytest_twisted.ensureDeferred
async def test_revoke_unknown_token_is_not_found(store: Store) -> None:
    """Revoking an unknown GUID raises NotFound and records nothing."""
    with pytest.raises(NotFound):
        await store.revoke_token(str(uuid.uuid4()), ACTOR)
    assert await history(store) == []


@pytest_twisted.ensureDeferred
async def test_touch_token_records_last_use(store: Store) -> None:
    """touch_token sets last_used_at to the given time, later touches move it on."""
    guid = str(uuid.uuid4())
    other = str(uuid.uuid4())
    await store.create_token(guid, "", "sources:write", None, None, ACTOR)
    await store.create_token(other, "", "sources:write", None, None, ACTOR)
    await store.touch_token(guid, START + 50.5)
    record = await store.get_token(guid)
    assert record is not None and record.last_used_at == START + 50.5
    await store.touch_token(guid, START + 60)
    record = await store.get_token(guid)
    assert record is not None and record.last_used_at == START + 60
    untouched = await store.get_token(other)
    assert untouched is not None and untouched.last_used_at is None


@pytest_twisted.ensureDeferred
async def test_touch_unknown_token_does_nothing(store: Store) -> None:
    """touch_token of an unknown GUID neither fails nor creates a token."""
    await store.touch_token(str(uuid.uuid4()), START)
    assert await store.list_tokens() == []


# Python files -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_python_file_round_trips_every_field(store: Store) -> None:
    """A recorded file comes back from python_file and python_files field for field."""
    src = await store.create_source("py", "local-python", ACTOR)
    record = python_file(
        src, "demo-1.0-py3-none-any.whl",
        signature_sha256="ab" * 32, signature_keyid="0123456789ABCDEF",
        signature_trusted=True, yanked=True, requires_python=None, summary=None,
        metadata_sha256=None, size=2**40,
    )
    assert await store.add_python_file(record) is True
    assert await store.python_file(src.guid, record.filename) == record
    assert await store.python_project_files([src.guid], "demo") == [record]


@pytest.mark.parametrize("trusted", [None, True, False])
@pytest_twisted.ensureDeferred
async def test_signature_trust_round_trips(store: Store, trusted: bool | None) -> None:
    """signature_trusted keeps its three states: unsigned, trusted, unknown key."""
    src = await store.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz", signature_trusted=trusted)
    await store.add_python_file(record)
    stored = await store.python_file(src.guid, record.filename)
    assert stored is not None
    assert stored.signature_trusted is trusted
    assert stored.yanked is False


@pytest_twisted.ensureDeferred
async def test_identical_file_again_is_not_new(store: Store) -> None:
    """Adding the identical file again returns False and records nothing more."""
    src = await store.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz")
    assert await store.add_python_file(record) is True
    before = await history(store)
    assert await store.add_python_file(replace(record, uploaded_at=START + 99)) is False
    assert await store.python_project_files([src.guid], "demo") == [record]
    assert await history(store) == before


@pytest_twisted.ensureDeferred
async def test_different_file_under_an_existing_name_is_refused(store: Store) -> None:
    """A different sha256 under an existing filename raises BadUpload 'File already exists'."""
    src = await store.create_source("py", "local-python", ACTOR)
    record = python_file(src, "demo-1.0.tar.gz", content=b"original")
    await store.add_python_file(record)
    before = await history(store)
    impostor = python_file(src, "demo-1.0.tar.gz", content=b"something else")
    with pytest.raises(BadUpload, match="File already exists"):
        await store.add_python_file(impostor)
    assert await store.python_file(src.guid, record.filename) == record
    assert await store.python_digests_in_use([impostor.sha256]) == set()
    assert await history(store) == before


@pytest_twisted.ensureDeferred
async def test_same_filename_in_two_sources_is_allowed(store: Store) -> None:
    """Filenames are unique per source, not across sources."""
    a = await store.create_source("a", "local-python", ACTOR)
    b = await store.create_source("b", "local-python", ACTOR)
    assert await store.add_python_file(python_file(a, "demo-1.0.tar.gz", content=b"A"))
    assert await store.add_python_file(python_file(b, "demo-1.0.tar.gz", content=b"B"))
    fa = await store.python_file(a.guid, "demo-1.0.tar.gz")
    fb = await store.python_file(b.guid, "demo-1.0.tar.gz")
    assert fa is not None and fb is not None
    assert fa.sha256 != fb.sha256


@pytest_twisted.ensureDeferred
async def test_python_files_lists_one_project_of_one_source_by_filename(store: Store) -> None:
    """python_files returns a project's files in one source, ordered by filename."""
    a = await store.create_source("a", "local-python", ACTOR)
    b = await store.create_source("b", "local-python", ACTOR)
    names_in_a = ["demo-2.0.tar.gz", "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    for filename in names_in_a:
        await store.add_python_file(python_file(a, filename, version=filename.split("-")[1]
                                                .removesuffix(".tar.gz")))
    await store.add_python_file(python_file(a, "other-1.0.tar.gz", project="other"))
    await store.add_python_file(python_file(b, "demo-3.0.tar.gz", version="3.0"))

    listed = await store.python_project_files([a.guid], "demo")
    assert [f.filename for f in listed] == sorted(names_in_a)
    assert {f.source_guid for f in listed} == {a.guid}
    assert await store.python_project_files([a.guid], "missing") == []


@pytest_twisted.ensureDeferred
async def test_python_file_unknown_is_none(store: Store) -> None:
    """python_file of an unknown filename (or of another source's file) is None."""
    a = await store.create_source("a", "local-python", ACTOR)
    b = await store.create_source("b", "local-python", ACTOR)
    await store.add_python_file(python_file(a, "demo-1.0.tar.gz"))
    assert await store.python_file(a.guid, "demo-9.9.tar.gz") is None
    assert await store.python_file(b.guid, "demo-1.0.tar.gz") is None


@pytest_twisted.ensureDeferred
async def test_python_projects_first_subscribed_source_wins(store: Store) -> None:
    """A project in several sources is served from the first of them in precedence order."""
    first = await store.create_source("first", "local-python", ACTOR)
    second = await store.create_source("second", "local-python", ACTOR)
    await store.add_python_file(python_file(first, "shared-1.0.tar.gz", project="shared",
                                            display_name="Shared", content=b"1"))
    await store.add_python_file(python_file(second, "shared-2.0.tar.gz", project="shared",
                                            version="2.0", display_name="SHARED",
                                            content=b"2"))
    await store.add_python_file(python_file(second, "only-1.0.tar.gz", project="only",
                                            display_name="Only"))

    assert await store.python_projects([first.guid, second.guid]) == {
        "shared": ("Shared", first.guid),
        "only": ("Only", second.guid),
    }
    assert await store.python_projects([second.guid, first.guid]) == {
        "shared": ("SHARED", second.guid),
        "only": ("Only", second.guid),
    }
    assert await store.python_projects([first.guid]) == {"shared": ("Shared", first.guid)}
    assert await store.python_projects([]) == {}
    assert await store.python_projects([str(uuid.uuid4())]) == {}


@pytest_twisted.ensureDeferred
async def test_repo_precedence_follows_subscription_order(store: Store) -> None:
    """The repo's source order, fed to python_projects, decides which source wins."""
    late = await store.create_source("a-late", "local-python", ACTOR)
    early = await store.create_source("z-early", "local-python", ACTOR)
    await store.create_repo("pypi", "python", "", ACTOR)
    await store.subscribe("pypi", "z-early", ACTOR)
    await store.subscribe("pypi", "a-late", ACTOR)
    await store.add_python_file(python_file(late, "demo-1.0.tar.gz", content=b"late"))
    await store.add_python_file(python_file(early, "demo-1.0.tar.gz", content=b"early"))
    repo = await store.get_repo("pypi")
    winners = await store.python_projects([s.guid for s in repo.sources])
    assert winners["demo"][1] == early.guid


@pytest_twisted.ensureDeferred
async def test_python_project_files_take_the_first_source_that_has_the_project(
    store: Store,
) -> None:
    """Only the files of the first listed source holding the project are returned."""
    first = await store.create_source("first", "local-python", ACTOR)
    second = await store.create_source("second", "local-python", ACTOR)
    await store.add_python_file(python_file(second, "demo-1.0.tar.gz", content=b"2"))
    await store.add_python_file(python_file(second, "demo-2.0.tar.gz", version="2.0",
                                            content=b"2b"))
    await store.add_python_file(python_file(second, "other-1.0.tar.gz", project="other"))
    assert [f.filename for f in await store.python_project_files(
        [first.guid, second.guid], "demo")] == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    await store.add_python_file(python_file(first, "demo-1.0.tar.gz", content=b"1"))
    files = await store.python_project_files([first.guid, second.guid], "demo")
    assert [(f.source_guid, f.filename) for f in files] == [(first.guid, "demo-1.0.tar.gz")]
    assert await store.python_project_files([second.guid, first.guid], "demo") != files
    assert await store.python_project_files([first.guid], "missing") == []
    assert await store.python_project_files([], "demo") == []


@pytest_twisted.ensureDeferred
async def test_python_digests_in_use(store: Store) -> None:
    """A digest is in use while any source holds a file, metadata or signature with it."""
    a = await store.create_source("a", "local-python", ACTOR)
    b = await store.create_source("b", "local-python", ACTOR)
    same = b"identical bytes in two sources"
    record = python_file(a, "demo-1.0.tar.gz", content=same, signature_sha256="cd" * 32)
    assert record.metadata_sha256 is not None
    digests = [record.sha256, record.metadata_sha256, "cd" * 32]
    other = hashlib.sha256(b"other").hexdigest()
    assert await store.python_digests_in_use([*digests, other]) == set()
    await store.add_python_file(record)
    await store.add_python_file(python_file(b, "demo-1.0.tar.gz", content=same))
    assert await store.python_digests_in_use([*digests, other]) == set(digests)
    await store.delete_source("a", ACTOR)
    assert await store.python_digests_in_use(digests) == set(digests[:2])
    await store.delete_source("b", ACTOR)
    assert await store.python_digests_in_use(digests) == set()
    assert await store.python_digests_in_use([]) == set()


@pytest_twisted.ensureDeferred
async def test_add_python_signature_only_to_an_unsigned_file(store: Store) -> None:
    """A recorded file without a signature takes one (recorded with its key and trust,
    and as an event); the next is refused with False and changes nothing."""
    src = await store.create_source("a", "local-python", ACTOR)
    record = python_file(src, "demo-1.0-py3-none-any.whl")
    await store.add_python_file(record)

    assert await store.add_python_signature(record, "ab" * 32, "KEY1", False, "token:ci")
    assert not await store.add_python_signature(record, "cd" * 32, "KEY2", True, "token:ci")

    found = await store.python_file(src.guid, record.filename)
    assert found is not None
    assert (found.signature_sha256, found.signature_keyid, found.signature_trusted) == (
        "ab" * 32, "KEY1", False)
    assert (await history(store))[-1] == (
        "token:ci", "python.signature.added", record.filename, "ab" * 32)


# Transactions -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_failed_transaction_leaves_no_row(store: Store) -> None:
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
        await store.db.write(work)
    assert await store.list_sources() == []
    assert await rows(store, "SELECT * FROM sources") == []
    assert await history(store) == []
    # The connection is usable afterwards.
    assert (await store.create_source("whole", "local-python", ACTOR)).name == "whole"


@pytest_twisted.ensureDeferred
async def test_ping_and_provider(store: Store, provider: str) -> None:
    """ping() succeeds on a working database and provider names it."""
    await store.ping()
    assert store.provider == provider


# Racing transactions (PostgreSQL only) ----------------------------------------------

GATE_DEADLINE = 30.0


class Gate:
    """Holds the first transaction just before a chosen statement until a second one
    reaches the same statement or is seen waiting for a lock in PostgreSQL.

    This makes two transactions overlap at the worst moment, deterministically.
    """

    def __init__(self, prefix: str, url: str) -> None:
        self.prefix = prefix
        self._url = url
        self._arrivals = 0
        self._lock = threading.Lock()
        self._second = threading.Event()

    def _someone_waits_for_a_lock(self) -> bool:
        connection = psycopg2.connect(self._url, connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND wait_event_type = 'Lock'")
                row = cursor.fetchone()
                return bool(row and row[0])
        finally:
            connection.close()

    def arrive(self) -> None:
        with self._lock:
            self._arrivals += 1
            arrival = self._arrivals
        if arrival == 2:
            self._second.set()
        if arrival != 1:
            return
        deadline = time.monotonic() + GATE_DEADLINE
        while not self._second.wait(0.05):
            if self._someone_waits_for_a_lock():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no second transaction reached {self.prefix!r}")


class GatedTx:
    def __init__(self, tx: Tx, gate: Gate) -> None:
        self._tx = tx
        self._gate = gate

    def run(self, query: str, *params: Any) -> int:
        if query.startswith(self._gate.prefix):
            self._gate.arrive()
        return self._tx.run(query, *params)

    def all(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return self._tx.all(query, *params)

    def one(self, query: str, *params: Any) -> dict[str, Any] | None:
        return self._tx.one(query, *params)


class GatedDatabase(Database):
    """A Database whose write transactions pass through a Gate."""

    gate: Gate | None = None

    def write(self, work: Callable[[Tx], Any]) -> Deferred[Any]:
        gate = self.gate
        if gate is None:
            return super().write(work)
        return super().write(lambda tx: work(cast(Tx, GatedTx(tx, gate))))


@pytest.fixture
def racing(pg_url: str) -> Iterator[tuple[Store, GatedDatabase, str]]:
    """A PostgreSQL store whose writes can be raced through a Gate, and its URL."""
    d = postgres_dialect(pg_url)
    migrate(d)
    db = GatedDatabase(d)
    yield Store(db, TickingClock()), db, pg_url
    db.close()


async def both(first: Any, second: Any) -> list[tuple[bool, Any]]:
    results = await DeferredList([ensureDeferred(first), ensureDeferred(second)],
                                 consumeErrors=True)
    return [(ok, value) for ok, value in results]


@pytest_twisted.ensureDeferred
async def test_concurrent_subscriptions_get_distinct_positions(
    racing: tuple[Store, GatedDatabase, str],
) -> None:
    """Two subscriptions to one repo at the same moment both land, in a definite order."""
    store, db, url = racing
    await store.create_source("a", "local-python", ACTOR)
    await store.create_source("b", "local-python", ACTOR)
    repo = await store.create_repo("pypi", "python", "", ACTOR)
    db.gate = Gate("INSERT INTO subscriptions", url)

    results = await both(store.subscribe("pypi", "a", ACTOR), store.subscribe("pypi", "b", ACTOR))
    db.gate = None

    assert [ok for ok, _ in results] == [True, True], results
    positions = await rows(store, "SELECT position FROM subscriptions WHERE repo_guid = ?"
                                  " ORDER BY position", repo.guid)
    assert [p["position"] for p in positions] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_concurrent_revocations_keep_one_time(
    racing: tuple[Store, GatedDatabase, str],
) -> None:
    """Two nodes revoking one token at once record one revocation time and one event."""
    store, db, url = racing
    guid = str(uuid.uuid4())
    await store.create_token(guid, "", "sources:write", None, None, ACTOR)
    db.gate = Gate("UPDATE tokens SET revoked_at", url)

    results = await both(store.revoke_token(guid, "node-1"), store.revoke_token(guid, "node-2"))
    db.gate = None

    assert [ok for ok, _ in results] == [True, True], results
    stored = await store.get_token(guid)
    assert stored is not None
    assert {value.revoked_at for _, value in results} == {stored.revoked_at}
    revocations = [e for e in await history(store) if e[1] == "token.revoked"]
    assert len(revocations) == 1, revocations


@pytest_twisted.ensureDeferred
async def test_concurrent_identical_uploads_both_succeed(
    racing: tuple[Store, GatedDatabase, str],
) -> None:
    """Two nodes recording the same file at once: one adds it, the other is told it was
    already there (200 for both clients), never a constraint error."""
    store, db, url = racing
    source = await store.create_source("pkgs", "local-python", ACTOR)
    record = python_file(source, "demo-1.0.tar.gz")
    db.gate = Gate("INSERT INTO python_files", url)

    results = await both(store.add_python_file(record), store.add_python_file(record))
    db.gate = None

    assert sorted(value for _, value in results) == [False, True], results
    assert [f.filename for f in await store.python_project_files([source.guid], "demo")] == [
        "demo-1.0.tar.gz"]


@pytest_twisted.ensureDeferred
async def test_concurrent_different_uploads_of_one_filename(
    racing: tuple[Store, GatedDatabase, str],
) -> None:
    """Two different files under one filename at once: one wins, the other gets
    BadUpload 'File already exists' (400), not a driver error."""
    store, db, url = racing
    source = await store.create_source("pkgs", "local-python", ACTOR)
    first = python_file(source, "demo-1.0.tar.gz", content=b"first")
    second = python_file(source, "demo-1.0.tar.gz", content=b"second")
    db.gate = Gate("INSERT INTO python_files", url)

    results = await both(store.add_python_file(first), store.add_python_file(second))
    db.gate = None

    losers = [value for ok, value in results if not ok]
    assert [value for ok, value in results if ok] == [True], results
    assert len(losers) == 1 and losers[0].check(BadUpload), results
    assert "File already exists" in str(losers[0].value)


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_of_one_name_make_one_source(
    racing: tuple[Store, GatedDatabase, str],
) -> None:
    """Two nodes creating the same source name at once: one wins, the other gets Conflict."""
    store, db, url = racing
    db.gate = Gate("INSERT INTO sources", url)

    results = await both(store.create_source("pkgs", "local-python", "node-1"),
                         store.create_source("pkgs", "local-python", "node-2"))
    db.gate = None

    winners = [value for ok, value in results if ok]
    losers = [value for ok, value in results if not ok]
    assert len(winners) == 1 and len(losers) == 1, results
    assert losers[0].check(Conflict)
    assert await store.list_sources() == winners
    assert [e[1] for e in await history(store)] == ["source.created"]
