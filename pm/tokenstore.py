"""API token rows: what each token grants, when it expires, whether it is revoked.

The JWT itself is never stored. Revocation is a row, so every node sharing the
database sees it on the next request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from pm.catalog import record_event
from pm.db import Database, Row, Tx
from pm.errors import NotFound


@dataclass(frozen=True)
class TokenRecord:
    guid: str
    description: str
    scope: str
    targets: tuple[str, ...] | None
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


def _token(row: Row) -> TokenRecord:
    targets = row["targets"]
    return TokenRecord(
        guid=row["guid"],
        description=row["description"],
        scope=row["scope"],
        targets=None if targets is None else tuple(json.loads(targets)),
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


class TokenStore:
    """Token rows in ``db``; the clock is injected."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self._clock = clock

    def _event(self, tx: Tx, actor: str, action: str, subject: str, detail: str = "") -> None:
        record_event(tx, self._clock(), actor, action, subject, detail)


    async def create_token(
        self,
        guid: str,
        description: str,
        scope: str,
        targets: tuple[str, ...] | None,
        expires_at: float | None,
        actor: str,
    ) -> TokenRecord:
        record = TokenRecord(guid, description, scope, targets, self._clock(), actor,
                             expires_at, None, None)

        def work(tx: Tx) -> TokenRecord:
            tx.run(
                "INSERT INTO tokens (guid, description, scope, targets, created_at, created_by,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                guid, description, scope,
                None if targets is None else json.dumps(list(targets)),
                record.created_at, actor, expires_at,
            )
            self._event(tx, actor, "token.created", guid, f"{scope} {description}".strip())
            return record

        return await self.db.write(work)

    async def get_token(self, guid: str) -> TokenRecord | None:
        row = await self.db.read(lambda tx: tx.one("SELECT * FROM tokens WHERE guid = ?", guid))
        return None if row is None else _token(row)

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self.db.read(lambda tx: tx.all("SELECT * FROM tokens ORDER BY created_at"))
        return [_token(r) for r in rows]

    async def revoke_token(self, guid: str, actor: str) -> TokenRecord:
        def work(tx: Tx) -> TokenRecord:
            row = tx.one("SELECT * FROM tokens WHERE guid = ?", guid)
            if row is None:
                raise NotFound(f"no token with GUID '{guid}'")
            # Conditional, so a concurrent revocation keeps the first time.
            if tx.run("UPDATE tokens SET revoked_at = ? WHERE guid = ? AND revoked_at IS NULL",
                      self._clock(), guid):
                self._event(tx, actor, "token.revoked", guid)
            revoked = tx.one("SELECT * FROM tokens WHERE guid = ?", guid)
            assert revoked is not None
            return _token(revoked)

        return await self.db.write(work)

    async def touch_token(self, guid: str, when: float) -> None:
        await self.db.write(
            lambda tx: tx.run("UPDATE tokens SET last_used_at = ? WHERE guid = ?", when, guid)
        )
