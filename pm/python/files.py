"""Rows of Python distributions published to local-python sources.

Reads take the subscribed sources of a repo in order: the first source that
has a project wins it, as a repo shows it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pm.catalog import record_event
from pm.db import Database, Row, Tx
from pm.errors import AlreadyExists
from pm.filerows import put_file_row
from pm.packages import PackageRow, like_escape
from pm.python.dists import normalize_name


@dataclass(frozen=True)
class PythonFile:
    source_guid: str
    project: str
    display_name: str
    version: str
    filename: str
    filetype: str
    python_version: str
    size: int
    sha256: str
    blake2_256: str
    md5: str
    requires_python: str | None
    summary: str | None
    metadata_sha256: str | None
    signature_sha256: str | None
    signature_keyid: str | None
    signature_trusted: bool | None
    yanked: bool
    uploaded_at: float
    uploaded_by: str
    # Core metadata a project page shows (pm.python.dists.DETAIL_FIELDS).
    details: dict[str, str | list[str]] = field(default_factory=dict)


_PYTHON_FILE_COLUMNS = tuple(PythonFile.__dataclass_fields__)


def _python_file(row: Row) -> PythonFile:
    values = dict(row)
    values.pop("id", None)
    values["yanked"] = bool(values["yanked"])
    trusted = values["signature_trusted"]
    values["signature_trusted"] = None if trusted is None else bool(trusted)
    values["details"] = json.loads(values["details"] or "{}")
    return PythonFile(**values)


def _column_values(record: PythonFile) -> list[Any]:
    values: list[Any] = []
    for column in _PYTHON_FILE_COLUMNS:
        value = getattr(record, column)
        if column == "details":
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            value = int(value)
        values.append(value)
    return values


class PythonFiles:
    """The ``python_files`` table; the clock is injected."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self._clock = clock

    def _event(self, tx: Tx, actor: str, action: str, subject: str, detail: str = "") -> None:
        record_event(tx, self._clock(), actor, action, subject, detail)

    async def add(self, record: PythonFile, source_name: str = "") -> bool:
        """Record an uploaded file; False if the identical file was already there.

        A different file under an existing filename is refused, as PyPI does:
        a filename names one content forever.
        """

        def work(tx: Tx) -> bool:
            values = _column_values(record)
            # ON CONFLICT rather than check-then-insert: on PostgreSQL a
            # concurrent upload of the same filename waits here for the other
            # to commit, then finds its row below instead of failing.
            inserted = tx.run(
                f"INSERT INTO python_files ({', '.join(_PYTHON_FILE_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in values)})"
                " ON CONFLICT (source_guid, filename) DO NOTHING",
                *values,
            )
            if inserted:
                self._event(tx, record.uploaded_by, "python.file.added",
                            record.filename, record.sha256)
                return True
            existing = tx.one(
                "SELECT sha256 FROM python_files WHERE source_guid = ? AND filename = ?",
                record.source_guid, record.filename,
            )
            if existing is not None and existing["sha256"] == record.sha256:
                return False
            raise AlreadyExists(record.filename, source_name)

        return await self.db.write(work)

    async def put(self, record: PythonFile) -> str:
        """Record a file, replacing one of that name with other contents.

        Returns "added", "unchanged" or "replaced". The replaced file's digest
        stays in the event log; its blob is left for housekeeping. Insert,
        else update in place: concurrent puts of one name wait for each other
        on the row, and the last one wins, instead of one failing.
        """

        def work(tx: Tx) -> str:
            def event(action: str, detail: str) -> None:
                self._event(tx, record.uploaded_by, f"python.file.{action}", record.filename,
                            detail)

            return put_file_row(tx, "python_files", _PYTHON_FILE_COLUMNS,
                                _column_values(record), source_guid=record.source_guid,
                                filename=record.filename, sha256=record.sha256, replace=True,
                                source_name="", event=event)

        return await self.db.write(work)

    async def rows(self, source_guids: Sequence[str], *, name: str | None = None,
                   search: str | None = None) -> list[PackageRow]:
        """Each file's package, version and source, for listing and removal."""
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        query = (f"SELECT source_guid, project, MIN(display_name) AS display_name, version,"
                 f" COUNT(*) AS files FROM python_files WHERE source_guid IN ({marks})")
        params: list[object] = list(source_guids)
        if name is not None:
            query += " AND project = ?"
            params.append(name)
        if search:
            query += " AND project LIKE ? ESCAPE '\\'"
            params.append(f"%{like_escape(normalize_name(search))}%")
        query += " GROUP BY source_guid, project, version"
        found = await self.db.read(lambda tx: tx.all(query, *params))
        return [PackageRow(r["source_guid"], r["project"], r["display_name"], r["version"],
                           r["files"], False) for r in found]

    async def delete_versions(self, source_guid: str, project: str, versions: Sequence[str],
                              actor: str, comment: str) -> list[tuple[str, str]]:
        """Delete the project's files of these versions; (filename, version) of each."""

        def work(tx: Tx) -> list[tuple[str, str]]:
            removed: list[tuple[str, str]] = []
            for version in versions:
                rows = tx.all(
                    "SELECT filename, sha256 FROM python_files WHERE source_guid = ?"
                    " AND project = ? AND version = ? ORDER BY filename",
                    source_guid, project, version,
                )
                tx.run("DELETE FROM python_files WHERE source_guid = ? AND project = ?"
                       " AND version = ?", source_guid, project, version)
                for row in rows:
                    self._event(tx, actor, "python.file.removed", row["filename"],
                                f"{row['sha256']} {comment}".strip())
                    removed.append((row["filename"], version))
            return removed

        return await self.db.write(work)

    async def projects(self, source_guids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Project name -> (display name, source GUID), the first source winning."""
        if not source_guids:
            return {}
        marks = ", ".join("?" for _ in source_guids)
        rows = await self.db.read(lambda tx: tx.all(
            f"SELECT project, source_guid, MIN(display_name) AS display_name FROM python_files"
            f" WHERE source_guid IN ({marks}) GROUP BY project, source_guid",
            *source_guids,
        ))
        order = {guid: i for i, guid in enumerate(source_guids)}
        winners: dict[str, tuple[str, str]] = {}
        for row in sorted(rows, key=lambda r: order[r["source_guid"]]):
            winners.setdefault(row["project"], (row["display_name"], row["source_guid"]))
        return winners

    async def project_files(
        self, source_guids: Sequence[str], project: str
    ) -> list[PythonFile]:
        """The project's files from the first of ``source_guids`` that has it.

        One indexed query for the one project, not the whole repo: this runs for
        every project page and every download.
        """
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        rows = await self.db.read(lambda tx: tx.all(
            f"SELECT * FROM python_files WHERE project = ? AND source_guid IN ({marks})",
            project, *source_guids,
        ))
        if not rows:
            return []
        order = {guid: i for i, guid in enumerate(source_guids)}
        winner = min((row["source_guid"] for row in rows), key=order.__getitem__)
        # Sorted here: an ORDER BY filename makes SQLite scan the source's
        # (source_guid, filename) index instead of using the project's.
        return sorted((_python_file(r) for r in rows if r["source_guid"] == winner),
                      key=lambda f: f.filename)

    async def add_signature(
        self,
        record: PythonFile,
        signature_sha256: str,
        keyid: str | None,
        trusted: bool | None,
        actor: str,
    ) -> bool:
        """Give a recorded file that has no signature this one; False if it has one.

        The first signature stays: a file's published signature never changes.
        """

        def work(tx: Tx) -> bool:
            updated = tx.run(
                "UPDATE python_files SET signature_sha256 = ?, signature_keyid = ?,"
                " signature_trusted = ? WHERE source_guid = ? AND filename = ?"
                " AND sha256 = ? AND signature_sha256 IS NULL",
                signature_sha256, keyid, None if trusted is None else int(trusted),
                record.source_guid, record.filename, record.sha256,
            )
            if updated:
                self._event(tx, actor, "python.signature.added", record.filename,
                            signature_sha256)
            return bool(updated)

        return await self.db.write(work)

    async def file(self, source_guid: str, filename: str) -> PythonFile | None:
        row = await self.db.read(lambda tx: tx.one(
            "SELECT * FROM python_files WHERE source_guid = ? AND filename = ?",
            source_guid, filename,
        ))
        return None if row is None else _python_file(row)

    @staticmethod
    def delete_source_rows(tx: Tx, source_guid: str) -> None:
        tx.run("DELETE FROM python_files WHERE source_guid = ?", source_guid)

    async def digests_in_use(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` a recorded file, its metadata or its signature uses."""
        if not digests:
            return set()
        marks = ", ".join("?" for _ in digests)
        rows = await self.db.read(lambda tx: tx.all(
            " UNION ".join(
                f"SELECT {column} AS digest FROM python_files WHERE {column} IN ({marks})"
                for column in ("sha256", "metadata_sha256", "signature_sha256")
            ),
            *digests, *digests, *digests,
        ))
        return {row["digest"] for row in rows}

    async def source_projects(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        """Each (source GUID, project) that has a file: what the UI counts per source."""
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        rows = await self.db.read(lambda tx: tx.all(
            f"SELECT DISTINCT source_guid, project FROM python_files"
            f" WHERE source_guid IN ({marks})", *source_guids))
        return [(r["source_guid"], r["project"]) for r in rows]

    async def release_rows(self, source_guids: Sequence[str]) -> list[Row]:
        """One row per source, project and version, for a repo's package list.

        Keys: source_guid, project, display_name, version, summary, uploaded_at
        (the version's last upload). One query for the whole repo: which
        version is latest is PEP 440's order, which SQL cannot sort by.
        """
        if not source_guids:
            return []
        marks = ", ".join("?" for _ in source_guids)
        return await self.db.read(lambda tx: tx.all(
            f"SELECT source_guid, project, MIN(display_name) AS display_name, version,"
            f" MAX(summary) AS summary, MAX(uploaded_at) AS uploaded_at FROM python_files"
            f" WHERE source_guid IN ({marks}) GROUP BY source_guid, project, version",
            *source_guids))
