"""The simple repository API that pip and uv install from.

PEP 503 HTML and PEP 691 JSON (chosen by ``Accept``), with PEP 700's
``versions``, ``size`` and ``upload-time``, PEP 658/714 core metadata, the
file's ``Requires-Python`` and whether a signature exists. A repo shows its
subscribed sources in order: the first source that has a project wins it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from pm.blobs import BlobStore
from pm.catalog import Repo
from pm.errors import NotFound, PackageManagerError
from pm.python import dists
from pm.python.files import PythonFile, PythonFiles
from pm.responses import NotAcceptable

API_VERSION = "1.1"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
_OFFERED = (JSON_V1, HTML_V1, TEXT_HTML)


def negotiate(accept: str | None) -> str:
    """The content type to answer with, per PEP 691's negotiation."""
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        media = _ALIASES.get(media.lower(), media.lower())
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in ("*/*", "text/*"):
            candidate = TEXT_HTML
        elif media in _OFFERED:
            candidate = media
        else:
            continue
        # Higher quality wins; on a tie, the earlier entry in the header.
        key_ = (quality, -position, candidate)
        if best is None or key_[:2] > best[:2]:
            best = key_
    if best is None:
        raise NotAcceptable(f"none of the accepted types is offered ({', '.join(_OFFERED)})")
    return best[2]


def _upload_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _file_url(filename: str) -> str:
    # Relative to /{repo}/latest/simple/{project}/, so the index works behind
    # a proxy that mounts the server under a path prefix.
    return f"../../files/{quote(filename)}"


def render_projects(names: Sequence[tuple[str, str]], content_type: str) -> bytes:
    """The root page: ``names`` are (normalized, display) pairs."""
    if content_type == JSON_V1:
        return json.dumps({
            "meta": {"api-version": API_VERSION},
            "projects": [{"name": display} for _, display in names],
        }).encode()
    links = "\n".join(
        f'    <a href="{quote(norm)}/">{html.escape(display)}</a><br/>' for norm, display in names
    )
    return _page("Simple index", links)


def render_project(project: str, files: Sequence[PythonFile], content_type: str) -> bytes:
    """A project page listing its files, oldest version first."""
    ordered = sorted(files, key=lambda f: (_version_key(f.version), f.filename))
    if content_type == JSON_V1:
        versions = sorted({f.version for f in files}, key=_version_key)
        return json.dumps({
            "meta": {"api-version": API_VERSION},
            "name": project,
            "versions": versions,
            "files": [_file_json(f) for f in ordered],
        }).encode()
    links = "\n".join(f"    {_file_link(f)}<br/>" for f in ordered)
    return _page(f"Links for {project}", links)


def _file_json(f: PythonFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": f.filename,
        "url": _file_url(f.filename),
        "hashes": {"sha256": f.sha256},
        "requires-python": f.requires_python,
        "size": f.size,
        "upload-time": _upload_time(f.uploaded_at),
        "yanked": f.yanked,
        "gpg-sig": f.signature_sha256 is not None,
    }
    if f.metadata_sha256:
        # PEP 714 renamed the key; older pip still reads the PEP 658 one.
        entry["core-metadata"] = {"sha256": f.metadata_sha256}
        entry["dist-info-metadata"] = {"sha256": f.metadata_sha256}
    return entry


def _file_link(f: PythonFile) -> str:
    attrs = [f'href="{_file_url(f.filename)}#sha256={f.sha256}"']
    if f.requires_python:
        attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
    if f.metadata_sha256:
        attrs.append(f'data-dist-info-metadata="sha256={f.metadata_sha256}"')
        attrs.append(f'data-core-metadata="sha256={f.metadata_sha256}"')
    attrs.append(f'data-gpg-sig="{"true" if f.signature_sha256 else "false"}"')
    if f.yanked:
        attrs.append('data-yanked=""')
    return f"<a {' '.join(attrs)}>{html.escape(f.filename)}</a>"


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    ).encode()


@dataclass(frozen=True)
class ServedFile:
    """A file to send: its path on disk, its ETag and its content type."""

    path: Path
    etag: str
    content_type: str


class PythonIndex:
    """Reads a repo's projects and files through the Python files table."""

    def __init__(self, files: PythonFiles, blobs: BlobStore) -> None:
        self._files = files
        self._blobs = blobs

    async def projects(self, repo: Repo) -> list[tuple[str, str]]:
        winners = await self._files.projects([s.guid for s in repo.sources])
        return sorted((name, display) for name, (display, _) in winners.items())

    async def project_files(self, repo: Repo, project: str) -> list[PythonFile]:
        files = await self._files.project_files([s.guid for s in repo.sources], project)
        if not files:
            raise NotFound(f"no project '{project[:100]}' in repo '{repo.name}'")
        return files

    async def file(self, repo: Repo, filename: str, companion: str) -> ServedFile:
        """The distribution (companion ""), its ``.asc`` or its ``.metadata``."""
        try:
            project = dists.parse_filename(filename).project
        except PackageManagerError:
            raise NotFound(f"no file {filename[:100]!r} in repo '{repo.name}'") from None
        files = await self.project_files(repo, project)
        found = next((f for f in files if f.filename == filename), None)
        if found is None:
            raise NotFound(f"no file '{filename[:100]}' in repo '{repo.name}'")
        if companion == ".asc":
            if found.signature_sha256 is None:
                raise NotFound(f"'{filename[:100]}' was not uploaded with a signature")
            return ServedFile(self._blobs.path_for(found.signature_sha256, ".asc"),
                              found.signature_sha256, "application/pgp-signature")
        if companion == ".metadata":
            if found.metadata_sha256 is None:
                raise NotFound(f"no core metadata for '{filename[:100]}'")
            return ServedFile(self._blobs.path_for(found.metadata_sha256, ".metadata"),
                              found.metadata_sha256, "text/plain; charset=utf-8")
        content_type = "application/zip" if filename.endswith((".whl", ".zip")) \
            else "application/gzip"
        return ServedFile(self._blobs.path_for(found.sha256), found.sha256, content_type)
