"""Print how fast Package Manager answers reads, against references measured in the same run.

Run: .venv/bin/python bench/reads.py [--runs 2] [--postgres] [--profile]   (from the project root)

A real ``twistd packagemanager`` (SQLite, or with ``--postgres`` a throwaway
PostgreSQL 15 cluster) gets a python repo holding ``idxpkg`` 1.0.0..1.0.199
(tiny wheels, published with ``rspm add``), an R repo of ``--r-packages`` R
source packages (``R CMD build``), and a 1 GiB wheel. Then:

1. Each request of the issue (project page as HTML and as JSON, the root page,
   R's ``PACKAGES.gz``, a small-file download) is fetched once from Package
   Manager, and those exact bytes, with the same Content-Type, ETag, Vary and
   Cache-Control, are served from memory by a bare ``twisted.web.server.Site``
   in another process: one tiny resource per path. Both are loaded with
   ``wrk -t2 -c64 -d10s --latency``, alternating, best of ``--runs``.
2. The 1 GiB file is downloaded by 1 and by 8 concurrent ``curl`` clients from
   Package Manager, from a raw socket server in another process that answers
   with ``os.sendfile`` of the same stored file, and from Twisted's stock
   ``static.File`` (64 KiB reads), the same with 1 MiB reads, and with 1 MiB
   reads and 1 MiB per ``send()``, in the reference Site. MB/s = body bytes /
   wall time (10^6 bytes/s). Range, HEAD, ETag/304 and a multi-range request
   are checked on the big and a small file.
3. pypiserver (if importable) serves a directory of the same 200 wheels; its
   project page is loaded the same way, for context.
4. The python repo grows to 1,000 projects and 20,000 files and step 1 runs
   again. The files go in with ``rspm add`` when the 200 wheels' rate says that
   takes under ``--rspm-budget`` seconds; otherwise rows shaped as real
   uploads (a real row copied, project/version/filename/digests varied, the
   blobs written under DataDir) are inserted into the database directly, with
   one events row so that the change serial moves. The output says which.
5. With ``--profile``, py-spy samples the reactor thread of Package Manager and
   of the reference under the same wrk load (a cached project page, a small
   file), and Package Manager's during big downloads, and the output says
   where the time per request goes.

The figures end in PASS/FAIL tables against the issue's targets; the exit
status is 0 whatever they are. Everything binds 127.0.0.1 on free ports, runs
in a temp dir under /tmp, and is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402
from twisted.web import resource as web_resource  # noqa: E402
from twisted.web import server as web_server  # noqa: E402
from twisted.web import static  # noqa: E402

from pm.blobs import BlobStore  # noqa: E402
from pm.python import dists  # noqa: E402
from tests.support.packages import build_wheel  # noqa: E402
from tests.support.rpackages import build_r_package  # noqa: E402
from tests.support.server import (  # noqa: E402
    BIN,
    ServerProcess,
    free_port,
    stop_process,
    wait_for,
)

MiB = 1 << 20
GiB = 1 << 30
PY_SOURCE, PY_REPO = "local-python-src", "python"
R_SOURCE, R_REPO = "local-r-src", "cran"
PROJECT = "idxpkg"
PROJECT_FILES = 200
BIG_PROJECT = "bigpkg"
LARGE_PROJECTS = 1000
LARGE_FILES = 20000
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"

# The targets.
RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
DOWNLOAD_RATIO_TARGET = 0.8

# A deadline for anything that could otherwise wait forever.
CHILD_START_S = 30.0
BUILD_DEADLINE_S = 900.0
COPY_BLOCK = 8 * MiB


# Measured requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    name: str
    path: str
    accept: str | None = None


def probes(small_file: str) -> list[Probe]:
    return [
        Probe("project page (HTML)", f"/{PY_REPO}/latest/simple/{PROJECT}/"),
        Probe("project page (JSON)", f"/{PY_REPO}/latest/simple/{PROJECT}/", JSON_ACCEPT),
        Probe("root page (HTML)", f"/{PY_REPO}/latest/simple/"),
        Probe("R PACKAGES.gz", f"/{R_REPO}/latest/src/contrib/PACKAGES.gz"),
        Probe(f"small file ({small_file})", f"/{PY_REPO}/latest/files/{small_file}"),
    ]


@dataclass(frozen=True)
class Fetched:
    """One answer of Package Manager: what the reference serves for the same request."""

    probe: Probe
    body: bytes
    headers: list[tuple[str, str]]


# Headers the reference copies; Date, Server and the framing Twisted writes itself.
COPIED_HEADERS = ("content-type", "etag", "vary", "cache-control")


def fetch(port: int, path: str, headers: dict[str, str] | None = None,
          method: str = "GET", read: bool = True,
          timeout: float = 30) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read() if read else b""
        return response.status, response.headers, body
    finally:
        conn.close()


def fetch_page(port: int, probe: Probe) -> Fetched:
    headers = {"Accept": probe.accept} if probe.accept else {}
    status, answer, body = fetch(port, probe.path, headers)
    if status != 200:
        raise RuntimeError(f"GET {probe.path} answered {status}")
    copied = [(k, answer[k]) for k in COPIED_HEADERS if answer[k] is not None]
    # A second time: this one must come from the cache, with the same bytes.
    again = fetch(port, probe.path, headers)
    if again[0] != 200 or again[2] != body:
        raise RuntimeError(f"GET {probe.path} changed between two requests")
    return Fetched(probe, body, copied)


# wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p99_ms: float
    requests: int
    problems: str
    others_cores: float

    def describe(self) -> str:
        text = f"{self.rps:8.0f} req/s  p99 {self.p99_ms:7.1f} ms  ({self.requests} requests"
        text += f"; other processes {self.others_cores:.2f} cores)"
        return text + (f"  [{self.problems}]" if self.problems else "")


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


def parse_wrk(output: str) -> tuple[float, float, int, str]:
    rps = re.search(r"Requests/sec:\s*([\d.]+)", output)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    count = re.search(r"(\d+) requests in", output)
    if rps is None or p99 is None or count is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    problems = []
    errors = re.search(r"Socket errors: (.*)", output)
    if errors:
        problems.append(f"socket errors: {errors.group(1).strip()}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        problems.append(f"non-2xx/3xx: {non2xx.group(1)}")
    return float(rps.group(1)), _ms(p99.group(1)), int(count.group(1)), "; ".join(problems)


class CpuMeter:
    """Machine-wide CPU over a window, less the benchmark's own processes.

    Other engineers' test runs share this machine: a figure measured while they
    took a core is low, and the output says so.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._processes = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self._processes.append(psutil.Process(pid))
        self.others_cores = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)

    def _ours(self) -> float:
        total = 0.0
        for process in self._processes:
            with contextlib.suppress(psutil.Error):
                t = process.cpu_times()
                total += float(t.user + t.system + t.children_user + t.children_system)
        return total

    def __enter__(self) -> CpuMeter:
        self._start = (time.perf_counter(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, ours0 = self._start
        wall = time.perf_counter() - wall0
        others = (self._busy() - busy0) - (self._ours() - ours0)
        self.others_cores = max(0.0, others) / wall if wall > 0 else 0.0


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: int

    def command(self, url: str, accept: str | None) -> list[str]:
        command = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{self.duration}s",
                   "--latency"]
        if accept:
            command += ["-H", f"Accept: {accept}"]
        return [*command, url]


def run_wrk(load: Load, port: int, probe: Probe, server_pids: Sequence[int]) -> WrkResult:
    command = load.command(f"http://127.0.0.1:{port}{probe.path}", probe.accept)
    with CpuMeter([os.getpid(), *server_pids]) as meter:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=load.duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    rps, p99, count, problems = parse_wrk(done.stdout)
    return WrkResult(rps, p99, count, problems, meter.others_cores)


# The reference Site, in its own process --------------------------------------------------


class FixedPage(web_resource.Resource):
    """One path's bytes from memory, chosen by the request's Accept header alone."""

    isLeaf = True

    def __init__(self, answers: dict[bytes, tuple[list[tuple[bytes, bytes]], bytes]]) -> None:
        super().__init__()
        self._answers = answers

    def render_GET(self, request: web_server.Request) -> bytes:
        found = self._answers.get(request.getHeader(b"accept") or b"")
        if found is None:
            request.setResponseCode(406)
            return b"not acceptable\n"
        headers, body = found
        for name, value in headers:
            request.setHeader(name, value)
        return body


class LargeReads(static.File):
    """Twisted's static.File reading 1 MiB per call instead of 64 KiB (as pm.served does)."""

    def makeProducer(self, request: web_server.Request, fileForReading: Any) -> Any:
        producer = super().makeProducer(request, fileForReading)
        producer.bufferSize = MiB
        return producer


class LargeReadsAndSends(LargeReads):
    """Also lets the TCP transport hand the kernel 1 MiB per send(), not 128 KiB."""

    def makeProducer(self, request: web_server.Request, fileForReading: Any) -> Any:
        transport = request.channel.transport
        if transport is not None and hasattr(transport, "SEND_LIMIT"):
            transport.SEND_LIMIT = MiB
        return super().makeProducer(request, fileForReading)


class ByPath(web_resource.Resource):
    """The reference's root: a leaf that hands each path to its own resource."""

    isLeaf = True

    def __init__(self, children: dict[bytes, web_resource.Resource]) -> None:
        super().__init__()
        self._children = children

    def render(self, request: web_server.Request) -> Any:
        child = self._children.get(request.path or b"")
        if child is None:
            request.setResponseCode(404)
            return b"not found\n"
        return child.render(request)


SMALL_READS_PATH = "/big/static-64k"
LARGE_READS_PATH = "/big/static-1m"
LARGE_SENDS_PATH = "/big/static-1m-sends"


def site_main(spec_path: Path) -> None:
    """Serve the pages of a spec file (written by the parent) until SIGTERM."""
    from twisted.internet import reactor as installed

    reactor: Any = installed
    spec = json.loads(spec_path.read_text())
    answers: dict[bytes, dict[bytes, tuple[list[tuple[bytes, bytes]], bytes]]] = {}
    for page in spec["pages"]:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in page["headers"]]
        answers.setdefault(page["path"].encode(), {})[page["accept"].encode()] = (
            headers, base64.b64decode(page["body"]))
    children: dict[bytes, web_resource.Resource] = {
        path: FixedPage(by_accept) for path, by_accept in answers.items()}
    if spec.get("big"):
        children[SMALL_READS_PATH.encode()] = static.File(spec["big"], "application/zip")
        children[LARGE_READS_PATH.encode()] = LargeReads(spec["big"], "application/zip")
        children[LARGE_SENDS_PATH.encode()] = LargeReadsAndSends(spec["big"], "application/zip")
    port = reactor.listenTCP(0, web_server.Site(ByPath(children)), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()


# The sendfile server, in its own process ------------------------------------------------


def _serve_sendfile(conn: socket.socket, path: Path) -> None:
    with conn, contextlib.suppress(OSError):
        conn.settimeout(60)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            more = conn.recv(4096)
            if not more:
                return
            head += more
        method = head.split(b" ", 1)[0]
        # Blocking again: os.sendfile on a socket with a timeout stops at EAGAIN.
        conn.settimeout(None)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size)
            if method != b"GET":
                return
            sent = 0
            while sent < size:
                n = os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
                if n == 0:
                    return
                sent += n


def sendfile_main(path: Path) -> None:
    """Answer every request on a connection of its own with headers + os.sendfile, until
    SIGTERM: the most a server can do with this file on this machine."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_sendfile, args=(conn, path), daemon=True).start()


class Child:
    """This script in another process, in one of its server modes; it prints its port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], CHILD_START_S)
        line = self.process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{' '.join(args)} did not start")
        self.port = int(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)


def reference_site(workdir: Path, name: str, pages: Sequence[Fetched],
                   big: Path | None) -> Child:
    spec = {
        "pages": [{"path": p.probe.path, "accept": p.probe.accept or "",
                   "headers": p.headers, "body": base64.b64encode(p.body).decode()}
                  for p in pages],
        "big": str(big) if big else None,
    }
    path = workdir / f"site-{name}.json"
    path.write_text(json.dumps(spec))
    return Child("--serve-site", str(path))


# pypiserver ------------------------------------------------------------------------------


@dataclass
class PypiServer:
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, wheels: Sequence[Path]) -> PypiServer:
        packages = self.root / "packages"
        packages.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            shutil.copy2(wheel, packages / wheel.name)
        with open(self.root / "pypiserver.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "pypi-server"), "run", "-p", str(self.port), "-i", "127.0.0.1",
                 "-a", ".", "-P", ".", "--disable-fallback", str(packages)],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"pypiserver exited with {process.returncode}")
            try:
                return fetch(self.port, "/health", timeout=5)[0] == 200
            except OSError:
                return False

        wait_for(ready, CHILD_START_S, f"pypiserver on port {self.port}")
        return self

    @staticmethod
    def adapter() -> str:
        """The WSGI server its default ``--server auto`` picks here (bottle's order)."""
        for module, name in (("waitress", "waitress"), ("paste", "paste"),
                             ("twisted.web", "twisted"), ("cherrypy", "cherrypy"),
                             ("cheroot", "cheroot")):
            with contextlib.suppress(ImportError):
                if importlib.util.find_spec(module) is not None:
                    return name
        return "wsgiref"

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)
        self.process = None


# Data ------------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self._end = time.monotonic() + seconds
        self._what = what

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise RuntimeError(f"{self._what} ran out of time")


def rspm_add(server: ServerProcess, source: str, paths: Sequence[Path],
             timeout: float) -> float:
    """``rspm add`` over the admin socket; returns the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "rspm"), "add", f"--source={source}",
         "--path=" + ",".join(str(p) for p in paths)],
        env=server.env(), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rspm add failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-2000:]}")
    return time.perf_counter() - started


def build_project_wheels(directory: Path, project: str, count: int,
                         deadline: Deadline) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i in range(count):
        deadline.check()
        wheels.append(build_wheel(directory, project, f"1.0.{i}"))
    return wheels


def build_r_packages(directory: Path, count: int, deadline: Deadline) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    tarballs = []
    for i in range(count):
        deadline.check()
        tarballs.append(build_r_package(directory, f"benchR{i:02d}", f"1.0.{i}"))
    return tarballs


def large_layout(projects: int, files: int) -> list[tuple[str, int]]:
    """(project, file count) of the projects besides idxpkg, so the repo holds
    ``projects`` projects and ``files`` files in all."""
    others = projects - 1
    per, extra = divmod(files - PROJECT_FILES, others)
    return [(f"bulk-{i:04d}", per + (1 if i < extra else 0)) for i in range(others)]


def _wheel_builds(workdir: Path, layout: Sequence[tuple[str, int]],
                  deadline: Deadline) -> Iterator[Path]:
    for project, count in layout:
        for i in range(count):
            deadline.check()
            yield build_wheel(workdir, project, f"1.0.{i}")


class RowSink:
    """Inserts python_files rows and one event in one transaction, SQLite or PostgreSQL."""

    def __init__(self, server: ServerProcess) -> None:
        self.postgres = server.provider == "postgres"
        if self.postgres:
            import psycopg2

            self._conn: Any = psycopg2.connect(server.postgres_url, connect_timeout=10)
            self._mark = "%s"
        else:
            assert server.data_dir is not None
            self._conn = sqlite3.connect(server.data_dir / "db" / "packagemanager.db",
                                         timeout=30)
            self._mark = "?"

    def template(self, project: str) -> dict[str, Any]:
        """A real row of an upload, to copy."""
        cursor = self._conn.cursor()
        cursor.execute(f"SELECT * FROM python_files WHERE project = {self._mark} "
                       "ORDER BY id LIMIT 1", (project,))
        names = [d[0] for d in cursor.description]
        found = cursor.fetchone()
        if found is None:
            raise RuntimeError(f"no row of {project} to copy")
        row = dict(zip(names, found, strict=True))
        row.pop("id")
        return row

    def insert(self, rows: Sequence[dict[str, Any]], subject: str) -> None:
        columns = list(rows[0])
        marks = ", ".join(self._mark for _ in columns)
        cursor = self._conn.cursor()
        cursor.executemany(f"INSERT INTO python_files ({', '.join(columns)}) VALUES ({marks})",
                           [tuple(r[c] for c in columns) for r in rows])
        cursor.execute("INSERT INTO events (at, actor, action, subject, detail) VALUES "
                       f"({', '.join(self._mark for _ in range(5))})",
                       (time.time(), "bench", "python.file.added", subject, ""))
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def _write_blob(store: BlobStore, data: bytes, sha256: str, suffix: str = "") -> None:
    # No fsync: the data is thrown away after the run, and 40,000 fsyncs would
    # take minutes on this disk.
    target = store.path_for(sha256, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def insert_large(server: ServerProcess, workdir: Path, layout: Sequence[tuple[str, int]],
                 deadline: Deadline) -> int:
    """Rows as ``rspm add`` would record them, inserted directly; returns the count."""
    assert server.data_dir is not None
    sink = RowSink(server)
    try:
        template = sink.template(PROJECT)
        store = BlobStore(server.data_dir, time.time)
        rows = []
        directory = workdir / "bulk-wheels"
        directory.mkdir(parents=True, exist_ok=True)
        for wheel in _wheel_builds(directory, layout, deadline):
            data = wheel.read_bytes()
            dist = dists.parse_filename(wheel.name)
            metadata = dists.inspect(wheel, dist)
            wheel.unlink()
            sha256 = hashlib.sha256(data).hexdigest()
            metadata_sha = hashlib.sha256(metadata.raw).hexdigest()
            _write_blob(store, data, sha256)
            _write_blob(store, metadata.raw, metadata_sha, ".metadata")
            rows.append({**template, "project": dist.project, "display_name": metadata.name,
                         "version": dist.version, "filename": dist.filename,
                         "size": len(data), "sha256": sha256,
                         "blake2_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
                         "md5": hashlib.md5(data).hexdigest(),
                         "requires_python": metadata.requires_python,
                         "summary": metadata.summary, "metadata_sha256": metadata_sha,
                         "details": json.dumps(metadata.details), "uploaded_at": time.time()})
        sink.insert(rows, f"bench: {len(rows)} files inserted directly")
        return len(rows)
    finally:
        sink.close()


def add_large(server: ServerProcess, workdir: Path, layout: Sequence[tuple[str, int]],
              deadline: Deadline, timeout: float) -> float:
    directory = workdir / "bulk-wheels"
    directory.mkdir(parents=True, exist_ok=True)
    for _ in _wheel_builds(directory, layout, deadline):
        pass
    seconds = rspm_add(server, PY_SOURCE, [directory], timeout)
    shutil.rmtree(directory, ignore_errors=True)
    return seconds


# Downloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    clients: int
    nbytes: int
    seconds: float
    problems: str
    others_cores: float

    @property
    def mbs(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 and not self.problems else 0.0

    def describe(self) -> str:
        text = (f"{self.mbs:8.0f} MB/s  ({self.nbytes / GiB:.0f} GiB in {self.seconds:.2f} s; "
                f"other processes {self.others_cores:.2f} cores)")
        return text + (f"  [{self.problems}]" if self.problems else "")


def curl_download(port: int, path: str, clients: int, size: int, timeout: float,
                  pids: Sequence[int]) -> Download:
    command = ["curl", "-s", "-o", "/dev/null", "--max-time", str(int(timeout)),
               "-w", "%{http_code} %{size_download}", f"http://127.0.0.1:{port}{path}"]
    with CpuMeter([os.getpid(), *pids]) as meter:
        started = time.perf_counter()
        running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                   for _ in range(clients)]
        try:
            outputs = [p.communicate(timeout=timeout + 30)[0] for p in running]
        finally:
            for p in running:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        seconds = time.perf_counter() - started
    problems = []
    total = 0
    for output in outputs:
        code, _, got = output.strip().partition(" ")
        if code != "200" or int(got or 0) != size:
            problems.append(f"status {code}, {got} bytes")
        total += int(got or 0)
    return Download(clients, total, seconds, "; ".join(problems), meter.others_cores)


@dataclass(frozen=True)
class Check:
    what: str
    passed: bool
    detail: str


def file_checks(port: int, path: str, stored: Path) -> list[Check]:
    """Range, HEAD, ETag/304, a multi-range and an unsatisfiable range on one file."""
    size = stored.stat().st_size
    first, last = size // 4, size // 4 + min(1000, size // 2) - 1
    with open(stored, "rb") as f:
        f.seek(first)
        middle = f.read(last - first + 1)
        f.seek(size - 16)
        tail = f.read(16)
    checks = []
    status, head, body = fetch(port, path, method="HEAD")
    etag = head["etag"] or ""
    checks.append(Check("HEAD", status == 200 and head["content-length"] == str(size)
                        and not body and etag.startswith('"'),
                        f"{status}, Content-Length {head['content-length']}, ETag {etag[:20]}…"))
    status, _, body = fetch(port, path, {"If-None-Match": etag})
    checks.append(Check("If-None-Match -> 304", status == 304 and not body, f"{status}"))
    status, answer, body = fetch(port, path, {"Range": f"bytes={first}-{last}"})
    checks.append(Check(f"Range bytes={first}-{last}", status == 206 and body == middle
                        and answer["content-range"] == f"bytes {first}-{last}/{size}",
                        f"{status}, {answer['content-range']}, {len(body)} bytes"))
    status, answer, body = fetch(port, path, {"Range": "bytes=-16"})
    checks.append(Check("Range bytes=-16", status == 206 and body == tail,
                        f"{status}, {answer['content-range']}, {len(body)} bytes"))
    status, answer, _ = fetch(port, path, {"Range": "bytes=0-0,10-10"}, read=False)
    checks.append(Check("two ranges -> whole file", status == 200
                        and answer["content-length"] == str(size),
                        f"{status}, Content-Length {answer['content-length']}"))
    status, _, _ = fetch(port, path, {"Range": f"bytes={size + 10}-"})
    checks.append(Check("unsatisfiable range -> 416", status == 416, f"{status}"))
    return checks


# Profiles --------------------------------------------------------------------------------


def py_spy() -> str | None:
    local = BIN / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


SAMPLE_RATE = 100
# Where a sample of the reactor thread is spent: the first of these frames
# found from the innermost one outwards names its share.
COST_FRAMES = (
    ("access log line (format, redact, buffer)", "AccessLoggedSite.log "),
    ("access log line (HTTPFactory.log: format, write)", "HTTPFactory.log "),
    ("sendfile (SendfileProducer.resumeProducing)", "SendfileProducer.resumeProducing "),
    ("socket send (Connection.writeSomeData)", "Connection.writeSomeData "),
    ("change serial read (ChangeSerial.current)", "ChangeSerial.current "),
    ("cache lookup (Pages.cached, less the serial)", "Pages.cached "),
    ("respond(): headers, ETag check", "respond (pm/fastreads.py)"),
    ("response headers (HTTPChannel.writeHeaders)", "HTTPChannel.writeHeaders "),
    ("request object made (Request.__init__)", "Request.__init__ "),
    ("rest of Request.finish", "Request.finish "),
    ("file read and write() (the producer's resumeProducing)",
     "NoRangeStaticProducer.resumeProducing "),
    ("rest of rendering (FastReads + coroutine, or the Resource)", "Request.render "),
    ("HTTP parsing and the rest of Request.process", "HTTPChannel.dataReceived "),
    ("socket recv (Connection.doRead)", "Connection.doRead "),
)


@dataclass(frozen=True)
class Loaded:
    """What a profiled load did: a line to show, and how many units (requests, MiB)."""

    describe: str
    units: float
    unit: str


def profile(pid: int, out: Path, seconds: int, load: Callable[[], Loaded]) -> str:
    """Sample a server's threads with py-spy while ``load`` runs; its costs as text."""
    spy = py_spy()
    assert spy is not None
    recorder = subprocess.Popen([spy, "record", "-d", str(seconds), "-p", str(pid),
                                 "-r", str(SAMPLE_RATE), "-o", str(out), "--format", "raw",
                                 "--threads"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        loaded = load()
        recorder.wait(seconds + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not out.exists():
        return "  py-spy wrote nothing (no permission to trace?)"
    return summarize_profile(out.read_text(), loaded)


def _frame(text: str) -> str:
    # "name (path/to/file.py:123)" -> "name (dir/file.py)"
    found = re.fullmatch(r"(.*) \((.*?):\d+\)", text)
    if found is None:
        return text
    return f"{found.group(1)} ({'/'.join(Path(found.group(2)).parts[-2:])})"


def summarize_profile(raw: str, loaded: Loaded, top: int = 12) -> str:
    """Costs on the reactor thread (the main one), which serves every request.

    py-spy takes threads parked in a pool's Condition.wait for busy ones, so
    the other threads are left out.
    """
    own: Counter[str] = Counter()
    shares: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, rest = stack.partition(";")
        if "MainThread" not in thread or not rest or not count.isdigit():
            continue
        frames = [_frame(f) for f in rest.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        found = next((label for frame in reversed(frames) for label, marker in COST_FRAMES
                      if frame.startswith(marker)), "reactor and the rest")
        shares[found] += n
    if not total or not loaded.units:
        return "  no samples"
    per_unit = 1e6 / SAMPLE_RATE / loaded.units
    lines = [f"  under profile: {loaded.describe}",
             f"  reactor thread: {total} busy samples at {SAMPLE_RATE} Hz = "
             f"{total * per_unit:.0f} us per {loaded.unit}; where it goes:"]
    lines += [f"    {n * per_unit:7.1f} us  {n / total:6.1%}  {label}"
              for label, n in shares.most_common()]
    lines.append("  top self time:")
    lines += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def profile_all(load: Load, server: ServerProcess, pages: Sequence[Fetched],
                big_path: str, stored: Path, workdir: Path) -> list[str]:
    """py-spy on Package Manager and on the reference for each of ``pages``, then on
    Package Manager during one client's big downloads."""
    assert server.process is not None
    print("\n=== py-spy profiles ===", flush=True)
    site = reference_site(workdir, "profile", pages, None)
    texts: list[str] = []

    def wrk_load(port: int, probe: Probe, pid: int) -> Callable[[], Loaded]:
        def run() -> Loaded:
            result = run_wrk(load, port, probe, [pid])
            return Loaded(result.describe(), result.requests, "request")
        return run

    def download_load() -> Loaded:
        size = stored.stat().st_size
        end = time.monotonic() + load.duration
        total, seconds = 0, 0.0
        while time.monotonic() < end:
            got = curl_download(server.port, big_path, 1, size, 300, [])
            total, seconds = total + got.nbytes, seconds + got.seconds
        return Loaded(f"{total / seconds / 1e6:.0f} MB/s, one client, {total / GiB:.0f} GiB",
                      total / MiB, "MiB")

    try:
        for page in pages:
            for name, port, pid in (("Package Manager", server.port, server.process.pid),
                                    ("reference Site", site.port, site.pid)):
                text = profile(pid, workdir / f"profile-{len(texts)}.txt", load.duration,
                               wrk_load(port, page.probe, pid))
                texts.append(f"\npy-spy, {name}, {page.probe.name}:\n{text}")
                print(texts[-1], flush=True)
        text = profile(server.process.pid, workdir / "profile-download.txt", load.duration,
                       download_load)
        texts.append(f"\npy-spy, Package Manager, {big_path}:\n{text}")
        print(texts[-1], flush=True)
    finally:
        site.stop()
    return texts


# The run ---------------------------------------------------------------------------------


@dataclass
class PageFigures:
    probe: Probe
    pm: list[WrkResult]
    ref: list[WrkResult]

    @staticmethod
    def best(results: list[WrkResult]) -> WrkResult | None:
        return max(results, key=lambda r: r.rps, default=None)


def measure_pages(label: str, load: Load, runs: int, server: ServerProcess,
                  fetched: Sequence[Fetched], workdir: Path) -> list[PageFigures]:
    assert server.process is not None
    print(f"\n=== {label}: wrk {' '.join(load.command('URL', None)[1:-1])}, "
          f"best of {runs}, Package Manager / reference alternating ===", flush=True)
    site = reference_site(workdir, re.sub(r"\W+", "-", label), fetched, None)
    figures = []
    try:
        for page in fetched:
            status, _, body = fetch(site.port, page.probe.path,
                                    {"Accept": page.probe.accept} if page.probe.accept else {})
            if status != 200 or body != page.body:
                raise RuntimeError(f"the reference does not serve {page.probe.path} as PM does")
            figure = PageFigures(page.probe, [], [])
            print(f"  {page.probe.name}: {len(page.body)} bytes, "
                  f"{page.probe.path}" + (f" (Accept: {page.probe.accept})"
                                          if page.probe.accept else ""), flush=True)
            for run in range(runs):
                pm = run_wrk(load, server.port, page.probe, [server.process.pid])
                figure.pm.append(pm)
                print(f"    run {run + 1}  PM        {pm.describe()}", flush=True)
                ref = run_wrk(load, site.port, page.probe, [site.pid])
                figure.ref.append(ref)
                print(f"    run {run + 1}  reference {ref.describe()}", flush=True)
            figures.append(figure)
    finally:
        site.stop()
    return figures


@dataclass
class DownloadFigures:
    clients: int
    by_server: dict[str, list[Download]]

    def best(self, name: str) -> Download | None:
        return max(self.by_server.get(name, []), key=lambda d: d.mbs, default=None)


PM_NAME = "Package Manager"
SENDFILE_NAME = "sendfile server"
STATIC_64K_NAME = "Twisted static.File, 64 KiB reads"
STATIC_1M_NAME = "Twisted static.File, 1 MiB reads"
STATIC_SENDS_NAME = "static.File, 1 MiB reads + 1 MiB send()"


def measure_downloads(runs: int, server: ServerProcess, big_path: str, stored: Path,
                      clients: Sequence[int], timeout: float,
                      workdir: Path) -> list[DownloadFigures]:
    assert server.process is not None
    size = stored.stat().st_size
    print(f"\n=== big download: {big_path} ({size} bytes), curl to /dev/null, "
          f"best of {runs} ===", flush=True)
    sendfile = Child("--serve-sendfile", str(stored))
    try:
        site = reference_site(workdir, "big", [], stored)
    except BaseException:
        sendfile.stop()
        raise
    targets: list[tuple[str, int, str, int]] = [
        (PM_NAME, server.port, big_path, server.process.pid),
        (SENDFILE_NAME, sendfile.port, "/", sendfile.pid),
        (STATIC_64K_NAME, site.port, SMALL_READS_PATH, site.pid),
        (STATIC_1M_NAME, site.port, LARGE_READS_PATH, site.pid),
        (STATIC_SENDS_NAME, site.port, LARGE_SENDS_PATH, site.pid),
    ]
    figures = []
    try:
        for count in clients:
            figure = DownloadFigures(count, {})
            for run in range(runs):
                for name, port, path, pid in targets:
                    result = curl_download(port, path, count, size, timeout, [pid])
                    figure.by_server.setdefault(name, []).append(result)
                    print(f"  {count} client{'s' if count > 1 else ' '} run {run + 1}  "
                          f"{name:<40} {result.describe()}", flush=True)
            figures.append(figure)
    finally:
        sendfile.stop()
        site.stop()
    return figures




def measure_pypiserver(load: Load, runs: int, workdir: Path, wheels: Sequence[Path],
                       probe: Probe) -> list[WrkResult]:
    if importlib.util.find_spec("pypiserver") is None:
        print("\npypiserver is not importable: pip install '.[bench]' to compare with it")
        return []
    pypi = PypiServer(workdir / "pypiserver")
    try:
        pypi.start(wheels)
        assert pypi.process is not None
        path = f"/simple/{PROJECT}/"
        status, _, body = fetch(pypi.port, path)
        print(f"\n=== pypiserver (--server auto = {pypi.adapter()}), {path}: {status}, "
              f"{len(body)} bytes, {len(wheels)} wheels ===", flush=True)
        results = []
        for run in range(runs):
            result = run_wrk(load, pypi.port, Probe(probe.name, path), [pypi.process.pid])
            results.append(result)
            print(f"    run {run + 1}  pypiserver {result.describe()}", flush=True)
        return results
    finally:
        pypi.stop()


# Tables ----------------------------------------------------------------------------------


def page_table(title: str, figures: Sequence[PageFigures]) -> list[str]:
    header = (f"{'request':<46} {'PM req/s':>9} {'ref req/s':>9} {'ratio':>6} "
              f"{'PM p99':>9}  {'target':<22} result")
    lines = [f"\n{title}", header, "-" * len(header)]
    for f in figures:
        pm, ref = PageFigures.best(f.pm), PageFigures.best(f.ref)
        if pm is None or ref is None:
            continue
        ratio = pm.rps / ref.rps if ref.rps else 0.0
        passed = ratio >= RATIO_TARGET and pm.p99_ms < P99_TARGET_MS and not pm.problems
        target = f">= {RATIO_TARGET}x, p99 < {P99_TARGET_MS:.0f} ms"
        lines.append(f"{f.probe.name:<46} {pm.rps:9.0f} {ref.rps:9.0f} {ratio:5.3f}x "
                     f"{pm.p99_ms:6.1f} ms  {target:<22} {'PASS' if passed else 'FAIL'}")
    return lines


def download_table(figures: Sequence[DownloadFigures], size: int) -> list[str]:
    title = f"{size / GiB:.2g} GiB download" if size >= GiB // 4 else f"{size // MiB} MiB download"
    header = (f"{title:<52} {'MB/s':>9} {'sendfile':>9} {'ratio':>6}  "
              f"{'target':<22} result")
    lines = ["", header, "-" * len(header)]
    for f in figures:
        ceiling = f.best(SENDFILE_NAME)
        if ceiling is None or not ceiling.mbs:
            continue
        for name in (PM_NAME, STATIC_64K_NAME, STATIC_1M_NAME, STATIC_SENDS_NAME):
            got = f.best(name)
            if got is None:
                continue
            ratio = got.mbs / ceiling.mbs
            who = f"{name}, {f.clients} client{'s' if f.clients > 1 else ''}"
            if name == PM_NAME:
                target = f">= {DOWNLOAD_RATIO_TARGET}x sendfile"
                verdict = "PASS" if ratio >= DOWNLOAD_RATIO_TARGET else "FAIL"
            else:
                target, verdict = "(reference)", ""
            lines.append(f"{who:<52} {got.mbs:9.0f} {ceiling.mbs:9.0f} {ratio:5.2f}x  "
                         f"{target:<22} {verdict}")
    return lines


def check_table(title: str, checks: Sequence[Check]) -> list[str]:
    lines = [f"\n{title}"]
    lines += [f"  {c.what:<34} {c.detail:<60} {'PASS' if c.passed else 'FAIL'}"
              for c in checks]
    return lines


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


# Main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2, help="best of this many (default 2)")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d seconds (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--postgres", action="store_true",
                        help="PostgreSQL (a throwaway cluster) instead of SQLite")
    parser.add_argument("--r-packages", type=int, default=20,
                        help="R packages in the R repo (default 20)")
    parser.add_argument("--big-size", type=int, default=GiB,
                        help="bytes of the big download (default 1 GiB)")
    parser.add_argument("--download-clients", default="1,8",
                        help="concurrent downloads to measure, comma-separated (default 1,8)")
    parser.add_argument("--large-data", choices=("auto", "rspm", "insert"), default="auto",
                        help="how the 1,000 projects / 20,000 files get in (default auto: "
                             "rspm add if the 200 wheels' rate says it fits --rspm-budget)")
    parser.add_argument("--rspm-budget", type=float, default=180.0,
                        help="seconds rspm add may take for the large data (default 180)")
    parser.add_argument("--skip", default="",
                        help="parts to leave out, comma-separated: large,downloads,pypiserver")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, sample the server with py-spy under load for a "
                             "cached page hit and a small-file download, and print top costs")
    parser.add_argument("--serve-site", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-sendfile", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def publish_base(server: ServerProcess, workdir: Path, r_count: int, big_size: int,
                 deadline: Deadline) -> tuple[list[Path], float]:
    """The 200 wheels, the R packages and the big wheel; returns the wheels and the
    seconds ``rspm add`` took for them."""
    started = time.perf_counter()
    wheels = build_project_wheels(workdir / "wheels", PROJECT, PROJECT_FILES, deadline)
    print(f"built {len(wheels)} wheels of {PROJECT} in {time.perf_counter() - started:.1f} s",
          flush=True)
    seconds = rspm_add(server, PY_SOURCE, [workdir / "wheels"], timeout=600)
    print(f"rspm add of {len(wheels)} wheels: {seconds:.1f} s "
          f"({seconds / len(wheels) * 1000:.0f} ms a file)", flush=True)
    started = time.perf_counter()
    tarballs = build_r_packages(workdir / "r", r_count, deadline)
    r_seconds = rspm_add(server, R_SOURCE, tarballs, timeout=600)
    print(f"built {len(tarballs)} R packages in {time.perf_counter() - started - r_seconds:.1f}"
          f" s, rspm add: {r_seconds:.1f} s", flush=True)
    started = time.perf_counter()
    big_dir = workdir / "big"
    big_dir.mkdir()
    # The zip's own bytes come on top of the payload.
    big = build_wheel(big_dir, BIG_PROJECT, "1.0.0", payload_size=big_size - 4096)
    built = time.perf_counter() - started
    big_seconds = rspm_add(server, PY_SOURCE, [big], timeout=900)
    print(f"built a {big.stat().st_size / GiB:.2f} GiB wheel in {built:.1f} s, rspm add: "
          f"{big_seconds:.1f} s", flush=True)
    big.unlink()
    return wheels, seconds


def big_file(server: ServerProcess) -> tuple[str, Path]:
    """The big wheel's URL path and its stored blob."""
    assert server.data_dir is not None
    status, _, body = fetch(server.port, f"/{PY_REPO}/latest/simple/{BIG_PROJECT}/",
                            {"Accept": JSON_ACCEPT})
    if status != 200:
        raise RuntimeError(f"the {BIG_PROJECT} page answered {status}")
    entry = json.loads(body)["files"][0]
    stored = BlobStore(server.data_dir, time.time).path_for(entry["hashes"]["sha256"])
    return f"/{PY_REPO}/latest/files/{entry['filename']}", stored


def grow(server: ServerProcess, workdir: Path, mode: str, seconds_per_file: float,
         budget: float, deadline: Deadline) -> str:
    layout = large_layout(LARGE_PROJECTS, LARGE_FILES)
    extra = sum(n for _, n in layout)
    estimate = seconds_per_file * extra
    if mode == "auto":
        mode = "rspm" if estimate <= budget else "insert"
    started = time.perf_counter()
    if mode == "rspm":
        seconds = add_large(server, workdir, layout, deadline, timeout=max(budget * 4, 600))
        how = (f"{extra} wheels of {len(layout)} projects published with rspm add in "
               f"{seconds:.0f} s ({seconds / extra * 1000:.1f} ms a file; estimated "
               f"{estimate:.0f} s from the 200)")
    else:
        count = insert_large(server, workdir, layout, deadline)
        how = (f"{count} rows of {len(layout)} projects inserted directly into the database "
               f"(copies of a real idxpkg row; wheels built and their blobs and .metadata "
               f"written under DataDir; one events row) in {time.perf_counter() - started:.0f}"
               f" s: rspm add would take ~{estimate:.0f} s at the 200 wheels' "
               f"{seconds_per_file * 1000:.0f} ms a file, over the {budget:.0f} s budget")
    return how


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_site:
        site_main(args.serve_site)
        return 0
    if args.serve_sendfile:
        sendfile_main(args.serve_sendfile)
        return 0
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    load = Load(args.threads, args.connections, args.duration)
    clients = [int(c) for c in args.download_clients.split(",") if c.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="pm-bench-reads-", dir="/tmp"))
    print(f"bench/reads.py: python {sys.version.split()[0]}, {load_average()}, "
          f"{psutil.virtual_memory().total / GiB:.0f} GiB RAM; work dir {workdir}", flush=True)
    started = time.perf_counter()
    cluster: Any = None
    server: ServerProcess | None = None
    out: list[str] = []
    profiles: list[str] = []
    try:
        postgres_url = None
        if args.postgres:
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            cluster.start()
            postgres_url = cluster.server.create_database("pm_bench_reads")
        (workdir / "server").mkdir()
        server = ServerProcess(root=workdir / "server",
                               provider="postgres" if args.postgres else "sqlite",
                               postgres_url=postgres_url)
        server.start()
        assert server.process is not None
        server.setup_python(PY_SOURCE, PY_REPO)
        server.setup_r(R_SOURCE, R_REPO)
        print(f"Package Manager on 127.0.0.1:{server.port} "
              f"({'PostgreSQL' if args.postgres else 'SQLite'}), pid {server.process.pid}",
              flush=True)
        deadline = Deadline(BUILD_DEADLINE_S, "building the data")
        wheels, add_seconds = publish_base(server, workdir, args.r_packages, args.big_size,
                                           deadline)
        small = wheels[0].name
        pages = probes(small)
        fetched = [fetch_page(server.port, p) for p in pages]
        base_label = f"{PROJECT_FILES} files of {PROJECT} (+ the big wheel), " \
                     f"{args.r_packages} R packages"
        small_figures = measure_pages(base_label, load, args.runs, server, fetched, workdir)
        out += page_table(f"{base_label}; {load_average()}", small_figures)
        # The server runs with the default [HTTP] AccessLog, as an operator's would.
        logged = server.access_log().count("\n")
        out.append(f"access log: {logged} lines so far in {server.access_log_path} "
                   f"(the [HTTP] AccessLog default)")

        big_path, stored = big_file(server)
        if "downloads" not in skip:
            downloads = measure_downloads(args.runs, server, big_path, stored, clients,
                                          timeout=300, workdir=workdir)
            out += download_table(downloads, stored.stat().st_size)
            out += check_table(f"checks on {big_path}",
                               file_checks(server.port, big_path, stored))
            small_stored = BlobStore(server.data_dir or workdir, time.time).path_for(
                hashlib.sha256(wheels[0].read_bytes()).hexdigest())
            out += check_table(f"checks on {pages[-1].path}",
                               file_checks(server.port, pages[-1].path, small_stored))

        if "pypiserver" not in skip:
            pypi = measure_pypiserver(load, args.runs, workdir, wheels, pages[0])
            best = PageFigures.best(pypi)
            pm = PageFigures.best(small_figures[0].pm)
            if best is not None and pm is not None:
                out.append(f"\npypiserver project page (context; the issue measured 15 req/s): "
                           f"{best.rps:.1f} req/s, p99 {best.p99_ms:.0f} ms"
                           + (f" [{best.problems}]" if best.problems else "")
                           + f"; Package Manager {pm.rps:.0f} req/s = "
                           f"{pm.rps / best.rps if best.rps else 0:.0f}x")

        if args.profile:
            if py_spy() is None:
                profiles.append("py-spy not found: pip install py-spy")
            else:
                profiles += profile_all(load, server, [fetched[0], fetched[-1]], big_path,
                                        stored, workdir)

        if "large" not in skip:
            print(f"\ngrowing the python repo to {LARGE_PROJECTS} projects, {LARGE_FILES} "
                  f"files...", flush=True)
            how = grow(server, workdir, args.large_data, add_seconds / PROJECT_FILES,
                       args.rspm_budget, Deadline(BUILD_DEADLINE_S, "the large data"))
            print(how, flush=True)
            large = [fetch_page(server.port, p) for p in pages]
            label = f"{LARGE_PROJECTS} projects, {LARGE_FILES} files (+ the big wheel)"
            large_figures = measure_pages(label, load, args.runs, server, large, workdir)
            out += page_table(f"{label}; {load_average()}\n  ({how})", large_figures)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except Exception as e:
        print(f"\nbenchmark error: {type(e).__name__}: {e}", flush=True)
        if server is not None and server.log():
            print("server log (tail):\n" + server.log()[-3000:], flush=True)
    finally:
        if server is not None:
            server.cleanup()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{'=' * 30} summary (run took {time.perf_counter() - started:.0f} s; "
          f"{load_average()}) {'=' * 30}")
    print("\n".join(out) if out else "no figures: the benchmark did not get as far as one")
    for text in profiles:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
