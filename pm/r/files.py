"""Rows of R source packages published to local (R) sources.

A package keeps every version added to it; the current one is the highest
version not archived, and every other version is served from the archive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pm.catalog import record_event
from pm.db import Database, Row, Tx
from pm.filerows import put_file_row
from pm.packages import PackageRow, like_escape


@dataclass(frozen=True)
class RPackageFile:
    source_guid: str
    package: str
    version: str
    filename: str
    size: int
    sha256: str
    md5: str
    fields: dict[str, str]
    archived: bool
    uploaded_at: float
    uploaded_by: str


_COLUMNS = tuple(RPackageFile.__dataclass_fields__)


def _row_values(record: RPackageFile) -> list[Any]:
    values: list[Any] = []
    for column in _COLUMNS:
        value = getattr(record, column)
        if column == "fields":
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            value = int(value)
        values.append(value)
    return values


def _record(row: Row) -> RPackageFile:
    values = {c: row[c] for c in _COLUMNS}
    values["fields"] = json.loads(values["fields"])
    values["archived"] = bool(values["archived"])
    return RPackageFile(**values)


class RFiles:
    """The ``r_packages`` table; the clock is injected."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self._clock = clock

    def _event(self, tx: Tx, actor: str, action: str, subject: str, detail: str = "") -> None:
        record_event(tx, self._clock(), actor, action, subject, detail)

    async def put(self, record: RPackageFile, source_name: str, *, replace: bool) -> str:
        """Record a package file: "added", "unchanged", or "replaced" (with ``replace``).

        A different file under an existing name is AlreadyExists unless
        ``replace``; the replaced digest stays in the event log.
        """

        def work(tx: Tx) -> str:
            def event(action: str, detail: str) -> None:
                self._event(tx, record.uploaded_by, f"r.package.{action}", record.filename,
                            detail)

            return put_file_row(tx, "r_packages", _COLUMNS, _row_values(record),
                                source_guid=record.source_guid, filename=record.filename,
                                sha256=record.sha256, replace=replace,
                                source_name=source_name, event=event)

        return await self.db.write(work)

    async def file(self, source_guid: str, filename: str) -> RPackageFile | None:
        row = await self.db.read(lambda tx: tx.one(
            "SELECT * FROM r_packages WHERE source_guid = ? AND filename = ?",
            source_guid, filename,
        ))
        return None if row is None else _record(row)

    async def files(self, source_guids: Sequence[str],
                    package: str | None = None) -> list[RPackageFile]:
        """Every file of these sources (of one package, if given)."""
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        query = f"SELECT * FROM r_packages WHERE source_guid IN ({marks})"
        params: list[object] = list(source_guids)
        if package is not None:
            query += " AND package = ?"
            params.append(package)
        rows = await self.db.read(lambda tx: tx.all(query, *params))
        # Sorted here: an ORDER BY makes SQLite prefer the (source_guid,
        # filename) index to the package's.
        return sorted((_record(r) for r in rows), key=lambda f: (f.package, f.filename))

    async def rows(self, source_guids: Sequence[str], *, name: str | None = None,
                   search: str | None = None) -> list[PackageRow]:
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        query = (f"SELECT source_guid, package, version, archived FROM r_packages"
                 f" WHERE source_guid IN ({marks})")
        params: list[object] = list(source_guids)
        if name is not None:
            query += " AND package = ?"
            params.append(name)
        if search:
            query += " AND LOWER(package) LIKE ? ESCAPE '\\'"
            params.append(f"%{like_escape(search.lower())}%")
        found = await self.db.read(lambda tx: tx.all(query, *params))
        return [PackageRow(r["source_guid"], r["package"], r["package"], r["version"], 1,
                           bool(r["archived"])) for r in found]

    async def delete_versions(self, source_guid: str, package: str, versions: Sequence[str],
                              actor: str, comment: str) -> list[tuple[str, str]]:
        def work(tx: Tx) -> list[tuple[str, str]]:
            removed = []
            for version in versions:
                row = tx.one("SELECT filename, sha256 FROM r_packages WHERE source_guid = ?"
                             " AND package = ? AND version = ?", source_guid, package, version)
                if row is None:
                    continue
                tx.run("DELETE FROM r_packages WHERE source_guid = ? AND package = ?"
                       " AND version = ?", source_guid, package, version)
                self._event(tx, actor, "r.package.removed", row["filename"],
                            f"{row['sha256']} {comment}".strip())
                removed.append((row["filename"], version))
            return removed

        return await self.db.write(work)

    async def archive(self, source_guid: str, package: str,
                      actor: str) -> list[tuple[str, str]]:
        """Archive every version still current or older; (filename, version) of each.

        All of them, not only the current one: otherwise the next older
        version would become current, and the package would not leave the index.
        """

        def work(tx: Tx) -> list[tuple[str, str]]:
            rows = tx.all("SELECT filename, version FROM r_packages WHERE source_guid = ?"
                          " AND package = ? AND archived = 0 ORDER BY filename",
                          source_guid, package)
            tx.run("UPDATE r_packages SET archived = 1 WHERE source_guid = ? AND package = ?",
                   source_guid, package)
            for row in rows:
                self._event(tx, actor, "r.package.archived", row["filename"])
            return [(row["filename"], row["version"]) for row in rows]

        return await self.db.write(work)

    @staticmethod
    def delete_source_rows(tx: Tx, source_guid: str) -> None:
        tx.run("DELETE FROM r_packages WHERE source_guid = ?", source_guid)

    async def digests_in_use(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        marks = ", ".join("?" for _ in digests)
        rows = await self.db.read(lambda tx: tx.all(
            f"SELECT sha256 AS digest FROM r_packages WHERE sha256 IN ({marks})", *digests))
        return {row["digest"] for row in rows}

    async def source_packages(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        """Each (source GUID, package) that has a file: what the UI counts and links."""
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        rows = await self.db.read(lambda tx: tx.all(
            f"SELECT DISTINCT source_guid, package FROM r_packages"
            f" WHERE source_guid IN ({marks})", *source_guids))
        return [(r["source_guid"], r["package"]) for r in rows]
