"""A real ``twistd packagemanager`` process for integration tests.

It runs from the installed copy of the project (the virtualenv's ``twistd``),
in its own temporary directory, on a free loopback port, and is always stopped.
With ``https=True`` it also listens with TLS, with a certificate chain from a
throwaway CA made for it (:func:`make_tls_files`), and its address is the
HTTPS one.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any] | None,
                 sig: signal.Signals = signal.SIGTERM, deadline: float = 10) -> None:
    """Send ``sig`` to a child still running, wait up to ``deadline``, then kill it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate: Any, deadline: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
    timeout: float = 30, context: ssl.SSLContext | None = None,
) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return Response(r.status, r.reason, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.reason, dict(e.headers), e.read())


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway certificate authority and of a server certificate."""

    ca: Path
    # The server's certificate, then the intermediate CA's that signed it: a chain.
    certificate: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client context that trusts the CA alone."""
        return ssl.create_default_context(cafile=str(self.ca))


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool,
                 hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_tls_files(directory: Path,
                   hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A root CA, an intermediate CA it signs, and a server certificate for ``hosts``
    signed by the intermediate, written as PEM files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root_key, middle_key, server_key = (ec.generate_private_key(ec.SECP256R1())
                                        for _ in range(3))
    root = _certificate("Package Manager test root CA", root_key,
                        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                      "Package Manager test root CA")]),
                        root_key, ca=True)
    middle = _certificate("Package Manager test intermediate CA", middle_key, root.subject,
                          root_key, ca=True)
    leaf = _certificate(hosts[0], server_key, middle.subject, middle_key, ca=False,
                        hosts=hosts)
    files = TlsFiles(directory / "ca.pem", directory / "server-chain.pem",
                     directory / "server-key.pem")
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(root.public_bytes(pem))
    files.certificate.write_bytes(leaf.public_bytes(pem) + middle.public_bytes(pem))
    files.key.write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


@dataclass
class ServerProcess:
    """Owns a server's directory, configuration and process."""

    provider: str = "sqlite"
    postgres_url: str | None = None
    api_token_auth: bool = True
    extra_config: str = ""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pm-")))
    data_dir: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    https: bool = False
    https_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        if self.data_dir is None:
            self.data_dir = self.root / "data"
        self.config_path = self.root / "rstudio-pm.gcfg"
        self.log_path = self.root / "server.log"
        self.tls = make_tls_files(self.root / "tls") if self.https else None
        self.write_config()

    @property
    def address(self) -> str:
        """What clients use: the HTTPS listener's address when there is one."""
        if self.https:
            return f"https://127.0.0.1:{self.https_port}"
        return self.http_address

    @property
    def http_address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "rstudio-pm.sock"

    def write_config(self) -> None:
        database = "[Database]\nProvider = sqlite\n"
        if self.provider == "postgres":
            database = f"[Database]\nProvider = postgres\n[Postgres]\nURL = {self.postgres_url}\n"
        self.config_path.write_text(
            f"[Server]\nAddress = {self.address}\nDataDir = {self.data_dir}\n"
            f"SockFileDir = {self.root / 'run'}\n"
            f"[HTTP]\nListen = 127.0.0.1:{self.port}\n"
            f"{self._https_config()}"
            f"{database}"
            f"[Authentication]\nAPITokenAuth = {'true' if self.api_token_auth else 'false'}\n"
            f"{self.extra_config}"
        )

    def _https_config(self) -> str:
        if self.tls is None:
            return ""
        return (f"[HTTPS]\nListen = 127.0.0.1:{self.https_port}\n"
                f"Certificate = {self.tls.certificate}\nKey = {self.tls.key}\n")

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "packagemanager",
             "--config", str(self.config_path)],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self.process

    def start(self, deadline: float = 30) -> ServerProcess:
        process = self.launch()

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{self.log()}")
            try:
                return self.get("/__api__/status").status == 200
            except OSError:
                return False

        wait_for(ready, deadline, f"the server on port {self.port}")
        return self

    def stop(self, deadline: float = 30) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(deadline)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"server ignored SIGTERM:\n{self.log()}") from None
        code = self.process.returncode
        self.process = None
        return code

    def restart(self) -> ServerProcess:
        assert self.stop() == 0, self.log()
        return self.start()

    def cleanup(self) -> None:
        """Stop the server as an operator would (so it removes what it made), then
        kill it if it will not stop, and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def access_log_path(self) -> Path:
        """Where the server writes its access lines: [HTTP] AccessLog's default."""
        assert self.data_dir is not None
        return self.data_dir / "logs" / "access.log"

    def access_log(self, deadline: float = 10) -> str:
        """The running server's access log, with the line of every request answered before
        this call in it: the server flushes about once a second, so this asks for a marker
        URL and waits until the marker's line is in the file."""
        marker = f"/__api__/status?access-log-marker={uuid.uuid4().hex}"
        assert self.get(marker).status == 200

        def flushed() -> str:
            text = self.access_log_path.read_text(errors="replace")
            return text if marker in text else ""

        text: str = wait_for(flushed, deadline, f"{marker} in {self.access_log_path}")
        return text

    def url(self, path: str) -> str:
        return self.address + path

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return http("GET", self.url(path), headers=headers,
                    context=self.tls.context() if self.tls is not None else None)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PACKAGEMANAGER_", "TWINE_"))}
        env["PACKAGEMANAGER_CONFIG"] = str(self.config_path)
        env.update(extra)
        return env

    def rspm(self, *args: str, env: Mapping[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the installed ``rspm`` against this server's socket (or ``env``)."""
        result = subprocess.run(
            [str(BIN / "rspm"), *args], env=dict(env) if env is not None else self.env(),
            capture_output=True, text=True, timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"rspm {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def setup_python(self, source: str = "local-python-src", repo: str = "python") -> str:
        """A local-python source served by a python repo; returns a write token."""
        self.rspm("create", "source", f"--name={source}", "--type=local-python")
        self.rspm("create", "repo", f"--name={repo}", "--type=python")
        self.rspm("subscribe", f"--repo={repo}", f"--source={source}")
        return self.rspm("create", "token", "--quiet", f"--sources={source}",
                         "--scope=sources:write").stdout.strip()

    def setup_r(self, source: str = "local-r-src", repo: str = "cran") -> str:
        """A local (R) source served by an r repo; returns a write token."""
        self.rspm("create", "source", f"--name={source}", "--type=local")
        self.rspm("create", "repo", f"--name={repo}", "--type=r")
        self.rspm("subscribe", f"--repo={repo}", f"--source={source}")
        return self.rspm("create", "token", "--quiet", f"--sources={source}",
                         "--scope=sources:write").stdout.strip()

    def remote_env(self, token: str, **extra: str) -> dict[str, str]:
        """The environment of a CI machine: the server's address and a token, no config."""
        env = self.env(PACKAGEMANAGER_ADDRESS=self.address, PACKAGEMANAGER_TOKEN=token,
                       **extra)
        env.pop("PACKAGEMANAGER_CONFIG")
        return env
