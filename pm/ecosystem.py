"""What one ecosystem (Python, R) supplies to the shared core and the web layer.

The core (catalog, uploads, housekeeping, the admin API) asks these questions
and never names an ecosystem; ``pm.assembly`` registers the ones there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from twisted.web.resource import IResource

from pm.catalog import Repo, Source, SourceKind
from pm.packages import PackageRow
from pm.upload import Publisher


class Ecosystem(Protocol):
    """One kind of package: its sources, its rows, its upload checks and its repo URLs."""

    @property
    def kind(self) -> SourceKind:
        """Its source type, the repo type it feeds, how to delete a source's rows."""

    @property
    def blob_suffixes(self) -> tuple[str, ...]:
        """The suffixes its companion blobs carry after the sha256 ("" for the file)."""

    @property
    def publisher(self) -> Publisher:
        """What ``rspm add`` (``POST /__api__/sources/{source}/packages``) uses."""

    @property
    def index_path(self) -> str:
        """Where a client points, under ``/{repo}/latest/``."""

    def normalize(self, name: str) -> str:
        """A package name as rows hold it (PEP 503 for Python; R's are exact)."""

    def version_key(self, version: str) -> Any:
        """Sort key of this ecosystem's versions."""

    async def rows(self, source_guids: Sequence[str], *, name: str | None = None,
                   search: str | None = None) -> list[PackageRow]:
        """Package versions of these sources, for listing and selection."""

    async def delete_versions(self, source: Source, name: str, versions: Sequence[str],
                              actor: str, comment: str) -> list[tuple[str, str]]:
        """Delete these versions of a package; (filename, version) of each file deleted."""

    async def archive(self, source: Source, name: str,
                      actor: str) -> list[tuple[str, str]]:
        """Move a package's current version to the archive (BadRequest where there is none)."""

    async def digests_in_use(self, digests: Sequence[str]) -> set[str]:
        """Which of these blob digests a row of this ecosystem uses."""

    def repo_resource(self, repo: Repo) -> IResource:
        """The pages under ``/{repo}/latest/`` for a repo of this ecosystem."""
