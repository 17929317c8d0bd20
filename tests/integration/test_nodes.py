"""Two nodes on one PostgreSQL database and one DataDir, talked to directly.

No load balancer sits in front: each test sends requests to node A and node B
itself, and checks that what one node did is what the other sees at once (an
upload, a revoked token), that racing uploads of one file end as one file,
that a node killed mid-upload leaves the other serving and nothing
half-published, and that one node's housekeeping never removes what the other
is still writing.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import psycopg2
import pytest

from tests.support.packages import build_wheel, multipart_body, upload_fields
from tests.support.server import Response, ServerProcess, http, wait_for

SOURCE = "local-python-src"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
HOUSEKEEPING = "[Storage]\nTempMaxAge = 2s\nCleanupInterval = 1s\n"
# How long the housekeeping test keeps an upload paused: twice TempMaxAge.
PAUSE = 4.0


def _auth(token: str) -> str:
    return "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()


def _body(wheel: Path, name: str, version: str) -> tuple[bytes, str]:
    return multipart_body(upload_fields(wheel, name, version),
                          [("content", wheel.name, wheel.read_bytes())])


def _upload(server: ServerProcess, token: str, wheel: Path, name: str,
            version: str) -> Response:
    body, content_type = _body(wheel, name, version)
    return http("POST", server.url(f"/upload/pypi/{SOURCE}/"), body,
                {"Content-Type": content_type, "Authorization": _auth(token)}, timeout=60)


def _raw_head(server: ServerProcess, token: str, content_type: str, length: int) -> bytes:
    return (f"POST /upload/pypi/{SOURCE}/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"Authorization: {_auth(token)}\r\nConnection: close\r\n\r\n").encode()


def _rows(pg_url: str) -> list[tuple[str, str]]:
    """(filename, sha256) of every recorded Python file, from the database itself."""
    connection = psycopg2.connect(pg_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT filename, sha256 FROM python_files ORDER BY filename")
            return [(str(a), str(b)) for a, b in cursor.fetchall()]
    finally:
        connection.close()


def _tmp(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "tmp").iterdir())


def _blobs_named(data_dir: Path, sha256: str) -> list[Path]:
    return sorted(p for p in (data_dir / "files").rglob(f"{sha256}*") if p.is_file())


def _assert_consistent(pg_url: str, data_dir: Path) -> None:
    """Every recorded file has exactly one blob, with the recorded contents."""
    for filename, sha in _rows(pg_url):
        blobs = _blobs_named(data_dir, sha)
        assert len(blobs) == 1, (filename, blobs)
        assert hashlib.sha256(blobs[0].read_bytes()).hexdigest() == sha, filename


def _listed(server: ServerProcess, project: str) -> list[str]:
    response = server.get(f"/python/latest/simple/{project}/", headers=JSON)
    if response.status == 404:
        return []
    assert response.status == 200, response
    return [f["filename"] for f in response.json()["files"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sweep_seen(node: ServerProcess, tmp: Path, after: float) -> None:
    """Wait until ``node`` reports a housekeeping removal and ``after`` (monotonic) passed.

    A dead writer's temp file (no lock held) is what a sweep removes at once, so
    decoys are put in ``tmp`` until ``node``'s log counts one more removal than
    when called: that shows its housekeeping swept the directory in the meantime.
    """
    seen = node.log().count("housekeeping removed")
    decoys = 0
    end = time.monotonic() + max(0.0, after - time.monotonic()) + 30
    while node.log().count("housekeeping removed") <= seen or time.monotonic() < after:
        if not any(n.startswith("upload-decoy-") for n in _tmp(tmp.parent)):
            decoys += 1
            (tmp / f"upload-decoy-{time.monotonic_ns()}-{decoys}.part").write_bytes(b"dead")
        assert time.monotonic() < end, f"no housekeeping pass by {node.http_address}"
        time.sleep(0.1)


def _pair(make_server: type[ServerProcess], pg_url: str,
          extra_config: str = "") -> tuple[ServerProcess, ServerProcess]:
    first = make_server(provider="postgres", postgres_url=pg_url, extra_config=extra_config)
    first.start()
    second = make_server(provider="postgres", postgres_url=pg_url, data_dir=first.data_dir,
                         extra_config=extra_config)
    second.start()
    return first, second


@pytest.fixture
def nodes(make_server: type[ServerProcess],
          pg_url: str) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """Nodes A and B sharing the database and DataDir, and a write token minted by A."""
    first, second = _pair(make_server, pg_url)
    token = first.setup_python(SOURCE)
    yield first, second, token
    # B first: A's cleanup removes the DataDir both use.
    second.cleanup()


def test_an_upload_to_one_node_is_in_the_others_index_at_once(
        nodes: tuple[ServerProcess, ServerProcess, str], tmp_path: Path) -> None:
    """A wheel answered 200 by A is listed by B's very next project page request,
    also when B had that page cached before the upload."""
    first, second, token = nodes
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    wheel = build_wheel(tmp_path / "one", "shared", "1.0")
    assert _listed(second, "shared") == []
    assert (reply := _upload(first, token, wheel, "shared", "1.0")).status == 200, reply
    assert _listed(second, "shared") == [wheel.name]
    newer = build_wheel(tmp_path / "two", "shared", "2.0")
    assert (reply := _upload(first, token, newer, "shared", "2.0")).status == 200, reply
    assert _listed(second, "shared") == [wheel.name, newer.name]
    assert second.get(f"/python/latest/files/{newer.name}").body == newer.read_bytes()


def test_a_token_revoked_through_one_node_is_refused_by_the_other(
        nodes: tuple[ServerProcess, ServerProcess, str], tmp_path: Path) -> None:
    """B accepts a token A minted; once it is revoked through A, B's next upload
    with it answers 401 and stores nothing."""
    first, second, token = nodes
    (tmp_path / "one").mkdir()
    accepted = build_wheel(tmp_path / "one", "revoked", "1.0")
    assert (reply := _upload(second, token, accepted, "revoked", "1.0")).status == 200, reply
    first.rspm("revoke", "token", f"--token={token}")
    refused = build_wheel(tmp_path, "revoked", "2.0")
    reply = _upload(second, token, refused, "revoked", "2.0")
    assert reply.status == 401, reply
    assert _listed(second, "revoked") == [accepted.name]


def test_the_same_file_uploaded_to_both_nodes_at_once_is_one_file(
        nodes: tuple[ServerProcess, ServerProcess, str], pg_url: str, tmp_path: Path) -> None:
    """Two uploads of one new wheel, to A and to B at the same moment: both 200,
    one row in python_files, one blob with the wheel's contents, no temp file."""
    first, second, token = nodes
    wheel = build_wheel(tmp_path, "raced", "1.0", payload_size=4 << 20)
    replies: dict[str, Response] = {}
    barrier = threading.Barrier(2)

    def send(server: ServerProcess) -> None:
        barrier.wait(10)
        replies[server.http_address] = _upload(server, token, wheel, "raced", "1.0")

    threads = [threading.Thread(target=send, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(r.status for r in replies.values()) == [200, 200], replies
    sha = _sha256(wheel)
    assert _rows(pg_url) == [(wheel.name, sha)]
    data = first.data_dir
    assert data is not None
    assert len(_blobs_named(data, sha)) == 1
    _assert_consistent(pg_url, data)
    wait_for(lambda: _tmp(data) == [], 10, "no temp file left")


def test_a_node_killed_mid_upload_leaves_the_other_serving_and_nothing_half_published(
        nodes: tuple[ServerProcess, ServerProcess, str], pg_url: str, tmp_path: Path) -> None:
    """A is SIGKILLed with half of a 32 MiB upload received; B answers status and
    takes an upload meanwhile; after A starts again the killed upload has no row,
    no temp file and no listing, and the same upload then succeeds on A."""
    first, second, token = nodes
    data = first.data_dir
    assert data is not None and first.process is not None
    (tmp_path / "big").mkdir()
    big = build_wheel(tmp_path / "big", "killed", "1.0", payload_size=32 << 20)
    body, content_type = _body(big, "killed", "1.0")
    with socket.create_connection(("127.0.0.1", first.port), timeout=10) as conn:
        conn.sendall(_raw_head(first, token, content_type, len(body)) + body[: len(body) // 2])
        wait_for(lambda: any(n.startswith("upload-") for n in _tmp(data)), 10,
                 "the upload's temp file")
        first.process.kill()
        first.process.wait()
    assert second.get("/__api__/status").status == 200
    small = build_wheel(tmp_path, "survivor", "1.0")
    assert (reply := _upload(second, token, small, "survivor", "1.0")).status == 200, reply
    assert _listed(second, "survivor") == [small.name]
    first.start()
    wait_for(lambda: _tmp(data) == [], 10, "the killed upload's temp file to go")
    assert [name for name, _ in _rows(pg_url)] == [small.name]
    assert _listed(first, "killed") == [] and _listed(second, "killed") == []
    _assert_consistent(pg_url, data)
    assert (reply := _upload(first, token, big, "killed", "1.0")).status == 200, reply
    assert _listed(second, "killed") == [big.name]
    _assert_consistent(pg_url, data)


def test_housekeeping_on_one_node_never_removes_what_the_other_is_writing(
        make_server: type[ServerProcess], pg_url: str, tmp_path: Path) -> None:
    """With TempMaxAge 2s and a 1s interval on both nodes, an upload to A paused
    for twice TempMaxAge while B's housekeeping demonstrably sweeps DataDir/tmp
    (it removes abandoned decoys there) still succeeds, and its blob stays
    present and correct through later passes."""
    first, second = _pair(make_server, pg_url, HOUSEKEEPING)
    try:
        token = first.setup_python(SOURCE)
        assert first.data_dir is not None
        tmp = first.data_dir / "tmp"
        wheel = build_wheel(tmp_path, "kept", "1.0", payload_size=8 << 20)
        body, content_type = _body(wheel, "kept", "1.0")
        conn = HTTPConnection("127.0.0.1", first.port, timeout=60)
        try:
            conn.putrequest("POST", f"/upload/pypi/{SOURCE}/")
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Authorization", _auth(token))
            conn.endheaders()
            conn.send(body[: len(body) // 2])
            wait_for(lambda: any(n.startswith("upload-") for n in _tmp(tmp.parent)), 10,
                     "the upload's temp file")
            paused = time.monotonic()
            _sweep_seen(second, tmp, after=paused + PAUSE)
            writing = [n for n in _tmp(tmp.parent) if n.startswith("upload-") and "decoy" not in n]
            assert writing, "the paused upload's temp file was removed"
            conn.send(body[len(body) // 2:])
            reply = conn.getresponse()
            answer = reply.read()
            assert reply.status == 200, answer
        finally:
            conn.close()
        sha = _sha256(wheel)
        assert _rows(pg_url) == [(wheel.name, sha)]
        _sweep_seen(second, tmp, after=time.monotonic())
        blobs = _blobs_named(first.data_dir, sha)
        assert len(blobs) == 1 and _sha256(blobs[0]) == sha, blobs
        assert second.get(f"/python/latest/files/{wheel.name}").body == wheel.read_bytes()
    finally:
        second.cleanup()
