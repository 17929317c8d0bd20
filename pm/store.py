"""Metadata: sources, repos, subscriptions, tokens, Python files and the event log.

Every method returns a Deferred (through ``async def``) and does its database
work in the adbapi pool; anything that writes more than one row is one
transaction. Domain exceptions carry the messages users see.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pm.db import Database, Row, Tx
from pm.errors import BadRequest, BadUpload, Conflict, NotFound

SOURCE_TYPES = {"local-python": "python", "local": "r"}
REPO_TYPES = ("python", "r")


@dataclass(frozen=True)
class Source:
    guid: str
    name: str
    type: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"guid": self.guid, "name": self.name, "type": self.type,
                "created": self.created_at}


@dataclass(frozen=True)
class Repo:
    guid: str
    name: str
    type: str
    description: str
    created_at: float
    sources: tuple[Source, ...]

    def to_json(self) -> dict[str, Any]:
        return {"guid": self.guid, "name": self.name, "type": self.type,
                "description": self.description, "created": self.created_at,
                "sources": [s.name for s in self.sources]}


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


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action,
                "subject": self.subject, "detail": self.detail}


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


_PYTHON_FILE_COLUMNS = tuple(PythonFile.__dataclass_fields__)


def _python_file(row: Row) -> PythonFile:
    values = dict(row)
    values.pop("id", None)
    values["yanked"] = bool(values["yanked"])
    trusted = values["signature_trusted"]
    values["signature_trusted"] = None if trusted is None else bool(trusted)
    return PythonFile(**values)


def _source(row: Row) -> Source:
    return Source(row["guid"], row["name"], row["type"], row["created_at"])


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


class Store:
    """The metadata store; the database, clock and GUID source are injected."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        new_guid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.db = db
        self._clock = clock
        self._new_guid = new_guid

    @property
    def provider(self) -> str:
        return self.db.dialect.name

    def _event(self, tx: Tx, actor: str, action: str, subject: str, detail: str = "") -> None:
        tx.run(
            "INSERT INTO events (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            self._clock(), actor, action, subject, detail,
        )

    async def ping(self) -> None:
        await self.db.read(lambda tx: tx.one("SELECT 1 AS ok"))

    # Sources -------------------------------------------------------------

    async def create_source(self, name: str, type_: str, actor: str) -> Source:
        _check_name(name, "source")
        if type_ not in SOURCE_TYPES:
            raise BadRequest(
                f"unknown source type '{type_}' (valid: {', '.join(sorted(SOURCE_TYPES))})"
            )
        source = Source(self._new_guid(), name, type_, self._clock())

        def work(tx: Tx) -> Source:
            if tx.one("SELECT guid FROM sources WHERE name = ?", name):
                raise Conflict(f"source '{name}' already exists")
            tx.run(
                "INSERT INTO sources (guid, name, type, created_at) VALUES (?, ?, ?, ?)",
                source.guid, name, type_, source.created_at,
            )
            self._event(tx, actor, "source.created", name, type_)
            return source

        try:
            return await self.db.write(work)
        except Conflict:
            # Another node created it between our check and our insert.
            raise Conflict(f"source '{name}' already exists") from None

    async def get_source(self, name: str) -> Source:
        row = await self.db.read(lambda tx: tx.one("SELECT * FROM sources WHERE name = ?", name))
        if row is None:
            raise NotFound(f"no source named '{name}'")
        return _source(row)

    async def sources_by_name(self, names: Sequence[str]) -> list[Source]:
        """The named sources in the given order; NotFound lists what exists."""
        rows = await self.db.read(lambda tx: tx.all("SELECT * FROM sources ORDER BY name"))
        by_name = {row["name"]: _source(row) for row in rows}
        missing = [n for n in names if n not in by_name]
        if missing:
            known = ", ".join(by_name) or "none yet"
            raise NotFound(f"no source named {', '.join(map(repr, missing))} (sources: {known})")
        return [by_name[n] for n in names]

    async def list_sources(self) -> list[Source]:
        rows = await self.db.read(lambda tx: tx.all("SELECT * FROM sources ORDER BY name"))
        return [_source(r) for r in rows]

    async def delete_source(self, name: str, actor: str) -> Source:
        def work(tx: Tx) -> Source:
            row = tx.one("SELECT * FROM sources WHERE name = ?", name)
            if row is None:
                raise NotFound(f"no source named '{name}'")
            # Explicit deletes rather than ON DELETE CASCADE: SQLite only
            # honours it with a pragma, and both databases must agree.
            tx.run("DELETE FROM subscriptions WHERE source_guid = ?", row["guid"])
            tx.run("DELETE FROM python_files WHERE source_guid = ?", row["guid"])
            tx.run("DELETE FROM sources WHERE guid = ?", row["guid"])
            self._event(tx, actor, "source.deleted", name)
            return _source(row)

        return await self.db.write(work)

    # Repos ---------------------------------------------------------------

    async def create_repo(self, name: str, type_: str, description: str, actor: str) -> Repo:
        _check_name(name, "repo")
        if type_ not in REPO_TYPES:
            raise BadRequest(f"unknown repo type '{type_}' (valid: {', '.join(REPO_TYPES)})")
        repo = Repo(self._new_guid(), name, type_, description, self._clock(), ())

        def work(tx: Tx) -> Repo:
            if tx.one("SELECT guid FROM repos WHERE name = ?", name):
                raise Conflict(f"repo '{name}' already exists")
            tx.run(
                "INSERT INTO repos (guid, name, type, description, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                repo.guid, name, type_, description, repo.created_at,
            )
            self._event(tx, actor, "repo.created", name, type_)
            return repo

        try:
            return await self.db.write(work)
        except Conflict:
            raise Conflict(f"repo '{name}' already exists") from None

    def _repo(self, tx: Tx, row: Row) -> Repo:
        sources = tx.all(
            "SELECT s.* FROM subscriptions AS sub JOIN sources AS s ON s.guid = sub.source_guid"
            " WHERE sub.repo_guid = ? ORDER BY sub.position",
            row["guid"],
        )
        return Repo(row["guid"], row["name"], row["type"], row["description"],
                    row["created_at"], tuple(_source(s) for s in sources))

    async def get_repo(self, name: str) -> Repo:
        def work(tx: Tx) -> Repo:
            row = tx.one("SELECT * FROM repos WHERE name = ?", name)
            if row is None:
                raise NotFound(f"no repo named '{name}'")
            return self._repo(tx, row)

        return await self.db.read(work)

    async def list_repos(self) -> list[Repo]:
        def work(tx: Tx) -> list[Repo]:
            return [self._repo(tx, row) for row in tx.all("SELECT * FROM repos ORDER BY name")]

        return await self.db.read(work)

    async def subscribe(self, repo_name: str, source_name: str, actor: str) -> Repo:
        def work(tx: Tx) -> Repo:
            repo = tx.one("SELECT * FROM repos WHERE name = ?", repo_name)
            if repo is None:
                known = ", ".join(r["name"] for r in tx.all("SELECT name FROM repos ORDER BY name"))
                raise NotFound(f"no repo named '{repo_name}' (repos: {known or 'none yet'})")
            # Lock the repo row so concurrent subscriptions get distinct positions.
            tx.run("UPDATE repos SET name = name WHERE guid = ?", repo["guid"])
            source = tx.one("SELECT * FROM sources WHERE name = ?", source_name)
            if source is None:
                known = ", ".join(
                    r["name"] for r in tx.all("SELECT name FROM sources ORDER BY name")
                )
                raise NotFound(
                    f"no source named '{source_name}' (sources: {known or 'none yet'})"
                )
            if SOURCE_TYPES[source["type"]] != repo["type"]:
                raise BadRequest(
                    f"source '{source_name}' holds {source['type']} packages and cannot feed "
                    f"the {repo['type']} repo '{repo_name}'"
                )
            if tx.one(
                "SELECT position FROM subscriptions WHERE repo_guid = ? AND source_guid = ?",
                repo["guid"], source["guid"],
            ):
                raise Conflict(f"repo '{repo_name}' is already subscribed to '{source_name}'")
            last = tx.one(
                "SELECT MAX(position) AS p FROM subscriptions WHERE repo_guid = ?", repo["guid"]
            )
            position = (last["p"] if last and last["p"] is not None else 0) + 1
            tx.run(
                "INSERT INTO subscriptions (repo_guid, source_guid, position) VALUES (?, ?, ?)",
                repo["guid"], source["guid"], position,
            )
            self._event(tx, actor, "repo.subscribed", repo_name, source_name)
            return self._repo(tx, repo)

        return await self.db.write(work)

    # Events --------------------------------------------------------------

    async def events(self, limit: int = 100) -> list[Event]:
        rows = await self.db.read(
            lambda tx: tx.all("SELECT * FROM events ORDER BY id DESC LIMIT ?", limit)
        )
        return [Event(**row) for row in rows]

    # Tokens --------------------------------------------------------------

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

    # Python files --------------------------------------------------------

    async def add_python_file(self, record: PythonFile) -> bool:
        """Record an uploaded file; False if the identical file was already there.

        A different file under an existing filename is refused, as PyPI does:
        a filename names one content forever.
        """

        def work(tx: Tx) -> bool:
            values = [getattr(record, c) for c in _PYTHON_FILE_COLUMNS]
            # ON CONFLICT rather than check-then-insert: on PostgreSQL a
            # concurrent upload of the same filename waits here for the other
            # to commit, then finds its row below instead of failing.
            inserted = tx.run(
                f"INSERT INTO python_files ({', '.join(_PYTHON_FILE_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in values)})"
                " ON CONFLICT (source_guid, filename) DO NOTHING",
                *[int(v) if isinstance(v, bool) else v for v in values],
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
            raise BadUpload(
                f"File already exists ('{record.filename}', with different contents)."
            )

        return await self.db.write(work)

    async def python_projects(self, source_guids: Sequence[str]) -> dict[str, tuple[str, str]]:
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

    async def python_project_files(
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
            f"SELECT * FROM python_files WHERE project = ? AND source_guid IN ({marks})"
            " ORDER BY filename",
            project, *source_guids,
        ))
        if not rows:
            return []
        order = {guid: i for i, guid in enumerate(source_guids)}
        winner = min((row["source_guid"] for row in rows), key=order.__getitem__)
        return [_python_file(r) for r in rows if r["source_guid"] == winner]

    async def add_python_signature(
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

    async def python_file(self, source_guid: str, filename: str) -> PythonFile | None:
        row = await self.db.read(lambda tx: tx.one(
            "SELECT * FROM python_files WHERE source_guid = ? AND filename = ?",
            source_guid, filename,
        ))
        return None if row is None else _python_file(row)

    async def python_digests_in_use(self, digests: Sequence[str]) -> set[str]:
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


def _check_name(name: str, what: str) -> None:
    # "." and ".." would be dropped from URLs by every client.
    if not name.strip(".") or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadRequest(
            f"invalid {what} name '{name}': use 1-100 letters, digits, '-', '_' or '.'"
        )
