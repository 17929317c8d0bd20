"""The server as an administrator meets it: twistd, the config file, rspm, restarts."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.support.packages import build_wheel, digests, multipart_body, upload_fields
from tests.support.postgres import PostgresCluster
from tests.support.server import BIN, ServerProcess, free_port, http, wait_for


def test_runs_from_an_installed_copy(tmp_path: object) -> None:
    """The virtualenv's pm is an installed copy, not the checkout (editable installs hide bugs)."""
    out = subprocess.run(
        [str(BIN / "python"), "-c", "import pm, twisted.plugins.packagemanager_plugin as p;"
         "print(pm.__file__); print(p.__file__)"],
        cwd="/", capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all("site-packages" in path for path in out), out


def test_twistd_lists_the_plugin() -> None:
    """`twistd --help` lists packagemanager, and its own --help documents --config."""
    listing = subprocess.run([str(BIN / "twistd"), "--help"], capture_output=True, text=True)
    assert "packagemanager" in listing.stdout
    usage = subprocess.run([str(BIN / "twistd"), "packagemanager", "--help"],
                           capture_output=True, text=True)
    assert "--config" in usage.stdout and "/etc/rstudio-pm/rstudio-pm.gcfg" in usage.stdout


def test_admin_state_survives_a_restart(server: ServerProcess) -> None:
    """Sources, repos and subscriptions made with rspm over the socket persist across restarts."""
    server.rspm("create", "source", "--name=local-python-src", "--type=local-python")
    server.rspm("create", "source", "--name=second", "--type=local-python")
    server.rspm("create", "source", "--name=cran-local", "--type=local")
    server.rspm("create", "repo", "--name=python", "--type=python", "--description=Internal")
    server.rspm("create", "repo", "--name=r", "--type=r")
    server.rspm("subscribe", "--repo=python", "--source=second")
    server.rspm("subscribe", "--repo=python", "--source=local-python-src")
    server.rspm("subscribe", "--repo=r", "--source=cran-local")

    def snapshot() -> tuple[Any, Any]:
        repos = json.loads(server.rspm("--output-format=json", "list", "repos").stdout)
        sources = json.loads(server.rspm("--output-format=json", "list", "sources").stdout)
        return repos, sources

    before = snapshot()
    repos, sources = before
    assert [(r["name"], r["sources"]) for r in repos] == [
        ("python", ["second", "local-python-src"]), ("r", ["cran-local"])]
    assert {s["name"]: s["type"] for s in sources} == {
        "local-python-src": "local-python", "second": "local-python", "cran-local": "local"}
    table = server.rspm("list").stdout
    assert "python" in table and "second, local-python-src" in table and "Internal" in table

    server.restart()
    assert snapshot() == before


def test_status_reports_version_database_and_uptime(server: ServerProcess,
                                                    provider: str) -> None:
    """GET /__api__/status answers JSON with the version, database provider and uptime."""
    status = server.get("/__api__/status").json()
    assert status["database"] == provider
    assert status["version"] == server.rspm("--version").stdout.split()[-1]
    assert status["uptime"] >= 0


def test_admin_socket_is_group_only(make_server: type[ServerProcess]) -> None:
    """The admin socket is created with mode 0660: the file system is the access check."""
    server = make_server().start()
    mode = stat.S_IMODE(os.stat(server.socket_path).st_mode)
    assert mode == 0o660


def test_refusals_change_nothing(make_server: type[ServerProcess]) -> None:
    """Duplicates, unknown types and unknown names fail with a clear message and no change."""
    server = make_server().start()
    server.rspm("create", "source", "--name=src", "--type=local-python")
    server.rspm("create", "repo", "--name=python", "--type=python")
    before = server.rspm("--output-format=json", "list", "sources").stdout

    cases = [
        (("create", "source", "--name=src", "--type=local-python"), "already exists"),
        (("create", "repo", "--name=python", "--type=python"), "already exists"),
        (("create", "source", "--name=x", "--type=cran"), "local, local-python"),
        (("create", "repo", "--name=y", "--type=conda"), "python, r"),
        (("subscribe", "--repo=nope", "--source=src"), "repos: python"),
        (("subscribe", "--repo=python", "--source=nope"), "sources: src"),
    ]
    for args, expected in cases:
        result = server.rspm(*args, check=False)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert server.rspm("--output-format=json", "list", "sources").stdout == before
    assert json.loads(server.rspm("--output-format=json", "list", "repos").stdout)[0][
        "sources"] == []


def test_cli_without_a_running_server(make_server: type[ServerProcess]) -> None:
    """With the server down, rspm names the socket it tried, says why, and exits non-zero."""
    server = make_server()
    result = server.rspm("list", check=False)
    assert result.returncode == 1
    assert str(server.socket_path) in result.stderr
    assert "running" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_finds_the_socket_through_its_config(make_server: type[ServerProcess]) -> None:
    """--config beats PACKAGEMANAGER_CONFIG; a missing config file is reported by path."""
    server = make_server().start()
    env = server.env(PACKAGEMANAGER_CONFIG="/nonexistent/rstudio-pm.gcfg")
    missing = server.rspm("list", env=env, check=False)
    assert missing.returncode == 1 and "/nonexistent/rstudio-pm.gcfg" in missing.stderr
    found = server.rspm("--config", str(server.config_path), "list", "sources", env=env)
    assert "(none)" in found.stdout


def _start_failure(server: ServerProcess) -> tuple[int, str]:
    process = server.launch()
    code = process.wait(60)
    return code, server.log()


def test_bad_config_stops_the_server_with_file_line_and_key(
        make_server: type[ServerProcess]) -> None:
    """An unknown key or a bad value stops the server at start, naming file, line and key."""
    server = make_server(extra_config="[HTTP]\nListen = nonsense\n")
    code, log = _start_failure(server)
    assert code != 0
    line = server.config_path.read_text().splitlines().index("Listen = nonsense") + 1
    assert f"{server.config_path}:{line}" in log and "Listen" in log
    assert "Traceback" not in log

    server = make_server(extra_config="[Server]\nColour = blue\n")
    code, log = _start_failure(server)
    assert code != 0 and "Colour" in log and "unknown key" in log


def test_missing_config_file_stops_the_server(make_server: type[ServerProcess]) -> None:
    """A config path that does not exist is an error naming it, not a silent default."""
    server = make_server()
    server.config_path.unlink()
    code, log = _start_failure(server)
    assert code != 0 and str(server.config_path) in log


def test_unreachable_postgres_at_start(make_server: type[ServerProcess]) -> None:
    """PostgreSQL down at start: a clear error and a non-zero exit, no traceback."""
    url = f"postgres://pm:secret@127.0.0.1:{free_port()}/pm"
    server = make_server(provider="postgres", postgres_url=url)
    code, log = _start_failure(server)
    assert code != 0
    assert "unreachable" in log and "postgres" in log
    assert "secret" not in log and "Traceback" not in log


def test_database_newer_than_the_code(make_server: type[ServerProcess]) -> None:
    """A database migrated by a newer release refuses to start with a clear message."""
    server = make_server().start()
    assert server.stop() == 0
    database = server.data_dir / "db" / "packagemanager.db"  # type: ignore[operator]
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'x', 'now')"
        )
    code, log = _start_failure(server)
    assert code != 0 and "newer" in log and "999" in log


def test_database_lost_while_running_answers_503_and_recovers(
        make_server: type[ServerProcess], postgres_cluster: PostgresCluster) -> None:
    """A PostgreSQL restart under a running server gives 503s, then service resumes."""
    url = postgres_cluster.server.create_database("pm_lost")
    server = make_server(provider="postgres", postgres_url=url).start()
    server.rspm("create", "source", "--name=src", "--type=local-python")
    postgres_cluster.kill()
    try:
        assert server.get("/__api__/status").status == 503
        failed = server.rspm("list", "sources", check=False)
        assert failed.returncode == 1 and "unavailable" in failed.stderr
    finally:
        postgres_cluster.restart()
    wait_for(lambda: server.get("/__api__/status").status == 200, 30, "recovery")
    assert "src" in server.rspm("list", "sources").stdout
    assert server.process is not None and server.process.poll() is None


def test_sigterm_stops_cleanly(make_server: type[ServerProcess]) -> None:
    """SIGTERM stops the listeners, closes the pool and exits 0."""
    server = make_server().start()
    assert server.stop() == 0
    assert "Main loop terminated" in server.log()
    assert not server.socket_path.exists()


def test_abandoned_temp_files_are_removed_at_start(make_server: type[ServerProcess]) -> None:
    """At start, temp uploads nobody holds (a crash, even a moment ago) are removed; one
    whose writer holds its lock (another node's upload in a shared DataDir) and files
    that are not ours are kept."""
    server = make_server(extra_config="[Storage]\nTempMaxAge = 30m\n")
    tmp = server.data_dir / "tmp"  # type: ignore[operator]
    tmp.mkdir(parents=True)
    orphan = tmp / "upload-crashed.part"
    orphan.write_bytes(b"half a wheel")
    live = tmp / "upload-in-progress.part"
    live.write_bytes(b"a wheel arriving")
    keep = tmp / "notes.txt"
    keep.write_text("not ours")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        server.start()
        assert not orphan.exists()
        assert live.exists()
        assert keep.exists()


def test_deleting_a_source_frees_its_files(make_server: type[ServerProcess],
                                            tmp_path: Path) -> None:
    """Housekeeping on its timer removes the files of a deleted source once TempMaxAge
    old, and keeps a file another source still holds."""
    server = make_server(
        extra_config="[Storage]\nTempMaxAge = 2s\nCleanupInterval = 1s\n").start()
    token = server.setup_python("kept")
    server.rspm("create", "source", "--name=gone", "--type=local-python")
    token_gone = server.rspm("create", "token", "--quiet", "--sources=gone",
                             "--scope=sources:write").stdout.strip()
    (tmp_path / "a").mkdir()
    shared = build_wheel(tmp_path / "a")
    only_gone = build_wheel(tmp_path, version="2.0.0")
    for path, version, source, key in ((shared, "1.0.0", "kept", token),
                                       (shared, "1.0.0", "gone", token_gone),
                                       (only_gone, "2.0.0", "gone", token_gone)):
        body, content_type = multipart_body(upload_fields(path, "example-package", version),
                                            [("content", path.name, path.read_bytes())])
        auth = base64.b64encode(f"__token__:{key}".encode()).decode()
        reply = http("POST", f"{server.address}/upload/pypi/{source}/", body,
                     {"Content-Type": content_type, "Authorization": f"Basic {auth}"})
        assert reply.status == 200, reply
    files = server.data_dir / "files"  # type: ignore[operator]

    def stored() -> set[str]:
        return {p.name for p in files.rglob("*") if p.is_file()}

    before = stored()
    server.rspm("delete", "source", "--name=gone")

    wait_for(lambda: len(stored()) == len(before) - 2, 30, "the deleted source's files to go")
    gone_sha = digests(only_gone)["sha256_digest"]
    assert gone_sha in before and gone_sha not in stored()
    assert digests(shared)["sha256_digest"] in stored()
    assert "housekeeping removed 0 abandoned temp files and 2 unused files" in server.log()
