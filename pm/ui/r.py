"""R packages as the UI shows them: a repo's list and a package's page.

A package page shows every DESCRIPTION field in the file's order; its
dependencies link to their pages when the same repo serves them, and URL
fields link only when they are http(s). The current version is served from
``src/contrib/``, every other one from ``src/contrib/Archive/{package}/``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from pm.catalog import Repo
from pm.errors import NotFound
from pm.r.description import r_version_key
from pm.r.ecosystem import REPO_TYPE, SOURCE_TYPE, RIndex
from pm.r.files import RFiles, RPackageFile
from pm.ui.shelf import Field, PackageEntry, Page, Uploaders, Value, safe_href

DEPENDENCY_FIELDS = frozenset({"Depends", "Imports", "LinkingTo", "Suggests", "Enhances"})
URL_FIELDS = frozenset({"URL", "BugReports"})
# Shown above the fields rather than among them.
_HEADLINE_FIELDS = frozenset({"Package", "Version", "Title", "Description"})
_DEPENDENCY = re.compile(r"([A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]|R)\s*(\(.*\))?", re.DOTALL)
_URL_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class RFileView:
    filename: str
    url: str
    version: str
    current: bool
    size: int
    sha256: str
    uploaded_at: float
    uploaded_by: str


def dependencies(value: str, served: frozenset[str], base_path: str) -> tuple[Value, ...]:
    """A dependency field's packages, each a link when ``served`` holds it."""
    found = []
    for item in value.split(","):
        text = " ".join(item.split())
        if not text:
            continue
        match = _DEPENDENCY.fullmatch(text)
        name = match.group(1) if match else None
        href = f"{base_path}{quote(name)}/" if name in served else None
        found.append(Value(text, href))
    return tuple(found)


def description_fields(fields: dict[str, str], served: frozenset[str],
                       base_path: str) -> list[Field]:
    shown = []
    for label, value in fields.items():
        if label in _HEADLINE_FIELDS:
            continue
        if label in DEPENDENCY_FIELDS:
            values = dependencies(value, served, base_path)
        elif label in URL_FIELDS:
            values = tuple(Value(u, safe_href(u)) for u in _URL_SPLIT.split(value) if u)
        else:
            values = (Value(value),)
        if values:
            shown.append(Field(label, values))
    return shown


class RShelf:
    """R's pages: the repo's index of current and archived files."""

    repo_type = REPO_TYPE
    source_type = SOURCE_TYPE

    def __init__(self, files: RFiles, index: RIndex) -> None:
        self._files = files
        self._index = index

    def normalize(self, name: str) -> str:
        return name

    def index_url(self, base: str, repo: Repo) -> str:
        return f"{base}/{quote(repo.name)}/latest"

    def install_command(self, base: str, repo: Repo, name: str) -> str:
        return f'install.packages("{name}", repos = "{self.index_url(base, repo)}")'

    async def source_packages(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        return await self._files.source_packages(source_guids)

    async def entries(self, repo: Repo) -> list[PackageEntry]:
        listing = await self._index.packages(repo)
        shown: dict[str, RPackageFile] = {f.package: f for f in listing.current}
        last: dict[str, float] = {}
        for f in (*listing.current, *listing.archived):
            last[f.package] = max(last.get(f.package, 0.0), f.uploaded_at)
            # A package whose every version is archived shows its newest one.
            held = shown.get(f.package)
            if f.archived and (held is None or (held.archived and r_version_key(f.version)
                                                > r_version_key(held.version))):
                shown[f.package] = f
        return [PackageEntry(name=name, display_name=name, version=f.version,
                             summary=f.fields.get("Title", ""), last_upload=last[name],
                             archived=f.archived)
                for name, f in sorted(shown.items())]

    async def package_page(self, repo: Repo, name: str, uploaders: Uploaders,
                           base: str) -> Page:
        guids = [s.guid for s in repo.sources]
        listing = await self._index.packages(repo, name)
        files = [*listing.current, *listing.archived]
        if not files:
            raise NotFound(f"no R package '{name[:100]}' in repo '{repo.name}'")
        served = frozenset(p for _, p in await self._files.source_packages(guids))
        current = listing.current[0] if listing.current else None
        files.sort(key=lambda f: r_version_key(f.version), reverse=True)
        shown = current or files[0]
        contrib = f"/{quote(repo.name)}/latest/src/contrib/"
        views = [RFileView(
            filename=f.filename,
            url=contrib + (quote(f.filename) if f is current
                           else f"Archive/{quote(f.package)}/{quote(f.filename)}"),
            version=f.version, current=f is current, size=f.size, sha256=f.sha256,
            uploaded_at=f.uploaded_at, uploaded_by=uploaders.label(f.uploaded_by))
            for f in files]
        return Page("r_package.html", {
            "repo": repo,
            "name": name,
            "shown": shown,
            "current": current,
            "title": shown.fields.get("Title", ""),
            "description": shown.fields.get("Description", ""),
            "fields": description_fields(shown.fields, served - {name},
                                         f"/repos/{quote(repo.name)}/packages/"),
            "files": views,
            "install": self.install_command(base, repo, name),
        })
