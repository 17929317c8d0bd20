"""Print how Package Manager holds up under many uploads at once, and index reads meanwhile.

Run: .venv/bin/python bench/load.py [--postgres] [--clients 64] [--size 10M] [--same 8]
(project root; psutil comes with the ``bench`` extra)

1. ``--clients`` distinct wheels of ``--size`` (an incompressible stored
   payload) uploaded at once, each from its own connection (a thread with
   http.client), the Warehouse way (``POST /upload/pypi/{source}/``, HTTP Basic
   ``__token__``, sha256_digest), while a process of its own GETs
   ``/python/latest/simple/`` back to back on one connection (in this process
   its timings would include waits for the uploading threads' GIL). Printed:
   aggregate throughput (body bytes over first byte sent -> last answer),
   upload latency p50/p99, index GET p50/p99 and count, the five slowest index
   GETs and when they were sent (seconds after the first upload began), the
   server's peak RSS (sampled by psutil), and the CPU in cores of the server,
   of its reactor thread (and the share of the time that thread waited on the
   run queue for a CPU, Linux ``schedstat``), of the database (PostgreSQL), of
   the uploading clients (a few hundredths: their threads only hand bytes to
   the kernel), of the index reader, and of every other process on the machine.
2. ``--same`` clients uploading one and the same wheel at once.

Targets (PASS/FAIL): every upload answered 200 and stored with its sha256 (in
the index and on disk); index p99 < 100 ms during the uploads; the same-file
uploads all 200 with exactly one row in ``python_files`` and one blob. The
server runs on SQLite, or with ``--postgres`` on a throwaway PostgreSQL
cluster. MB/s = 10^6 bytes/s. The exit status is 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402
import psycopg2  # noqa: E402

from tests.support.packages import build_wheel, multipart_body, upload_fields  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

MiB = 1 << 20
SOURCE = "local-python-src"
INDEX_P99_TARGET_MS = 100.0
RSS_INTERVAL = 0.02
# Bounds every wait: a client, the index reader, the whole phase.
UPLOAD_TIMEOUT = 300.0
INDEX_TIMEOUT = 30.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class Upload:
    wheel: Path
    name: str
    version: str
    body: bytes
    content_type: str
    sha256: str
    status: int = 0
    note: str = ""
    started: float = 0.0
    answered: float = 0.0


def prepare(directory: Path, name: str, version: str, size: int) -> Upload:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(directory, name, version, payload_size=size)
    body, content_type = multipart_body(upload_fields(wheel, name, version),
                                        [("content", wheel.name, wheel.read_bytes())])
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Upload(wheel, name, version, body, content_type, sha)


def send(port: int, auth: str, upload: Upload) -> None:
    """One upload on a connection of its own; records status and timings."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=UPLOAD_TIMEOUT)
    upload.started = time.perf_counter()
    try:
        conn.request("POST", f"/upload/pypi/{SOURCE}/", body=upload.body, headers={
            "Content-Type": upload.content_type, "Authorization": auth})
        reply = conn.getresponse()
        answer = reply.read()
        upload.status = reply.status
        if reply.status != 200:
            upload.note = answer[:200].decode(errors="replace")
    except OSError as e:
        upload.note = f"{type(e).__name__}: {e}"
    finally:
        upload.answered = time.perf_counter()
        conn.close()


def send_all(port: int, auth: str, uploads: Sequence[Upload]) -> None:
    barrier = threading.Barrier(len(uploads))

    def one(upload: Upload) -> None:
        barrier.wait(60)
        send(port, auth, upload)

    threads = [threading.Thread(target=one, args=(u,), daemon=True) for u in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(UPLOAD_TIMEOUT + 60)


def read_index(port: int, ready: Event, stop: Event, out: Connection) -> None:
    """GET the root index page back to back on one connection until ``stop``; send
    the latencies of the 200s and the count of failures through ``out``. Sets
    ``ready`` once connected, so the uploads start with the reader reading."""
    latencies: list[tuple[float, float]] = []
    failures = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=INDEX_TIMEOUT)
    try:
        conn.connect()
        ready.set()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("GET", "/python/latest/simple/")
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=INDEX_TIMEOUT)
            if ok:
                latencies.append((start, time.perf_counter() - start))
            else:
                failures += 1
    finally:
        conn.close()
        out.send((latencies, failures))
        out.close()


class IndexReader:
    """Runs :func:`read_index` in a process of its own, so that its timings do not
    include waits for the GIL the 64 uploading threads of this one hold."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=read_index,
                                        args=(port, self._ready, self._stop, send), daemon=True)
        self._process.start()
        send.close()
        if not self._ready.wait(INDEX_TIMEOUT):
            self.finish()
            raise RuntimeError("the index reader did not connect")
        assert self._process.pid is not None
        self.pid = self._process.pid
        # (when it was sent, latency) of each index GET answered 200
        self.latencies: list[tuple[float, float]] = []
        self.failures = 0

    def finish(self) -> None:
        self._stop.set()
        if self._receive.poll(INDEX_TIMEOUT + 10):
            self.latencies, self.failures = self._receive.recv()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _cpu(process: Any) -> float:
    """User + system CPU seconds of ``process`` and of its children alive now."""
    total = 0.0
    try:
        for one in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = one.cpu_times()
                total += float(times.user + times.system)
    except psutil.Error:
        pass
    return total


def _machine_cpu() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds a thread (a tid) ran and waited for a CPU on the run queue (Linux
    ``schedstat``; zeros elsewhere)."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


@dataclass
class Meter:
    """What the machine did while the uploads ran: the server's CPU, its reactor
    thread's (and how long that thread waited for a CPU), the uploading clients',
    the index reader's, the database's (PostgreSQL), the rest of the machine's
    (other engineers' tests share it), and the server's peak RSS."""

    server: int
    clients: int
    reader: int
    database: int | None = None
    peak: int = 0
    wall_s: float = 0.0
    server_s: float = 0.0
    reactor_s: float = 0.0
    reactor_waited_s: float = 0.0
    clients_s: float = 0.0
    reader_s: float = 0.0
    database_s: float = 0.0
    others_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _read(self) -> tuple[float, ...]:
        # The uploading threads are this process's; its children (the server,
        # the reader) are counted on their own.
        times = psutil.Process(self.clients).cpu_times()
        database = psutil.Process(self.database) if self.database is not None else None
        return (time.perf_counter(), _machine_cpu(), _cpu(psutil.Process(self.server)),
                *_schedstat(self.server), float(times.user + times.system),
                _cpu(psutil.Process(self.reader)), _cpu(database) if database else 0.0)

    def __enter__(self) -> Meter:
        self._start = self._read()
        self._process = psutil.Process(self.server)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        (self.wall_s, machine, self.server_s, self.reactor_s, self.reactor_waited_s,
         self.clients_s, self.reader_s, self.database_s) = (
            b - a for a, b in zip(self._start, self._read(), strict=True))
        self.others_s = max(0.0, machine - self.server_s - self.clients_s - self.reader_s
                            - self.database_s)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            try:
                self.peak = max(self.peak, int(self._process.memory_info().rss))
            except psutil.Error:
                return

    def cores(self, seconds: float) -> str:
        return f"{seconds / self.wall_s:.2f}" if self.wall_s else "-"


class Bench:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        server.start()
        token = server.setup_python(SOURCE)
        self.auth = "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()

    def rows(self, name: str) -> list[tuple[str, str]]:
        query = "SELECT filename, sha256 FROM python_files WHERE filename LIKE %s"
        pattern = f"{name.replace('-', '_')}-%"
        if self.server.provider == "postgres":
            connection = psycopg2.connect(self.server.postgres_url)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(query, (pattern,))
                    return [(str(a), str(b)) for a, b in cursor.fetchall()]
            finally:
                connection.close()
        assert self.server.data_dir is not None
        database = self.server.data_dir / "db" / "packagemanager.db"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return [(str(a), str(b)) for a, b in
                    db.execute(query.replace("%s", "?"), (pattern,)).fetchall()]

    def blobs(self, sha256: str) -> list[Path]:
        assert self.server.data_dir is not None
        return [p for p in (self.server.data_dir / "files").rglob(f"{sha256}*") if p.is_file()]

    def listed(self, project: str) -> dict[str, str]:
        response = self.server.get(f"/python/latest/simple/{project}/",
                                   {"Accept": "application/vnd.pypi.simple.v1+json"})
        if response.status != 200:
            return {}
        return {f["filename"]: f["hashes"]["sha256"] for f in response.json()["files"]}

    def wrong(self, uploads: Sequence[Upload]) -> list[str]:
        """Uploads not answered 200, or not listed and stored with their sha256."""
        problems = [f"{u.wheel.name}: {u.status} {u.note}" for u in uploads if u.status != 200]
        listed: dict[str, str] = {}
        for project in {u.name for u in uploads}:
            listed |= self.listed(project)
        for u in uploads:
            blobs = self.blobs(u.sha256)
            if listed.get(u.wheel.name) != u.sha256:
                problems.append(f"{u.wheel.name} listed with {listed.get(u.wheel.name)}")
            elif len(blobs) != 1 or hashlib.sha256(blobs[0].read_bytes()).hexdigest() != u.sha256:
                problems.append(f"{u.wheel.name} not stored with its sha256")
        return problems


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def run(bench: Bench, workdir: Path, clients: int, size: int, same: int,
        database_pid: int | None) -> None:
    assert bench.server.process is not None
    pid = bench.server.process.pid
    print(f"building {clients} wheels of {size / MiB:.0f} MiB ...", flush=True)
    uploads = [prepare(workdir / f"w{i}", "bench-load", f"1.0.{i}", size)
               for i in range(clients)]
    total = sum(len(u.body) for u in uploads)
    # The cold first page is not counted: the server renders it once before.
    bench.server.get("/python/latest/simple/")
    reader = IndexReader(bench.server.port)
    try:
        with Meter(pid, os.getpid(), reader.pid, database_pid) as meter:
            send_all(bench.server.port, bench.auth, uploads)
    finally:
        reader.finish()
    timed, failures = reader.latencies, reader.failures
    during = [latency for _, latency in timed]
    answered = [u for u in uploads if u.answered]
    begun = min(u.started for u in answered)
    seconds = max(u.answered for u in answered) - begun
    latencies = [u.answered - u.started for u in uploads if u.status == 200]
    problems = bench.wrong(uploads)
    index_p99 = percentile(during, 0.99) * 1000
    print(f"\n=== {clients} concurrent uploads of distinct {size / MiB:.0f} MiB wheels ===")
    print(f"  aggregate throughput   {total / seconds / 1e6:8.1f} MB/s "
          f"({total / 1e6:.0f} MB in {seconds:.2f} s)")
    print(f"  upload latency         p50 {percentile(latencies, 0.5):.2f} s  "
          f"p99 {percentile(latencies, 0.99):.2f} s  ({len(latencies)} answered 200)")
    print(f"  index GET during       p50 {percentile(during, 0.5) * 1000:.1f} ms  "
          f"p99 {index_p99:.1f} ms  count {len(during)}  failures {failures}")
    slowest = sorted(timed, key=lambda t: -t[1])[:5]
    first_answer = min(u.answered for u in answered) - begun
    print("  slowest index GETs     " + ", ".join(
        f"{latency * 1000:.0f} ms at {start - begun:+.2f} s" for start, latency in slowest)
        + f"  (first upload answered at {first_answer:.2f} s)")
    print(f"  server peak RSS        {meter.peak / MiB:.0f} MiB")
    database = f", the database {meter.cores(meter.database_s)}" if database_pid else ""
    print(f"  CPU, in cores          the server {meter.cores(meter.server_s)} (its reactor thread "
          f"{meter.cores(meter.reactor_s)}, which waited for a CPU "
          f"{meter.reactor_waited_s / meter.wall_s * 100:.0f}% of the time){database}, "
          f"the uploading clients {meter.cores(meter.clients_s)}, the index reader "
          f"{meter.cores(meter.reader_s)}, other processes {meter.cores(meter.others_s)}"),
    print(f"  all stored with correct sha256: {verdict(not problems)}"
          + (f"  ({len(problems)} wrong, first: {problems[0][:120]})" if problems else ""))
    print(f"  index p99 < {INDEX_P99_TARGET_MS:.0f} ms: "
          f"{verdict(bool(during) and index_p99 < INDEX_P99_TARGET_MS)}", flush=True)
    for upload in uploads:
        shutil.rmtree(upload.wheel.parent, ignore_errors=True)

    one = prepare(workdir / "same", "bench-same", "1.0.0", size)
    racers = [Upload(one.wheel, one.name, one.version, one.body, one.content_type, one.sha256)
              for _ in range(same)]
    send_all(bench.server.port, bench.auth, racers)
    statuses = sorted(u.status for u in racers)
    rows = bench.rows(one.name)
    blobs = bench.blobs(one.sha256)
    passed = (statuses == [200] * same and rows == [(one.wheel.name, one.sha256)]
              and len(blobs) == 1)
    print(f"\n=== {same} clients uploading the same {size / MiB:.0f} MiB wheel at once ===")
    print(f"  statuses {statuses}; rows {len(rows)}; blobs {len(blobs)}")
    notes = sorted({u.note for u in racers if u.note})
    if notes:
        print(f"  answers: {notes[0][:200]}")
    print(f"  all 200, exactly one row and one blob: {verdict(passed)}", flush=True)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--postgres", action="store_true", help="run the server on PostgreSQL")
    parser.add_argument("--clients", type=int, default=64, help="concurrent uploads (64)")
    parser.add_argument("--size", type=parse_size, default=10 * MiB, help="wheel payload (10M)")
    parser.add_argument("--same", type=int, default=8,
                        help="clients uploading one file at once (8)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pm-bench-load-"))
    cluster: PostgresCluster | None = None
    server: ServerProcess | None = None
    print(f"bench/load.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{psutil.cpu_count()} CPUs; database "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}", flush=True)
    try:
        (workdir / "pm").mkdir()
        if args.postgres:
            cluster = PostgresCluster()
            url = cluster.start().create_database("packagemanager")
            server = ServerProcess(root=workdir / "pm", provider="postgres", postgres_url=url)
        else:
            server = ServerProcess(root=workdir / "pm")
        run(Bench(server), workdir / "wheels", args.clients, args.size, args.same,
            cluster.postmaster_pid() if cluster is not None else None)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except Exception as e:
        print(f"\nbenchmark error: {type(e).__name__}: {e}", flush=True)
        if server is not None:
            print(f"server log (tail):\n{server.log()[-3000:]}", flush=True)
    finally:
        if server is not None:
            server.cleanup()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
