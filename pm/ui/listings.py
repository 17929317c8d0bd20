"""Each repo's package list, kept until the event log says something changed.

Listing a repo of a thousand packages reads every version's row (PEP 440
decides which is latest, so SQL cannot reduce them); doing that on every
page view, search and pagination click would cost more than the page. Every
change to what a repo serves (a file added, replaced or removed, an R
package archived, a subscription, a source deleted) appends to the event log
in the same transaction, so the log's newest id is a version of everything a
list shows: one indexed query tells whether a kept list is still true, on
this node or any other sharing the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from pm.catalog import Repo
from pm.changes import ChangeSerial
from pm.ui.shelf import PackageEntry, Shelf


@dataclass(frozen=True)
class _Kept:
    stamp: int
    sources: tuple[str, ...]
    entries: list[PackageEntry]


class Listings:
    """Lists of the repos' packages, one kept per repo, stamped with the change serial."""

    def __init__(self, changes: ChangeSerial) -> None:
        self._changes = changes
        self._kept: dict[str, _Kept] = {}

    async def entries(self, shelf: Shelf, repo: Repo) -> list[PackageEntry]:
        # The stamp is read before the list: a change committed in between
        # makes the kept list look older than it is, never newer.
        stamp = await self._changes.current()
        sources = tuple(s.guid for s in repo.sources)
        kept = self._kept.get(repo.guid)
        if kept is not None and kept.stamp == stamp and kept.sources == sources:
            return kept.entries
        entries = await shelf.entries(repo)
        self._kept[repo.guid] = _Kept(stamp, sources, entries)
        return entries
