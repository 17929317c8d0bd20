"""Unit tests for ``rspm add`` (cli.publish): finding files, the multipart body, sending.

Bodies are checked byte for byte; sending runs against the fake server of
tests/support/fakeserver.py, and the progress bar under a real pseudo-terminal.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.client import CliError
from cli.publish import (
    CHUNK_SIZE,
    FilePart,
    MultipartBody,
    Package,
    ProgressBar,
    Reporter,
    Result,
    Skipped,
    SourceFileError,
    file_digest,
    find_packages,
    split_paths,
    summarize,
    summary_line,
    upload_body,
)
from tests.support.fakeserver import TOKEN, FakeRequest, FakeServer, Reply, error, rspm

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SOURCE_PATH = "/__api__/sources/src"
UPLOAD_PATH = "/__api__/sources/src/packages"
WHEEL = "labpy-0.1.0-py3-none-any.whl"
SDIST = "labpy-0.2.0.tar.gz"
ZIP = "labpy-0.3.0.zip"
RPKG = "labR_0.1.0.tar.gz"


def source(kind: str = "local-python") -> Reply:
    return Reply(200, {"guid": "g-1", "name": "src", "type": kind, "created": 0})


def write(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data or path.name.encode() * 3)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """dist/ with Python and R packages, a signature, an orphan .asc, a note, a subdirectory
    and a symbolic link to a directory outside the tree."""
    dist = tmp_path / "dist"
    write(dist / WHEEL)
    write(dist / f"{WHEEL}.asc", b"-----BEGIN PGP SIGNATURE-----")
    write(dist / SDIST)
    write(dist / ZIP)
    write(dist / "orphan.asc")
    write(dist / "notes.txt")
    write(dist / "sub" / RPKG)
    write(tmp_path / "outside" / "other-1.0.tar.gz")
    (dist / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return dist


# Finding the files -------------------------------------------------------------------


def test_python_source_walk_is_sorted_and_classified(tree: Path) -> None:
    """Sorted, each directory before its subdirectories; signatures ride with their
    packages; other files and linked directories are skipped, with the reason."""
    assert find_packages([tree], "local-python") == [
        Package(tree / WHEEL, tree / f"{WHEEL}.asc"),
        Package(tree / SDIST),
        Package(tree / ZIP),
        Skipped(tree / "link", "symbolic link to a directory, not followed"),
        Skipped(tree / "notes.txt", "not a package file"),
        Skipped(tree / "orphan.asc", "not a package file"),
        Package(tree / "sub" / RPKG),
    ]


def test_r_source_takes_only_tar_gz_and_no_signatures(tree: Path) -> None:
    """For a local (R) source only .tar.gz files are packages; a .asc is just a file."""
    items = find_packages([tree], "local")
    assert [i for i in items if isinstance(i, Package)] == [
        Package(tree / SDIST), Package(tree / "sub" / RPKG)]
    skipped = {i.path.name for i in items if isinstance(i, Skipped)}
    assert skipped == {WHEEL, f"{WHEEL}.asc", ZIP, "orphan.asc", "notes.txt", "link"}


def test_files_named_explicitly(tree: Path) -> None:
    """Named files are taken as they are; a file reached twice is sent once; naming a
    package's signature as well is harmless."""
    items = find_packages([tree / SDIST, tree / WHEEL, tree / f"{WHEEL}.asc", tree / SDIST],
                          "local-python")
    assert items == [Package(tree / SDIST), Package(tree / WHEEL, tree / f"{WHEEL}.asc")]
    both = find_packages([tree / "sub", tree], "local-python")
    assert [i.path for i in both].count(tree / "sub" / RPKG) == 1


def test_a_named_file_that_is_not_a_package_is_an_error(tree: Path) -> None:
    """notes.txt or a lone signature named explicitly: an error naming each, and the
    suffixes the source takes."""
    with pytest.raises(CliError) as info:
        find_packages([tree / "notes.txt", tree / WHEEL, tree / "orphan.asc"], "local-python")
    assert str(info.value) == (
        f"'{tree / 'notes.txt'}' is not a package file (a local-python source takes .whl, "
        f".tar.gz, .zip); '{tree / 'orphan.asc'}' is not a package file (a local-python "
        "source takes .whl, .tar.gz, .zip)")
    with pytest.raises(CliError, match=r"a local source takes \.tar\.gz"):
        find_packages([tree / WHEEL], "local")


def test_a_directory_without_packages_is_an_error(tmp_path: Path) -> None:
    """An empty directory, or one of notes only, is reported by name."""
    write(tmp_path / "docs" / "README.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError) as info:
        find_packages([tmp_path / "docs", tmp_path / "empty"], "local-python")
    assert str(info.value) == (f"no package files found under '{tmp_path / 'docs'}'; "
                               f"no package files found under '{tmp_path / 'empty'}'")


def test_an_unreadable_directory_is_skipped_with_the_reason(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subdirectory that cannot be listed is reported as skipped, not silently left out."""
    scandir = os.scandir

    def refuse_sub(path: str) -> object:
        if Path(path) == tree / "sub":
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_sub)
    items = find_packages([tree], "local-python")
    assert items[-1] == Skipped(tree / "sub", "cannot read it: Permission denied")
    assert Package(tree / "sub" / RPKG) not in items


def test_split_paths(tree: Path) -> None:
    """--path is comma-separated and repeatable; any missing path is an error, all named."""
    assert split_paths([f"{tree / WHEEL},{tree / SDIST}", str(tree / "sub")]) == [
        tree / WHEEL, tree / SDIST, tree / "sub"]
    with pytest.raises(CliError) as info:
        split_paths([f"{tree / WHEEL},{tree / 'gone.whl'}", str(tree / "nope")])
    assert str(info.value) == (
        f"no such file or directory: '{tree / 'gone.whl'}', '{tree / 'nope'}'")


# The body ----------------------------------------------------------------------------------


def test_multipart_body_bytes_and_length_are_exact(tmp_path: Path) -> None:
    """Fields, then the signature, then the file; Content-Length is the exact body size."""
    wheel = write(tmp_path / WHEEL, b"wheel bytes\r\n--not-a-boundary")
    signature = write(tmp_path / f"{WHEEL}.asc", b"SIG")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    body = upload_body(Package(wheel, signature), digest, wheel.stat().st_size, replace=True,
                       boundary="BOUNDARY")
    expected = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="sha256_digest"\r\n\r\n'
        + digest.encode() + b"\r\n"
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="replace"\r\n\r\ntrue\r\n'
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="gpg_signature"; '
        b'filename="labpy-0.1.0-py3-none-any.whl.asc"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\nSIG\r\n"
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="content"; '
        b'filename="labpy-0.1.0-py3-none-any.whl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"wheel bytes\r\n--not-a-boundary\r\n"
        b"--BOUNDARY--\r\n"
    )
    assert b"".join(body.chunks()) == expected
    assert body.length == len(expected)
    assert body.content_type == "multipart/form-data; boundary=BOUNDARY"
    assert body.file_bytes == 3 + wheel.stat().st_size


def test_minimal_body_has_no_replace_and_no_signature(tmp_path: Path) -> None:
    """Without --replace or a signature: the digest and the file only."""
    rpkg = write(tmp_path / RPKG, b"R")
    body = upload_body(Package(rpkg), "0" * 64, 1, replace=False, boundary="B")
    assert b"".join(body.chunks()) == (
        b'--B\r\nContent-Disposition: form-data; name="sha256_digest"\r\n\r\n'
        + b"0" * 64 + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="content"; filename="labR_0.1.0.tar.gz"'
        b"\r\nContent-Type: application/octet-stream\r\n\r\nR\r\n--B--\r\n")


def test_awkward_filenames_are_quoted(tmp_path: Path) -> None:
    """Quotes and backslashes are escaped; a non-ASCII name also goes as RFC 8187 filename*."""
    odd = write(tmp_path / 'a"b\\c.whl', b"x")
    text = b"".join(MultipartBody([], [FilePart("content", odd, 1)], "B").chunks())
    assert b'filename="a\\"b\\\\c.whl"\r\n' in text
    accented = write(tmp_path / "caf\u00e9-1.0.tar.gz", b"x")
    text = b"".join(MultipartBody([], [FilePart("content", accented, 1)], "B").chunks())
    assert b"filename=\"caf?-1.0.tar.gz\"; filename*=UTF-8''caf%C3%A9-1.0.tar.gz\r\n" in text


def test_files_are_read_in_chunks(tmp_path: Path) -> None:
    """A file several chunks long is read and yielded CHUNK_SIZE bytes at a time at most."""
    big = tmp_path / "big.whl"
    with big.open("wb") as f:
        f.truncate(3 * CHUNK_SIZE + 12345)
    size = big.stat().st_size
    reported: list[int] = []
    body = MultipartBody([("a", "b")], [FilePart("content", big, size)], "B")
    chunks = list(body.chunks(on_file_bytes=reported.append))
    assert max(len(c) for c in chunks) == CHUNK_SIZE
    assert reported == [CHUNK_SIZE] * 3 + [12345]
    assert sum(len(c) for c in chunks) == body.length
    assert file_digest(big) == (hashlib.sha256(big.read_bytes()).hexdigest(), size)


def test_a_file_that_shrinks_while_sent_is_an_error(tmp_path: Path) -> None:
    """Fewer bytes on disk than announced: SourceFileError, never a short body."""
    short = write(tmp_path / WHEEL, b"12345")
    body = MultipartBody([], [FilePart("content", short, 10)], "B")
    with pytest.raises(SourceFileError, match="got shorter"):
        b"".join(body.chunks())


def test_uploads_stream_without_holding_files_in_memory(tmp_path: Path) -> None:
    """A 48 MiB file goes through hashing and sending with a few MiB of memory at most."""
    big = tmp_path / "labpy-9.0.0.tar.gz"
    with big.open("wb") as f:
        f.truncate(48 * MIB)
    received: list[tuple[str, int, str | None]] = []

    def store(request: FakeRequest) -> Reply:
        received.append((*request.digest(), request.headers.get("Content-Length")))
        return Reply(201, {"status": "added"})

    with FakeServer() as server:
        server.on("GET", SOURCE_PATH, source())
        server.on("POST", UPLOAD_PATH, store)
        tracemalloc.start()
        try:
            result = rspm("add", "--source=src", f"--path={big}", server=server)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert peak < 6 * MIB, peak
    (_, size, length), = received
    assert str(size) == length and size > 48 * MIB


# Sending ----------------------------------------------------------------------------------


def uploads(server: FakeServer) -> list[dict[str, bytes | str | None]]:
    """The uploads received, as {part name: data} plus the file's name."""
    found = []
    for request in server.made("POST", UPLOAD_PATH):
        if request.body:
            parts = request.parts()
            entry: dict[str, bytes | str | None] = {p.name: p.data for p in parts}
            entry["filename"] = next(p.filename for p in parts if p.name == "content")
            found.append(entry)
    return found


def answer_by_name(request: FakeRequest) -> Reply:
    """Added for the wheel, unchanged for the sdist, a conflict for the zip."""
    parts = {p.name: p for p in request.parts()}
    name = parts["content"].filename
    if name == ZIP:
        return error(409, f"'{name}' already exists in source 'src' with different contents")
    status = "unchanged" if name == SDIST else "replaced" if "replace" in parts else "added"
    return Reply(200 if status == "unchanged" else 201, {
        "status": status, "source": "src", "filename": name,
        "signature_added": "gpg_signature" in parts})


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        fake.on("GET", SOURCE_PATH, source())
        fake.on("POST", UPLOAD_PATH, answer_by_name)
        yield fake


def test_add_reports_each_file_and_a_summary(server: FakeServer, tree: Path) -> None:
    """Every file is tried after a refusal; lines in Posit's words; exit 1 on a failure."""
    result = rspm("add", "--source=src", f"--path={tree}", server=server)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"Added package '{WHEEL}'",
        f"Unchanged package '{SDIST}' (already present with the same contents)",
        f"Skipped '{tree / 'link'}' (symbolic link to a directory, not followed)",
        f"Skipped '{tree / 'notes.txt'}' (not a package file)",
        f"Skipped '{tree / 'orphan.asc'}' (not a package file)",
        f"Added package '{RPKG}'",
        "2 added, 1 unchanged, 0 replaced, 1 failed, 3 skipped",
    ]
    assert result.stderr == (
        f"Failed to add package '{ZIP}': '{ZIP}' already exists in source 'src' with different "
        "contents (use --replace to replace it)\n")
    sent = uploads(server)
    assert [u["filename"] for u in sent] == [WHEEL, SDIST, ZIP, RPKG]
    assert sent[0]["content"] == (tree / WHEEL).read_bytes()
    assert sent[0]["gpg_signature"] == (tree / f"{WHEEL}.asc").read_bytes()
    paths = [tree / WHEEL, tree / SDIST, tree / ZIP, tree / "sub" / RPKG]
    for entry, path in zip(sent, paths, strict=True):
        assert entry["sha256_digest"] == hashlib.sha256(path.read_bytes()).hexdigest().encode()
        assert "replace" not in entry
    assert [u for u in sent[1:] if "gpg_signature" in u] == []
    assert set(server.connections()) == {1}, "one kept-alive connection for the whole run"
    for request in server.made("POST", UPLOAD_PATH):
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert int(request.headers["Content-Length"]) == len(request.body)


def test_replace_is_sent_and_reported(server: FakeServer, tree: Path) -> None:
    """--replace sends replace=true; a replaced file is said so; all good is exit 0."""
    result = rspm("add", "--source=src", f"--path={tree / WHEEL}", "--replace", server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Replaced package '{WHEEL}'\n0 added, 0 unchanged, 1 replaced, " \
                            "0 failed\n"
    assert uploads(server)[0]["replace"] == b"true"


def test_dry_run_sends_nothing(server: FakeServer, tree: Path) -> None:
    """--dry-run looks up the source's type, lists what would go, and uploads nothing."""
    result = rspm("add", "--source=src", f"--path={tree}", "--dry-run", server=server)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Would add")] == [
        f"Would add package '{n}'" for n in (WHEEL, SDIST, ZIP, RPKG)]
    assert lines[-1] == "4 would be added, 3 skipped"
    assert [r.path for r in server.requests] == [SOURCE_PATH, "/__api__/status"]


def test_json_output_is_one_document(server: FakeServer, tree: Path) -> None:
    """-o json prints only the results and the summary (failures still on stderr)."""
    result = rspm("-o", "json", "add", "--source=src", f"--path={tree}", server=server)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["summary"] == {"added": 2, "unchanged": 1, "replaced": 0, "failed": 1,
                                   "skipped": 3}
    by_name = {r["filename"]: r for r in document["results"]}
    assert by_name[WHEEL] == {"path": str(tree / WHEEL), "filename": WHEEL, "status": "added",
                              "error": None}
    assert by_name[ZIP]["status"] == "failed" and "--replace" in by_name[ZIP]["error"]
    assert by_name["notes.txt"]["status"] == "skipped"
    assert result.stderr.startswith(f"Failed to add package '{ZIP}'")


def test_missing_path_is_an_error_before_any_request(server: FakeServer, tree: Path) -> None:
    """A path that does not exist stops rspm before it sends anything."""
    result = rspm("add", "--source=src", f"--path={tree / WHEEL},{tree / 'gone.whl'}",
                  server=server)
    assert result.exit_code == 1
    assert result.stderr == f"Error: no such file or directory: '{tree / 'gone.whl'}'\n"
    assert server.requests == []


def test_nothing_to_send_is_an_error(server: FakeServer, tmp_path: Path) -> None:
    """A directory with no package file: said so, non-zero exit, no upload."""
    write(tmp_path / "docs" / "README.md")
    result = rspm("add", "--source=src", f"--path={tmp_path / 'docs'}", server=server)
    assert result.exit_code == 1
    assert result.stderr == f"Error: no package files found under '{tmp_path / 'docs'}'\n"
    assert server.made("POST", UPLOAD_PATH) == []


def test_r_source_uploads_have_no_signature(server: FakeServer, tree: Path) -> None:
    """To a local (R) source only .tar.gz files go, never with a signature part."""
    server.on("GET", SOURCE_PATH, source("local"))
    result = rspm("add", "--source=src", f"--path={tree / 'sub'}", server=server)
    assert result.exit_code == 0, result.output
    (sent,) = uploads(server)
    assert sent["filename"] == RPKG and "gpg_signature" not in sent


def test_unknown_source_and_wrong_type(server: FakeServer, tree: Path) -> None:
    """No such source: the server's reason. A source of another type: said so."""
    server.on("GET", SOURCE_PATH, error(404, "no source named 'src'"))
    missing = rspm("add", "--source=src", f"--path={tree}", server=server)
    assert missing.exit_code == 1 and missing.stderr == "Error: no source named 'src'\n"
    server.on("GET", SOURCE_PATH, source("curated-cran"))
    other = rspm("add", "--source=src", f"--path={tree}", server=server)
    assert other.exit_code == 1
    assert "is of type 'curated-cran'" in other.stderr
    assert server.made("POST", UPLOAD_PATH) == []


def test_a_dropped_connection_fails_that_file_only(server: FakeServer, tree: Path) -> None:
    """The server cutting one upload: that file failed (after one retry), the next one is
    sent on a new connection."""

    def drop_the_sdist(request: FakeRequest) -> Reply:
        if request.headers["Content-Length"] == str(sdist_length):
            request.drop(10)
        return answer_by_name(request)

    sdist_length = upload_body(Package(tree / SDIST), "0" * 64, (tree / SDIST).stat().st_size,
                               replace=False).length
    server.on("POST", UPLOAD_PATH, drop_the_sdist)
    result = rspm("add", "--source=src", f"--path={tree / WHEEL},{tree / SDIST},{tree / 'sub'}",
                  server=server)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Failed to add package '{SDIST}': the connection to "
                                    f"{server.address} was lost during POST {UPLOAD_PATH} (")
    assert result.stdout.splitlines() == [f"Added package '{WHEEL}'", f"Added package '{RPKG}'",
                                          "2 added, 0 unchanged, 0 replaced, 1 failed"]
    posts = server.made("POST", UPLOAD_PATH)
    assert [r.connection for r in posts] == [1, 1, 2, 3]


def test_summary_counts_and_line() -> None:
    """The summary names every outcome of a run, and skipped files only when there are any."""
    results = [Result(Path("a"), "added"), Result(Path("b"), "failed", "no"),
               Result(Path("c"), "added")]
    counts = summarize(results, dry_run=False)
    assert counts == {"added": 2, "unchanged": 0, "replaced": 0, "failed": 1, "skipped": 0}
    assert summary_line(counts) == "2 added, 0 unchanged, 0 replaced, 1 failed"
    dry = summarize([Result(Path("a"), "would-add"), Result(Path("n"), "skipped", "x")],
                    dry_run=True)
    assert summary_line(dry) == "1 would be added, 1 skipped"


# Progress ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_line() -> None:
    """Files done, a bar, bytes of the total, the rate in MiB/s, the time left, the file."""
    clock = Clock()
    stream = io.StringIO()
    bar = ProgressBar(stream, 10 * MIB, 4, clock=clock, width=120)
    assert bar.render() == ("0/4 files [----------------------------------------]   0%  "
                            "0 B/10.0 MiB  0.0 MiB/s  ETA --:--")
    bar.begin_file(WHEEL)
    clock.now += 2
    bar.advance(3 * MIB)
    bar.file_done(3 * MIB)
    bar.begin_file(SDIST)
    bar.advance(2 * MIB)
    assert bar.render() == ("1/4 files [####################--------------------]  50%  "
                            "5.0 MiB/10.0 MiB  2.5 MiB/s  ETA 0:02  labpy-0.2.0.tar.gz")
    bar.restart_file()
    assert "30%" in bar.render()
    narrow = ProgressBar(stream, 1, 1, clock=clock, width=40)
    assert len(narrow.render()) == 39


def test_progress_bar_width_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """COLUMNS sets the width (a pty's size may be unset); without it, 80 off a terminal."""
    monkeypatch.setenv("COLUMNS", "60")
    assert len(ProgressBar(io.StringIO(), 1, 1, clock=Clock()).render()) <= 59
    monkeypatch.delenv("COLUMNS")
    bar = ProgressBar(io.StringIO(), 1, 1, clock=Clock())
    bar.begin_file("x" * 200)
    assert len(bar.render()) == 79


def test_lines_are_printed_above_the_bar() -> None:
    """A result line first clears the bar, then the bar is drawn again below it."""
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out, err, progress=True, clock=Clock())
    reporter.start(100, 1)
    reporter.result(Result(Path(WHEEL), "added"))
    reporter.close()
    assert out.getvalue() == f"Added package '{WHEEL}'\n"
    drawn = err.getvalue()
    assert drawn.startswith("\r0/1 files [")
    clear = drawn.index("\r\x1b[K")
    assert "\r0/1 files [" in drawn[clear + 4:], "redrawn after the line"
    assert drawn.endswith("\n")


def _read_until_exit(fd: int, process: subprocess.Popen[bytes], deadline: float) -> bytes:
    output = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not data:
                break
            output += data
        elif process.poll() is not None:
            break
    return output


def test_progress_bar_on_a_real_terminal(server: FakeServer, tree: Path) -> None:
    """With stderr a pty, the bar (files, MiB/s) is drawn there; results still go to stdout."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PACKAGEMANAGER_ADDRESS": server.address,
           "PACKAGEMANAGER_TOKEN": TOKEN}
    env.pop("PACKAGEMANAGER_CONFIG", None)
    env.pop("COLUMNS", None)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from cli.main import main; main()", "add", "--source=src",
             f"--path={tree}"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=terminal)
        os.close(terminal)
        screen = _read_until_exit(controller, process, time.monotonic() + 60).decode()
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert process.returncode == 1
    assert re.search(r"\r4/4 files \[#{10,40}\] 100%  263 B/263 B  [0-9.]+ MiB/s  ETA 0:00", screen)
    assert "MiB/s" in screen and "ETA" in screen
    assert f"Failed to add package '{ZIP}'" in screen
    assert "Traceback" not in screen
    assert stdout.decode().splitlines()[-1] == "2 added, 1 unchanged, 0 replaced, 1 failed, " \
                                                "3 skipped"
