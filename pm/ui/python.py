"""Python projects as the UI shows them: a repo's list and a project's page.

A project page is one query (the project's files in the first subscribed
source that has it); the repo's list is one query for every project and
version, reduced here because "latest" is PEP 440's order. Core metadata is
uploaders' text: the templates escape it, links are kept only when they are
http(s), and the README goes through ``pm.ui.readme``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from pm.catalog import Repo
from pm.db import Row
from pm.errors import NotFound
from pm.python.dists import normalize_name
from pm.python.ecosystem import REPO_TYPE, SOURCE_TYPE, version_key
from pm.python.files import PythonFile, PythonFiles
from pm.ui.readme import ReadmeRenderer
from pm.ui.shelf import Field, PackageEntry, Page, Uploaders, Value, safe_href


@dataclass(frozen=True)
class Signature:
    """An uploaded OpenPGP signature: who made it, where it is, whether it verified."""

    keyid: str | None
    url: str
    # True: verified against a key of [Signatures] TrustedKeys; False: by a key
    # the server does not hold, so not verified.
    trusted: bool | None


@dataclass(frozen=True)
class Distribution:
    filename: str
    url: str
    kind: str
    size: int
    sha256: str
    uploaded_at: float
    uploaded_by: str
    requires_python: str | None
    yanked: bool
    signature: Signature | None


@dataclass(frozen=True)
class Release:
    version: str
    files: tuple[Distribution, ...]
    uploaded_at: float

    @property
    def yanked(self) -> bool:
        return all(f.yanked for f in self.files)


_KINDS = {"bdist_wheel": "wheel", "sdist": "source"}


def _people(name: object, email: object) -> tuple[Value, ...]:
    """An Author (or Maintainer) and its email field as shown: the names, then addresses."""
    texts = [str(v).strip() for v in (name, email) if isinstance(v, str) and v.strip()]
    return tuple(Value(t) for t in texts)


def _texts(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [value] if isinstance(value, str) and value.strip() else []


def metadata_fields(latest: PythonFile) -> list[Field]:
    """The sidebar of a project page, from the latest version's core metadata."""
    details = latest.details
    fields: list[Field] = []

    def add(label: str, values: Sequence[Value]) -> None:
        if values:
            fields.append(Field(label, tuple(values)))

    add("Author", _people(details.get("Author"), details.get("Author-email")))
    add("Maintainer", _people(details.get("Maintainer"), details.get("Maintainer-email")))
    add("License", [Value(t) for t in (*_texts(details.get("License-Expression")),
                                       *_texts(details.get("License")))[:1]])
    if latest.requires_python:
        add("Requires Python", [Value(latest.requires_python)])
    links = [Value(t, safe_href(t)) for t in _texts(details.get("Home-page"))]
    for entry in _texts(details.get("Project-URL")):
        label, comma, url = entry.partition(",")
        href = safe_href(url if comma else entry)
        # A link shows its label; a URL that cannot be a link shows all of it.
        links.append(Value(label.strip() if comma and href else entry.strip(), href))
    add("Links", links)
    add("Requires", [Value(t) for t in _texts(details.get("Requires-Dist"))])
    add("Extras", [Value(t) for t in _texts(details.get("Provides-Extra"))])
    add("Keywords", [Value(t) for t in _texts(details.get("Keywords"))])
    add("Classifiers", [Value(t) for t in _texts(details.get("Classifier"))])
    return fields


class PythonShelf:
    """Python's pages: the files table read for a repo, a README renderer for projects."""

    repo_type = REPO_TYPE
    source_type = SOURCE_TYPE

    def __init__(self, files: PythonFiles, readmes: ReadmeRenderer) -> None:
        self._files = files
        self._readmes = readmes

    def normalize(self, name: str) -> str:
        return normalize_name(name)

    def index_url(self, base: str, repo: Repo) -> str:
        return f"{base}/{quote(repo.name)}/latest/simple/"

    def install_command(self, base: str, repo: Repo, name: str) -> str:
        return f"pip install --index-url {self.index_url(base, repo)} {name}"

    async def source_packages(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        return await self._files.source_projects(source_guids)

    async def entries(self, repo: Repo) -> list[PackageEntry]:
        order = {s.guid: i for i, s in enumerate(repo.sources)}
        rows = await self._files.release_rows(list(order))
        by_project: dict[str, list[Row]] = {}
        for row in rows:
            by_project.setdefault(row["project"], []).append(row)
        entries = []
        for project, found in by_project.items():
            winner = min((r["source_guid"] for r in found), key=order.__getitem__)
            mine = [r for r in found if r["source_guid"] == winner]
            latest = max(mine, key=lambda r: version_key(r["version"]))
            entries.append(PackageEntry(
                name=project, display_name=latest["display_name"], version=latest["version"],
                summary=latest["summary"] or "",
                last_upload=max(r["uploaded_at"] for r in mine)))
        entries.sort(key=lambda e: e.name)
        return entries

    async def package_page(self, repo: Repo, name: str, uploaders: Uploaders,
                           base: str) -> Page:
        files = await self._files.project_files([s.guid for s in repo.sources], name)
        if not files:
            raise NotFound(f"no Python project '{name[:100]}' in repo '{repo.name}'")
        files_url = f"/{quote(repo.name)}/latest/files/"
        by_version: dict[str, list[PythonFile]] = {}
        for f in files:
            by_version.setdefault(f.version, []).append(f)
        releases = [
            Release(version, tuple(self._distribution(f, files_url, uploaders)
                                   for f in sorted(members, key=_file_order)),
                    min(f.uploaded_at for f in members))
            for version, members in sorted(by_version.items(),
                                           key=lambda item: version_key(item[0]),
                                           reverse=True)
        ]
        live = [r for r in releases if not r.yanked] or releases
        latest = live[0]
        latest_file = max(by_version[latest.version], key=lambda f: f.uploaded_at)
        description = latest_file.details.get("Description")
        readme, readme_kind = (None, None)
        if isinstance(description, str) and description.strip():
            content_type = latest_file.details.get("Description-Content-Type")
            readme, readme_kind = await self._readmes.render(
                description, content_type if isinstance(content_type, str) else None)
        return Page("python_package.html", {
            "repo": repo,
            "name": name,
            "display_name": latest_file.display_name,
            "summary": latest_file.summary or "",
            "latest": latest,
            "releases": releases,
            "readme": readme,
            "readme_kind": readme_kind,
            "fields": metadata_fields(latest_file),
            "install": self.install_command(base, repo, latest_file.display_name),
            "signed": any(f.signature for r in releases for f in r.files),
        })

    @staticmethod
    def _distribution(f: PythonFile, files_url: str, uploaders: Uploaders) -> Distribution:
        url = files_url + quote(f.filename)
        signature = None
        if f.signature_sha256 is not None:
            signature = Signature(f.signature_keyid, url + ".asc", f.signature_trusted)
        return Distribution(
            filename=f.filename, url=url, kind=_KINDS.get(f.filetype, f.filetype), size=f.size,
            sha256=f.sha256, uploaded_at=f.uploaded_at, uploaded_by=uploaders.label(
                f.uploaded_by),
            requires_python=f.requires_python, yanked=f.yanked, signature=signature)


def _file_order(f: PythonFile) -> tuple[int, str]:
    # Wheels first, as pip prefers them.
    return (0 if f.filetype == "bdist_wheel" else 1, f.filename)
