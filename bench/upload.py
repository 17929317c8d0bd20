"""Print upload throughput, memory and responsiveness of ``POST /upload/pypi/{source}``.

Run: .venv/bin/python bench/upload.py [--quick] [--sizes 1G,4G]   (from the project root)

For each size a real wheel (an incompressible stored payload) is built in a temp
dir under /tmp and sent, exactly as twine sends it (multipart/form-data, the form
fields first and the ``content`` part last, with a Content-Length), by one small
raw-socket HTTP/1.1 client that streams the file from disk with ``sendfile``:

1. into a plain socket server in a separate process that reads and drops the body
   (the loopback ceiling of this machine for this client);
2. into a real ``twistd packagemanager`` (SQLite, temp DataDir), while a thread
   samples the server's RSS every 20 ms and another GETs the simple index every
   50 ms;
3. into pypiserver, with --server wsgiref and with its default (auto), first size
   only; a smaller size for a server that cannot take that one in the time or
   memory allowed (say so in the output).

Throughput is body bytes over the time from the first byte sent to the response's
status line (so Package Manager's figure includes its fsync and the final checks).
MB/s is 10^6 bytes/s, MiB/s is 2^20 bytes/s. The figures are printed with a
PASS/FAIL summary against the targets; the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402

from tests.support.packages import build_wheel, upload_fields  # noqa: E402
from tests.support.server import BIN, ServerProcess, free_port, wait_for  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_SIZES = "1G,4G"
QUICK_SIZES = "64M,256M"
SOURCE = "local-python-src"
REPO = "python"
PROJECT = "bench-upload"

# Targets.
CEILING_RATIO_TARGET = 0.50
PYPISERVER_RATIO_TARGET = 8.0
RSS_GROWTH_TARGET_MIB = 64.0
LATENCY_MAX_TARGET_MS = 100.0

RSS_INTERVAL = 0.020
PROBE_INTERVAL = 0.050
SINK_BUFFER = 1 * MiB


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


def human(size: int) -> str:
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} B"


def rate(nbytes: int, seconds: float) -> str:
    if seconds <= 0:
        return "n/a"
    return f"{nbytes / seconds / 1e6:8.1f} MB/s ({nbytes / seconds / MiB:8.1f} MiB/s)"


# The client: twine's body, streamed from disk ----------------------------------------


@dataclass(frozen=True)
class Body:
    """A multipart/form-data body: preamble (fields + content part header), file, epilogue."""

    path: Path
    boundary: str
    preamble: bytes
    epilogue: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    @property
    def length(self) -> int:
        return len(self.preamble) + self.file_size + len(self.epilogue)


def twine_body(path: Path, fields: Sequence[tuple[str, str]]) -> Body:
    """What requests_toolbelt's MultipartEncoder sends for twine: fields, then content."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for key, value in fields:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                f"{value}\r\n").encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    return Body(path, boundary, bytes(out), f"\r\n--{boundary}--\r\n".encode())


@dataclass
class UploadResult:
    status: int
    reason: str
    body: bytes
    nbytes: int
    sent_s: float  # first byte to last body byte handed to the kernel
    total_s: float  # first byte to the response's status line
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200

    def describe(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        text = self.body.decode("utf-8", "replace").strip().replace("\n", " ")[:160]
        return f"{self.status} {self.reason} {text}".strip()


def _dechunk(data: bytes) -> bytes:
    """Decode a chunked body (as much of it as is there)."""
    out = bytearray()
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if not sep or size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


def _read_response(sock: socket.socket, start: float) -> tuple[int, str, bytes, float]:
    """Status, reason, (start of the) body, and the time the status line arrived."""
    buffer = bytearray()
    status_at = 0.0
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        if not status_at:
            status_at = time.perf_counter()
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError(f"no HTTP response (got {bytes(buffer[:80])!r})")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"]) if "content-length" in headers else None
    body = bytearray(rest)
    # We sent "Connection: close": the body ends at its length or at EOF.
    while (length is None or len(body) < length) and len(body) < 65536:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray(_dechunk(bytes(body)))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", bytes(body), status_at - start


def upload(port: int, path: str, body: Body, token: str, timeout: float) -> UploadResult:
    """POST ``body`` to 127.0.0.1:port as twine would, streaming the file with sendfile."""
    auth = base64.b64encode(f"__token__:{token}".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"User-Agent: twine/6.2.0 (bench/upload.py)\r\n"
        f"Accept: */*\r\n"
        f"Authorization: Basic {auth}\r\n"
        f"Content-Type: {body.content_type}\r\n"
        f"Content-Length: {body.length}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode()
    sent_s = 0.0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        send_error: str | None = None
        try:
            sock.sendall(head + body.preamble)
            with open(body.path, "rb") as f:
                sock.sendfile(f)
            sock.sendall(body.epilogue)
            sent_s = time.perf_counter() - start
        except TimeoutError:
            return UploadResult(0, "", b"", body.length, 0.0, time.perf_counter() - start,
                                f"timed out after {timeout:.0f}s while sending")
        except OSError as e:
            # The server may answer (an error) before reading the whole body.
            send_error = f"{type(e).__name__} while sending"
        try:
            status, reason, text, total_s = _read_response(sock, start)
        except (OSError, ValueError) as e:
            return UploadResult(0, "", b"", body.length, sent_s, time.perf_counter() - start,
                                send_error or f"{type(e).__name__}: {e}")
    if send_error is not None and status == 200:
        return UploadResult(status, reason, text, body.length, sent_s, total_s, send_error)
    return UploadResult(status, reason, text, body.length, sent_s, total_s)


# Loopback ceiling: a read-and-drop server in its own process -------------------------


def sink_main() -> None:
    """Accept connections one at a time; read and drop each body; answer 200."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    buffer = bytearray(SINK_BUFFER)
    view = memoryview(buffer)
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            head = bytearray()
            while b"\r\n\r\n" not in head:
                n = conn.recv_into(view)
                if not n:
                    break
                head += view[:n]
            headers, _, early = bytes(head).partition(b"\r\n\r\n")
            found = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", headers)
            left = (int(found.group(1)) if found else 0) - len(early)
            while left > 0:
                n = conn.recv_into(view, min(left, SINK_BUFFER))
                if not n:
                    break
                left -= n
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n")


class Sink:
    """The read-and-drop server, as a child process running this script with --sink."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--sink"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# Samplers -------------------------------------------------------------------------------


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL, *, limit: int | None = None,
                 on_limit: Callable[[], None] | None = None) -> None:
        self._process = psutil.Process(pid)
        self._limit = limit
        self._on_limit = on_limit
        self.exceeded = False
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.baseline = self.rss()
        self.peak = self.baseline
        self.samples = 0
        cpu = self._process.cpu_times()
        self._cpu_start = float(cpu.user + cpu.system)
        self.cpu_s = 0.0

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.rss()
            except psutil.Error:
                return
            self.peak = max(self.peak, value)
            self.samples += 1
            if self._limit is not None and value - self.baseline > self._limit:
                # A server that buffers the body in memory: stop it before the machine does.
                self.exceeded = True
                if self._on_limit is not None:
                    self._on_limit()
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, self.rss())
            cpu = self._process.cpu_times()
            self.cpu_s = float(cpu.user + cpu.system) - self._cpu_start
        except psutil.Error:
            pass

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


class LatencyProbe:
    """GETs a URL on a fresh connection every ``interval`` seconds; records latencies."""

    def __init__(self, port: int, path: str, interval: float = PROBE_INTERVAL) -> None:
        self._port = port
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def get(self) -> float:
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        try:
            conn.request("GET", self._path, headers={"Accept": "text/html"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise ConnectionError(f"GET {self._path}: {response.status} {response.reason}")
        return elapsed

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.latencies.append(self.get())
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """Machine-wide CPU use over a window, split into the given processes and the rest.

    Other engineers' test runs share this machine; "others" says how much CPU they
    took while a figure was measured (a busy machine makes every figure lower).
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self.wall = self.busy = self.ours = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)

    def _ours(self) -> float:
        total = 0.0
        for process in self._processes:
            try:
                t = process.cpu_times()
                total += float(t.user + t.system)
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> CpuMeter:
        self._start = (time.perf_counter(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, ours = self._start
        self.wall = time.perf_counter() - wall
        self.busy = self._busy() - busy
        self.ours = self._ours() - ours

    @property
    def others_cores(self) -> float:
        return max(0.0, self.busy - self.ours) / self.wall if self.wall else 0.0

    def describe(self) -> str:
        if not self.wall:
            return "n/a"
        return (f"machine {self.busy / self.wall:.2f} of {os.cpu_count()} cores busy: "
                f"benchmark processes {self.ours / self.wall:.2f}, "
                f"other processes {self.others_cores:.2f}")


# pypiserver --------------------------------------------------------------------------------


@dataclass
class PypiServer:
    root: Path
    server: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def log_path(self) -> Path:
        return self.root / "pypiserver.log"

    def start(self) -> PypiServer:
        self.packages.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "pypi-server"), "run", "-p", str(self.port), "-i", "127.0.0.1",
                 "-a", ".", "-P", ".", "--disable-fallback", "--server", self.server,
                 str(self.packages)],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"pypiserver exited with {process.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                ok = conn.getresponse().status == 200
                conn.close()
                return ok
            except OSError:
                return False

        wait_for(ready, 30, f"pypiserver on port {self.port}")
        return self

    def adapter(self) -> str:
        """The WSGI server behind ``--server`` (auto: bottle's first importable one)."""
        if self.server != "auto":
            return self.server
        for module, name in (("waitress", "waitress"), ("paste", "paste"),
                             ("twisted.web", "twisted"), ("cherrypy", "cherrypy"),
                             ("cheroot", "cheroot")):
            try:
                if importlib.util.find_spec(module) is not None:
                    return f"auto = {name}"
            except ImportError:
                continue
        return "auto = wsgiref"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class DigestReference:
    """In-memory MB/s of each digest the server verifies, one core each, 1 MiB updates."""

    sha256: float
    blake2_256: float
    md5: float

    @property
    def one_core(self) -> float:
        """All three over the same bytes on one core."""
        return 1 / (1 / self.sha256 + 1 / self.blake2_256 + 1 / self.md5)

    def bound(self, cores: int) -> float:
        """The most any server verifying all three can reach with ``cores`` cores doing
        nothing else: none of the three can be split across cores for one stream."""
        return min(self.sha256, self.blake2_256, self.md5, self.one_core * cores)


def digest_reference(total: int = 512 * MiB, chunk: int = MiB) -> DigestReference:
    data = [os.urandom(chunk) for _ in range(4)]

    def rate(new: Callable[[], Any]) -> float:
        digest = new()
        start = time.perf_counter()
        for i in range(total // chunk):
            digest.update(data[i % len(data)])
        return total / (time.perf_counter() - start) / 1e6

    return DigestReference(
        sha256=rate(hashlib.sha256),
        blake2_256=rate(lambda: hashlib.blake2b(digest_size=32)),
        md5=rate(lambda: hashlib.md5(usedforsecurity=False)),
    )


# The run ------------------------------------------------------------------------------------


@dataclass
class SizeFigures:
    size: int
    wheel_bytes: int
    build_s: float
    ceiling: UploadResult
    ceiling_runs: list[UploadResult]
    pm: UploadResult
    rss_baseline: int
    rss_peak: int
    rss_samples: int
    server_cpu_s: float
    latencies: list[float]
    probe_failures: list[str]
    others_cores: float


@dataclass
class PypiFigures:
    size: int
    result: UploadResult
    adapter: str
    rss_growth: int
    note: str = ""


@dataclass
class Row:
    target: str
    value: str
    passed: bool | None  # None: not measured


def build(directory: Path, size: int, version: str) -> tuple[Path, Body, float]:
    start = time.perf_counter()
    wheel = build_wheel(directory, PROJECT, version, payload_size=size)
    body = twine_body(wheel, upload_fields(wheel, PROJECT, version))
    return wheel, body, time.perf_counter() - start


def upload_timeout(size: int) -> float:
    # Generous: no server on this machine should be slower than 5 MB/s.
    return 60.0 + size / 5e6


def measure_ceiling(body: Body, sink: Sink, runs: int) -> list[tuple[UploadResult, CpuMeter]]:
    results = []
    for _ in range(runs):
        with CpuMeter([os.getpid(), sink.process.pid]) as cpu:
            result = upload(sink.port, "/", body, "unused", upload_timeout(body.length))
        results.append((result, cpu))
    return results


def measure_size(
    workdir: Path, server: ServerProcess, token: str, sink: Sink, size: int, index: int,
    ceiling_runs: int,
) -> tuple[SizeFigures, Body]:
    print(f"\n=== {human(size)} wheel ===", flush=True)
    wheel, body, build_s = build(workdir, size, f"1.0.{index}")
    print(f"built {wheel.name}: {wheel.stat().st_size:,} bytes, multipart body "
          f"{body.length:,} bytes (build + digests {build_s:.1f} s)", flush=True)

    measured = measure_ceiling(body, sink, ceiling_runs)
    for n, (run, cpu) in enumerate(measured, 1):
        print(f"  loopback ceiling run {n}: {rate(run.nbytes, run.total_s)}  "
              f"[{run.total_s:.2f} s, {run.describe()}; {cpu.describe()}]", flush=True)
    runs = [run for run, _ in measured]
    ok_runs = [r for r in runs if r.ok]
    ceiling = min(ok_runs, key=lambda r: r.total_s) if ok_runs else runs[0]

    assert server.process is not None
    time.sleep(0.5)  # let the server settle so the baseline RSS is its idle figure
    with (
        RssSampler(server.process.pid) as rss,
        LatencyProbe(server.port, f"/{REPO}/latest/simple/") as probe,
        CpuMeter([os.getpid(), server.process.pid]) as cpu,
    ):
        result = upload(server.port, f"/upload/pypi/{SOURCE}/", body, token,
                        upload_timeout(body.length))
    print(f"  Package Manager: {rate(result.nbytes, result.total_s)}  [{result.total_s:.2f} s "
          f"to the status line; body sent in {result.sent_s:.2f} s; {result.describe()}]",
          flush=True)
    print(f"  CPU during the upload: {cpu.describe()}", flush=True)
    print(f"  server RSS: baseline {rss.baseline / MiB:.1f} MiB, peak {rss.peak / MiB:.1f} MiB, "
          f"growth {rss.growth / MiB:.1f} MiB ({rss.samples} samples); server CPU "
          f"{rss.cpu_s:.2f} s = {rss.cpu_s / max(result.total_s, 1e-9):.0%} of one core",
          flush=True)
    if probe.latencies:
        print(f"  GET /{REPO}/latest/simple/ during the upload: {len(probe.latencies)} requests, "
              f"median {statistics.median(probe.latencies) * 1e3:.1f} ms, "
              f"max {max(probe.latencies) * 1e3:.1f} ms"
              + (f", {len(probe.failures)} failed ({probe.failures[0]})"
                 if probe.failures else ""), flush=True)
    figures = SizeFigures(
        size=size, wheel_bytes=wheel.stat().st_size, build_s=build_s, ceiling=ceiling,
        ceiling_runs=runs, pm=result, rss_baseline=rss.baseline, rss_peak=rss.peak,
        rss_samples=rss.samples, server_cpu_s=rss.cpu_s, latencies=probe.latencies,
        probe_failures=probe.failures, others_cores=cpu.others_cores,
    )
    return figures, body


def remove_stored(server: ServerProcess, body: Body) -> None:
    """Delete the server's copy of an uploaded wheel: bounded disk use between sizes."""
    text = body.preamble.decode()
    found = re.search(r'name="sha256_digest"\r\n\r\n([0-9a-f]{64})\r\n', text)
    if found is None or server.data_dir is None:
        return
    sha = found.group(1)
    (server.data_dir / "files" / sha[:2] / sha[2:4] / sha).unlink(missing_ok=True)


def pypiserver_once(workdir: Path, adapter: str, body: Body, size: int, timeout: float,
                    rss_limit: int) -> PypiFigures:
    """One upload into a fresh pypiserver; its directory is removed afterwards."""
    pypi = PypiServer(workdir / "pypiserver", adapter)
    try:
        pypi.start()
        assert pypi.process is not None
        deadline = threading.Timer(timeout, pypi.kill)
        deadline.start()
        try:
            with (
                RssSampler(pypi.process.pid, limit=rss_limit, on_limit=pypi.kill) as rss,
                CpuMeter([os.getpid(), pypi.process.pid]) as cpu,
            ):
                result = upload(pypi.port, "/", body, "unused", timeout)
        finally:
            deadline.cancel()
        note = ""
        if rss.exceeded:
            note = f"killed: its RSS grew by more than {rss_limit / GiB:.1f} GiB"
        elif not result.ok and result.total_s >= timeout:
            note = f"killed: no answer within {timeout:.0f} s"
        if note:
            result.error = f"pypiserver {note}"
        print(f"  pypiserver ({pypi.adapter()}), {human(size)}: "
              f"{rate(result.nbytes, result.total_s)}  [{result.total_s:.2f} s; "
              f"{result.describe()}]; RSS {rss.baseline / MiB:.0f} -> {rss.peak / MiB:.0f} MiB; "
              f"{cpu.describe()}", flush=True)
        return PypiFigures(size, result, pypi.adapter(), rss.growth, note)
    finally:
        pypi.stop()
        shutil.rmtree(pypi.root, ignore_errors=True)


def measure_pypiserver(
    workdir: Path, body: Body, size: int, adapters: Sequence[str], fallback: int,
    timeout: float, rss_limit: int, build_fallback: Callable[[int], tuple[Path, Body]],
) -> list[PypiFigures]:
    print(f"\n=== pypiserver ({human(size)}; --server {', '.join(adapters)}) ===", flush=True)
    measured: list[PypiFigures] = []
    for adapter in adapters:
        try:
            first = pypiserver_once(workdir, adapter, body, size, timeout, rss_limit)
        except AssertionError as e:
            print(f"  pypiserver --server {adapter} did not start: {e}", flush=True)
            continue
        if first.result.ok or fallback >= size:
            measured.append(first)
            continue
        print(f"  pypiserver ({first.adapter}) could not take {human(size)} "
              f"({first.result.describe()}); measuring it at {human(fallback)} instead",
              flush=True)
        wheel, small = build_fallback(fallback)
        try:
            retry = pypiserver_once(workdir, adapter, small, fallback, timeout, rss_limit)
        except AssertionError as e:
            print(f"  pypiserver --server {adapter} did not start: {e}", flush=True)
            continue
        finally:
            wheel.unlink(missing_ok=True)
        retry.note = (f"measured at {human(fallback)}: at {human(size)} it failed "
                      f"({first.result.describe()})")
        measured.append(retry)
    return measured


def summary(figures: list[SizeFigures], pypi: list[PypiFigures]) -> list[Row]:
    rows: list[Row] = []
    for f in figures:
        label = human(f.size)
        pm_mbs = f.pm.nbytes / f.pm.total_s / 1e6 if f.pm.ok else 0.0
        ceiling_mbs = f.ceiling.nbytes / f.ceiling.total_s / 1e6 if f.ceiling.ok else 0.0
        if f.pm.ok and ceiling_mbs:
            ratio = pm_mbs / ceiling_mbs
            rows.append(Row(f"{label}: PM / loopback ceiling >= {CEILING_RATIO_TARGET:.0%}",
                            f"{ratio:.1%} ({pm_mbs:.0f} / {ceiling_mbs:.0f} MB/s)",
                            ratio >= CEILING_RATIO_TARGET))
        else:
            rows.append(Row(f"{label}: PM / loopback ceiling >= {CEILING_RATIO_TARGET:.0%}",
                            f"upload failed: {f.pm.describe()}", False))
        rows.append(Row(f"{label}: PM server RSS growth < {RSS_GROWTH_TARGET_MIB:.0f} MiB",
                        f"{(f.rss_peak - f.rss_baseline) / MiB:.1f} MiB "
                        f"({f.rss_baseline / MiB:.0f} -> {f.rss_peak / MiB:.0f} MiB)",
                        (f.rss_peak - f.rss_baseline) / MiB < RSS_GROWTH_TARGET_MIB))
        if f.latencies:
            worst = max(f.latencies) * 1e3
            rows.append(Row(f"{label}: GET simple/ max latency < {LATENCY_MAX_TARGET_MS:.0f} ms",
                            f"max {worst:.1f} ms, median "
                            f"{statistics.median(f.latencies) * 1e3:.1f} ms, "
                            f"n={len(f.latencies)}, failed={len(f.probe_failures)}",
                            worst < LATENCY_MAX_TARGET_MS and not f.probe_failures))
        else:
            rows.append(Row(f"{label}: GET simple/ max latency < {LATENCY_MAX_TARGET_MS:.0f} ms",
                            "no request completed", False))
    first = figures[0] if figures else None
    for py in pypi:
        target = f"PM / pypiserver ({py.adapter}) >= {PYPISERVER_RATIO_TARGET:.0f}x"
        if first is None or not first.pm.ok:
            rows.append(Row(target, "PM upload failed", False))
        elif not py.result.ok:
            rows.append(Row(target, f"pypiserver failed: {py.result.describe()}", None))
        else:
            pm_mbs = first.pm.nbytes / first.pm.total_s / 1e6
            py_mbs = py.result.nbytes / py.result.total_s / 1e6
            ratio = pm_mbs / py_mbs
            where = (f"PM at {human(first.size)}, pypiserver at {human(py.size)}"
                     if py.size != first.size else human(first.size))
            rows.append(Row(target, f"{ratio:.2f}x ({pm_mbs:.0f} / {py_mbs:.0f} MB/s, {where})",
                            ratio >= PYPISERVER_RATIO_TARGET))
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.target) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print("\n" + "=" * (width + vwidth + 14))
    print(f"{'target'.ljust(width)}  {'measured'.ljust(vwidth)}  result")
    print("-" * (width + vwidth + 14))
    for r in rows:
        verdict = "n/a" if r.passed is None else ("PASS" if r.passed else "FAIL")
        print(f"{r.target.ljust(width)}  {r.value.ljust(vwidth)}  {verdict}")
    print("=" * (width + vwidth + 14))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=None,
                        help=f"comma-separated wheel sizes (default {DEFAULT_SIZES}); "
                             f"the first one is also sent to pypiserver")
    parser.add_argument("--quick", action="store_true", help=f"--sizes {QUICK_SIZES}")
    parser.add_argument("--ceiling-runs", type=int, default=2,
                        help="loopback ceiling runs per size; the best is used (default 2)")
    parser.add_argument("--pypiserver-servers", default="wsgiref,auto",
                        help="pypiserver --server values to measure, comma-separated "
                             "(default wsgiref,auto; auto is bottle's pick, twisted when "
                             "Twisted is importable, as in this venv)")
    parser.add_argument("--pypiserver-timeout", type=float, default=120.0,
                        help="seconds pypiserver gets for one upload (default 120)")
    parser.add_argument("--pypiserver-rss-limit", type=parse_size, default=6 * GiB,
                        help="kill pypiserver when its RSS grows by more (default 6G)")
    parser.add_argument("--pypiserver-fallback", type=parse_size, default=256 * MiB,
                        help="size tried when pypiserver fails the first one (default 256M)")
    parser.add_argument("--no-pypiserver", action="store_true", help="skip pypiserver")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = parse_sizes(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sink:
        sink_main()
        return 0
    sizes: list[int] = args.sizes
    workdir = Path(tempfile.mkdtemp(prefix="pm-bench-upload-", dir="/tmp"))
    print(f"bench/upload.py: sizes {', '.join(human(s) for s in sizes)}; work dir {workdir}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / GiB:.0f} GiB RAM")
    print("MB/s = 10^6 bytes/s, MiB/s = 2^20 bytes/s; throughput = body bytes / (first byte "
          "sent -> response status line)")
    digests = digest_reference()
    cores = os.cpu_count() or 1
    print(f"reference, in memory, 1 MiB updates, one core each: sha256 {digests.sha256:.0f}, "
          f"blake2b-256 {digests.blake2_256:.0f}, md5 {digests.md5:.0f} MB/s; all three on one "
          f"core {digests.one_core:.0f} MB/s\n"
          f"hashing bound: verifying every digest twine sends (each one stream) cannot go past "
          f"{digests.bound(cores):.0f} MB/s on {cores} cores doing nothing else", flush=True)
    server: ServerProcess | None = None
    sink: Sink | None = None
    figures: list[SizeFigures] = []
    pypi: list[PypiFigures] = []
    started = time.perf_counter()
    try:
        (workdir / "server").mkdir()
        server = ServerProcess(root=workdir / "server")
        server.start()
        token = server.setup_python(SOURCE, REPO)
        sink = Sink()
        print(f"Package Manager on 127.0.0.1:{server.port} (SQLite, {server.root}); "
              f"sink (read-and-drop, recv_into {SINK_BUFFER // 1024} KiB) on "
              f"127.0.0.1:{sink.port}", flush=True)
        for index, size in enumerate(sizes):
            result, body = measure_size(workdir, server, token, sink, size, index,
                                        args.ceiling_runs)
            figures.append(result)
            if index == 0 and not args.no_pypiserver:

                def fallback_build(size: int) -> tuple[Path, Body]:
                    directory = workdir / "fallback"
                    directory.mkdir(exist_ok=True)
                    wheel, small, _ = build(directory, size, "0.0.1")
                    return wheel, small

                adapters = [a.strip() for a in args.pypiserver_servers.split(",") if a.strip()]
                pypi = measure_pypiserver(workdir, body, size, adapters,
                                          args.pypiserver_fallback, args.pypiserver_timeout,
                                          args.pypiserver_rss_limit, fallback_build)
                shutil.rmtree(workdir / "fallback", ignore_errors=True)
            body.path.unlink(missing_ok=True)
            remove_stored(server, body)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except Exception as e:
        print(f"\nbenchmark error: {type(e).__name__}: {e}", flush=True)
        if server is not None and server.log():
            print("server log (tail):\n" + server.log()[-3000:], flush=True)
    finally:
        if sink is not None:
            sink.stop()
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    if figures:
        print(f"\nfigures (total run {time.perf_counter() - started:.0f} s):")
        for f in figures:
            pm = rate(f.pm.nbytes, f.pm.total_s) if f.pm.ok else "FAILED"
            print(f"  {human(f.size):>8}  loopback ceiling "
                  f"{rate(f.ceiling.nbytes, f.ceiling.total_s)}   Package Manager {pm}")
        for py in pypi:
            shown = rate(py.result.nbytes, py.result.total_s) if py.result.ok else "FAILED"
            print(f"  {human(py.size):>8}  pypiserver ({py.adapter}) {shown}, RSS growth "
                  f"{py.rss_growth / MiB:.0f} MiB" + (f"  [{py.note}]" if py.note else ""))
        print_table(summary(figures, pypi))
        best_ceiling = max((f.ceiling.nbytes / f.ceiling.total_s / 1e6 for f in figures
                            if f.ceiling.ok), default=0.0)
        if best_ceiling:
            bound = digests.bound(cores)
            print(f"note: the hashing bound ({bound:.0f} MB/s) is "
                  f"{bound / best_ceiling:.0%} of the loopback ceiling on this machine")
            for f in figures:
                if f.pm.ok:
                    pm_mbs = f.pm.nbytes / f.pm.total_s / 1e6
                    print(f"note: {human(f.size)}: Package Manager reached "
                          f"{pm_mbs / bound:.0%} of the hashing bound")
        busy = [f for f in figures if f.others_cores > 0.25]
        if busy:
            print("WARNING: other processes were busy during "
                  + ", ".join(f"the {human(f.size)} upload ({f.others_cores:.2f} cores)"
                              for f in busy)
                  + f" on this {os.cpu_count()}-CPU machine: those figures are low and noisy")
    else:
        print("no figures: the benchmark did not get as far as one upload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
