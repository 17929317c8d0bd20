"""The seed's CI flow with the downloaded client, and the HTTPS listener it runs over.

``curl -fLOJ`` fetches ``rspm`` from a real server, the machine's own
``/usr/bin/python3`` runs it isolated (``-I``) in an environment holding only
PATH, HOME and the two PACKAGEMANAGER_ variables, it publishes wheels and an R
package, and pip and R install them; over HTTP, then over HTTPS with a
throwaway CA (root and intermediate) trusted through ``SSL_CERT_FILE``. The
rest checks the HTTPS listener itself: TLS versions, the chain, redirects with
``[HTTPS] Permanent``, and certificate or key files that stop the start.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pm.download import POSIX_SHEBANG, WINDOWS_SHEBANG
from tests.support.packages import build_wheel
from tests.support.rpackages import build_r_package
from tests.support.server import ServerProcess, free_port, make_tls_files, wait_for

# A machine's own Python 3, with nothing installed by pip: what the seed runs rspm on.
STOCK_PYTHON = "/usr/bin/python3"
STOCK_PATH = "/usr/bin:/bin"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory: downloads, packages, a HOME, install targets."""
    path = Path(tempfile.mkdtemp(prefix="pm-download-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class CiMachine:
    """A server, its tokens, and what a CI machine talking to it has."""

    server: ServerProcess
    python_token: str
    r_token: str
    admin_token: str
    home: Path

    @property
    def ca(self) -> Path | None:
        return self.server.tls.ca if self.server.tls is not None else None

    def env(self, token: str, **extra: str) -> dict[str, str]:
        """Only PATH, HOME and the two PACKAGEMANAGER_ variables (and, over HTTPS, the CA
        bundle that signs the server's certificate)."""
        env = {"PATH": STOCK_PATH, "HOME": str(self.home),
               "PACKAGEMANAGER_ADDRESS": self.server.address, "PACKAGEMANAGER_TOKEN": token}
        if self.ca is not None:
            env["SSL_CERT_FILE"] = str(self.ca)
        env.update(extra)
        return env

    def curl(self, url: str, *args: str, cwd: Path,
             token: str | None = None) -> subprocess.CompletedProcess[str]:
        command = ["curl", "-sS", *args]
        if token is not None:
            command += ["-H", f"Authorization: Bearer {token}"]
        if self.ca is not None:
            command += ["--cacert", str(self.ca)]
        return subprocess.run([*command, url], cwd=cwd, capture_output=True, text=True,
                              timeout=60, env={"PATH": STOCK_PATH, "HOME": str(self.home)})

    def download(self, where: Path, query: str = "") -> Path:
        """The seed's line: curl -fLOJH "Authorization: Bearer $TOKEN" .../__api__/download"""
        where.mkdir(parents=True, exist_ok=True)
        result = self.curl(f"{self.server.address}/__api__/download{query}", "-fLOJ",
                           cwd=where, token=self.python_token)
        assert result.returncode == 0, result.stderr
        saved = list(where.iterdir())
        assert len(saved) == 1, saved
        return saved[0]


def _stock(client: Path, *args: str, env: dict[str, str],
           isolated: bool = True) -> subprocess.CompletedProcess[str]:
    command = [STOCK_PYTHON, "-I", str(client)] if isolated else [str(client)]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=client.parent)


def _ci_machine(make_server: type[ServerProcess], workdir: Path, *, https: bool) -> CiMachine:
    server = make_server(https=https).start()
    python_token = server.setup_python()
    r_token = server.setup_r()
    admin = server.rspm("create", "token", "--quiet", "--scope=global:admin").stdout.strip()
    home = workdir / "home"
    home.mkdir()
    return CiMachine(server, python_token, r_token, admin, home)


@pytest.fixture(params=["http", "https"])
def ci(request: pytest.FixtureRequest, make_server: type[ServerProcess],
       workdir: Path) -> CiMachine:
    """A running server (plain, or behind its TLS listener) with a Python and an R source
    and repo, a write token for each, and a global:admin token."""
    return _ci_machine(make_server, workdir, https=request.param == "https")


@pytest.fixture
def http_ci(make_server: type[ServerProcess], workdir: Path) -> CiMachine:
    """The same over plain HTTP only, for checks of the file itself."""
    return _ci_machine(make_server, workdir, https=False)


def test_download_needs_a_token_and_names_the_file(ci: CiMachine, workdir: Path) -> None:
    """Without a token curl -f fails on a 401 whose reason says what is missing; with one,
    -OJ saves rspm (linux, darwin) or rspm.exe (windows); an unknown os is a 400 that lists
    the valid ones."""
    refused = ci.curl(f"{ci.server.address}/__api__/download", "-i", cwd=workdir)
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith("HTTP/1.1 401 authentication required")
    failed = ci.curl(f"{ci.server.address}/__api__/download", "-fLOJ", cwd=workdir)
    assert failed.returncode == 22 and "401" in failed.stderr
    assert not [p for p in workdir.iterdir() if p.is_file()]

    assert ci.download(workdir / "linux").name == "rspm"
    assert ci.download(workdir / "darwin", "?os=darwin").name == "rspm"
    assert ci.download(workdir / "windows", "?os=windows").name == "rspm.exe"
    assert (workdir / "linux" / "rspm").read_bytes() == (workdir / "darwin" / "rspm").read_bytes()

    unknown = ci.curl(f"{ci.server.address}/__api__/download?os=beos", "-w", "\n%{http_code}",
                      cwd=workdir, token=ci.admin_token)
    body, _, code = unknown.stdout.rpartition("\n")
    assert code == "400"
    assert json.loads(body)["error"] == ("unknown os 'beos': the client is built for linux, "
                                         "darwin, windows")


def test_downloaded_client_publishes_and_pip_and_r_install(ci: CiMachine,
                                                           workdir: Path) -> None:
    """The downloaded rspm, run by the stock python3 in isolated mode, reports the server's
    version, adds a directory of wheels and one of R packages, and lists them; pip and R
    then install what it published."""
    rspm = ci.download(workdir / "cli")
    rspm.chmod(0o755)
    env = ci.env(ci.python_token)
    version = _stock(rspm, "--version", env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"rspm {ci.server.get('/__api__/status').json()['version']}\n"
    # Run as the seed runs it, through its shebang: the same.
    assert _stock(rspm, "--version", env=env, isolated=False).stdout == version.stdout
    probe = subprocess.run(
        [STOCK_PYTHON, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import click; print(click.__file__)", str(rspm)],
        capture_output=True, text=True, env=env, timeout=60)
    assert probe.stdout.startswith(f"{rspm}/click/"), probe.stdout + probe.stderr

    wheels = workdir / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "stock-client-app", "1.0.0")
    build_wheel(wheels, "stock-client-lib", "2.1.0")
    added = _stock(rspm, "add", "--source=local-python-src", f"--path={wheels}", env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "Added package 'stock_client_app-1.0.0-py3-none-any.whl'" in added.stdout
    assert "Added package 'stock_client_lib-2.1.0-py3-none-any.whl'" in added.stdout
    assert "Traceback" not in added.stderr

    rdir = workdir / "r"
    rdir.mkdir()
    build_r_package(rdir, "stockR", "0.3.0")
    r_added = _stock(rspm, "add", "--source=local-r-src", f"--path={rdir}",
                     env=ci.env(ci.r_token))
    assert r_added.returncode == 0, r_added.stdout + r_added.stderr
    assert "Added package 'stockR_0.3.0.tar.gz'" in r_added.stdout

    listed = _stock(rspm, "list", "packages", "--source=local-python-src", "-o", "json",
                    env=env)
    assert listed.returncode == 0, listed.stderr
    assert {p["name"] for p in json.loads(listed.stdout)["packages"]} == {
        "stock-client-app", "stock-client-lib"}

    target = workdir / "site"
    # Nothing of this machine's pip setup (config, CA bundles, wheel folders) applies.
    pip_env = {"PATH": os.environ["PATH"], "HOME": str(ci.home), "PIP_CONFIG_FILE": os.devnull,
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    tls = ["--cert", str(ci.ca)] if ci.ca is not None else []
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-deps", "--target",
         str(target), "--index-url", ci.server.url("/python/latest/simple/"), *tls,
         "stock-client-app==1.0.0", "stock-client-lib"],
        capture_output=True, text=True, timeout=300, env=pip_env)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (target / "stock_client_app-1.0.0.dist-info").is_dir()
    assert (target / "stock_client_lib-2.1.0.dist-info").is_dir()

    lib = workdir / "rlib"
    lib.mkdir()
    r_env = {**os.environ}
    if ci.ca is not None:
        r_env["CURL_CA_BUNDLE"] = str(ci.ca)
    installed = subprocess.run(
        ["Rscript", "--vanilla", "-e",
         f'install.packages("stockR", repos="{ci.server.url("/cran/latest")}", lib="{lib}",'
         f' quiet=TRUE); library(stockR, lib.loc="{lib}"); cat(stockR_hello(), "\\n")'],
        capture_output=True, text=True, timeout=300, env=r_env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "hello from stockR" in installed.stdout


def test_downloaded_client_administers_with_an_admin_token(ci: CiMachine,
                                                           workdir: Path) -> None:
    """With a global:admin token the downloaded rspm creates, lists and revokes tokens,
    lists sources and removes packages, as the installed one does."""
    rspm = ci.download(workdir / "cli")
    env = ci.env(ci.admin_token)
    created = _stock(rspm, "create", "token", "--quiet", "--description=from CI",
                     "--sources=local-python-src", "--expires=1d", env=env)
    assert created.returncode == 0, created.stderr
    new_token = created.stdout.strip()
    assert new_token.count(".") == 2
    listed = _stock(rspm, "list", "tokens", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    guid = next(t["guid"] for t in json.loads(listed.stdout) if t["description"] == "from CI")
    sources = _stock(rspm, "list", "sources", env=env)
    assert sources.returncode == 0 and "local-python-src" in sources.stdout

    wheels = workdir / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "short-lived", "1.0")
    assert _stock(rspm, "add", "--source=local-python-src", f"--path={wheels}",
                  env=ci.env(new_token)).returncode == 0
    removed = _stock(rspm, "remove", "package", "--source=local-python-src",
                     "--name=short-lived@all", env=env)
    assert removed.returncode == 0, removed.stderr
    assert "Removed package 'short_lived-1.0-py3-none-any.whl'" in removed.stdout

    revoked = _stock(rspm, "revoke", "token", f"--guid={guid}", env=env)
    assert revoked.returncode == 0, revoked.stderr
    refused = _stock(rspm, "list", "packages", "--source=local-python-src",
                     env=ci.env(new_token))
    assert refused.returncode == 1
    assert refused.stderr == "Error: the server refused the token: token has been revoked\n"


def test_downloaded_client_errors_are_one_line(ci: CiMachine, workdir: Path) -> None:
    """A refused token, an address nothing listens on and, over HTTPS, a CA the client does
    not trust each give one 'Error:' line (the last with the SSL_CERT_FILE hint), never a
    traceback."""
    rspm = ci.download(workdir / "cli")
    forged = ci.python_token.rpartition(".")[0] + ".bm90LXRoZS1zaWduYXR1cmU"
    cases = [ci.env(forged), ci.env(ci.python_token,
                                    PACKAGEMANAGER_ADDRESS=f"http://127.0.0.1:{free_port()}")]
    expected = ["Error: the server refused the token: ", "Error: cannot reach the server at "]
    if ci.ca is not None:
        untrusted = ci.env(ci.python_token)
        del untrusted["SSL_CERT_FILE"]
        cases.append(untrusted)
        expected.append(f"Error: TLS verification of {ci.server.address} failed ")
    for env, start in zip(cases, expected, strict=True):
        result = _stock(rspm, "list", "packages", "--source=local-python-src", env=env)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith(start), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    if ci.ca is not None:
        assert "set SSL_CERT_FILE" in result.stderr


def test_windows_download_is_a_console_pe_carrying_the_same_archive(
        http_ci: CiMachine, workdir: Path) -> None:
    """rspm.exe starts with a PE header (MZ, then PE at e_lfanew; x86-64 console), ends with
    a launcher shebang and byte for byte the archive of the Linux download, and Python runs
    it as the zipapp it contains."""
    ci = http_ci
    exe = ci.download(workdir / "windows", "?os=windows")
    posix = ci.download(workdir / "linux")
    body = exe.read_bytes()
    assert body[:2] == b"MZ"
    pe = struct.unpack_from("<I", body, 0x3C)[0]
    assert body[pe:pe + 4] == b"PE\0\0"
    assert struct.unpack_from("<H", body, pe + 4)[0] == 0x8664
    assert struct.unpack_from("<H", body, pe + 24 + 68)[0] == 3
    archive = posix.read_bytes()[len(POSIX_SHEBANG):]
    assert body.endswith(WINDOWS_SHEBANG + archive)
    launcher = body[:-len(WINDOWS_SHEBANG + archive)]
    assert b"Unable to find an appended archive" in launcher
    version = _stock(exe, "--version", env=ci.env(ci.python_token))
    assert version.returncode == 0, version.stderr
    assert version.stdout == _stock(posix, "--version", env=ci.env(ci.python_token)).stdout


def test_windows_launcher_runs_the_python_on_the_path_under_wine(
        http_ci: CiMachine, workdir: Path) -> None:
    """Under wine, rspm.exe's launcher finds its appended archive and shebang, looks
    'python' up on the PATH, runs it with the path of rspm.exe and the arguments, and
    exits with its status: the command a Windows Python runs the zipapp from. (There is no
    Windows Python here: a python.bat on the PATH records what it is given.)"""
    exe = http_ci.download(workdir / "windows", "?os=windows")
    stub = workdir / "python-on-path"
    stub.mkdir()
    (stub / "python.bat").write_bytes(b'@echo off\r\necho %* > "%~dp0args.txt"\r\nexit /b 7\r\n')
    env = {"PATH": STOCK_PATH, "HOME": str(http_ci.home), "WINEPREFIX": str(workdir / "wine"),
           "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml=",
           "WINEPATH": _windows_path(stub)}
    try:
        run = subprocess.run(["wine", str(exe), "add", "--source=local-python-src",
                              "--path=C:\\packages"], env=env, cwd=exe.parent,
                             capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60,
                       check=False)
    assert run.returncode == 7, run.stdout + run.stderr
    assert (stub / "args.txt").read_text().strip() == (
        f'"{_windows_path(exe)}" add --source=local-python-src --path=C:\\packages')


def _windows_path(path: Path) -> str:
    """``path`` as wine's drive Z: (the Unix root) names it."""
    return "Z:" + str(path).replace("/", "\\")


# The HTTPS listener ------------------------------------------------------------------------


@pytest.fixture
def https_server(make_server: type[ServerProcess]) -> ServerProcess:
    """A running server with its TLS listener."""
    return make_server(https=True).start()


def _handshake(server: ServerProcess, maximum: ssl.TLSVersion) -> str:
    """The TLS version a client that offers up to ``maximum`` agrees on, or the reason
    the handshake failed."""
    assert server.tls is not None
    context = server.tls.context()
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = maximum
    # Let this client offer what it is asked to, however old: the server must refuse it.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=30) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return str(tls.version())
        except ssl.SSLError as e:
            return str(e.reason)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_https_speaks_tls_1_2_and_newer_only(https_server: ServerProcess) -> None:
    """TLS 1.3 and 1.2 are accepted; a client that offers at most TLS 1.1 or 1.0 is
    refused."""
    assert _handshake(https_server, ssl.TLSVersion.MAXIMUM_SUPPORTED) == "TLSv1.3"
    assert _handshake(https_server, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(https_server, ssl.TLSVersion.TLSv1_1) == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert _handshake(https_server, ssl.TLSVersion.TLSv1) == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_https_sends_the_chain_from_the_certificate_file(https_server: ServerProcess) -> None:
    """Both certificates of the file (server, then intermediate) are sent, so a client
    trusting only the root verifies the server."""
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{https_server.https_port}",
         "-showcerts", "-CAfile", str(https_server.tls.ca if https_server.tls else "")],
        input="", capture_output=True, text=True, timeout=30)
    assert shown.stdout.count("-----BEGIN CERTIFICATE-----") == 2, shown.stdout
    assert "Verify return code: 0 (ok)" in shown.stdout
    assert https_server.get("/__api__/status").status == 200


def _plain_request(server: ServerProcess, method: str, path: str, body: bytes = b"",
                   host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Host": host} if host else {}
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_permanent_redirects_http_to_the_https_address(make_server: type[ServerProcess]) -> None:
    """With Permanent, the HTTP listener answers every request with a redirect to the same
    path and query at [Server] Address: 301 for GET, 308 (method and body kept) for an
    upload, whose body is dropped unread."""
    server = make_server(https=True, extra_config="[HTTPS]\nPermanent = true\n").start()
    got = _plain_request(server, "GET", "/python/latest/simple/?format=json")
    assert got.status == 301
    assert got.headers["Location"] == f"{server.address}/python/latest/simple/?format=json"
    posted = _plain_request(server, "POST", "/upload/pypi/local-python-src",
                            body=b"x" * (3 * 1024 * 1024))
    assert posted.status == 308
    assert posted.headers["Location"] == f"{server.address}/upload/pypi/local-python-src"
    assert server.get("/__api__/status").status == 200


def test_permanent_without_an_https_address_uses_the_request_host(
        make_server: type[ServerProcess]) -> None:
    """When [Server] Address is http://, the redirect goes to the host the client named,
    on the HTTPS listener's port."""
    server = make_server(https=True, extra_config="[HTTPS]\nPermanent = true\n")
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace(f"Address = {server.address}\n",
                                               f"Address = {server.http_address}\n"))
    server.start()
    got = _plain_request(server, "GET", "/__api__/status", host=f"pm.test:{server.port}")
    assert got.status == 301
    assert got.headers["Location"] == f"https://pm.test:{server.https_port}/__api__/status"


def _encrypted_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))


@pytest.mark.parametrize(("spoil", "message"), [
    ("missing certificate", "[HTTPS] Certificate {certificate}: cannot read it (No such file"),
    ("certificate is a directory", "[HTTPS] Certificate {certificate}: cannot read it (Is a "
                                   "directory)"),
    ("certificate is not PEM", "[HTTPS] Certificate {certificate}: not a PEM certificate"),
    ("missing key", "[HTTPS] Key {key}: cannot read it (No such file"),
    ("key is a certificate", "[HTTPS] Key {key}: not a PEM private key"),
    ("encrypted key", "[HTTPS] Key {key}: the key is encrypted"),
    ("key of another certificate", "[HTTPS] Key {key} is not the key of the first "
                                   "certificate in [HTTPS] Certificate {certificate}"),
])
def test_bad_certificate_or_key_stops_the_start(make_server: type[ServerProcess],
                                                spoil: str, message: str) -> None:
    """A certificate or key that cannot be read, parsed or paired stops the server at start
    with status 1 and one line naming the [HTTPS] key and the file."""
    server = make_server(https=True)
    assert server.tls is not None
    certificate, key = server.tls.certificate, server.tls.key
    if spoil == "missing certificate":
        certificate.unlink()
    elif spoil == "certificate is a directory":
        certificate.unlink()
        certificate.mkdir()
    elif spoil == "certificate is not PEM":
        certificate.write_bytes(b"\x30\x82 DER, not PEM")
    elif spoil == "missing key":
        key.unlink()
    elif spoil == "key is a certificate":
        shutil.copy(certificate, key)
    elif spoil == "encrypted key":
        _encrypted_key(key)
    else:
        other = make_tls_files(server.root / "other")
        shutil.copy(other.key, key)
    process = server.launch()
    wait_for(lambda: process.poll() is not None, 30, "the server to give up")
    assert process.returncode == 1, server.log()
    expected = "packagemanager: cannot start: " + message.format(certificate=certificate,
                                                                 key=key)
    assert expected in server.log(), server.log()
    assert "Traceback" not in server.log()
