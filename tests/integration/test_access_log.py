"""The access log of a real server: [HTTP] AccessLog, redaction, the flush at stop,
reopening for logrotate."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

from tests.support.server import ServerProcess, wait_for

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJhY2Nlc3MtbG9nIn0.c2lnbmF0dXJlLW9mLWEtdG9rZW4"
REQUESTS = 50


def _request_lines(text: str) -> list[str]:
    """The request part ("GET /... HTTP/1.1") of every line."""
    return [line.split('"')[3] for line in text.splitlines()]


def test_lines_go_redacted_to_the_configured_file_and_are_all_written_at_stop(
        make_server: type[ServerProcess]) -> None:
    """With [HTTP] AccessLog set, every request (public and admin socket) gets a combined
    format line there, with tokens masked, none in the server's own log; the lines of
    requests answered just before SIGTERM are in the file once the server has stopped."""
    server = make_server()
    configured = server.root / "elsewhere" / "pm-access.log"
    server.extra_config = f"[HTTP]\nAccessLog = {configured}\n"
    server.write_config()
    server.start()
    server.rspm("list", "sources")
    assert server.get(f"/python/latest/simple/?token={TOKEN}").status == 404
    for number in range(REQUESTS):
        server.get(f"/__api__/status?n={number}")
    assert server.stop() == 0

    text = configured.read_text()
    requests = _request_lines(text)
    assert requests[-REQUESTS:] == [f"GET /__api__/status?n={n} HTTP/1.1"
                                    for n in range(REQUESTS)]
    assert "GET /python/latest/simple/?token=*** HTTP/1.1" in requests
    assert any(r.startswith("GET /__api__/sources") for r in requests), requests
    assert TOKEN not in text and "eyJ" not in text
    assert stat.S_IMODE(configured.stat().st_mode) & 0o037 == 0
    assert not server.access_log_path.exists()
    assert "/__api__/status?n=" not in server.log()


def test_sighup_and_sigusr1_reopen_the_file_after_a_rotation(
        make_server: type[ServerProcess]) -> None:
    """logrotate's way: rename the file, signal the server; the server keeps running and
    writes later lines to a new file at the configured path, earlier ones to the old."""
    server = make_server().start()
    path = server.access_log_path
    assert stat.S_IMODE(path.stat().st_mode) & 0o037 == 0
    assert server.process is not None
    for number, signum in enumerate((signal.SIGHUP, signal.SIGUSR1)):
        server.get(f"/__api__/status?before={number}")
        rotated = path.with_name(f"access.log.{number + 1}")
        server.access_log()
        path.rename(rotated)
        server.process.send_signal(signum)
        wait_for(path.exists, 10, f"a new {path.name} after {signum.name}")
        server.get(f"/__api__/status?after={number}")
        assert f"GET /__api__/status?after={number} " in server.access_log()
        old = rotated.read_text()
        assert f"GET /__api__/status?before={number} " in old
        assert f"after={number} " not in old
    assert server.process.poll() is None
    assert server.stop() == 0


def test_an_unwritable_access_log_stops_the_start(make_server: type[ServerProcess]) -> None:
    """An AccessLog the server cannot open stops it at start with the key and path."""
    server = make_server()
    blocker = server.root / "not-a-directory"
    blocker.write_text("")
    server.extra_config = f"[HTTP]\nAccessLog = {Path(blocker, 'access.log')}\n"
    server.write_config()
    process = server.launch()
    wait_for(lambda: process.poll() is not None, 30, "the server to give up")
    assert process.returncode == 1
    assert f"cannot start: [HTTP] AccessLog {blocker / 'access.log'}" in server.log()
    assert "Traceback" not in server.log()
