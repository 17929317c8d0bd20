"""Print how long the server takes to render each UI page with 1,000 packages in a repo.

Run: python bench/ui.py [--packages N] [--runs N]   (from the project root)

The server is assembled as ``twistd packagemanager`` assembles it (SQLite in a
temp dir, the same thread pool for the database and READMEs) and listens on a
free loopback port, with a Python repo of N projects (3 versions, a wheel and
an sdist each, a Markdown README) and an R repo of N packages (2 versions
each). One request at a time, from treq in the same process; the time is
taken on the server, from the moment the request reaches the app to the
moment the response is finished, so it includes the database queries in
their thread. The reference is a bare Twisted resource answering the same
bytes from memory, timed the same way. Each page is PASS when its 95th
percentile is under 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import treq
from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from pm.assembly import BLOB_SUFFIXES, Parts, assemble
from pm.blobs import BlobStore
from pm.db import Database, migrate, sqlite_dialect
from pm.python.files import PythonFile
from pm.r.files import RPackageFile
from pm.signatures import SignatureChecker

TARGET_MS = 50.0
BROWSER: dict[bytes | str, bytes | str] = {
    "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
README = "\n\n".join(
    f"## Section {i}\n\nSome *text* with `code`, a [link](https://example.org/{i}) and\n"
    f"a list:\n\n- one\n- two\n\n```python\ndef f{i}(x):\n    return x * {i}\n```"
    for i in range(12)) + "\n\nThis is {name}.\n"
RST_README = "\n\n".join(
    f"Section {i}\n{'=' * (8 + len(str(i)))}\n\nSome *text* with ``code`` and a"
    f" `link <https://example.org/{i}>`_.\n\n.. code:: python\n\n   def f{i}(x):\n"
    f"       return x * {i}\n" for i in range(40)) + "\nThis is {name}.\n"


class Timed(Resource):
    """Records how long each request takes from reaching ``inner`` to being finished."""

    isLeaf = True

    def __init__(self, inner: Resource, clock: Callable[[], float]) -> None:
        super().__init__()
        self._inner = inner
        self._clock = clock
        self.last_ms = 0.0

    def render(self, request: Request) -> Any:
        started = self._clock()

        def done(_: object) -> None:
            self.last_ms = (self._clock() - started) * 1000

        request.notifyFinish().addBoth(done)
        return self._inner.render(request)


class Fixed(Resource):
    """The reference: the same number of bytes, from memory, as fast as Twisted answers."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._body


def _python_file(source_guid: str, i: int, version: str, filename: str,
                 at: float) -> PythonFile:
    digest = hashlib.sha256(filename.encode()).hexdigest()
    signed = filename.endswith(".whl")
    return PythonFile(
        source_guid=source_guid, project=f"pkg{i:04d}", display_name=f"pkg{i:04d}",
        version=version, filename=filename,
        filetype="bdist_wheel" if signed else "sdist",
        python_version="py3" if signed else "source", size=10_000 + i, sha256=digest,
        blake2_256=digest, md5=digest[:32], requires_python=">=3.9",
        summary=f"Package number {i} for the benchmark", metadata_sha256=digest,
        signature_sha256=digest if signed else None,
        signature_keyid="0123456789ABCDEF" if signed else None,
        signature_trusted=True if signed else None, yanked=False, uploaded_at=at,
        uploaded_by="local-admin",
        details={"Description": (RST_README if i == 1 else README).format(name=i),
                 "Description-Content-Type": "text/x-rst" if i == 1 else "text/markdown",
                 "Author": "Bench", "License": "MIT",
                 "Project-URL": ["Source, https://example.org/src"],
                 "Requires-Dist": [f"pkg{(i + 1) % 1000:04d}>=1"],
                 "Classifier": ["Programming Language :: Python :: 3"]})


async def populate(parts: Parts, packages: int) -> None:
    catalog = parts.catalog
    python = await catalog.create_source("local-python-src", "local-python", "local-admin")
    await catalog.create_repo("python", "python", "Benchmark packages", "local-admin")
    await catalog.subscribe("python", "local-python-src", "local-admin")
    r = await catalog.create_source("local-r-src", "local", "local-admin")
    await catalog.create_repo("cran", "r", "", "local-admin")
    await catalog.subscribe("cran", "local-r-src", "local-admin")
    at = 1_700_000_000.0
    for i in range(packages):
        for version in ("1.0", "1.9", "1.10"):
            base = f"pkg{i:04d}-{version}"
            for filename in (f"{base}-py3-none-any.whl", f"{base}.tar.gz"):
                at += 1
                await parts.python.files.add(_python_file(python.guid, i, version, filename, at))
        for n, version in enumerate(("0.9.0", "1.0.0")):
            at += 1
            name = f"rpkg{i:04d}"
            await parts.r.files.put(RPackageFile(
                source_guid=r.guid, package=name, version=version,
                filename=f"{name}_{version}.tar.gz", size=20_000, sha256=f"{i:060d}{n:04d}",
                md5=f"{i:028d}{n:04d}",
                fields={"Package": name, "Version": version, "Title": f"R package {i}",
                        "Description": "A package for the benchmark.",
                        "Imports": f"rpkg{(i + 1) % packages:04d} (>= 0.9), stats",
                        "License": "GPL-3", "NeedsCompilation": "no"},
                archived=n == 0, uploaded_at=at, uploaded_by="local-admin"),
                "local-r-src", replace=False)


class Served:
    """A resource behind a Site on a free loopback port, timed on the server."""

    def __init__(self, reactor: Any, resource: Resource) -> None:
        self.timer = Timed(resource, time.perf_counter)
        self.port = reactor.listenTCP(0, Site(self.timer), interface="127.0.0.1")
        self.address = f"http://127.0.0.1:{self.port.getHost().port}"

    async def fetch(self, path: str) -> tuple[float, bytes]:
        response = await treq.get(self.address + path, headers=BROWSER, persistent=False)
        body = await treq.content(response)
        if response.code not in (200, 404):
            raise AssertionError(f"{path}: {response.code} {body[:300]!r}")
        return self.timer.last_ms, body

    async def close(self) -> None:
        await self.port.stopListening()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def main(reactor: Any, packages: int, runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="pm-bench-ui-"))
    dialect = sqlite_dialect(root / "db")
    migrate(dialect)
    database = Database(dialect)
    blobs = BlobStore(root / "data", time.time, threads=ThreadPool(0, 2, name="bench"),
                      call_from_thread=reactor.callFromThread, suffixes=BLOB_SUFFIXES)
    blobs.prepare()
    signatures = SignatureChecker(root / "gnupg", ())
    signatures.prepare()
    parts = assemble(database, blobs, None, signatures, time.time,
                     lambda work, *args: deferToThread(work, *args), 3600.0)
    started = time.perf_counter()
    await populate(parts, packages)
    print(f"{packages} Python projects (3 versions, 2 files each) and {packages} R packages "
          f"(2 versions each) recorded in {time.perf_counter() - started:.1f} s")

    server = Served(reactor, cast(Resource, parts.app.resource()))
    last = packages - 1
    pages = [
        ("home", "/"),
        ("python repo, page 1", "/repos/python/"),
        ("python repo, last page", f"/repos/python/?page={(packages + 49) // 50}"),
        ("python repo, search", "/repos/python/?q=pkg05"),
        ("python package (Markdown)", f"/repos/python/packages/pkg{last:04d}/"),
        ("python package (long rST)", "/repos/python/packages/pkg0001/"),
        ("R repo, page 1", "/repos/cran/"),
        ("R package", f"/repos/cran/packages/rpkg{last:04d}/"),
        ("search every repo", "/search?q=pkg05"),
        ("404 page", "/repos/python/packages/missing/"),
    ]
    # A README is rendered on a project's first view, then kept: time first views on
    # their own (the very first also loads the renderers).
    cold = [(label, (await server.fetch(path))[0]) for label, path in (
        ("first view since start, Markdown", "/repos/python/packages/pkg0002/"),
        ("first view since start, rST", "/repos/python/packages/pkg0001/"),
        ("first view, Markdown", "/repos/python/packages/pkg0003/"),
        ("first view, Markdown", "/repos/python/packages/pkg0004/"),
        ("first view, Markdown", "/repos/python/packages/pkg0005/"))]
    print(f"{'page':28} {'bytes':>8} {'median':>8} {'p95':>8} {'max':>8} {'ref p95':>8}"
          "  (ms; target p95 < 50 ms)")
    failed = 0
    for label, path in pages:
        times = []
        body = b""
        for _ in range(runs):
            elapsed, body = await server.fetch(path)
            times.append(elapsed)
        reference = Served(reactor, Fixed(body))
        ref_times = [(await reference.fetch("/"))[0] for _ in range(runs)]
        await reference.close()
        p95 = percentile(times, 0.95)
        verdict = "PASS" if p95 < TARGET_MS else "FAIL"
        failed += verdict == "FAIL"
        print(f"{label:28} {len(body):>8} {statistics.median(times):>8.1f} {p95:>8.1f} "
              f"{max(times):>8.1f} {percentile(ref_times, 0.95):>8.2f}  {verdict}")
    for label, elapsed in cold:
        print(f"{label}: {elapsed:.1f} ms (README rendered, then kept)")
    # Any change (here: a source created) makes the next list view read the repo again.
    for label, path in (("python repo", "/repos/python/"), ("R repo", "/repos/cran/")):
        changed = []
        for n in range(5):
            await parts.catalog.create_source(f"change-{label[0]}{n}", "local", "local-admin")
            changed.append((await server.fetch(path))[0])
        print(f"{label}, first view after a change: median {statistics.median(changed):.1f} ms,"
              f" max {max(changed):.1f} ms (the list is read again, then kept)")
    print(f"{len(pages) - failed} of {len(pages)} pages PASS (p95 under {TARGET_MS:.0f} ms)")
    await server.close()
    database.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(
        main(reactor, options.packages, options.runs)))
