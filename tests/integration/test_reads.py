"""Cached index pages never outlive the change that makes them wrong, on any node.

Index pages and file lookups are cached at the database's change serial; these
tests change the database in every way that alters an index (an upload, a
signature added by a re-upload, a deleted source, a subscription) and check
the very next request sees it, also on a second server sharing the database,
and that pip and uv revalidate their own caches with the ETag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packages import build_wheel
from tests.support.server import BIN, ServerProcess

RSPM = str(BIN / "rspm")
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _add(server: ServerProcess, token: str, *paths: Path,
         source: str = "local-python-src") -> None:
    result = subprocess.run(
        [RSPM, "add", f"--source={source}", "--path=" + ",".join(map(str, paths))],
        env=server.remote_env(token), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _versions(server: ServerProcess, project: str = "cached") -> list[str]:
    response = server.get(f"/python/latest/simple/{project}/", headers=JSON)
    if response.status == 404:
        return []
    assert response.status == 200, response
    versions: list[str] = response.json()["versions"]
    return versions


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory for wheels and virtualenvs."""
    path = Path(tempfile.mkdtemp(prefix="pm-reads-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_index_change_is_seen_by_the_next_request(
        server: ServerProcess, workdir: Path) -> None:
    """Upload, signature added by a re-upload, a new subscription and a deleted
    source each show in the very next request for a page that was cached before."""
    token = server.setup_python()
    first = build_wheel(workdir, "cached", "1.0")
    _add(server, token, first)
    assert _versions(server) == ["1.0"]
    assert _versions(server) == ["1.0"]  # now served from the cache

    second = build_wheel(workdir, "cached", "2.0")
    _add(server, token, second)
    assert _versions(server) == ["1.0", "2.0"]

    page = server.get("/python/latest/simple/cached/", headers=JSON).json()
    assert not any(f["gpg-sig"] for f in page["files"])
    gnupghome = Path(tempfile.mkdtemp(prefix="pmgpg"))
    try:
        env = {**os.environ, "GNUPGHOME": str(gnupghome)}
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                        "CI <ci@example.com>", "ed25519", "sign", "never"], env=env,
                       check=True, capture_output=True)
        subprocess.run(["gpg", "--batch", "--armor", "--detach-sign", str(first)], env=env,
                       check=True, capture_output=True)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(gnupghome)},
                       capture_output=True, check=False)
        shutil.rmtree(gnupghome, ignore_errors=True)
    _add(server, token, first)
    page = server.get("/python/latest/simple/cached/", headers=JSON).json()
    assert [f["gpg-sig"] for f in page["files"]] == [True, False]

    server.rspm("create", "source", "--name=second-src", "--type=local-python")
    other = server.rspm("create", "token", "--quiet", "--sources=second-src").stdout.strip()
    (workdir / "other").mkdir()
    _add(server, other, build_wheel(workdir / "other", "elsewhere", "1.0"),
         source="second-src")
    root = server.get("/python/latest/simple/", headers=JSON).json()
    assert [p["name"] for p in root["projects"]] == ["cached"]
    server.rspm("subscribe", "--repo=python", "--source=second-src")
    root = server.get("/python/latest/simple/", headers=JSON).json()
    assert sorted(p["name"] for p in root["projects"]) == ["cached", "elsewhere"]

    server.rspm("delete", "source", "--name=local-python-src")
    assert _versions(server) == []
    assert server.get(f"/python/latest/files/{first.name}").status == 404


def test_index_pages_carry_a_strong_etag_and_answer_304(server: ServerProcess,
                                                         workdir: Path) -> None:
    """Project, root and file answers have a strong ETag that If-None-Match turns
    into 304, and a Cache-Control that makes clients and proxies revalidate."""
    token = server.setup_python()
    wheel = build_wheel(workdir, "tagged", "1.0")
    _add(server, token, wheel)
    for path in ("/python/latest/simple/", "/python/latest/simple/tagged/",
                 f"/python/latest/files/{wheel.name}"):
        response = server.get(path)
        assert response.status == 200, (path, response)
        etag = response.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/"), etag
        assert "must-revalidate" in response.headers["Cache-Control"]
        assert server.get(path, headers={"If-None-Match": etag}).status == 304
    _add(server, token, build_wheel(workdir, "tagged", "2.0"))
    stale = server.get("/python/latest/simple/tagged/").headers["ETag"]
    assert server.get("/python/latest/simple/tagged/", headers={"If-None-Match": etag}
                      ).status == 200
    assert stale != etag


def test_two_nodes_on_one_postgres_agree_at_once(
        make_server: type[ServerProcess], pg_url: str, workdir: Path) -> None:
    """With two servers sharing PostgreSQL and DataDir, an upload answered by one is
    in the other's next index request, and a deletion vanishes from both at once."""
    first = make_server(provider="postgres", postgres_url=pg_url).start()
    second = make_server(provider="postgres", postgres_url=pg_url,
                         data_dir=first.data_dir).start()
    token = first.setup_python()
    assert _versions(second) == []
    _add(first, token, build_wheel(workdir, "cached", "1.0"))
    assert _versions(second) == ["1.0"]
    _add(second, token, build_wheel(workdir, "cached", "1.1"))
    assert _versions(first) == ["1.0", "1.1"]
    first.rspm("delete", "source", "--name=local-python-src")
    assert _versions(second) == []


def test_pip_and_uv_revalidate_their_caches(server: ServerProcess, workdir: Path) -> None:
    """pip and uv, with their HTTP caches on, find a version published after they
    cached the project page: the server's ETag makes them revalidate, not trust it."""
    token = server.setup_python()
    _add(server, token, build_wheel(workdir, "revalidated", "1.0"))
    env = {**os.environ, "PIP_CONFIG_FILE": "/dev/null", "UV_NO_CONFIG": "1",
           "HOME": str(workdir)}
    python = workdir / "venv" / "bin" / "python"
    venv.create(workdir / "venv", with_pip=True)
    index = server.url("/python/latest/simple/")
    cache = workdir / "cache"

    def pip_download(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # pip caches only HTTPS origins and trusted hosts.
            [str(python), "-m", "pip", "download", "--no-deps", "--trusted-host", "127.0.0.1",
             "--cache-dir", str(cache / "pip"),
             "-d", str(workdir / "dl"), "--index-url", index, f"revalidated=={version}"],
            env=env, capture_output=True, text=True, timeout=300)

    def uv_compile(version: str) -> subprocess.CompletedProcess[str]:
        requirements = workdir / "requirements.in"
        requirements.write_text(f"revalidated=={version}\n")
        return subprocess.run(
            [str(BIN / "uv"), "pip", "compile", "--cache-dir", str(cache / "uv"),
             "--index-url", index, "--python", str(python), str(requirements)],
            env=env, capture_output=True, text=True, timeout=300)

    for fetch in (pip_download, uv_compile):
        before = server.access_log().count('/simple/revalidated/ HTTP/1.1" 304 ')
        for _ in range(2):
            first = fetch("1.0")
            assert first.returncode == 0, first.stdout + first.stderr
        # The second run asked with the ETag it kept, and the page had not changed.
        assert server.access_log().count('/simple/revalidated/ HTTP/1.1" 304 ') > before, fetch
    _add(server, token, build_wheel(workdir, "revalidated", "2.0"))
    for fetch in (pip_download, uv_compile):
        found = fetch("2.0")
        assert found.returncode == 0, found.stdout + found.stderr


def test_the_cache_stays_within_its_bound(make_server: type[ServerProcess],
                                          workdir: Path) -> None:
    """With a cache smaller than the repo's pages, every page is still right and the
    cache reports at most its configured size in /__api__/status."""
    server = make_server(extra_config="[Cache]\nMaxSize = 64k\n").start()
    token = server.setup_python()
    wheels = [build_wheel(workdir, f"bounded-{i}", "1.0") for i in range(40)]
    _add(server, token, *wheels)
    for _ in range(2):
        for i in range(40):
            page = server.get(f"/python/latest/simple/bounded-{i}/", headers=JSON).json()
            assert page["versions"] == ["1.0"]
    status = server.get("/__api__/status").json()
    assert status["cache"]["max_bytes"] == 64 * 1024
    assert 0 < status["cache"]["bytes"] <= 64 * 1024, json.dumps(status)
