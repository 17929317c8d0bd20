"""Token store contract tests: the same behaviour on SQLite and on PostgreSQL.

The token rows of ``pm.tokenstore``. Every test here runs once per database through the
``provider`` fixture, except the one at the end that races two transactions, which only
PostgreSQL can run side by side (SQLite serialises writers through one connection).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import pytest_twisted

from pm.db import Database
from pm.errors import Conflict, NotFound
from pm.testing import Clock
from pm.tokenstore import TokenRecord, TokenStore
from tests.support.records import (
    ACTOR,
    START,
    Gate,
    GatedDatabase,
    TickingClock,
    both,
    gated_database,
    history,
)


@pytest.fixture
def store(db: Database, clock: Clock) -> TokenStore:
    """A TokenStore over that pool."""
    return TokenStore(db, clock)


@pytest_twisted.ensureDeferred
async def test_create_get_and_list_tokens(store: TokenStore, clock: Clock) -> None:
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
async def test_get_unknown_token_is_none(store: TokenStore) -> None:
    """get_token of an unknown GUID returns None, not an error."""
    assert await store.get_token(str(uuid.uuid4())) is None


@pytest.mark.parametrize("targets", [None, (), ("one",), ("b-guid", "a-guid", "c-guid")])
@pytest_twisted.ensureDeferred
async def test_token_targets_round_trip(
    store: TokenStore, targets: tuple[str, ...] | None
) -> None:
    """Targets come back exactly: None (every one) stays None, a tuple keeps its order."""
    guid = str(uuid.uuid4())
    await store.create_token(guid, "", "sources:write", targets, None, ACTOR)
    record = await store.get_token(guid)
    assert record is not None
    assert record.targets == targets
    assert (await store.list_tokens())[0].targets == targets


@pytest_twisted.ensureDeferred
async def test_duplicate_token_guid_is_a_conflict(store: TokenStore, db: Database) -> None:
    """A second token with an existing GUID is refused and the first is unchanged."""
    guid = str(uuid.uuid4())
    first = await store.create_token(guid, "first", "sources:write", None, None, ACTOR)
    before = await history(db)
    with pytest.raises(Conflict):
        await store.create_token(guid, "second", "repos:read", ("x",), None, ACTOR)
    assert await store.list_tokens() == [first]
    assert await history(db) == before


@pytest_twisted.ensureDeferred
async def test_revoke_token_keeps_the_first_time(
    store: TokenStore, db: Database, clock: Clock
) -> None:
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
    assert [e for e in await history(db) if e[1] == "token.revoked"] == [
        (ACTOR, "token.revoked", guid, "")
    ]


@pytest_twisted.ensureDeferred
async def test_revoke_unknown_token_is_not_found(store: TokenStore, db: Database) -> None:
    """Revoking an unknown GUID raises NotFound and records nothing."""
    with pytest.raises(NotFound):
        await store.revoke_token(str(uuid.uuid4()), ACTOR)
    assert await history(db) == []


@pytest_twisted.ensureDeferred
async def test_touch_token_records_last_use(store: TokenStore) -> None:
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
async def test_touch_unknown_token_does_nothing(store: TokenStore) -> None:
    """touch_token of an unknown GUID neither fails nor creates a token."""
    await store.touch_token(str(uuid.uuid4()), START)
    assert await store.list_tokens() == []


# Racing transactions (PostgreSQL only) ----------------------------------------------


@pytest.fixture
def racing(pg_url: str) -> Iterator[tuple[TokenStore, GatedDatabase, str]]:
    """A PostgreSQL token store whose writes can be raced through a Gate, and its URL."""
    db = gated_database(pg_url)
    yield TokenStore(db, TickingClock()), db, pg_url
    db.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_revocations_keep_one_time(
    racing: tuple[TokenStore, GatedDatabase, str],
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
    revocations = [e for e in await history(db) if e[1] == "token.revoked"]
    assert len(revocations) == 1, revocations
