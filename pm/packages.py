"""Listing, removing and archiving packages, the same way for every ecosystem.

An ecosystem's table answers with :class:`PackageRow` (one per package version
of a source); what a repo shows (the first subscribed source that has a
package wins it), which version is current, and what ``@all``, ``@current``
and ``@1.2.3`` select are decided here, with the ecosystem's version order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pm.errors import BadRequest, NotFound

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
VersionKey = Callable[[str], Any]


@dataclass(frozen=True)
class PackageRow:
    """One version of a package in one source."""

    source_guid: str
    name: str
    display_name: str
    version: str
    files: int
    archived: bool


@dataclass(frozen=True)
class PackageSummary:
    name: str
    version: str | None
    versions: tuple[str, ...]
    archived: tuple[str, ...]
    files: int
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "versions": list(self.versions),
                "archived": list(self.archived), "files": self.files, "source": self.source}


@dataclass(frozen=True)
class PackagePage:
    packages: list[PackageSummary]
    total: int
    page: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"packages": [p.to_json() for p in self.packages], "total": self.total,
                "page": self.page, "count": self.count}


def like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern that declares ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def current_version(rows: Sequence[PackageRow], key: VersionKey) -> str | None:
    """The highest version not archived, or None when every version is archived."""
    live = [r.version for r in rows if not r.archived]
    return max(live, key=key) if live else None


def summarize(
    rows: Sequence[PackageRow],
    source_order: Sequence[str],
    source_names: dict[str, str],
    key: VersionKey,
) -> list[PackageSummary]:
    """One summary per package, from the first of ``source_order`` that has it, by name."""
    order = {guid: i for i, guid in enumerate(source_order)}
    by_package: dict[str, list[PackageRow]] = {}
    for row in rows:
        by_package.setdefault(row.name, []).append(row)
    summaries = []
    # Case-insensitive, then exact: R's names differ by case alone.
    for name in sorted(by_package, key=lambda n: (n.lower(), n)):
        package_rows = by_package[name]
        winner = min((r.source_guid for r in package_rows), key=order.__getitem__)
        mine = [r for r in package_rows if r.source_guid == winner]
        versions = tuple(sorted({r.version for r in mine}, key=key))
        summaries.append(PackageSummary(
            name=min(r.display_name for r in mine),
            version=current_version(mine, key),
            versions=versions,
            archived=tuple(v for v in versions if any(r.archived and r.version == v
                                                       for r in mine)),
            files=sum(r.files for r in mine),
            source=source_names.get(winner, winner),
        ))
    return summaries


def paginate(summaries: list[PackageSummary], count: int | None,
             page: int | None) -> PackagePage:
    size = DEFAULT_PAGE_SIZE if count is None else count
    number = 1 if page is None else page
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadRequest(f"--count must be between 1 and {MAX_PAGE_SIZE}")
    if number < 1:
        raise BadRequest("--page starts at 1")
    start = (number - 1) * size
    return PackagePage(summaries[start:start + size], len(summaries), number, size)


def select_versions(name: str, selector: str, rows: Sequence[PackageRow],
                    key: VersionKey) -> list[str]:
    """The versions ``@all``, ``@current`` or ``@1.2.3`` names among ``rows``."""
    if not rows:
        raise NotFound(f"no package '{name[:100]}' in this source")
    versions = sorted({r.version for r in rows}, key=key)
    if selector == "all":
        return versions
    if selector == "current":
        current = current_version(rows, key)
        if current is None:
            raise NotFound(f"package '{name[:100]}' has no current version (all are archived)")
        return [current]
    if selector not in versions:
        raise NotFound(f"package '{name}' has no version '{selector[:80]}' "
                       f"(versions: {', '.join(versions)})")
    return [selector]
