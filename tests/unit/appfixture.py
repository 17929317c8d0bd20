"""The whole server built in memory for unit tests: SQLite in a temp dir, real blobs.

Nothing here listens on a socket. ``test_app`` drives :attr:`AppEnv.app` through
``treq.testing.StubTreq``; ``test_upload`` drives the streaming request through
a ``StringTransport``. The clock is injected and settable, so expiry and uptime
are tested without waiting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool

from pm.app import PackageManagerApp
from pm.assembly import BLOB_SUFFIXES, DEFAULT_LIMITS, Parts, assemble
from pm.auth import TokenChecker
from pm.blobs import BlobStore
from pm.catalog import Catalog, Source
from pm.db import Database, migrate, sqlite_dialect
from pm.housekeeping import Housekeeper, Swept
from pm.limits import Limits
from pm.python.files import PythonFiles
from pm.signatures import SignatureChecker
from pm.testing import Clock
from pm.tokens import Grant, TokenAuthority, generate_key
from pm.tokenstore import TokenStore
from pm.upload import UploadService

START = 1_750_000_000.0
ADDRESS = "http://test"


def in_thread(work: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return deferToThread(work, *args)


@dataclass
class AppEnv:
    """One in-memory server and handles on everything inside it."""

    root: Path
    clock: Clock
    database: Database
    parts: Parts
    blobs: BlobStore
    authority: TokenAuthority | None
    signatures: SignatureChecker
    issued: list[str] = field(default_factory=list)

    @property
    def catalog(self) -> Catalog:
        return self.parts.catalog

    @property
    def token_store(self) -> TokenStore:
        return self.parts.token_store

    @property
    def python_files(self) -> PythonFiles:
        return self.parts.python.files

    @property
    def checker(self) -> TokenChecker:
        return self.parts.tokens

    @property
    def uploads(self) -> UploadService:
        return self.parts.uploads

    @property
    def limits(self) -> Limits:
        return self.parts.uploads.limits

    @property
    def app(self) -> PackageManagerApp:
        return self.parts.app

    # Tokens ----------------------------------------------------------------

    async def token(
        self,
        scope: str = "global:admin",
        targets: tuple[str, ...] | None = (),
        *,
        expires_in: float | None = None,
        record: bool = True,
    ) -> str:
        """Mint a token and (unless ``record`` is false) record it as the API would."""
        assert self.authority is not None, "tokens are disabled in this environment"
        guid = str(uuid.uuid4())
        token, claims = self.authority.mint(
            Grant(scope, targets), guid=guid, expires_in=expires_in
        )
        if record:
            await self.token_store.create_token(
                guid, "unit test", scope, targets, claims.expires_at, "local-admin"
            )
        self.issued.append(guid)
        return token

    async def source_token(self, *sources: Source) -> str:
        """A sources:write token for exactly these sources."""
        return await self.token("sources:write", tuple(s.guid for s in sources))

    # Content -----------------------------------------------------------------

    async def python_source(self, name: str = "uploads") -> Source:
        return await self.catalog.create_source(name, "local-python", "local-admin")

    async def r_source(self, name: str = "cran-local") -> Source:
        return await self.catalog.create_source(name, "local", "local-admin")

    async def python_rows(self) -> list[dict[str, Any]]:
        """Every python_files row, read straight from the database."""
        return await self.database.read(
            lambda tx: tx.all("SELECT * FROM python_files ORDER BY filename")
        )

    async def housekeep(self, max_age: float = 3600.0) -> Swept:
        """One housekeeping pass with the clock moved past ``max_age`` after now, so
        every file on disk counts as old."""
        self.clock.now = time.time() + max_age + 60
        swept = await Housekeeper(self.blobs, [self.parts.python.digests_in_use,
                                               self.parts.r.digests_in_use],
                                  in_thread, max_age).run()
        assert swept is not None, "the housekeeping pass failed"
        return swept

    def stored_files(self) -> list[Path]:
        """Everything under DataDir/files (distributions and companions)."""
        return sorted(p for p in self.blobs.files.rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        """Everything under DataDir/tmp: must be empty once an upload is over."""
        return sorted(p for p in self.blobs.tmp.rglob("*") if p.is_file())


def build_env(root: Path, *, tokens_enabled: bool = True,
              checker: Callable[[TokenAuthority | None, TokenStore, Callable[[], float]],
                                TokenChecker]
              = TokenChecker,
              python_files: type[PythonFiles] = PythonFiles,
              limits: Limits = DEFAULT_LIMITS) -> AppEnv:
    """Assemble a server exactly as ``pm.service.build`` does, minus the listeners;
    ``checker`` and ``python_files`` let a test substitute a subclass that it can
    hold back, ``limits`` is ``[Limits]``."""
    clock = Clock()
    dialect = sqlite_dialect(root / "db")
    migrate(dialect)
    database = Database(dialect)
    # Pipelined, as the server runs it: uploads are hashed on a pool.
    blobs = BlobStore(root / "data", clock, threads=ThreadPool(0, 2, name="test-hashing"),
                      call_from_thread=reactor.callFromThread, suffixes=BLOB_SUFFIXES)
    blobs.prepare()
    blobs.start()
    authority = TokenAuthority(generate_key(), ADDRESS, clock) if tokens_enabled else None
    signatures = SignatureChecker(root / "gnupg", ())
    signatures.prepare()
    parts = assemble(database, blobs, authority, signatures, clock, in_thread, 3600.0,
                     checker=checker, python_table=python_files, limits=limits)
    return AppEnv(root, clock, database, parts, blobs, authority, signatures)


@contextmanager
def app_env(root: Path, **options: Any) -> Iterator[AppEnv]:
    """``build_env``, closing the database pool afterwards."""
    env = build_env(root, **options)
    try:
        yield env
    finally:
        env.blobs.stop()
        env.database.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Let the reactor run (threads, adbapi) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(reactor, 0.002, lambda: None)


# OpenPGP -------------------------------------------------------------------------


class Signer:
    """A throwaway GnuPG home with one signing key and no passphrase."""

    def __init__(self) -> None:
        # Short path: gpg-agent's socket lives in the home and has a length limit.
        self.home = Path(tempfile.mkdtemp(prefix="pmgpg"))
        os.chmod(self.home, 0o700)
        self._gpg("--quick-gen-key", "Unit Test <unit@example.com>", "ed25519", "sign", "never")
        listing = self._gpg("--with-colons", "--list-secret-keys").stdout.decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )

    def _gpg(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode",
             "loopback", "--passphrase", "", *args],
            input=data, capture_output=True, check=True,
        )

    def sign(self, path: Path, *options: str) -> bytes:
        """An ASCII-armoured detached signature of ``path``, made with gpg ``options``."""
        return self._gpg(*options, "--armor", "--detach-sign", "--output", "-",
                         str(path)).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)
