"""Authenticated repos with the clients users have, against a real server.

pip and uv install from an authenticated Python repo with a repos:read token in
the index URL, in ``~/.netrc`` and in a keyring (keyrings.alt's plain file
backend, reached through the ``keyring`` command as pip's and uv's subprocess
provider use it); R's ``install.packages()`` installs from an authenticated R
repo with the token in ``~/.netrc``. Packages are published with ``rspm add``.
Every test ends by checking that no token is in the server's log.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.packages import build_wheel
from tests.support.rpackages import build_r_package
from tests.support.server import BIN, ServerProcess

KEYRING_BACKEND = "keyrings.alt.file.PlaintextKeyring"
# What R 4.2 needs to send a netrc's credentials: its own "libcurl" method reads no
# netrc (R 4.6 adds that), the curl command does with --netrc; --fail makes a 401 an
# error instead of a PACKAGES file holding the error text.
R_NETRC_OPTIONS = 'options(download.file.method = "curl", download.file.extra = "--netrc --fail")'


def _run(args: list[str], env: dict[str, str], input_: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, input=input_, capture_output=True, text=True,
                          timeout=300)


@dataclass
class Private:
    """A running server, its authenticated repo, a repos:read token for it and a write
    token for the source it serves."""

    server: ServerProcess
    repo: str
    reader: str
    writer: str

    def url(self, userinfo: str = "") -> str:
        """The repo's index (Python) or repository (R) URL, with ``user[:password]@``."""
        base = self.server.url(f"/{self.repo}/latest/")
        return base.replace("://", f"://{userinfo}@", 1) if userinfo else base

    def assert_no_token_logged(self) -> None:
        log = self.server.log() + self.server.access_log()
        assert self.reader not in log and self.writer not in log
        assert "eyJ" not in log


@pytest.fixture
def home() -> Iterator[Path]:
    """A throwaway HOME: no real netrc, keyring or pip config is read or written."""
    path = Path(tempfile.mkdtemp(prefix="pm-home-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _client_env(server: ServerProcess, home: Path) -> dict[str, str]:
    # No pip or uv setting of this machine (find-links, other indexes) may
    # install the package instead of the repo.
    env = {k: v for k, v in server.env().items()
           if not k.startswith(("PIP_", "UV_")) and k not in ("PACKAGEMANAGER_CONFIG", "NETRC")}
    env.update(HOME=str(home), NO_COLOR="1", PIP_CONFIG_FILE="/dev/null", UV_NO_CONFIG="1",
               PYTHON_KEYRING_BACKEND=KEYRING_BACKEND,
               # The keyring command pip's and uv's subprocess provider run.
               PATH=f"{BIN}:{env['PATH']}")
    return env


def _write_netrc(home: Path, token: str) -> None:
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin __token__\npassword {token}\n")
    netrc.chmod(0o600)


@pytest.fixture
def python_repo(make_server: type[ServerProcess], tmp_path: Path) -> Private:
    """An authenticated python repo made with `rspm create repo --authenticated`, holding
    secret-pkg 1.0 added with `rspm add`."""
    server = make_server().start()
    server.rspm("create", "source", "--name=team-src", "--type=local-python")
    made = server.rspm("create", "repo", "--name=private", "--type=python", "--authenticated")
    assert "created" in made.stdout
    server.rspm("subscribe", "--repo=private", "--source=team-src")
    writer = server.rspm("create", "token", "--quiet", "--sources=team-src").stdout.strip()
    reader = server.rspm("create", "token", "--quiet", "--scope=repos:read",
                         "--repos=private").stdout.strip()
    wheel = build_wheel(tmp_path, "secret-pkg", "1.0")
    added = server.rspm("add", "--source=team-src", f"--path={wheel}",
                        env=server.remote_env(writer))
    assert "1 added" in added.stdout
    return Private(server, "private", reader, writer)


def _pip(private: Private, home: Path, index_url: str, *options: str
         ) -> subprocess.CompletedProcess[str]:
    where = home / "pip-venv"
    venv.create(where, with_pip=True, clear=True)
    return _run([str(where / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir",
                 "--index-url", index_url, *options, "secret-pkg"],
                _client_env(private.server, home))


def _uv(private: Private, home: Path, index_url: str, *options: str
        ) -> subprocess.CompletedProcess[str]:
    env = _client_env(private.server, home)
    where = home / "uv-venv"
    made = _run([str(BIN / "uv"), "venv", "--python", str(BIN / "python"), str(where)], env)
    assert made.returncode == 0, made.stderr
    return _run([str(BIN / "uv"), "pip", "install", "--no-cache", "--python",
                 str(where / "bin" / "python"), "--index-url", index_url, *options,
                 "secret-pkg"], env)


def _installed(result: subprocess.CompletedProcess[str], home: Path, venv_name: str) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    python = home / venv_name / "bin" / "python"
    shown = subprocess.run([str(python), "-c", "import secret_pkg; print(secret_pkg.VERSION)"],
                           capture_output=True, text=True, timeout=60)
    return shown.stdout.strip()


def test_without_a_token_pip_and_uv_are_refused(python_repo: Private, home: Path) -> None:
    """The repo's index answers 401 to pip and uv when they send nothing, and 403 to a
    repos:read token for another repo: neither installs."""
    for install in (_pip, _uv):
        refused = install(python_repo, home, python_repo.url() + "simple/")
        assert refused.returncode != 0
        assert "401" in refused.stdout + refused.stderr
    server = python_repo.server
    server.rspm("create", "repo", "--name=other", "--type=python")
    other = server.rspm("create", "token", "--quiet", "--scope=repos:read",
                        "--repos=other").stdout.strip()
    forbidden = _pip(python_repo, home, python_repo.url(f"__token__:{other}") + "simple/")
    assert forbidden.returncode != 0, forbidden.stdout
    # pip reports a 403 as "no matching distribution"; the access log has the status.
    access = server.access_log()
    assert '"GET /private/latest/simple/secret-pkg/ HTTP/1.1" 403' in access
    python_repo.assert_no_token_logged()
    assert other not in server.log() + access


def test_pip_and_uv_with_the_token_in_the_index_url(python_repo: Private, home: Path) -> None:
    """http://__token__:TOKEN@host/private/latest/simple/ installs with pip and uv."""
    index = python_repo.url(f"__token__:{python_repo.reader}") + "simple/"
    assert _installed(_pip(python_repo, home, index), home, "pip-venv") == "1.0"
    assert _installed(_uv(python_repo, home, index), home, "uv-venv") == "1.0"
    python_repo.assert_no_token_logged()


def test_pip_and_uv_with_the_token_in_netrc(python_repo: Private, home: Path) -> None:
    """~/.netrc with login __token__ and the token as password: pip and uv install from
    the plain index URL."""
    _write_netrc(home, python_repo.reader)
    index = python_repo.url() + "simple/"
    assert _installed(_pip(python_repo, home, index), home, "pip-venv") == "1.0"
    assert _installed(_uv(python_repo, home, index), home, "uv-venv") == "1.0"
    python_repo.assert_no_token_logged()


def test_pip_and_uv_with_the_token_in_a_keyring(python_repo: Private, home: Path) -> None:
    """`keyring set <index URL> __token__`, then pip and uv with --keyring-provider
    subprocess and the user name in the index URL find the token and install."""
    env = _client_env(python_repo.server, home)
    index = python_repo.url() + "simple/"
    stored = _run([str(BIN / "keyring"), "set", index, "__token__"], env,
                  input_=python_repo.reader + "\n")
    assert stored.returncode == 0, stored.stderr
    named = python_repo.url("__token__") + "simple/"
    pip = _pip(python_repo, home, named, "--keyring-provider", "subprocess")
    assert _installed(pip, home, "pip-venv") == "1.0"
    uv = _uv(python_repo, home, named, "--keyring-provider", "subprocess")
    assert _installed(uv, home, "uv-venv") == "1.0"
    python_repo.assert_no_token_logged()


def test_edit_repo_switches_authentication_at_once(python_repo: Private) -> None:
    """`rspm edit repo --no-authenticated` opens the repo on the next request, and
    `--authenticated` closes it again; `rspm list repos` says which it is."""
    server = python_repo.server
    path = "/private/latest/simple/secret-pkg/"
    assert server.get(path).status == 401
    server.rspm("edit", "repo", "--name=private", "--no-authenticated")
    assert server.get(path).status == 200
    server.rspm("edit", "repo", "--name=private", "--authenticated")
    assert server.get(path).status == 401
    listed = server.rspm("list", "repos").stdout.splitlines()
    assert listed[0].split()[:3] == ["NAME", "TYPE", "AUTHENTICATED"]
    assert listed[1].split()[:3] == ["private", "python", "yes"]


def test_a_token_in_the_query_string_is_not_logged(python_repo: Private) -> None:
    """A client that puts the token in the URL's query gets no access from it, and the
    access log shows the request with the value masked."""
    server = python_repo.server
    reply = server.get(f"/private/latest/simple/?token={python_repo.reader}")
    assert reply.status == 401
    assert "GET /private/latest/simple/?token=*** HTTP/1.1" in server.access_log()
    python_repo.assert_no_token_logged()


def test_r_install_packages_with_the_token_in_netrc(make_server: type[ServerProcess],
                                                    home: Path, tmp_path: Path) -> None:
    """With [Authentication] NewReposAuthByDefault the R repo is authenticated from the
    start; install.packages() is refused without credentials and installs with the token
    in ~/.netrc, sent by the curl download method."""
    server = make_server(extra_config="NewReposAuthByDefault = true\n").start()
    writer = server.setup_r(repo="rpriv")
    reader = server.rspm("create", "token", "--quiet", "--scope=repos:read",
                         "--repos=rpriv").stdout.strip()
    private = Private(server, "rpriv", reader, writer)
    tarball = build_r_package(tmp_path, "labSecret", "0.1.0")
    added = server.rspm("add", "--source=local-r-src", f"--path={tarball}",
                        env=server.remote_env(writer))
    assert "1 added" in added.stdout
    library = home / "library"
    library.mkdir()
    code = (f'{R_NETRC_OPTIONS}; install.packages("labSecret", repos = "{private.url()}", '
            f'lib = "{library}"); library(labSecret, lib.loc = "{library}"); '
            'cat(labSecret_hello(), "\\n")')
    env = _client_env(server, home)

    refused = _run(["Rscript", "--vanilla", "-e", code], env)
    assert refused.returncode != 0
    assert "unable to access index" in refused.stderr
    assert not (library / "labSecret").exists()

    _write_netrc(home, reader)
    installed = _run(["Rscript", "--vanilla", "-e", code], env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "hello from labSecret" in installed.stdout
    private.assert_no_token_logged()
