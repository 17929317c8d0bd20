"""``[Limits]`` on a real server: a slowloris client, an upload over the size limit, and
a token with too many uploads at once, each refused with its status and reason while
the server keeps serving and keeps nothing of the refused uploads."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packages import build_wheel, multipart_body, upload_fields
from tests.support.server import BIN, ServerProcess, wait_for

LIMITS = ("[Limits]\nMaxUploadSize = 1MiB\nHeaderTimeout = 2s\nMaxUploads = 4\n"
          "MaxUploadsPerToken = 1\n")


@pytest.fixture
def limited(make_server: type[ServerProcess]) -> Iterator[tuple[ServerProcess, str]]:
    """A started server with small limits, a Python source and a write token for it."""
    server = make_server(extra_config=LIMITS).start()
    yield server, server.setup_python()


def _twine(server: ServerProcess, token: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = server.env(TWINE_USERNAME="__token__", TWINE_PASSWORD=token, NO_COLOR="1",
                     TWINE_REPOSITORY_URL=server.url("/upload/pypi/local-python-src"))
    return subprocess.run([str(BIN / "twine"), "upload", "--disable-progress-bar",
                           "--non-interactive", str(path)],
                          env=env, capture_output=True, text=True, timeout=120)


def _wheel(where: Path, name: str, payload_size: int = 1024) -> Path:
    where.mkdir()
    return build_wheel(where, name, payload_size=payload_size)


def _stored(server: ServerProcess) -> list[Path]:
    assert server.data_dir is not None
    return [p for p in (server.data_dir / "files").rglob("*") if p.is_file()]


def test_a_slowloris_client_is_cut_off_after_the_header_timeout(
    limited: tuple[ServerProcess, str],
) -> None:
    """A client sending its headers a byte every 100 ms (well inside the idle timeout)
    is answered 408 and disconnected once HeaderTimeout has passed; others are served."""
    server, _ = limited
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    head = b"GET /__api__/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400
    answer = b""
    sock.settimeout(0.1)
    for byte in head:
        try:
            sock.sendall(bytes([byte]))
            answer += sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if answer:
            break
    elapsed = time.monotonic() - started
    sock.close()

    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"headers took over 2 seconds" in answer
    # Sending every byte would take 40 s; the limit cut it off after about 2.
    assert elapsed < 20, elapsed
    assert server.get("/__api__/status").status == 200


def test_twine_upload_over_the_size_limit_is_413_and_nothing_is_kept(
    limited: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """twine uploading a wheel larger than MaxUploadSize fails with the server's 413 reason;
    no file is stored, and a small upload right after succeeds."""
    server, token = limited
    big = _wheel(tmp_path / "big", "big-package", payload_size=3 * 1024 * 1024)
    small = _wheel(tmp_path / "small", "small-package")

    refused = _twine(server, token, big)

    assert refused.returncode != 0
    # twine wraps the reason at its terminal width.
    output = " ".join((refused.stdout + refused.stderr).split())
    assert "413" in output and "at most 1048576 bytes" in output, output
    assert _stored(server) == []
    assert _twine(server, token, small).returncode == 0
    assert [p.name for p in _stored(server)] != []


def test_a_tokens_second_upload_at_once_is_429_with_retry_after(
    limited: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """While one upload of a token is in flight (its body not yet complete), twine with the
    same token is refused 429 and told why; once the first ends, twine succeeds."""
    server, token = limited
    first = _wheel(tmp_path / "first", "first-package")
    second = _wheel(tmp_path / "second", "second-package")
    body, content_type = multipart_body(upload_fields(first, "first-package", "1.0.0"),
                                        [("content", first.name, first.read_bytes())],
                                        "pmlimitsboundary")
    credentials = base64.b64encode(f"__token__:{token}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall((f"POST /upload/pypi/local-python-src/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Basic {credentials}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:-100])
    wait_for(lambda: server.get("/__api__/status").json()["uploads"]["in_flight"] == 1,
             time.monotonic() + 20, "the first upload to take its slot")

    refused = _twine(server, token, second)

    output = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode != 0
    assert "429" in output and "uploads in flight" in output, output
    sock.sendall(body[-100:])
    sock.settimeout(30)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    sock.close()
    assert _twine(server, token, second).returncode == 0
