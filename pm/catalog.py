"""The catalog: sources, repos, the subscriptions between them, and the event log.

It knows no ecosystem by name. Each one registers its source type, the repo
type that source feeds, and how to delete a source's rows of its own table
(:class:`SourceKind`); the catalog consults them and nothing else.

Every method returns a Deferred (through ``async def``) and does its database
work in the adbapi pool; anything that writes more than one row is one
transaction. Domain exceptions carry the messages users see.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pm.db import Database, Row, Tx
from pm.errors import BadRequest, Conflict, NotFound

# ASCII only: Unicode letters would let a name spelt with a Cyrillic "o", or
# in full-width letters, sit beside "python" and pass for it.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class SourceKind:
    """What the catalog needs to know of one ecosystem's sources."""

    source_type: str
    repo_type: str
    # Deletes the source's rows of the ecosystem's own tables, inside the
    # catalog's delete transaction.
    delete_rows: Callable[[Tx, str], None]


def record_event(tx: Tx, at: float, actor: str, action: str, subject: str,
                 detail: str = "") -> None:
    """Append to the event log, inside the transaction of the change it records."""
    tx.run(
        "INSERT INTO events (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        at, actor, action, subject, detail,
    )


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
    # Its index and files are served only to a token that covers it (pm.auth).
    authenticated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"guid": self.guid, "name": self.name, "type": self.type,
                "description": self.description, "created": self.created_at,
                "sources": [s.name for s in self.sources],
                "authenticated": self.authenticated}


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


def _source(row: Row) -> Source:
    return Source(row["guid"], row["name"], row["type"], row["created_at"])


class Catalog:
    """Sources, repos and events; the database, kinds, clock and GUID source are injected.

    ``new_repos_authenticated`` is ``[Authentication] NewReposAuthByDefault``: whether a
    repo created without saying so is authenticated.
    """

    def __init__(
        self,
        db: Database,
        kinds: Sequence[SourceKind],
        clock: Callable[[], float],
        new_guid: Callable[[], str] = lambda: str(uuid.uuid4()),
        *,
        new_repos_authenticated: bool = False,
    ) -> None:
        self.db = db
        self._kinds: Mapping[str, SourceKind] = {k.source_type: k for k in kinds}
        self._repo_types = tuple(dict.fromkeys(k.repo_type for k in kinds))
        self._clock = clock
        self._new_guid = new_guid
        self._new_repos_authenticated = new_repos_authenticated

    @property
    def provider(self) -> str:
        return self.db.dialect.name

    def _event(self, tx: Tx, actor: str, action: str, subject: str, detail: str = "") -> None:
        record_event(tx, self._clock(), actor, action, subject, detail)

    async def ping(self) -> None:
        await self.db.read(lambda tx: tx.one("SELECT 1 AS ok"))

    # Sources -------------------------------------------------------------

    async def create_source(self, name: str, type_: str, actor: str) -> Source:
        _check_name(name, "source")
        if type_ not in self._kinds:
            raise BadRequest(
                f"unknown source type '{type_}' (valid: {', '.join(sorted(self._kinds))})"
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
            raise NotFound(f"no source named '{name[:100]}'")
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
                raise NotFound(f"no source named '{name[:100]}'")
            # Explicit deletes rather than ON DELETE CASCADE: SQLite only
            # honours it with a pragma, and both databases must agree.
            tx.run("DELETE FROM subscriptions WHERE source_guid = ?", row["guid"])
            self._kinds[row["type"]].delete_rows(tx, row["guid"])
            tx.run("DELETE FROM sources WHERE guid = ?", row["guid"])
            self._event(tx, actor, "source.deleted", name)
            return _source(row)

        return await self.db.write(work)

    # Repos ---------------------------------------------------------------

    async def create_repo(self, name: str, type_: str, description: str, actor: str,
                          authenticated: bool | None = None) -> Repo:
        """A new repo; ``authenticated`` None takes the server's default for new repos."""
        _check_name(name, "repo")
        if type_ not in self._repo_types:
            raise BadRequest(
                f"unknown repo type '{type_}' (valid: {', '.join(self._repo_types)})")
        if authenticated is None:
            authenticated = self._new_repos_authenticated
        repo = Repo(self._new_guid(), name, type_, description, self._clock(), (),
                    authenticated)

        def work(tx: Tx) -> Repo:
            if tx.one("SELECT guid FROM repos WHERE name = ?", name):
                raise Conflict(f"repo '{name}' already exists")
            tx.run(
                "INSERT INTO repos (guid, name, type, description, created_at, authenticated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                repo.guid, name, type_, description, repo.created_at, int(authenticated),
            )
            self._event(tx, actor, "repo.created", name,
                        f"{type_} authenticated" if authenticated else type_)
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
                    row["created_at"], tuple(_source(s) for s in sources),
                    bool(row["authenticated"]))

    async def get_repo(self, name: str) -> Repo:
        def work(tx: Tx) -> Repo:
            row = tx.one("SELECT * FROM repos WHERE name = ?", name)
            if row is None:
                raise NotFound(f"no repo named '{name[:100]}'")
            return self._repo(tx, row)

        return await self.db.read(work)

    async def list_repos(self) -> list[Repo]:
        def work(tx: Tx) -> list[Repo]:
            return [self._repo(tx, row) for row in tx.all("SELECT * FROM repos ORDER BY name")]

        return await self.db.read(work)

    async def edit_repo(self, name: str, actor: str, *, authenticated: bool | None = None,
                        description: str | None = None) -> Repo:
        """Change what is given (None leaves it); a change is an event, so the change
        serial moves and every node stops serving what it cached of the repo before."""

        def work(tx: Tx) -> tuple[Repo, bool]:
            row = tx.one("SELECT * FROM repos WHERE name = ?", name)
            if row is None:
                raise NotFound(f"no repo named '{name}'")
            changes: list[str] = []
            protect = False
            if authenticated is not None and bool(row["authenticated"]) != authenticated:
                changes.append(f"authenticated={'true' if authenticated else 'false'}")
                row = {**row, "authenticated": int(authenticated)}
                protect = authenticated
            if description is not None and row["description"] != description:
                changes.append("description")
                row = {**row, "description": description}
            if changes:
                tx.run("UPDATE repos SET authenticated = ?, description = ? WHERE guid = ?",
                       row["authenticated"], row["description"], row["guid"])
                self._event(tx, actor, "repo.edited", name, " ".join(changes))
            return self._repo(tx, row), protect

        repo, protect = await self.db.write(work)
        if protect:
            # PostgreSQL numbers events when they are written, not when they commit:
            # a write that took a later id and committed first can leave the serial
            # where it was when this edit commits, and pages cached as public at it
            # would still be served. An event written after the commit has an id
            # above every serial read before it, so once this returns they are not.
            await self.db.write(lambda tx: self._event(tx, actor, "repo.protected", name))
        return repo

    async def subscribe(self, repo_name: str, source_name: str, actor: str) -> Repo:
        def work(tx: Tx) -> Repo:
            repo = tx.one("SELECT * FROM repos WHERE name = ?", repo_name)
            if repo is None:
                known = ", ".join(r["name"] for r in tx.all("SELECT name FROM repos ORDER BY name"))
                raise NotFound(f"no repo named '{repo_name[:100]}' (repos: {known or 'none yet'})")
            # Lock the repo row so concurrent subscriptions get distinct positions.
            tx.run("UPDATE repos SET name = name WHERE guid = ?", repo["guid"])
            source = tx.one("SELECT * FROM sources WHERE name = ?", source_name)
            if source is None:
                known = ", ".join(
                    r["name"] for r in tx.all("SELECT name FROM sources ORDER BY name")
                )
                raise NotFound(
                    f"no source named '{source_name[:100]}' (sources: {known or 'none yet'})"
                )
            if self._kinds[source["type"]].repo_type != repo["type"]:
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

def _check_name(name: str, what: str) -> None:
    # "." and ".." would be dropped from URLs by every client.
    if not _NAME.fullmatch(name) or not name.strip("."):
        shown = name if len(name) <= 100 else name[:100] + "..."
        raise BadRequest(
            f"invalid {what} name {shown!r}: use 1-100 ASCII letters, digits, '-', '_' or '.'"
        )
