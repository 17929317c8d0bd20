"""How far the database's change record has gone: the newest event's id.

Every change that alters what an index shows (a file added, replaced, removed
or archived, a signature added, a source deleted, a subscription) writes an
event row in the same transaction. So the newest event id is a serial of the
database's state, the same for every node sharing it, and a cached page made
at serial S is current exactly while the serial is still S. It is read on
every request: a cache may never serve what another node changed a moment ago.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from pm.db import Database

_QUERY = "SELECT MAX(id) AS serial FROM events"


class ChangeSerial:
    """Reads the serial through the database's quick pool or, for SQLite, a private
    read-only connection.

    The SQLite read takes microseconds (WAL: readers never wait for writers),
    so it runs on the calling thread and saves the trip through the pool; if
    SQLite is busy for any reason it falls back to the pool.
    """

    def __init__(self, db: Database, quick_connect: Callable[[], sqlite3.Connection] | None
                 = None) -> None:
        self._db = db
        self._quick_connect = quick_connect
        self._quick: sqlite3.Connection | None = None

    async def current(self) -> int:
        quick = self._quick_serial()
        if quick is not None:
            return quick
        row = await self._db.read_quick(lambda tx: tx.one(_QUERY))
        return int(row["serial"] or 0) if row else 0

    def _quick_serial(self) -> int | None:
        if self._quick_connect is None:
            return None
        try:
            if self._quick is None:
                self._quick = self._quick_connect()
            found = self._quick.execute(_QUERY).fetchone()
        except sqlite3.Error:
            self.close()
            return None
        return int(found[0] or 0)

    def close(self) -> None:
        if self._quick is not None:
            self._quick.close()
            self._quick = None
