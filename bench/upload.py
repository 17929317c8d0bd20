"""Print upload throughput and cost of ``POST /upload/pypi/{source}`` against the job ceiling.

Run: .venv/bin/python bench/upload.py [--quick] [--sizes 1G,4G] [--runs 3]   (project root)

Every figure is compared with the **job ceiling**, measured in the same run: a
minimal server (a child process of this script) that does only what every
honest upload server must, on the same file system as Package Manager's
DataDir: receive the body with ``recv_into``, sha256 it, write it, fsync, then
answer 200. It starts writeback every 8 MiB as Package Manager does, so the
ratio measures Package Manager's overhead rather than that strategy; the same
server without the hint is measured at the first size too. Same bodies, same
client, the servers taking turns, best of ``--runs``:

1. One wheel per ``--sizes`` (an incompressible stored payload), sent as twine
   sends it (the form fields, then the ``content`` part, with a Content-Length)
   by a raw-socket client streaming the file with ``sendfile``: into the job
   ceiling and Package Manager on SQLite and on PostgreSQL. For each:
   throughput (body bytes over first byte sent -> last response status line,
   so fsync and the final checks count), the server's CPU seconds for the
   upload, its RSS growth.
2. ``--concurrent`` uploads at once (16 x 64 MiB): aggregate throughput into
   the ceiling and Package Manager, and each stored file's sha256 checked on
   disk and in the index.
3. twine and ``uv publish`` uploading the first size's wheel into the ceiling
   and into Package Manager (SQLite): wall time of the whole command.
4. pypiserver and devpi-server with their own defaults, at ``--peer-size``
   (512 MiB: waitress, which serves both, refuses bodies over 1 GiB), beside
   the ceiling and Package Manager (SQLite) at that size.

Targets (PASS/FAIL in the closing table): Package Manager >= 0.9x the ceiling's
throughput, its CPU <= 1.5x the ceiling's, RSS growth < 64 MiB; the concurrent
aggregate >= 0.8x the ceiling's single upload at the first size, every file
right; each client's wall time into Package Manager <= 1.1x into the ceiling.
MB/s = 10^6 bytes/s. The exit status is 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import http.client
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402

from tests.support.packages import build_wheel, upload_fields  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.server import (  # noqa: E402
    BIN,
    ServerProcess,
    free_port,
    stop_process,
    wait_for,
)

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_SIZES = "1G,4G"
QUICK_SIZES = "256M"
SOURCE = "local-python-src"
REPO = "python"
PROJECT = "bench-upload"
CONCURRENT_PROJECT = "bench-concurrent"

THROUGHPUT_TARGET = 0.9
CPU_TARGET = 1.5
RSS_TARGET_MIB = 64.0
CONCURRENT_TARGET = 0.8
CLIENT_TARGET = 1.1

RSS_INTERVAL = 0.020
CEILING_BUFFER = 1 * MiB
# As Package Manager does (pm.blobs.WRITEBACK_EVERY): the ceiling asks the kernel
# to start writing back every this many bytes, so that the ratio measures
# Package Manager's overhead rather than a writeback strategy.
CEILING_WRITEBACK = 8 * MiB
# Between two uploads: lets the previous one's unlink and writeback settle.
SETTLE = 0.5


# Sizes ------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``1.5GiB``, ``1048576`` -> bytes (binary multiples)."""
    found = _SIZE_RE.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256M, 1G, 4G)")
    number, unit = found.groups()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    size = int(float(number) * scale)
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


def parse_sizes(text: str) -> list[int]:
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def parse_concurrent(text: str) -> tuple[int, int]:
    """``16x64M`` -> (16, 64 MiB)."""
    count, _, size = text.lower().partition("x")
    if not count.isdigit() or int(count) < 1 or not size:
        raise argparse.ArgumentTypeError(f"not COUNTxSIZE: {text!r} (e.g. 16x64M)")
    return int(count), parse_size(size)


def human(size: int) -> str:
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} B"


def mbs(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else 0.0


# The client: twine's body, streamed from disk ----------------------------------------


@dataclass(frozen=True)
class Body:
    """A multipart/form-data body: preamble (fields + content part header), file, epilogue."""

    path: Path
    project: str
    sha256: str
    boundary: str
    preamble: bytes
    epilogue: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return len(self.preamble) + self.path.stat().st_size + len(self.epilogue)


def build_body(directory: Path, size: int, project: str, version: str) -> Body:
    """A wheel of ``size`` payload bytes and the body twine would send for it."""
    wheel = build_wheel(directory, project, version, payload_size=size)
    fields = upload_fields(wheel, project, version)
    boundary = uuid.uuid4().hex
    out = bytearray()
    for key, value in fields:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                f"{value}\r\n").encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    return Body(wheel, project, dict(fields)["sha256_digest"], boundary, bytes(out),
                f"\r\n--{boundary}--\r\n".encode())


@dataclass
class UploadResult:
    status: int
    body: bytes
    started: float  # perf_counter() at the first byte sent
    answered: float  # perf_counter() at the response's status line
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    def describe(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        return f"{self.status} {self.body.decode('utf-8', 'replace').strip()[:120]}"


def _read_response(sock: socket.socket) -> tuple[int, bytes, float]:
    """Status, (start of the) body, and when the status line arrived."""
    buffer = bytearray()
    status_at = 0.0
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        status_at = status_at or time.perf_counter()
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError(f"no HTTP response (got {bytes(buffer[:80])!r})")
    body = bytearray(rest)
    while len(body) < 4096 and (chunk := sock.recv(65536)):  # "Connection: close"
        body += chunk
    return int(parts[1]), bytes(body), status_at


def upload(port: int, path: str, body: Body, auth: str, timeout: float) -> UploadResult:
    """POST ``body`` to 127.0.0.1:port as twine would, streaming the file with sendfile."""
    credentials = base64.b64encode(auth.encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"User-Agent: twine/7.0.0 (bench/upload.py)\r\nAccept: */*\r\n"
        f"Authorization: Basic {credentials}\r\nContent-Type: {body.content_type}\r\n"
        f"Content-Length: {body.length}\r\nConnection: close\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.sendall(head + body.preamble)
                with open(body.path, "rb") as f:
                    sock.sendfile(f)
                sock.sendall(body.epilogue)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (a refusal) before reading everything
            status, text, status_at = _read_response(sock)
    except (OSError, ValueError) as e:
        return UploadResult(0, b"", start, time.perf_counter(), f"{type(e).__name__}: {e}")
    return UploadResult(status, text, start, status_at)


def upload_timeout(size: int) -> float:
    # Generous: no server on this machine should be slower than 5 MB/s.
    return 60.0 + size / 5e6


# The job ceiling: receive, sha256, write, fsync ----------------------------------------


def ceiling_main(directory: Path, writeback: bool) -> None:
    """Serve uploads (a thread each) into ``directory`` until killed; print the port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(listener.getsockname()[1], flush=True)
    start_writeback = _sync_file_range() if writeback else None
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_ceiling_upload, args=(conn, directory, start_writeback),
                         daemon=True).start()


def _sync_file_range() -> Callable[[int, int, int, int], int]:
    """Linux's ``sync_file_range`` (SYNC_FILE_RANGE_WRITE is 2): start writeback, no wait."""
    func = ctypes.CDLL(None, use_errno=True).sync_file_range
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], func)


def _ceiling_upload(conn: socket.socket, directory: Path,
                    start_writeback: Callable[[int, int, int, int], int] | None) -> None:
    """One upload, made durable before the answer, as any honest server must."""
    path = directory / f"{uuid.uuid4().hex}.part"
    buffer = memoryview(bytearray(CEILING_BUFFER))
    digest = hashlib.sha256()
    try:
        stream = cast(io.BufferedReader, conn.makefile("rb", buffering=CEILING_BUFFER))
        with conn, stream:
            headers = _head(stream)
            with open(path, "xb", buffering=0) as out:
                written = flushed = 0
                for piece in _body(stream, headers, buffer):
                    digest.update(piece)
                    _write_all(out, piece)
                    written += len(piece)
                    if start_writeback is not None and written - flushed >= CEILING_WRITEBACK:
                        start_writeback(out.fileno(), flushed, written - flushed, 2)
                        flushed = written
                os.fsync(out.fileno())
            answer = f"{digest.hexdigest()}\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
    except (OSError, ValueError):
        pass
    finally:
        path.unlink(missing_ok=True)


def _head(stream: io.BufferedReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    stream.readline()  # the request line
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _body(stream: io.BufferedReader, headers: dict[str, str],
          buffer: memoryview) -> Iterator[memoryview]:
    """The body's bytes, by Content-Length or chunked (uv publish streams its file)."""
    if "chunked" not in headers.get("transfer-encoding", "").lower():
        yield from _exactly(stream, int(headers.get("content-length", "0")), buffer)
        return
    while size := int(stream.readline().split(b";")[0], 16):
        yield from _exactly(stream, size, buffer)
        stream.readline()
    while stream.readline() not in (b"\r\n", b"\n", b""):
        pass  # trailers


def _exactly(stream: io.BufferedReader, size: int, buffer: memoryview) -> Iterator[memoryview]:
    while size > 0:
        n = stream.readinto(buffer[:min(size, len(buffer))])
        if not n:
            raise ConnectionError("the body ended early")
        yield buffer[:n]
        size -= n


def _write_all(out: BinaryIO, data: memoryview) -> None:
    while data:
        data = data[out.write(data) or 0:]


# Measuring a process -------------------------------------------------------------------


class Meter:
    """A process's CPU seconds and RSS peak over a window, and what the rest of the
    machine did meanwhile (other engineers' tests share it; they make figures lower)."""

    def __init__(self, pid: int, *, bench_pids: Sequence[int] = ()) -> None:
        self._process = psutil.Process(pid)
        self._others = [psutil.Process(p) for p in bench_pids]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = self.peak = 0
        self.cpu_s = self.wall_s = self.others_cores = 0.0

    def _cpu(self, process: Any) -> float:
        try:
            times = process.cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return 0.0

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            try:
                self.peak = max(self.peak, int(self._process.memory_info().rss))
            except psutil.Error:
                return

    def __enter__(self) -> Meter:
        self.baseline = self.peak = int(self._process.memory_info().rss)
        self._start = (time.perf_counter(), self._cpu(self._process), self._machine(),
                       sum(self._cpu(p) for p in self._others))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall, cpu, machine, ours = self._start
        self.wall_s = time.perf_counter() - wall
        self.cpu_s = self._cpu(self._process) - cpu
        ours = self.cpu_s + sum(self._cpu(p) for p in self._others) - ours
        self.others_cores = max(0.0, self._machine() - machine - ours) / self.wall_s

    @property
    def rss_growth(self) -> int:
        return self.peak - self.baseline


@dataclass
class Measured:
    """One upload (or one batch of concurrent ones) into one server."""

    seconds: float
    nbytes: int
    cpu_s: float
    rss_growth: int
    others_cores: float
    ok: bool
    note: str = ""

    @property
    def mbs(self) -> float:
        return mbs(self.nbytes, self.seconds) if self.ok else 0.0

    def line(self) -> str:
        if not self.ok:
            return f"FAILED ({self.note})"
        return (f"{self.mbs:7.0f} MB/s  {self.seconds:6.2f} s  server CPU {self.cpu_s:5.2f} s  "
                f"RSS +{self.rss_growth / MiB:5.1f} MiB  other processes "
                f"{self.others_cores:.2f} cores" + (f"  [{self.note}]" if self.note else ""))


def best(runs: Sequence[Measured]) -> Measured | None:
    """The fastest good run, with the least CPU and the most RSS growth of all good runs:
    best of N for speed and cost, worst of N for memory."""
    good = [r for r in runs if r.ok]
    if not good:
        return None
    fastest = min(good, key=lambda r: r.seconds)
    return Measured(fastest.seconds, fastest.nbytes, min(r.cpu_s for r in good),
                    max(r.rss_growth for r in good), fastest.others_cores, True)


# The servers ---------------------------------------------------------------------------


class Target:
    """A server an upload can go to."""

    label = ""
    path = "/"
    auth = "bench:bench"

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def before(self) -> None:
        """Make the server ready to take the bodies of one run as new files."""

    def after(self, bodies: Sequence[Body]) -> str:
        """Remove what a run stored; say what was wrong with it ('' if nothing)."""
        return ""

    def stop(self) -> None:
        pass


class Ceiling(Target):
    label = "job ceiling"

    def __init__(self, directory: Path, *, writeback: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if not writeback:
            self.label = "minimal server, no writeback hint"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--ceiling", str(directory),
             *([] if writeback else ["--plain"])],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self._port = int(self.process.stdout.readline())

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)


class PackageManager(Target):
    path = f"/upload/pypi/{SOURCE}/"

    def __init__(self, label: str, server: ServerProcess) -> None:
        self.label = label
        self.server = server
        server.start()
        self.auth = f"__token__:{server.setup_python(SOURCE, REPO)}"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def after(self, bodies: Sequence[Body]) -> str:
        """Check every file is listed and stored with its sha256, then remove them."""
        problems = []
        for project in sorted({b.project for b in bodies}):
            listed = self._listed(project)
            for body in (b for b in bodies if b.project == project):
                stored = self._blob(body.sha256)
                if listed.get(body.path.name) != body.sha256:
                    problems.append(f"{body.path.name} listed with {listed.get(body.path.name)}")
                elif not stored.is_file() or _sha256_of(stored) != body.sha256:
                    problems.append(f"{body.path.name} not stored with its sha256")
            self.server.rspm("remove", "package", f"--source={SOURCE}", f"--name={project}@all")
        for body in bodies:
            self._blob(body.sha256).unlink(missing_ok=True)
        return "; ".join(problems)

    def _listed(self, project: str) -> dict[str, str]:
        response = self.server.get(f"/{REPO}/latest/simple/{project}/",
                                   {"Accept": "application/vnd.pypi.simple.v1+json"})
        if response.status != 200:
            return {}
        return {f["filename"]: f["hashes"]["sha256"] for f in response.json()["files"]}

    def _blob(self, sha256: str) -> Path:
        assert self.server.data_dir is not None
        return self.server.data_dir / "files" / sha256[:2] / sha256[2:4] / sha256

    def stop(self) -> None:
        self.server.cleanup()


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Pypiserver(Target):
    """pypiserver with its defaults (``--server auto``), fresh for every run."""

    label = "pypiserver"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def before(self) -> None:
        packages = self.root / "packages"
        packages.mkdir(parents=True, exist_ok=True)
        self._port = free_port()
        with open(self.root / "pypiserver.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "pypi-server"), "run", "-p", str(self._port), "-i", "127.0.0.1",
                 "-a", ".", "-P", ".", str(packages)],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _answers(self._port, "/health", self.process), 30, "pypiserver")

    def after(self, bodies: Sequence[Body]) -> str:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        return ""

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)


class Devpi(Target):
    """devpi-server with its defaults; a new volatile index for every run."""

    label = "devpi-server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._port = free_port()
        self._runs = 0
        server_dir = root / "server"
        subprocess.run([str(BIN / "devpi-init"), "--serverdir", str(server_dir),
                        "--no-root-pypi"], check=True, capture_output=True)
        with open(root / "devpi.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "devpi-server"), "--serverdir", str(server_dir), "--host",
                 "127.0.0.1", "--port", str(self._port), "--offline-mode"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _answers(self._port, "/+api", self.process), 60, "devpi-server")
        self._devpi("use", f"http://127.0.0.1:{self._port}")
        self._devpi("user", "-c", "bench", "password=bench")
        self._devpi("login", "bench", "--password", "bench")

    def _devpi(self, *args: str) -> None:
        subprocess.run([str(BIN / "devpi"), "--clientdir", str(self.root / "client"), *args],
                       check=True, capture_output=True, timeout=60)

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        return self.process.pid

    def before(self) -> None:
        self._runs += 1
        self.path = f"/bench/run{self._runs}/"
        self._devpi("index", "-c", f"run{self._runs}", "volatile=True", "bases=")

    def after(self, bodies: Sequence[Body]) -> str:
        self._devpi("index", "-y", "--delete", f"run{self._runs}")
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _answers(port: int, path: str, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None and process.poll() is not None:
        raise AssertionError(f"the server exited with {process.returncode}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# The phases ---------------------------------------------------------------------------


def send_all(target: Target, bodies: Sequence[Body]) -> Measured:
    """Upload ``bodies`` at once (one thread each) into ``target``; measure the batch."""
    target.before()
    time.sleep(SETTLE)
    results: list[UploadResult | None] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def one(index: int) -> None:
        barrier.wait()
        results[index] = upload(target.port, target.path, bodies[index], target.auth,
                                upload_timeout(bodies[index].length))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    with Meter(target.pid, bench_pids=[os.getpid()]) as meter:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    done = [r for r in results if r is not None]
    failed = [r.describe() for r in done if not r.ok]
    wrong = target.after(bodies)
    # From the first byte of the first upload to the last status line.
    seconds = max(r.answered for r in done) - min(r.started for r in done)
    return Measured(seconds, sum(b.length for b in bodies), meter.cpu_s, meter.rss_growth,
                    meter.others_cores, not failed and not wrong,
                    failed[0] if failed else wrong)


def alternate(targets: Sequence[Target], bodies: Sequence[Body], runs: int,
              title: str) -> dict[str, list[Measured]]:
    print(f"\n=== {title} ===", flush=True)
    measured: dict[str, list[Measured]] = {t.label: [] for t in targets}
    for run in range(1, runs + 1):
        for target in targets:
            try:
                result = send_all(target, bodies)
            except (AssertionError, OSError, subprocess.SubprocessError) as e:
                result = Measured(0.0, 0, 0.0, 0, 0.0, False, f"{type(e).__name__}: {e}")
            measured[target.label].append(result)
            print(f"  run {run}  {target.label:<24} {result.line()}", flush=True)
    return measured


@dataclass
class ClientRun:
    wall_s: float
    server_cpu_s: float
    others_cores: float
    ok: bool
    note: str = ""


def client_command(client: str, target: Target, wheel: Path) -> list[str]:
    url = f"http://127.0.0.1:{target.port}{target.path}"
    user, _, password = target.auth.partition(":")
    if client == "twine":
        return [str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", url, "-u", user, "-p", password, str(wheel)]
    return [str(BIN / "uv"), "publish", "--publish-url", url, "--username", user,
            "--password", password, str(wheel)]


def client_runs(targets: Sequence[Target], body: Body, runs: int,
                home: Path) -> dict[tuple[str, str], list[ClientRun]]:
    print(f"\n=== twine and uv publish, {body.path.name} ===", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWINE_", "UV_"))}
    env.update(HOME=str(home), NO_COLOR="1", UV_NO_CONFIG="1",
               UV_CACHE_DIR=str(home / "uv-cache"),
               PYTHONKEYRING_BACKEND="keyring.backends.null.Keyring")
    measured: dict[tuple[str, str], list[ClientRun]] = {}
    for run in range(1, runs + 1):
        for client in ("twine", "uv publish"):
            for target in targets:
                target.before()
                time.sleep(SETTLE)
                with Meter(target.pid) as meter:
                    done = subprocess.run(client_command(client, target, body.path), env=env,
                                          capture_output=True, text=True,
                                          timeout=upload_timeout(body.length))
                note = "" if done.returncode == 0 else (done.stdout + done.stderr)[-300:]
                note = note or target.after([body])
                result = ClientRun(meter.wall_s, meter.cpu_s, meter.others_cores, not note, note)
                measured.setdefault((client, target.label), []).append(result)
                shown = (f"{result.wall_s:6.2f} s wall  server CPU {result.server_cpu_s:5.2f} s  "
                         f"other processes {result.others_cores:.2f} cores"
                         if result.ok else f"FAILED: {note.strip()}")
                print(f"  run {run}  {client:<10} -> {target.label:<24} {shown}", flush=True)
    return measured


# The summary -------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    value: str
    passed: bool | None  # None: a figure without a target


def single_rows(label: str, measured: dict[str, list[Measured]], pm_labels: Sequence[str],
                peers: Sequence[str]) -> list[Row]:
    rows: list[Row] = []
    ceiling = best(measured[Ceiling.label])
    if ceiling is None:
        return [Row(f"{label}: job ceiling", "failed", False)]
    rows.append(Row(f"{label}: job ceiling", f"{ceiling.mbs:.0f} MB/s, CPU {ceiling.cpu_s:.2f} s",
                    None))
    for name in pm_labels:
        pm = best(measured[name])
        if pm is None:
            rows.append(Row(f"{label}: {name}", "failed", False))
            continue
        ratio = pm.mbs / ceiling.mbs
        rows.append(Row(f"{label}: {name} throughput >= {THROUGHPUT_TARGET}x ceiling",
                        f"{ratio:.2f}x ({pm.mbs:.0f} MB/s)", ratio >= THROUGHPUT_TARGET))
        cpu = pm.cpu_s / ceiling.cpu_s
        rows.append(Row(f"{label}: {name} server CPU <= {CPU_TARGET}x ceiling",
                        f"{cpu:.2f}x ({pm.cpu_s:.2f} s)", cpu <= CPU_TARGET))
        rows.append(Row(f"{label}: {name} RSS growth < {RSS_TARGET_MIB:.0f} MiB",
                        f"{pm.rss_growth / MiB:.1f} MiB", pm.rss_growth / MiB < RSS_TARGET_MIB))
    for name in peers:
        peer = best(measured.get(name, []))
        rows.append(Row(f"{label}: {name}", "failed" if peer is None else
                        f"{peer.mbs:.0f} MB/s ({peer.mbs / ceiling.mbs:.2f}x), CPU "
                        f"{peer.cpu_s:.2f} s, RSS +{peer.rss_growth / MiB:.0f} MiB", None))
    return rows


def concurrent_rows(label: str, measured: dict[str, list[Measured]], pm_labels: Sequence[str],
                    single_ceiling: Measured | None) -> list[Row]:
    rows: list[Row] = []
    ceiling = best(measured[Ceiling.label])
    if ceiling is not None:
        rows.append(Row(f"{label}: job ceiling (aggregate)", f"{ceiling.mbs:.0f} MB/s", None))
    for name in pm_labels:
        runs = measured[name]
        pm = best(runs)
        target = f"{label}: {name} >= {CONCURRENT_TARGET}x ceiling's single upload"
        if pm is None or single_ceiling is None:
            rows.append(Row(target, "failed: " + "; ".join(r.note for r in runs if r.note)[:80],
                            False))
            continue
        ratio = pm.mbs / single_ceiling.mbs
        rows.append(Row(target, f"{ratio:.2f}x ({pm.mbs:.0f} MB/s)", ratio >= CONCURRENT_TARGET))
        wrong = [r.note for r in runs if not r.ok]
        rows.append(Row(f"{label}: {name} every file stored with its sha256",
                        f"{sum(r.ok for r in runs)}/{len(runs)} runs right"
                        + (f" ({wrong[0][:60]})" if wrong else ""), not wrong))
    return rows


def client_rows(measured: dict[tuple[str, str], list[ClientRun]], pm_label: str) -> list[Row]:
    rows: list[Row] = []
    for client in ("twine", "uv publish"):
        into_ceiling = [r.wall_s for r in measured.get((client, Ceiling.label), []) if r.ok]
        into_pm = [r.wall_s for r in measured.get((client, pm_label), []) if r.ok]
        target = f"{client}: wall time into {pm_label} <= {CLIENT_TARGET}x ceiling"
        if not into_ceiling or not into_pm:
            rows.append(Row(target, "failed", False))
            continue
        ratio = min(into_pm) / min(into_ceiling)
        rows.append(Row(target, f"{ratio:.2f}x ({min(into_pm):.2f} s / {min(into_ceiling):.2f} s)",
                        ratio <= CLIENT_TARGET))
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.target) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print("\n" + "=" * (width + vwidth + 10))
    for r in rows:
        verdict = "" if r.passed is None else ("PASS" if r.passed else "FAIL")
        print(f"{r.target.ljust(width)}  {r.value.ljust(vwidth)}  {verdict}")
    print("=" * (width + vwidth + 10))


# The run ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=None,
                        help=f"wheel sizes (default {DEFAULT_SIZES}); the first one also goes "
                             f"to pypiserver, devpi-server, twine and uv publish")
    parser.add_argument("--quick", action="store_true",
                        help=f"--sizes {QUICK_SIZES} --concurrent 4x32M --runs 2")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs of every measurement, servers taking turns (default 3)")
    parser.add_argument("--concurrent", type=parse_concurrent, default=None,
                        help="COUNTxSIZE uploads at once (default 16x64M)")
    parser.add_argument("--no-postgres", action="store_true",
                        help="skip Package Manager on PostgreSQL")
    parser.add_argument("--no-peers", action="store_true", help="skip pypiserver and devpi")
    parser.add_argument("--no-clients", action="store_true", help="skip twine and uv publish")
    parser.add_argument("--peer-size", type=parse_size, default=None,
                        help="wheel size for pypiserver and devpi-server (default 512M: "
                             "waitress, under both, refuses bodies over 1 GiB by default)")
    parser.add_argument("--ceiling", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = parse_sizes(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.runs is None:
        args.runs = 2 if args.quick else 3
    if args.concurrent is None:
        args.concurrent = (4, 32 * MiB) if args.quick else (16, 64 * MiB)
    if args.peer_size is None:
        args.peer_size = 64 * MiB if args.quick else 512 * MiB
    return args


def made(directory: Path) -> Path:
    directory.mkdir(parents=True)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ceiling is not None:
        ceiling_main(args.ceiling, writeback=not args.plain)
        return 0

    def stopped(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stopped)
    sizes: list[int] = args.sizes
    workdir = Path(tempfile.mkdtemp(prefix="pm-bench-upload-", dir="/tmp"))
    print(f"bench/upload.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / GiB:.0f} GiB RAM; work dir {workdir} (the "
          f"ceiling and every server write there); {args.runs} runs, best of them")
    targets: list[Target] = []
    rows: list[Row] = []
    cluster: PostgresCluster | None = None
    started = time.perf_counter()
    try:
        ceiling = Ceiling(workdir / "ceiling")
        plain = Ceiling(workdir / "plain", writeback=False)
        targets += [ceiling, plain]
        sqlite = PackageManager("Package Manager (SQLite)",
                                ServerProcess(root=made(workdir / "pm")))
        targets.append(sqlite)
        pms: list[Target] = [sqlite]
        if not args.no_postgres:
            # In a directory of its own: the postgres account cannot enter workdir.
            cluster = PostgresCluster()
            url = cluster.start().create_database("packagemanager")
            postgres = PackageManager("Package Manager (PostgreSQL)", ServerProcess(
                root=made(workdir / "pm-pg"), provider="postgres", postgres_url=url))
            targets.append(postgres)
            pms.append(postgres)
        peers: list[Target] = []
        if not args.no_peers:
            peers = [Pypiserver(workdir / "pypiserver"), Devpi(workdir / "devpi")]
            targets.extend(peers)
        pm_labels = [t.label for t in pms]
        print(f"job ceiling on :{ceiling.port}; " + "; ".join(
            f"{t.label} on :{t.port}" for t in targets[1:] if t.port), flush=True)

        first: Body | None = None
        first_ceiling: Measured | None = None
        for index, size in enumerate(sizes):
            body = build_body(workdir, size, PROJECT, f"1.0.{index}")
            print(f"\nbuilt {body.path.name}: {body.length:,} bytes of body", flush=True)
            order = [ceiling, *pms, *([plain] if index == 0 else [])]
            measured = alternate(order, [body], args.runs, f"{human(size)} wheel")
            rows += single_rows(human(size), measured, pm_labels,
                                [plain.label] if index == 0 else [])
            if index == 0:
                first, first_ceiling = body, best(measured[ceiling.label])
            else:
                body.path.unlink()

        count, size = args.concurrent
        (workdir / "concurrent").mkdir()
        bodies = [build_body(workdir / "concurrent", size, CONCURRENT_PROJECT, f"2.0.{i}")
                  for i in range(count)]
        measured = alternate([ceiling, *pms], bodies, args.runs,
                             f"{count} concurrent uploads of {human(size)}")
        rows += concurrent_rows(f"{count} x {human(size)}", measured, pm_labels, first_ceiling)
        shutil.rmtree(workdir / "concurrent")

        if not args.no_clients and first is not None:
            clients = client_runs([ceiling, sqlite], first, args.runs, workdir / "home")
            rows += client_rows(clients, sqlite.label)

        if peers:
            body = build_body(workdir, args.peer_size, PROJECT, "3.0.0")
            measured = alternate([ceiling, sqlite, *peers], [body], args.runs,
                                 f"{human(args.peer_size)} wheel, peers")
            rows += single_rows(f"{human(args.peer_size)}", measured, [],
                                [sqlite.label, *(p.label for p in peers)])
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except Exception as e:
        print(f"\nbenchmark error: {type(e).__name__}: {e}", flush=True)
        for target in targets:
            if isinstance(target, PackageManager) and target.server.log():
                print(f"{target.label} log (tail):\n{target.server.log()[-3000:]}", flush=True)
    finally:
        for target in targets:
            target.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal run {time.perf_counter() - started:.0f} s")
    if rows:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
