"""The downloadable ``rspm``: the zipapp, the Windows launcher around it, and the route.

The archives are built from the modules this test run imports, and run in a
child Python with ``-I -S`` (no site-packages), so they must hold everything
the client needs. The route is driven through ``StubTreq`` like the rest of
the admin API.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import io
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred

import cli
from pm import __version__
from pm.download import (
    POSIX_SHEBANG,
    WINDOWS_LAUNCHER,
    WINDOWS_SHEBANG,
    ClientDownloads,
    ClientFile,
    build_clients,
    client_archive,
    minimum_python,
)
from pm.errors import BadRequest
from tests.unit.appfixture import AppEnv, app_env
from tests.unit.test_app import Client, LocalAdmin


@pytest.fixture(scope="module")
def clients() -> dict[str, ClientFile]:
    """The three downloads, built once for the module."""
    return build_clients()


def _write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    path.chmod(0o755)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # -I -S: no environment, no user or site packages, so only the archive's own
    # modules (and the standard library) can be imported.
    return subprocess.run([sys.executable, "-I", "-S", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env={})


# The archive ---------------------------------------------------------------------------


def test_archive_holds_the_client_its_pm_modules_and_click() -> None:
    """__main__.py, every module of cli, the five pm modules the CLI imports, and click with
    its METADATA and licence; no bytecode, no record of this installation."""
    names = zipfile.ZipFile(io.BytesIO(client_archive())).namelist()
    cli_dir = Path(cli.__file__).parent
    assert {f"cli/{p.name}" for p in cli_dir.glob("*.py")} <= set(names)
    assert {"__main__.py", "pm/__init__.py", "pm/errors.py", "pm/config.py",
            "pm/gcfg.py", "click/__init__.py", "click/core.py"} <= set(names)
    assert [n for n in names if n.startswith("pm/")] == [
        "pm/__init__.py", "pm/config.py", "pm/errors.py", "pm/gcfg.py", "pm/limits.py"]
    version = importlib.metadata.version("click")
    info = f"click-{version}.dist-info/"
    assert f"{info}METADATA" in names
    assert any(n.startswith(info) and "LICENSE" in n.upper() for n in names)
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n
                or n.endswith(("/RECORD", "/INSTALLER", "/direct_url.json"))]
    assert names == sorted(names)


def test_archive_is_reproducible() -> None:
    """Two builds give the same bytes: every entry has the zip epoch and mode 0644."""
    first, second = client_archive(), client_archive()
    assert first == second
    for info in zipfile.ZipFile(io.BytesIO(first)).infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o644
        assert info.compress_type == zipfile.ZIP_DEFLATED


def test_archive_carries_the_code_the_installed_client_runs() -> None:
    """Each module in the archive is byte for byte the file that this Python imports."""
    import click

    import pm.config
    import pm.errors
    import pm.gcfg
    import pm.limits

    archive = zipfile.ZipFile(io.BytesIO(client_archive()))
    modules = [cli, pm.config, pm.errors, pm.gcfg, pm.limits, click]
    for module in modules:
        source = Path(str(module.__file__))
        name = module.__name__.replace(".", "/")
        name += "/__init__.py" if source.name == "__init__.py" else ".py"
        assert archive.read(name) == source.read_bytes(), name
    for path in Path(cli.__file__).parent.glob("*.py"):
        assert archive.read(f"cli/{path.name}") == path.read_bytes()


def test_zipapp_runs_from_its_own_modules(tmp_path: Path,
                                          clients: dict[str, ClientFile]) -> None:
    """With no site-packages, the zipapp prints the server's version, lists its commands,
    and imports cli, pm and click from itself."""
    rspm = _write(tmp_path / "rspm", clients["linux"].body)
    version = _run(rspm, "--version")
    assert (version.returncode, version.stdout) == (0, f"rspm {__version__}\n"), version.stderr
    helped = _run(rspm, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: rspm ")
    for command in ("add", "list", "remove", "create", "revoke", "status"):
        assert f"  {command} " in helped.stdout
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import cli.main, cli.publish, "
             "pm.config, click; print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
             "if n.split('.')[0] in ('cli', 'pm', 'click')))")
    loaded = _run("-c", probe, rspm)
    assert loaded.returncode == 0, loaded.stderr
    files = loaded.stdout.split()
    assert len(files) > 10
    assert all(f.startswith(str(rspm) + "/") for f in files), files


def test_zipapp_errors_are_one_line(tmp_path: Path, clients: dict[str, ClientFile]) -> None:
    """An address nothing listens on gives one 'Error:' line and exit status 1."""
    rspm = _write(tmp_path / "rspm", clients["linux"].body)
    result = subprocess.run(
        [sys.executable, "-S", str(rspm), "list", "sources"], capture_output=True, text=True,
        timeout=60,
        env={"PACKAGEMANAGER_ADDRESS": "http://127.0.0.1:9", "PACKAGEMANAGER_TOKEN": "x"})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach the server at http://127.0.0.1:9")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_zipapp_refuses_an_older_python_in_one_line(tmp_path: Path) -> None:
    """Below the minimum, the archive says which Python it needs and which one ran it,
    before importing anything that could fail with a traceback."""
    rspm = _write(tmp_path / "rspm", POSIX_SHEBANG + client_archive(minimum=(3, 99)))
    result = _run(rspm, "--version")
    assert result.returncode == 1
    running = ".".join(map(str, sys.version_info[:3]))
    assert result.stderr == (f"rspm needs Python 3.99 or newer; {sys.executable} is Python "
                             f"{running}\n")


@pytest.mark.parametrize(("requirements", "expected"), [
    ({}, (3, 9)),
    ({"click": None}, (3, 9)),
    ({"click": ">=3.7"}, (3, 9)),
    ({"click": ">=3.10"}, (3, 10)),
    ({"a": ">=3.8", "b": "!=3.9.*,!=3.10.*"}, (3, 11)),
    ({"a": ">=3.9,<4"}, (3, 9)),
])
def test_minimum_python(requirements: dict[str, str | None], expected: tuple[int, int]) -> None:
    """The oldest Python 3 from 3.9 up that every bundled Requires-Python admits."""
    assert minimum_python(requirements) == expected


def test_minimum_python_without_any() -> None:
    """Requirements no Python 3 meets are an error naming them."""
    with pytest.raises(ValueError) as info:
        minimum_python({"old": "<3,>=2.6"})
    assert str(info.value) == ("no Python 3 version satisfies every bundled distribution: "
                               "old <3,>=2.6")


def test_the_bundled_click_sets_the_minimum(clients: dict[str, ClientFile]) -> None:
    """The archive's __main__ checks for the oldest Python the installed click supports."""
    requires = importlib.metadata.metadata("click")["Requires-Python"]
    minimum = minimum_python({"click": requires})
    main = zipfile.ZipFile(io.BytesIO(clients["linux"].body)).read("__main__.py").decode()
    assert f"if sys.version_info < {minimum!r}:" in main


# The downloads -------------------------------------------------------------------------


def test_posix_clients_are_the_archive_behind_a_python3_shebang(
        clients: dict[str, ClientFile]) -> None:
    """Linux and macOS get the same file: '#!/usr/bin/env python3', then the archive; its
    ETag is the sha256 of those bytes."""
    linux, darwin = clients["linux"], clients["darwin"]
    assert linux == darwin
    assert linux.filename == "rspm"
    assert linux.body == POSIX_SHEBANG + client_archive()
    assert linux.etag == hashlib.sha256(linux.body).hexdigest()


def test_windows_client_is_distlibs_launcher_then_the_same_archive(
        tmp_path: Path, clients: dict[str, ClientFile]) -> None:
    """rspm.exe is a 64-bit console PE file (distlib's t64.exe), a shebang the launcher
    resolves on the PATH, then the very archive the POSIX client carries; Python runs it."""
    exe = clients["windows"]
    assert exe.filename == "rspm.exe"
    assert exe.etag == hashlib.sha256(exe.body).hexdigest()
    launcher = importlib.resources.files("distlib").joinpath(WINDOWS_LAUNCHER).read_bytes()
    archive = clients["linux"].body[len(POSIX_SHEBANG):]
    assert exe.body == launcher + WINDOWS_SHEBANG + archive
    body = exe.body
    assert body[:2] == b"MZ"
    pe = struct.unpack_from("<I", body, 0x3C)[0]
    assert body[pe:pe + 4] == b"PE\0\0"
    machine = struct.unpack_from("<H", body, pe + 4)[0]
    optional = pe + 24
    magic, = struct.unpack_from("<H", body, optional)
    subsystem, = struct.unpack_from("<H", body, optional + 68)
    assert (machine, magic, subsystem) == (0x8664, 0x20B, 3)  # AMD64, PE32+, console
    rspm = _write(tmp_path / "rspm.exe", body)
    version = _run(rspm, "--version")
    assert (version.returncode, version.stdout) == (0, f"rspm {__version__}\n"), version.stderr


def _counting(build: Callable[[], Mapping[str, ClientFile]]) -> tuple[list[int], Any]:
    calls: list[int] = []

    def counted() -> Mapping[str, ClientFile]:
        calls.append(1)
        return build()

    return calls, counted


def _fake() -> dict[str, ClientFile]:
    posix = ClientFile("rspm", b"posix", "p")
    return {"linux": posix, "darwin": posix, "windows": ClientFile("rspm.exe", b"exe", "w")}


class HeldThread:
    """An in_thread whose work runs only when released, to overlap requests."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def __call__(self, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
        deferred: Deferred[Any] = Deferred()
        self.pending.append((deferred, lambda: work(*args)))
        return deferred

    def release(self) -> None:
        for deferred, work in self.pending:
            try:
                deferred.callback(work())
            except Exception as e:
                deferred.errback(e)
        self.pending.clear()


def test_downloads_are_built_once_in_a_thread_for_concurrent_requests() -> None:
    """Requests that arrive during the first build wait for it; later ones reuse it; the
    build runs in the injected thread, and os=None means linux."""
    calls, build = _counting(_fake)
    thread = HeldThread()
    downloads = ClientDownloads(thread, build)
    first = ensureDeferred(downloads.client("linux"))
    second = ensureDeferred(downloads.client("windows"))
    third = ensureDeferred(downloads.client(None))
    assert calls == [] and len(thread.pending) == 1
    thread.release()
    got: list[ClientFile] = []
    for d in (first, second, third):
        d.addCallback(got.append)
    assert [c.filename for c in got] == ["rspm", "rspm.exe", "rspm"]
    later = ensureDeferred(downloads.client("darwin"))
    later.addCallback(got.append)
    assert got[-1].body == b"posix"
    assert calls == [1] and thread.pending == []


def test_unknown_os_is_bad_request_listing_the_valid_ones() -> None:
    """An unknown os is refused, naming linux, darwin and windows, before any build."""
    calls, build = _counting(_fake)
    downloads = ClientDownloads(HeldThread(), build)
    failures: list[Any] = []
    ensureDeferred(downloads.client("plan9")).addErrback(failures.append)
    error = failures[0].value
    assert isinstance(error, BadRequest)
    assert error.message == ("unknown os 'plan9': the client is built for linux, darwin, "
                             "windows")
    assert calls == []


def test_a_failed_build_is_tried_again() -> None:
    """A build that raised is not kept: the next request builds again."""
    attempts: list[int] = []

    def flaky() -> Mapping[str, ClientFile]:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk trouble")
        return _fake()

    thread = HeldThread()
    downloads = ClientDownloads(thread, flaky)
    failures: list[Any] = []
    ensureDeferred(downloads.client("linux")).addErrback(failures.append)
    thread.release()
    assert failures and failures[0].check(OSError)
    got: list[ClientFile] = []
    ensureDeferred(downloads.client("linux")).addCallback(got.append)
    thread.release()
    assert [c.body for c in got] == [b"posix"] and len(attempts) == 2


# The route -----------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A fresh in-memory server with API tokens enabled."""
    with app_env(tmp_path) as built:
        yield built


@pytest.fixture
def client(env: AppEnv) -> Client:
    """A TCP client of that server."""
    return Client(env.app.resource())


@pytest_twisted.ensureDeferred
async def test_download_without_a_token_is_401_with_the_reason(client: Client) -> None:
    """No token, no client: 401, with how to authenticate in the reason."""
    reply = await client.get("/__api__/download")
    assert reply.code == 401
    assert "authentication required" in reply.error
    assert "authentication required" in reply.phrase


@pytest_twisted.ensureDeferred
async def test_download_with_a_token_of_any_scope(env: AppEnv, client: Client) -> None:
    """A sources:write or repos:read token downloads the client as an attachment named
    rspm, with an ETag that is its sha256."""
    source = await env.python_source()
    for token in (await env.source_token(source), await env.token("repos:read", None)):
        reply = await client.get("/__api__/download", token=token)
        assert reply.code == 200, reply
        assert reply.header("content-disposition") == "attachment; filename=rspm"
        assert reply.header("content-type") == "application/octet-stream"
        assert reply.body.startswith(POSIX_SHEBANG)
        assert reply.header("etag") == f'"{hashlib.sha256(reply.body).hexdigest()}"'


@pytest.mark.parametrize(("os_name", "filename", "start"), [
    ("linux", "rspm", POSIX_SHEBANG), ("darwin", "rspm", POSIX_SHEBANG),
    ("windows", "rspm.exe", b"MZ"),
])
@pytest_twisted.ensureDeferred
async def test_download_for_each_os(env: AppEnv, client: Client, os_name: str, filename: str,
                                    start: bytes) -> None:
    """?os= picks the file, and Content-Disposition the name curl -OJ saves it under."""
    reply = await client.get(f"/__api__/download?os={os_name}", token=await env.token())
    assert reply.code == 200
    assert reply.header("content-disposition") == f"attachment; filename={filename}"
    assert reply.body.startswith(start)


@pytest_twisted.ensureDeferred
async def test_download_unknown_os_is_400(env: AppEnv, client: Client) -> None:
    """An unknown os is a 400 whose reason lists the valid ones."""
    reply = await client.get("/__api__/download?os=amiga", token=await env.token())
    assert reply.code == 400
    assert reply.error == "unknown os 'amiga': the client is built for linux, darwin, windows"


@pytest_twisted.ensureDeferred
async def test_download_revalidates_with_its_etag(env: AppEnv, client: Client) -> None:
    """If-None-Match with the ETag answers 304 with no body; another ETag gets the file."""
    token = await env.token()
    first = await client.get("/__api__/download?os=windows", token=token)
    etag = first.header("etag")
    assert etag is not None
    again = await client.get("/__api__/download?os=windows", token=token,
                             headers={"If-None-Match": etag})
    assert (again.code, again.body) == (304, b"")
    other = await client.get("/__api__/download", token=token,
                             headers={"If-None-Match": etag})
    assert other.code == 200 and other.header("etag") != etag


@pytest_twisted.ensureDeferred
async def test_download_over_the_admin_socket_needs_no_token(env: AppEnv) -> None:
    """The local administrator downloads without a token, as for every admin route."""
    reply = await Client(LocalAdmin(env.app.resource())).get("/__api__/download")
    assert reply.code == 200 and reply.body.startswith(POSIX_SHEBANG)


@pytest_twisted.ensureDeferred
async def test_download_with_tokens_disabled_says_so(tmp_path: Path) -> None:
    """With API tokens off, the 401 says how to turn them on."""
    with app_env(tmp_path, tokens_enabled=False) as env:
        reply = await Client(env.app.resource()).get("/__api__/download")
    assert reply.code == 401
    assert "APITokenAuth" in reply.error
