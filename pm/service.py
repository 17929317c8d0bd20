"""``twistd packagemanager``: builds the server from its configuration file.

Everything is constructed here and injected; nothing below reads the config
file, the clock or the reactor on its own. The listeners are made here too:
HTTP, HTTPS (TLS 1.2 or newer, from PEM files) and the admin socket; with
``[HTTPS] Permanent`` the HTTP listener only redirects to HTTPS.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.application import internet, service
from twisted.internet import ssl
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web import http, server
from twisted.web.http import HTTPChannel
from twisted.web.pages import notFound

from pm import __version__
from pm.accesslog import AccessLog, AccessLoggedSite
from pm.assembly import BLOB_SUFFIXES, assemble
from pm.blobs import BlobStore, hashing_threads
from pm.config import Config, load_config
from pm.db import Database, Dialect, SchemaTooNew, migrate, postgres_dialect, sqlite_dialect
from pm.errors import ConfigError
from pm.signatures import SignatureChecker
from pm.tokens import TokenAuthority, load_or_create_key
from pm.web import RequestFactory, guard

DEFAULT_CONFIG = "/etc/rstudio-pm/rstudio-pm.gcfg"
_TLS_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                  ed448.Ed448PrivateKey)


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


def _read_pem(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{key} {path}: cannot read it ({e.strerror or e})") from None


def _private_key(path: Path) -> crypto.PKey:
    where = f"[HTTPS] Key {path}"
    pem = _read_pem(path, "[HTTPS] Key")
    try:
        loaded = serialization.load_pem_private_key(pem, None)
    except TypeError:
        raise ValueError(f"{where}: the key is encrypted; give it unencrypted, readable by "
                         "the server alone") from None
    except ValueError:
        raise ValueError(f"{where}: not a PEM private key "
                         "(-----BEGIN PRIVATE KEY-----)") from None
    if not isinstance(loaded, _TLS_KEY_TYPES):
        raise ValueError(f"{where}: a {type(loaded).__name__} cannot serve TLS; use an RSA, "
                         "ECDSA or Ed25519 key")
    return crypto.PKey.from_cryptography_key(loaded)


def tls_options(certificate: Path, key: Path) -> ssl.CertificateOptions:
    """TLS 1.2-or-newer options from PEM files: ``certificate`` holds the server's
    certificate, then any intermediate certificates of its chain; ``key`` its private key.

    ValueError, naming the ``[HTTPS]`` key and the file, if either cannot be read or
    used, or if they do not belong together.
    """
    pem = _read_pem(certificate, "[HTTPS] Certificate")
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"[HTTPS] Certificate {certificate}: not a PEM certificate "
                         "(-----BEGIN CERTIFICATE-----)") from None
    options = ssl.CertificateOptions(
        privateKey=_private_key(key),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        # Made now rather than at the first connection, so a mismatch stops the start.
        options.getContext()
    except SSL.Error:
        raise ValueError(f"[HTTPS] Key {key} is not the key of the first certificate in "
                         f"[HTTPS] Certificate {certificate}") from None
    return options


class RedirectToHTTPS(server.Request):
    """Answers every request with a redirect to the same path and query over HTTPS.

    301 for GET and HEAD; 308 for other methods, which keeps the method and body. A
    request body is dropped as it arrives: nothing of it is kept, however large.
    """

    def __init__(self, channel: HTTPChannel, base: Callable[[server.Request], bytes]) -> None:
        super().__init__(channel)
        self._base = base

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        pass

    def process(self) -> None:
        location = self._base(self) + (self.uri or b"/")
        moved = self.method in (b"GET", b"HEAD")
        self.setResponseCode(http.MOVED_PERMANENTLY if moved else http.PERMANENT_REDIRECT)
        self.setHeader(b"location", location)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.write(b"This server is served over HTTPS: " + location + b"\n")
        self.finish()


def https_base(config: Config) -> Callable[[server.Request], bytes]:
    """Where HTTP requests are redirected: ``[Server] Address`` if it is an https:// URL
    (which knows the name and port clients use), else the host the client asked for on
    the HTTPS listener's port."""
    if urlsplit(config.address).scheme.lower() == "https":
        address = config.address.encode()
        return lambda request: address
    port = config.https_listen_port
    suffix = b"" if port == 443 else f":{port}".encode()

    def base(request: server.Request) -> bytes:
        host: bytes = request.getRequestHostname()
        return b"https://" + (b"[" + host + b"]" if b":" in host else host) + suffix

    return base


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
    keep_read_buffers_on_the_heap(os.environ)
    top = build(config, reactor)
    reactor.callWhenRunning(_stop_cleanly_on_sigterm, reactor)
    return top


# glibc's mallopt parameters, and the values set (see keep_read_buffers_on_the_heap).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 4 * 1024 * 1024
_TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_read_buffers_on_the_heap(environ: Mapping[str, str]) -> bool:
    """Let glibc reuse the memory of the 1 MiB reads an upload makes; True if set.

    Twisted reads into a new ``bytes`` each time. glibc serves a block that
    large with mmap or trims it off the heap once freed, so every read
    faults its pages in again: 100,000 minor faults and 0.3 s of CPU per GiB
    uploaded. With the mmap threshold above the read size and a trim
    threshold of 64 MiB, the same heap memory is reused. An operator's own
    ``MALLOC_*`` settings are left alone, and so is any other C library.
    """
    if any(name.startswith("MALLOC_") for name in environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) \
        and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


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

    tls = None
    if config.https_listen_port is not None:
        assert config.https_certificate is not None and config.https_key is not None
        try:
            tls = tls_options(config.https_certificate, config.https_key)
        except ValueError as e:
            _fail(str(e))

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
                     config.temp_max_age, cache_bytes=config.cache_max_size,
                     new_repos_authenticated=config.new_repos_auth_by_default,
                     limits=config.limits)
    uploads = parts.uploads
    sweeper = internet.TimerService(
        config.cleanup_interval, lambda: ensureDeferred(parts.housekeeper.run())
    )
    sweeper.clock = reactor
    sweeper.setServiceParent(top)
    resource = parts.resource()

    access_log = AccessLog(config.access_log, reactor)
    try:
        access_log.open()
    except OSError as e:
        _fail(f"[HTTP] AccessLog {config.access_log}: {e.strerror or e}")
    reactor.callWhenRunning(access_log.start)
    reactor.callWhenRunning(access_log.reopen_on, (signal.SIGHUP, signal.SIGUSR1))
    # After the listeners and their connections are gone: the last lines are written.
    reactor.addSystemEventTrigger("after", "shutdown", access_log.close)

    limits = config.limits
    public = guard(AccessLoggedSite(resource, access_log,
                                    requestFactory=RequestFactory(uploads, local_admin=False)),
                   limits)
    if tls is not None:
        https_listener = internet.SSLServer(
            config.https_listen_port, public, tls, interface=config.https_listen_host or ""
        )
        https_listener.setServiceParent(top)
    plain = public
    if config.https_permanent:
        base = https_base(config)
        # The redirecting request answers by itself: the Site's resource is never asked.
        plain = guard(AccessLoggedSite(
            notFound(), access_log,
            requestFactory=lambda channel, queued=None: RedirectToHTTPS(channel, base),
        ), limits)
    http_listener = internet.TCPServer(
        config.listen_port, plain, interface=config.listen_host or ""
    )
    http_listener.setServiceParent(top)

    admin = guard(AccessLoggedSite(resource, access_log,
                                   requestFactory=RequestFactory(uploads, local_admin=True)),
                  limits)
    socket_path = config.socket_path
    admin_listener = internet.UNIXServer(str(socket_path), admin, mode=0o660, wantPID=True)
    admin_listener.setServiceParent(top)

    def announce() -> None:
        if socket_path.exists():
            os.chmod(socket_path, 0o660)
        listen = f"{config.listen_host or '*'}:{config.listen_port}"
        if config.https_listen_port is not None:
            redirect = " (redirected to HTTPS)" if config.https_permanent else ""
            listen = (f"HTTP {listen}{redirect} and HTTPS "
                      f"{config.https_listen_host or '*'}:{config.https_listen_port}")
        log.info(
            "Package Manager {version} on {listen}, admin socket {socket}, "
            "{provider} database schema {schema}, {trusted} trusted signing keys, "
            "API tokens {tokens}",
            version=__version__,
            listen=listen,
            socket=socket_path,
            provider=dialect.name,
            schema=schema,
            trusted=trusted,
            tokens="enabled" if authority else "disabled",
        )

    reactor.callWhenRunning(announce)
    return top
