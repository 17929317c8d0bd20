"""What a page needs from one ecosystem, and the records the shelves hand the templates.

A shelf (Python's, R's) turns its table's rows into these records; the pages
and templates never read a row. Everything in a record is plain text still to
be escaped, except ``Markup`` values, which the shelf has already sanitised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pm.catalog import Repo
from pm.tokenstore import TokenRecord

LOCAL_ADMIN = "local-admin"
_TOKEN_PREFIX = "token:"
_LINK_SCHEMES = frozenset({"http", "https"})


def safe_href(url: str) -> str | None:
    """``url`` if it is an absolute http(s) URL, else None: metadata links never run code."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() in _LINK_SCHEMES and parts.netloc and text.isprintable():
        return text
    return None


@dataclass(frozen=True)
class Value:
    """One value of a field; a link when ``href`` is set."""

    text: str
    href: str | None = None


@dataclass(frozen=True)
class Field:
    """A labelled field of a package page (a DESCRIPTION field, an Author, ...)."""

    label: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class PackageEntry:
    """One package of a repo's list: its latest version and when it last changed."""

    name: str
    display_name: str
    version: str
    summary: str
    last_upload: float
    archived: bool = False

    def matches(self, query: str) -> bool:
        needle = query.lower()
        return needle in self.name.lower() or needle in self.display_name.lower() \
            or needle in self.summary.lower()


@dataclass(frozen=True)
class Page:
    """A template and what it shows."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)


class Uploaders:
    """Names the actor of an upload or event: the token's description, not its GUID."""

    def __init__(self, tokens: Sequence[TokenRecord]) -> None:
        self._descriptions: Mapping[str, str] = {t.guid: t.description for t in tokens}

    def label(self, actor: str) -> str:
        if actor == LOCAL_ADMIN:
            return "local administrator"
        if actor.startswith(_TOKEN_PREFIX):
            guid = actor[len(_TOKEN_PREFIX):]
            description = self._descriptions.get(guid, "").strip()
            return f"token “{description}”" if description else f"token {guid[:8]}"
        return actor


class Shelf(Protocol):
    """One ecosystem's packages as the pages show them."""

    @property
    def repo_type(self) -> str:
        """The repo type whose pages this shelf fills."""

    @property
    def source_type(self) -> str:
        """The source type whose packages it counts."""

    def normalize(self, name: str) -> str:
        """A package name as its URL holds it."""

    def index_url(self, base: str, repo: Repo) -> str:
        """Where a client points to install from ``repo``."""

    def install_command(self, base: str, repo: Repo, name: str) -> str:
        """The line a user copies to install ``name`` from ``repo``."""

    async def source_packages(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        """(source GUID, package) of every package these sources hold."""

    async def entries(self, repo: Repo) -> list[PackageEntry]:
        """Every package ``repo`` serves, by name, from one query."""

    async def package_page(self, repo: Repo, name: str, uploaders: Uploaders,
                           base: str) -> Page:
        """The package's page; NotFound if ``repo`` has no such package."""
