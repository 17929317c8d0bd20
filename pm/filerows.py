"""Recording a package file's row, the same way for every ecosystem's table.

A file is named by its source and filename; what a put finds there decides the
answer: nothing (the row is inserted), the same digest (nothing changes), or
another one (replaced in place, or refused when replacing is not allowed).
Each outcome that changes the table writes an event in the same transaction,
so the change serial (``pm.changes``) moves with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pm.db import Tx
from pm.errors import AlreadyExists

ADDED, UNCHANGED, REPLACED = "added", "unchanged", "replaced"

# Records an event of the put: ("added" or "replaced", its detail).
PutEvent = Callable[[str, str], None]


def put_file_row(tx: Tx, table: str, columns: Sequence[str], values: Sequence[object], *,
                 source_guid: str, filename: str, sha256: str, replace: bool,
                 source_name: str, event: PutEvent) -> str:
    """Insert the row of ``filename`` in ``source_guid``, or settle with the one there.

    Returns "added", "unchanged" or "replaced"; a different file under the
    name is :class:`AlreadyExists` unless ``replace``. Concurrent puts of one
    name wait for each other on the row and the last one wins, instead of one
    failing; the replaced digest stays in the event log.
    """
    # ON CONFLICT: a concurrent add of the same file waits for the other's
    # commit, then finds its row instead of failing.
    if tx.run(f"INSERT INTO {table} ({', '.join(columns)})"
              f" VALUES ({', '.join('?' for _ in values)})"
              " ON CONFLICT (source_guid, filename) DO NOTHING", *values):
        event(ADDED, sha256)
        return ADDED
    # Lock the row before reading it, so a concurrent replacement's event
    # names the digest it really replaced.
    tx.run(f"UPDATE {table} SET sha256 = sha256 WHERE source_guid = ? AND filename = ?",
           source_guid, filename)
    existing = tx.one(f"SELECT sha256 FROM {table} WHERE source_guid = ? AND filename = ?",
                      source_guid, filename)
    if existing is None or existing["sha256"] == sha256:
        return UNCHANGED
    if not replace:
        raise AlreadyExists(filename, source_name)
    tx.run(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)}"
           " WHERE source_guid = ? AND filename = ?", *values, source_guid, filename)
    event(REPLACED, f"{existing['sha256']} -> {sha256}")
    return REPLACED
