"""Removing what uploads leave behind, on a timer.

Two kinds of leftovers: temp files of uploads that never finished (a crash, a
killed process), and blobs that no recorded file uses any more (a deleted
source, an upload whose recording failed after its blobs were placed). Both
are removed once ``TempMaxAge`` old, so work in progress is never touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pm.blobs import BlobStore, StoredBlob

# Digests asked about in one query: each may be bound three times, and older
# SQLite builds allow 999 bound values.
IN_USE_BATCH = 300

# Which of these digests a recorded file uses: one per ecosystem.
InUse = Callable[[Sequence[str]], Awaitable[set[str]]]


@dataclass(frozen=True)
class Swept:
    temp_files: int
    blobs: int


class Housekeeper:
    """One pass (``run``) removes abandoned temp files and unused blobs."""

    def __init__(
        self,
        blobs: BlobStore,
        in_use: Sequence[InUse],
        in_thread: Callable[..., Deferred[Any]],
        max_age: float,
        log: Logger | None = None,
    ) -> None:
        self._blobs = blobs
        self._in_use = tuple(in_use)
        self._in_thread = in_thread
        self._max_age = max_age
        self._log = log or Logger(namespace="packagemanager")

    async def run(self) -> Swept | None:
        """One pass; logs and returns None on failure, so a timer keeps calling it."""
        try:
            swept = await self._run()
        except Exception as e:
            # A database outage ends this pass; the next one tries again.
            self._log.warn("housekeeping failed, will retry: {e}", e=e)
            return None
        if swept.temp_files or swept.blobs:
            self._log.info(
                "housekeeping removed {temp} abandoned temp files and {blobs} unused files",
                temp=swept.temp_files, blobs=swept.blobs,
            )
        return swept

    async def _run(self) -> Swept:
        temp_files: int = await self._in_thread(self._blobs.sweep, self._max_age)
        stale: list[StoredBlob] = await self._in_thread(self._blobs.stale, self._max_age)
        removed = 0
        for start in range(0, len(stale), IN_USE_BATCH):
            batch = stale[start:start + IN_USE_BATCH]
            digests = sorted({blob.sha256 for blob in batch})
            used: set[str] = set()
            for ask in self._in_use:
                used |= await ask(digests)
            # Collected right after the question, batch by batch: a blob placed
            # again after it was asked about is new for TempMaxAge, and collect
            # must come well within that, however many blobs there are.
            removed += await self._in_thread(
                self._blobs.collect, [b for b in batch if b.sha256 not in used], self._max_age
            )
        return Swept(temp_files, removed)
