"""``twistd packagemanager``: builds the server from its configuration file.

Everything is constructed here and injected; nothing below reads the config
file, the clock or the reactor on its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from twisted.application import internet, service
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web import server

from pm import __version__
from pm.assembly import BLOB_SUFFIXES, assemble
from pm.blobs import BlobStore, hashing_threads
from pm.config import Config, load_config
from pm.db import Database, Dialect, SchemaTooNew, migrate, postgres_dialect, sqlite_dialect
from pm.errors import ConfigError
from pm.signatures import SignatureChecker
from pm.tokens import TokenAuthority, load_or_create_key
from pm.web import RequestFactory

DEFAULT_CONFIG = "/etc/rstudio-pm/rstudio-pm.gcfg"
IDLE_TIMEOUT = 300.0


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Run the Package Manager server (HTTP API, indexes and admin socket).\n"
        f"The configuration file defaults to {DEFAULT_CONFIG}."
    )
    optParameters: ClassVar[list[list[str]]] = [
        ["config", "c", DEFAULT_CONFIG, "the server's configuration file (gcfg)"],
    ]

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        print(f"packagemanager {__version__}")
        sys.exit(0)


class _DatabaseService(service.Service):
    """Closes the connection pool when the server stops."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def stopService(self) -> None:
        super().stopService()
        self.database.close()


def _fail(message: str) -> NoReturn:
    print(f"packagemanager: cannot start: {message}", file=sys.stderr)
    raise SystemExit(1)


def dialect_for(config: Config) -> Dialect:
    if config.provider == "postgres":
        assert config.postgres_url is not None
        return postgres_dialect(config.postgres_url)
    return sqlite_dialect(config.sqlite_dir)


def makeService(options: usage.Options, reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_config(options["config"])
    except ConfigError as e:
        _fail(e.message)
    top = build(config, reactor)
    reactor.callWhenRunning(_stop_cleanly_on_sigterm, reactor)
    return top


def _stop_cleanly_on_sigterm(reactor: Any) -> None:
    # twistd re-raises the signal that stopped it, so systemd and scripts
    # would see status -15; a requested stop that shut down cleanly is exit 0.
    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, handler)


def build(config: Config, reactor: Any) -> service.MultiService:
    """The whole server for ``config``, as one MultiService."""
    assert IReactorTime.providedBy(reactor) and IReactorCore.providedBy(reactor)
    clock: Callable[[], float] = reactor.seconds
    log = Logger(namespace="packagemanager")
    top = service.MultiService()

    try:
        for directory in (config.data_dir, config.sock_file_dir):
            directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"cannot create {e.filename}: {e.strerror}")

    dialect = dialect_for(config)
    try:
        schema = migrate(dialect)
    except SchemaTooNew as e:
        _fail(str(e))
    except Exception as e:
        if not dialect.unavailable(e):
            raise
        _fail(f"the {dialect.name} database at {dialect.description} is unreachable: "
              f"{str(e).strip()}")
    database = Database(dialect)
    _DatabaseService(database).setServiceParent(top)

    blobs = BlobStore(config.data_dir, clock, call_from_thread=reactor.callFromThread,
                      threads=ThreadPool(0, hashing_threads(os.cpu_count()),
                                         name="blob-hashing"),
                      suffixes=BLOB_SUFFIXES)
    reactor.callWhenRunning(blobs.start)
    reactor.addSystemEventTrigger("during", "shutdown", blobs.stop)
    blobs.prepare()
    blobs.sweep(config.temp_max_age)
    pool = reactor.getThreadPool()

    def in_thread(work: Callable[..., Any], *args: Any) -> Any:
        return deferToThreadPool(reactor, pool, work, *args)

    authority = None
    if config.api_token_auth:
        try:
            key = load_or_create_key(config.data_dir / "token-signing.key")
        except (OSError, ValueError) as e:
            _fail(f"token signing key: {e}")
        authority = TokenAuthority(key, config.address, clock)

    gnupg_home = Path(tempfile.mkdtemp(prefix="pm-gnupg-"))
    signatures = SignatureChecker(gnupg_home, config.trusted_keys)
    try:
        trusted = signatures.prepare()
    except (OSError, ValueError) as e:
        shutil.rmtree(gnupg_home, ignore_errors=True)
        _fail(f"[Signatures] TrustedKeys: {e}")
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, gnupg_home, True)

    parts = assemble(database, blobs, authority, signatures, clock, in_thread,
                     config.temp_max_age)
    uploads = parts.uploads
    sweeper = internet.TimerService(
        config.cleanup_interval, lambda: ensureDeferred(parts.housekeeper.run())
    )
    sweeper.clock = reactor
    sweeper.setServiceParent(top)
    resource = parts.app.resource()

    # An idle connection is dropped well before TempMaxAge could sweep the
    # temp file of an upload that is still open.
    public = server.Site(resource, requestFactory=RequestFactory(uploads, local_admin=False),
                         timeout=IDLE_TIMEOUT)
    http_listener = internet.TCPServer(
        config.listen_port, public, interface=config.listen_host or ""
    )
    http_listener.setServiceParent(top)

    admin = server.Site(resource, requestFactory=RequestFactory(uploads, local_admin=True))
    socket_path = config.socket_path
    admin_listener = internet.UNIXServer(str(socket_path), admin, mode=0o660, wantPID=True)
    admin_listener.setServiceParent(top)

    def announce() -> None:
        if socket_path.exists():
            os.chmod(socket_path, 0o660)
        log.info(
            "Package Manager {version} on {listen}, admin socket {socket}, "
            "{provider} database schema {schema}, {trusted} trusted signing keys, "
            "API tokens {tokens}",
            version=__version__,
            listen=f"{config.listen_host or '*'}:{config.listen_port}",
            socket=socket_path,
            provider=dialect.name,
            schema=schema,
            trusted=trusted,
            tokens="enabled" if authority else "disabled",
        )

    reactor.callWhenRunning(announce)
    return top
