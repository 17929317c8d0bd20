"""Puts the server's parts together: the one place the ecosystems are registered.

``pm.service.build`` makes the infrastructure (database pool, thread pools,
keyring, signing key, listeners) and calls :func:`assemble`; the tests call it
too, so what they exercise is wired exactly as the server is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from twisted.web.resource import IResource

from pm.api import AdminApi
from pm.app import PackageManagerApp
from pm.auth import RepoReaders, TokenChecker
from pm.blobs import BlobStore, RunInThread
from pm.catalog import Catalog, Source
from pm.changes import ChangeSerial
from pm.db import Database
from pm.download import ClientDownloads
from pm.ecosystem import Ecosystem
from pm.errors import BadUpload
from pm.fastreads import FastReads, Pages
from pm.housekeeping import Housekeeper
from pm.limits import Limits, UploadSlots
from pm.pagecache import PageCache
from pm.python.ecosystem import PythonEcosystem
from pm.python.files import PythonFiles
from pm.python.publish import PythonPublisher
from pm.r.ecosystem import REcosystem
from pm.r.files import RFiles
from pm.r.publish import RPublisher
from pm.signatures import SignatureChecker
from pm.tokens import TokenAuthority
from pm.tokenstore import TokenStore
from pm.ui import WebUI
from pm.ui.listings import Listings
from pm.ui.python import PythonShelf
from pm.ui.r import RShelf
from pm.ui.readme import ReadmeRenderer
from pm.upload import ADD, WAREHOUSE, Publisher, UploadService

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_LIMITS = Limits()

# Every ecosystem's companion files, for a BlobStore made before assembly.
BLOB_SUFFIXES = tuple(dict.fromkeys((*PythonEcosystem.blob_suffixes,
                                     *REcosystem.blob_suffixes)))


@dataclass(frozen=True)
class Parts:
    catalog: Catalog
    token_store: TokenStore
    tokens: TokenChecker
    python: PythonEcosystem
    r: REcosystem
    uploads: UploadService
    housekeeper: Housekeeper
    app: PackageManagerApp
    pages: Pages

    def resource(self) -> IResource:
        """What the listeners serve: the app behind the cached read path."""
        return cast(IResource, FastReads(self.app.resource(), self.pages))


def assemble(
    database: Database,
    blobs: BlobStore,
    authority: TokenAuthority | None,
    signatures: SignatureChecker,
    clock: Callable[[], float],
    in_thread: RunInThread,
    temp_max_age: float,
    *,
    checker: Callable[[TokenAuthority | None, TokenStore, Callable[[], float]], TokenChecker]
    = TokenChecker,
    python_table: Callable[[Database, Callable[[], float]], PythonFiles] = PythonFiles,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    new_repos_authenticated: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> Parts:
    """Every part of the server but its listeners and timers.

    ``checker`` and ``python_table`` let a test substitute parts it can hold back;
    ``new_repos_authenticated`` is ``[Authentication] NewReposAuthByDefault``,
    ``limits`` is ``[Limits]``.
    """
    pages = Pages(PageCache(cache_bytes), ChangeSerial(database, database.dialect.quick_connect))
    python_files = python_table(database, clock)
    python = PythonEcosystem(
        python_files, blobs, PythonPublisher(python_files, blobs, signatures, clock, in_thread),
        pages)
    r_files = RFiles(database, clock)
    r = REcosystem(r_files, blobs, RPublisher(r_files, blobs, clock, in_thread), pages)
    ecosystems: tuple[Ecosystem, ...] = (python, r)
    by_source_type = {e.kind.source_type: e for e in ecosystems}

    catalog = Catalog(database, [e.kind for e in ecosystems], clock,
                      new_repos_authenticated=new_repos_authenticated)
    token_store = TokenStore(database, clock)
    tokens = checker(authority, token_store, clock)
    readers = RepoReaders(tokens)

    def publisher_for(route: str, source: Source) -> Publisher:
        if route == WAREHOUSE:
            if source.type != python.kind.source_type:
                raise python.python_publisher.refuse_other(source)
            return python.python_publisher.warehouse
        assert route == ADD
        ecosystem = by_source_type.get(source.type)
        if ecosystem is None:
            raise BadUpload(f"source '{source.name}' of type '{source.type}' takes no packages")
        return ecosystem.publisher

    uploads = UploadService(catalog, blobs, tokens, publisher_for, limits, UploadSlots(limits))
    housekeeper = Housekeeper(blobs, [e.digests_in_use for e in ecosystems], in_thread,
                              temp_max_age)
    api = AdminApi(catalog=catalog, token_store=token_store, tokens=tokens, uploads=uploads,
                   ecosystems=by_source_type, clock=clock, started_at=clock(),
                   downloads=ClientDownloads(in_thread), cache_stats=pages.cache.stats)
    ui = WebUI(catalog=catalog, token_store=token_store, shelves={
        python.kind.repo_type: PythonShelf(python_files, ReadmeRenderer(in_thread)),
        r.kind.repo_type: RShelf(r_files, r.index),
    }, listings=Listings(pages.changes), readers=readers)
    app = PackageManagerApp(catalog=catalog, api=api, uploads=uploads,
                            repo_ecosystems={e.kind.repo_type: e for e in ecosystems}, ui=ui,
                            readers=readers, pages=pages)
    return Parts(catalog, token_store, tokens, python, r, uploads, housekeeper, app, pages)
