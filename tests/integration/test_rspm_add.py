"""``rspm add`` publishing directories remotely, then R and pip installing from the repos.

Real R builds the packages (``R CMD build``) and installs them with
``install.packages()`` and ``remotes::install_version()``; real pip installs
the Python files; the progress bar is checked under a real pseudo-terminal.
"""

from __future__ import annotations

import gzip
import os
import pty
import select
import shutil
import subprocess
import tempfile
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packages import build_sdist, build_wheel
from tests.support.rpackages import build_r_package
from tests.support.server import BIN, ServerProcess, http

RSPM = str(BIN / "rspm")


def _rspm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RSPM, *args], env=env, capture_output=True, text=True, timeout=300)


def _rscript(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["Rscript", "--vanilla", "-e", code], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory for packages and R libraries."""
    path = Path(tempfile.mkdtemp(prefix="pm-add-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def r_server(make_server: type[ServerProcess]) -> tuple[ServerProcess, str]:
    """A server with an R source in repo 'cran', and a write token for the source."""
    server = make_server().start()
    return server, server.setup_r()


def _r_repo(server: ServerProcess) -> str:
    return server.url("/cran/latest")


def test_rspm_add_r_directory_then_install_packages_and_install_version(
        r_server: tuple[ServerProcess, str], workdir: Path) -> None:
    """Two R packages (one importing the other) added remotely install and load in R;
    after a second version is added, remotes::install_version installs the first."""
    server, token = r_server
    pkgs = workdir / "pkgs"
    pkgs.mkdir()
    build_r_package(pkgs, "labR", "0.1.0")
    build_r_package(pkgs, "labUse", "1.0.0", imports=["labR"])
    (pkgs / "NOTES.txt").write_text("not a package\n")
    env = server.remote_env(token)

    added = _rspm(env, "add", "--source=local-r-src", f"--path={pkgs}")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "Added package 'labR_0.1.0.tar.gz'" in added.stdout
    assert "Added package 'labUse_1.0.0.tar.gz'" in added.stdout
    assert "NOTES.txt" in added.stdout + added.stderr
    assert "2 added" in added.stdout + added.stderr

    again = _rspm(env, "add", "--source=local-r-src", f"--path={pkgs}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Unchanged package 'labR_0.1.0.tar.gz'" in again.stdout

    index = server.get("/cran/latest/src/contrib/PACKAGES")
    assert index.status == 200
    assert b"Package: labR\nVersion: 0.1.0\n" in index.body
    etag = index.headers["ETag"]
    assert server.get("/cran/latest/src/contrib/PACKAGES",
                      headers={"If-None-Match": etag}).status == 304
    assert gzip.decompress(server.get("/cran/latest/src/contrib/PACKAGES.gz").body) \
        == index.body

    lib = workdir / "lib"
    lib.mkdir()
    installed = _rscript(
        f'install.packages("labUse", repos="{_r_repo(server)}", lib="{lib}", quiet=TRUE);'
        f' library(labUse, lib.loc="{lib}"); cat(labUse_hello(), "\\n");'
        f' cat(as.character(packageVersion("labR", lib.loc="{lib}")), "\\n")')
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "labUse" in installed.stdout
    assert "0.1.0" in installed.stdout

    newer = workdir / "newer"
    newer.mkdir()
    build_r_package(newer, "labR", "0.2.0")
    assert _rspm(env, "add", "--source=local-r-src", f"--path={newer}").returncode == 0
    assert b"Package: labR\nVersion: 0.2.0\n" in \
        server.get("/cran/latest/src/contrib/PACKAGES").body
    assert server.get("/cran/latest/src/contrib/Archive/labR/labR_0.1.0.tar.gz").status == 200
    assert server.get("/cran/latest/src/contrib/labR_0.1.0.tar.gz").status == 404

    old_lib = workdir / "old-lib"
    old_lib.mkdir()
    pinned = _rscript(
        f'remotes::install_version("labR", "0.1.0", repos="{_r_repo(server)}",'
        f' lib="{old_lib}", upgrade="never", quiet=TRUE);'
        f' cat(as.character(packageVersion("labR", lib.loc="{old_lib}")), "\\n")')
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert pinned.stdout.strip().endswith("0.1.0")


def test_r_refusals_are_reported_per_file_and_store_nothing(
        r_server: tuple[ServerProcess, str], workdir: Path) -> None:
    """A broken tarball, a mismatched DESCRIPTION and a wheel in an R source are each
    refused with a reason, the good package is still added, and the exit code is 1."""
    server, token = r_server
    pkgs = workdir / "pkgs"
    pkgs.mkdir()
    build_r_package(pkgs, "good", "1.0")
    (pkgs / "broken_1.0.tar.gz").write_bytes(b"this is not gzip")
    mismatched = build_r_package(workdir, "other", "2.0")
    shutil.copy(mismatched, pkgs / "named_2.0.tar.gz")
    files_before = sorted((server.data_dir or Path()).rglob("files/**/*"))

    result = _rspm(server.remote_env(token), "add", "--source=local-r-src", f"--path={pkgs}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Added package 'good_1.0.tar.gz'" in output
    assert "broken_1.0.tar.gz" in output and "gzip" in output.lower()
    assert "named_2.0.tar.gz" in output
    assert "1 added" in output and "2 failed" in output
    index = server.get("/cran/latest/src/contrib/PACKAGES").body.decode()
    assert "Package: good" in index and "broken" not in index and "named" not in index
    stored = sorted((server.data_dir or Path()).rglob("files/**/*"))
    assert len([p for p in stored if p.is_file()]) == \
        len([p for p in files_before if p.is_file()]) + 1
    assert not [p for p in (server.data_dir or Path()).joinpath("tmp").iterdir()
                if p.is_file()]


def test_rspm_add_python_directory_with_signature_then_pip_install(
        make_server: type[ServerProcess], workdir: Path) -> None:
    """A directory of a wheel, an sdist with its .asc and a README is published with
    rspm add: the packages are added, the README skipped, and pip installs the wheel."""
    server = make_server().start()
    token = server.setup_python()
    dist = workdir / "dist"
    (dist / "nested").mkdir(parents=True)
    build_wheel(dist, "added-package", "1.0.0")
    sdist = build_sdist(dist / "nested", "added-package", "1.0.0")
    gnupghome = Path(tempfile.mkdtemp(prefix="pmgpg"))
    try:
        gpg_env = {**os.environ, "GNUPGHOME": str(gnupghome)}
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                        "CI <ci@example.com>", "ed25519", "sign", "never"], env=gpg_env,
                       check=True, capture_output=True)
        subprocess.run(["gpg", "--batch", "--armor", "--detach-sign", str(sdist)],
                       env=gpg_env, check=True, capture_output=True)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(gnupghome)},
                       capture_output=True, check=False)
        shutil.rmtree(gnupghome, ignore_errors=True)
    (dist / "README.md").write_text("# notes\n")

    result = _rspm(server.remote_env(token), "add", "--source=local-python-src",
                   f"--path={dist}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Added package 'added_package-1.0.0-py3-none-any.whl'" in result.stdout
    assert f"Added package '{sdist.name}'" in result.stdout
    assert "README.md" in result.stdout + result.stderr
    assert ".asc'" not in result.stdout.replace(f"{sdist.name}.asc", "")
    asc = server.get(f"/python/latest/files/{sdist.name}.asc")
    assert asc.status == 200 and asc.body == Path(f"{sdist}.asc").read_bytes()

    target = workdir / "venv"
    venv.create(target, with_pip=True)
    pip = subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir",
         "--index-url", server.url("/python/latest/simple/"), "added-package==1.0.0"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"})
    assert pip.returncode == 0, pip.stdout + pip.stderr


def test_replace_remove_archive_and_list(r_server: tuple[ServerProcess, str],
                                         workdir: Path) -> None:
    """Different contents under an existing name fail without --replace and replace with
    it; list, archive and remove act on the source, each also as JSON."""
    server, token = r_server
    env = server.remote_env(token)
    first = workdir / "first"
    first.mkdir()
    build_r_package(first, "swap", "1.0")
    build_r_package(first, "keep", "1.0")
    assert _rspm(env, "add", "--source=local-r-src", f"--path={first}").returncode == 0
    second = workdir / "second"
    second.mkdir()
    build_r_package(second, "swap", "1.0", description_extra="Note: rebuilt\n")

    refused = _rspm(env, "add", "--source=local-r-src", f"--path={second}")
    assert refused.returncode != 0
    assert "--replace" in refused.stdout + refused.stderr
    replaced = _rspm(env, "add", "--source=local-r-src", f"--path={second}", "--replace")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "Replaced package 'swap_1.0.tar.gz'" in replaced.stdout
    log = http("GET", server.url("/__api__/events"),
               headers={"Authorization": f"Bearer {_admin_token(server)}"}).json()
    assert any(e["action"] == "r.package.replaced" for e in log)

    listed = _rspm(env, "--output-format=json", "list", "packages", "--source=local-r-src")
    assert listed.returncode == 0, listed.stderr
    assert '"swap"' in listed.stdout and '"keep"' in listed.stdout

    archived = _rspm(env, "archive", "--source=local-r-src", "--name=keep")
    assert archived.returncode == 0, archived.stdout + archived.stderr
    index = server.get("/cran/latest/src/contrib/PACKAGES").body.decode()
    assert "Package: keep" not in index
    assert server.get("/cran/latest/src/contrib/Archive/keep/keep_1.0.tar.gz").status == 200

    removed = _rspm(env, "remove", "package", "--source=local-r-src", "--name=swap@all",
                    "--comment=obsolete")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "swap_1.0.tar.gz" in removed.stdout
    assert "Package: swap" not in server.get("/cran/latest/src/contrib/PACKAGES").body.decode()


def _admin_token(server: ServerProcess) -> str:
    return server.rspm("create", "token", "--quiet", "--scope=global:admin").stdout.strip()


def test_progress_bar_under_a_terminal(r_server: tuple[ServerProcess, str],
                                       workdir: Path) -> None:
    """On a terminal, rspm add draws a progress bar with the files done and a rate."""
    server, token = r_server
    pkgs = workdir / "pkgs"
    pkgs.mkdir()
    build_r_package(pkgs, "tty", "1.0")
    primary, secondary = pty.openpty()
    process = subprocess.Popen([RSPM, "add", "--source=local-r-src", f"--path={pkgs}"],
                               env={**server.remote_env(token), "TERM": "xterm",
                                    "COLUMNS": "100"},
                               stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(primary)
    assert process.wait(30) == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    assert "Added package 'tty_1.0.tar.gz'" in text
    assert "1/1" in text and "/s" in text, text
