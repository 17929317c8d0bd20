"""Unit tests for pm.blobs: hashing temp files, content-addressed placement, the sweep."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python.threadpool import ThreadPool

import pm.blobs as blobs_module
from pm.assembly import BLOB_SUFFIXES
from pm.blobs import (
    BLAKE2_256,
    MD5,
    PIPELINE_HIGH,
    PIPELINE_LOW,
    TEMP_SUFFIX,
    BlobStore,
    BlobWriter,
    Digests,
    PipelinedBlobWriter,
    StoredBlob,
    hashing_threads,
)
from pm.testing import Clock

NOW = 1_700_000_000.0
# Deliberately uneven: empty writes, one byte, odd sizes, a large chunk, memoryviews.
CHUNK_SIZES = (0, 1, 7, 0, 4096, 3, 65_537, 1, 100_000, 13)
# Every digest a writer can compute besides sha256.
ALL = (BLAKE2_256, MD5)


def sample_data() -> bytes:
    # Not a repeating pattern, so a dropped or duplicated chunk changes every digest.
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(6_000))


def chunks(data: bytes) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    offset = 0
    for i, size in enumerate(CHUNK_SIZES):
        piece = data[offset:offset + size]
        out.append(memoryview(piece) if i % 2 else piece)
        offset += size
    out.append(data[offset:])
    return out


def expected_digests(data: bytes, also: tuple[str, ...] = ()) -> Digests:
    """hashlib's sha256 of ``data``, and the digests in ``also``."""
    return Digests(
        sha256=hashlib.sha256(data).hexdigest(),
        blake2_256=hashlib.blake2b(data, digest_size=32).hexdigest()
        if BLAKE2_256 in also else None,
        md5=hashlib.md5(data).hexdigest() if MD5 in also else None,
        size=len(data),
    )


@pytest.fixture
def clock() -> Clock:
    """A fake clock at NOW."""
    return Clock(NOW)


@pytest.fixture
def blobs(tmp_path: Path, clock: Clock) -> BlobStore:
    """A prepared blob store under a temp directory, knowing the server's companion
    suffixes ('.metadata', '.asc')."""
    store = BlobStore(tmp_path / "data", clock, suffixes=BLOB_SUFFIXES)
    store.prepare()
    return store


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_prepare_creates_files_and_tmp_directories(tmp_path: Path, clock: Clock) -> None:
    """prepare() creates DataDir/files and DataDir/tmp, and is safe to call twice."""
    store = BlobStore(tmp_path / "data", clock)
    store.prepare()
    store.prepare()
    assert store.files == tmp_path / "data" / "files"
    assert store.tmp == tmp_path / "data" / "tmp"
    assert store.files.is_dir()
    assert store.tmp.is_dir()


@pytest.mark.parametrize("also", [(), (MD5,), (BLAKE2_256,), ALL])
def test_writer_digests_match_hashlib_over_uneven_chunks(
    blobs: BlobStore, also: tuple[str, ...]
) -> None:
    """Digests of data written in uneven chunks equal hashlib's over the whole data:
    sha256, and exactly the others asked for (those not asked for are None)."""
    data = sample_data()
    assert sum(len(c) for c in chunks(data)) == len(data)
    writer = blobs.writer(also)
    for chunk in chunks(data):
        writer.write(chunk)
    assert writer.size == len(data)
    assert writer.digests() == expected_digests(data, also)
    writer.sync()
    assert writer.path.read_bytes() == data
    # Digests stay available after the file is closed.
    assert writer.digests() == expected_digests(data, also)


def test_writer_of_nothing_has_the_digests_of_empty_data(blobs: BlobStore) -> None:
    """A writer that received no bytes reports the digests of b'' and size 0."""
    writer = blobs.writer(ALL)
    writer.sync()
    assert writer.digests() == expected_digests(b"", ALL)
    assert writer.path.read_bytes() == b""


def test_writer_refuses_an_unknown_digest_before_making_a_file(blobs: BlobStore) -> None:
    """Asking for a digest no writer knows fails at once and leaves no temp file."""
    with pytest.raises(KeyError):
        blobs.writer(("sha1",))
    assert files_under(blobs.tmp) == []


def test_writer_creates_a_temp_file_in_tmp(blobs: BlobStore) -> None:
    """Each writer gets a fresh '.part' file inside DataDir/tmp, never a shared one."""
    first, second = blobs.writer(), blobs.writer()
    try:
        for writer in (first, second):
            assert writer.path.parent == blobs.tmp
            assert writer.path.name.endswith(TEMP_SUFFIX)
            assert writer.path.exists()
        assert first.path != second.path
    finally:
        first.discard()
        second.discard()


def test_writer_refuses_an_existing_path(tmp_path: Path) -> None:
    """BlobWriter never overwrites an existing file (it opens with O_EXCL)."""
    path = tmp_path / "taken.part"
    path.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        BlobWriter(path)
    assert path.read_bytes() == b"someone else's"


def test_discard_removes_the_temp_file(blobs: BlobStore) -> None:
    """discard() closes and deletes the temp file; calling it again is harmless."""
    writer = blobs.writer()
    writer.write(b"partial upload")
    writer.discard()
    assert not writer.path.exists()
    writer.discard()
    assert files_under(blobs.root) == []


def test_discard_after_sync_removes_the_temp_file(blobs: BlobStore) -> None:
    """A synced but never placed temp file is still removed by discard()."""
    writer = blobs.writer()
    writer.write(b"complete but refused")
    writer.sync()
    writer.discard()
    assert not writer.path.exists()


def test_place_moves_into_the_content_addressed_path(blobs: BlobStore) -> None:
    """place() renames the temp file to files/ab/cd/<sha256>."""
    data = b"a wheel, say"
    writer = blobs.writer()
    writer.write(data)
    writer.sync()
    sha = writer.digests().sha256
    blobs.place(writer.path, sha)
    target = blobs.files / sha[:2] / sha[2:4] / sha
    assert blobs.path_for(sha) == target
    assert target.read_bytes() == data
    assert not writer.path.exists()
    assert list(blobs.tmp.iterdir()) == []


def test_placing_the_same_content_twice_keeps_one_file(blobs: BlobStore) -> None:
    """Placing the same content twice keeps one file, with that content."""
    data = b"same bytes twice"
    sha = hashlib.sha256(data).hexdigest()
    for _ in range(2):
        writer = blobs.writer()
        writer.write(data)
        writer.sync()
        blobs.place(writer.path, sha)
        assert not writer.path.exists()
    assert files_under(blobs.root) == [blobs.path_for(sha)]
    assert blobs.path_for(sha).read_bytes() == data


def test_place_with_a_suffix_is_a_separate_blob(blobs: BlobStore) -> None:
    """A suffix (e.g. '.asc') names a different file next to the distribution's."""
    sha = hashlib.sha256(b"dist").hexdigest()
    blobs.write_bytes(b"dist", sha, "")
    blobs.write_bytes(b"signature", sha, ".asc")
    assert blobs.path_for(sha, ".asc") == blobs.path_for(sha).with_name(f"{sha}.asc")
    assert blobs.path_for(sha).read_bytes() == b"dist"
    assert blobs.path_for(sha, ".asc").read_bytes() == b"signature"


def test_write_bytes_places_atomically(blobs: BlobStore) -> None:
    """write_bytes() stores a small blob, again over itself, and leaves no temp file."""
    data = b"Metadata-Version: 2.1\nName: demo\n"
    sha = hashlib.sha256(data).hexdigest()
    blobs.write_bytes(data, sha, ".metadata")
    blobs.write_bytes(data, sha, ".metadata")
    assert blobs.path_for(sha, ".metadata").read_bytes() == data
    assert list(blobs.tmp.iterdir()) == []


# Collecting unused blobs ------------------------------------------------------------


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` last written ``seconds`` before the store's clock (NOW)."""
    then = NOW - seconds
    os.utime(path, (then, then))


def test_stale_lists_blobs_not_placed_for_max_age(blobs: BlobStore) -> None:
    """stale() names the blobs (with their suffix) older than max_age, and nothing else:
    not new blobs, not files whose names are not blobs."""
    old, new = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    blobs.write_bytes(b"old", old, "")
    blobs.write_bytes(b"old sig", old, ".asc")
    blobs.write_bytes(b"new", new, "")
    stranger = blobs.path_for(old).with_name("notes.txt")
    stranger.write_text("an operator's file")
    for path in (blobs.path_for(old), blobs.path_for(old, ".asc"), stranger):
        _age(path, 7200)

    found = blobs.stale(3600)

    assert sorted(found, key=lambda b: b.suffix) == [StoredBlob(old, ""), StoredBlob(old, ".asc")]


def test_only_the_given_suffixes_name_blobs(tmp_path: Path, clock: Clock) -> None:
    """A store knows the companions its ecosystems declare and no others: by default only
    the file itself is a blob; a '.asc' beside it is left alone by stale(), and a set-aside
    one is not put back by sweep() but removed, once old, as any temp file."""
    store = BlobStore(tmp_path / "data", clock)
    store.prepare()
    assert store.suffixes == ("",)
    sha = hashlib.sha256(b"old").hexdigest()
    store.write_bytes(b"old", sha, "")
    store.write_bytes(b"old sig", sha, ".asc")
    for path in (store.path_for(sha), store.path_for(sha, ".asc")):
        _age(path, 7200)
    aside = store.tmp / f"collect-{sha}.metadata-0123abcd{TEMP_SUFFIX}"
    aside.write_bytes(b"metadata")
    _age(aside, 7200)

    assert store.stale(3600) == [StoredBlob(sha, "")]
    assert store.sweep(3600) == 1
    assert not aside.exists()
    assert not store.path_for(sha, ".metadata").exists()
    assert store.path_for(sha, ".asc").read_bytes() == b"old sig"


def test_placing_a_blob_again_makes_it_new(blobs: BlobStore) -> None:
    """Placing bytes that are already there (written long ago) makes the blob new again,
    so an upload between placing and recording is never collected."""
    sha = hashlib.sha256(b"again").hexdigest()
    blobs.write_bytes(b"again", sha, "")
    _age(blobs.path_for(sha), 7200)
    assert blobs.stale(3600) == [StoredBlob(sha, "")]
    writer = blobs.writer()
    writer.write(b"again")
    writer.sync()
    _age(writer.path, 7200)  # written long ago, placed now

    blobs.place(writer.path, sha)

    assert blobs.stale(3600) == []


def test_collect_removes_old_blobs_and_keeps_one_placed_since(blobs: BlobStore) -> None:
    """collect() removes the listed blobs still old, keeps one placed again after stale()
    looked, and leaves no file aside in tmp/."""
    gone, back = hashlib.sha256(b"gone").hexdigest(), hashlib.sha256(b"back").hexdigest()
    blobs.write_bytes(b"gone", gone, "")
    blobs.write_bytes(b"back", back, ".metadata")
    _age(blobs.path_for(gone), 7200)
    _age(blobs.path_for(back, ".metadata"), 7200)
    listed = blobs.stale(3600)
    blobs.write_bytes(b"back", back, ".metadata")  # an upload places it again

    removed = blobs.collect(listed, 3600)

    assert removed == 1
    assert not blobs.path_for(gone).exists()
    assert blobs.path_for(back, ".metadata").read_bytes() == b"back"
    assert list(blobs.tmp.iterdir()) == []
    assert blobs.collect(listed, 3600) == 0  # already gone: not an error


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "abc",
        "0" * 63,
        "0" * 65,
        "A" * 64,
        "g" * 64,
        "../" + "0" * 61,
        "0" * 62 + "/x",
        " " + "0" * 63,
    ],
)
def test_path_for_rejects_anything_but_lowercase_sha256_hex(
    blobs: BlobStore, digest: str
) -> None:
    """path_for() refuses strings that are not 64 lowercase hex digits (no path tricks)."""
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        blobs.path_for(digest)


def test_path_for_stays_inside_files(blobs: BlobStore) -> None:
    """A valid digest maps to a path inside DataDir/files."""
    sha = "0123456789abcdef" * 4
    path = blobs.path_for(sha, ".asc")
    assert path.resolve().is_relative_to(blobs.files.resolve())
    assert path.name == f"{sha}.asc"


def _touch(path: Path, mtime: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def test_one_hashing_thread_per_cpu_and_at_least_two() -> None:
    """The shared pool has a thread per CPU, and two when there are fewer or it is unknown."""
    assert [hashing_threads(n) for n in (None, 1, 2, 16)] == [2, 2, 2, 16]


def test_sweep_puts_back_a_blob_collect_left_aside(blobs: BlobStore) -> None:
    """A blob collect() had moved into tmp/ when its process died goes back in place at the
    next sweep, however old, instead of being removed as an abandoned temp file."""
    sha = hashlib.sha256(b"recorded").hexdigest()
    blobs.write_bytes(b"recorded", sha, ".metadata")
    aside = blobs.tmp / f"collect-{sha}.metadata-0123abcd{TEMP_SUFFIX}"
    os.rename(blobs.path_for(sha, ".metadata"), aside)
    _age(aside, 86400)

    assert blobs.sweep(3600) == 0

    assert blobs.path_for(sha, ".metadata").read_bytes() == b"recorded"
    assert list(blobs.tmp.iterdir()) == []


def test_sweep_removes_only_old_temp_files(blobs: BlobStore) -> None:
    """sweep() deletes '.part' files no writer locks (uploads and small blobs) at once and
    other '.part' files once older than max_age, and keeps fresh or other files."""
    max_age = 3600.0
    old_part = _touch(blobs.tmp / f"orphan-old{TEMP_SUFFIX}", NOW - max_age - 10)
    old_small = _touch(blobs.tmp / f"small-old{TEMP_SUFFIX}", NOW - 10 * max_age)
    fresh_part = _touch(blobs.tmp / f"orphan-fresh{TEMP_SUFFIX}", NOW - max_age + 10)
    future_part = _touch(blobs.tmp / f"orphan-future{TEMP_SUFFIX}", NOW + 60)
    old_other = _touch(blobs.tmp / "notes.txt", NOW - 10 * max_age)
    old_blob = _touch(blobs.path_for("ab" * 32), NOW - 10 * max_age)
    old_part_in_files = _touch(blobs.files / f"stray{TEMP_SUFFIX}", NOW - 10 * max_age)

    assert blobs.sweep(max_age) == 2

    assert not old_part.exists()
    assert not old_small.exists()
    for kept in (fresh_part, future_part, old_other, old_blob, old_part_in_files):
        assert kept.exists(), kept


def test_sweep_uses_the_injected_clock(blobs: BlobStore, clock: Clock) -> None:
    """The same file is kept or swept depending only on the injected clock's time."""
    part = _touch(blobs.tmp / f"orphan-x{TEMP_SUFFIX}", NOW - 100)
    assert blobs.sweep(500) == 0
    assert part.exists()
    clock.now = NOW + 401
    assert blobs.sweep(500) == 1
    assert not part.exists()
    assert blobs.sweep(500) == 0


def test_sweep_keeps_a_file_exactly_at_the_age_limit(blobs: BlobStore) -> None:
    """A temp file exactly max_age old is not yet abandoned (the limit is exclusive)."""
    part = _touch(blobs.tmp / f"orphan-edge{TEMP_SUFFIX}", NOW - 600)
    assert blobs.sweep(600) == 0
    assert part.exists()


def test_sweep_keeps_a_writer_in_progress(blobs: BlobStore, clock: Clock) -> None:
    """An open upload whose file was just written is not removed by the sweep."""
    writer = blobs.writer()
    try:
        writer.write(b"still uploading")
        clock.now = writer.path.stat().st_mtime + 1
        assert blobs.sweep(60) == 0
        assert writer.path.exists()
    finally:
        writer.discard()


def test_sweep_without_a_tmp_directory_removes_nothing(tmp_path: Path, clock: Clock) -> None:
    """Before prepare() has run there is nothing to sweep, and no error."""
    store = BlobStore(tmp_path / "never-prepared", clock)
    assert store.sweep(0) == 0


# The pipelined writer: one job at a time on a shared thread pool ------------------


class CallQueue:
    """Stands in for ``reactor.callFromThread``: calls queue up until the test
    (playing the reactor thread) runs them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., object], *args: Any) -> None:
        with self._lock:
            self._calls.append((f, args))

    def pending(self) -> int:
        with self._lock:
            return len(self._calls)

    def run(self) -> int:
        with self._lock:
            calls, self._calls = self._calls, []
        for f, args in calls:
            f(*args)
        return len(calls)


class Producer:
    """Counts the pause/resume calls a writer makes, and on which thread."""

    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0
        self.threads: set[str] = set()

    def pause(self) -> None:
        self.pauses += 1
        self.threads.add(threading.current_thread().name)

    def resume(self) -> None:
        self.resumes += 1
        self.threads.add(threading.current_thread().name)

    @property
    def paused(self) -> bool:
        return self.pauses > self.resumes


def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate`` holds, checking every millisecond up to a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def removed(path: Path) -> Callable[[], bool]:
    return lambda: not path.exists()


def pool_idle(pool: ThreadPool) -> bool:
    return not pool.working and pool.q.qsize() == 0


@contextmanager
def started_pool(threads: int) -> Iterator[ThreadPool]:
    pool = ThreadPool(minthreads=0, maxthreads=threads, name="test-blob-hashing")
    pool.start()
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    """A started pool of two threads, as small as the server's machine."""
    with started_pool(2) as p:
        yield p


@pytest.fixture
def reactor_calls() -> CallQueue:
    """The calls the writers' jobs hand to the reactor thread."""
    return CallQueue()


def pipelined_store(root: Path, pool: ThreadPool, calls: CallQueue) -> BlobStore:
    store = BlobStore(root, Clock(NOW), threads=pool, call_from_thread=calls)
    store.prepare()
    return store


@pytest.fixture
def piped(tmp_path: Path, pool: ThreadPool, reactor_calls: CallQueue) -> BlobStore:
    """A prepared blob store whose writers are pipelined on ``pool``."""
    return pipelined_store(tmp_path / "data", pool, reactor_calls)


class Gate:
    """A job that holds a pool thread until opened: writers' jobs queue up behind it."""

    def __init__(self, pool: ThreadPool) -> None:
        self._open = threading.Event()
        self._entered = threading.Event()
        pool.callInThread(self._hold)
        assert self._entered.wait(10), "the gate job never started"

    def _hold(self) -> None:
        self._entered.set()
        self._open.wait(30)

    def open(self) -> None:
        self._open.set()


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[ThreadPool]:
    """One pool for every example of a hypothesis test."""
    with started_pool(2) as p:
        yield p


@pytest.fixture(scope="module")
def shared_piped(tmp_path_factory: pytest.TempPathFactory, shared_pool: ThreadPool) -> BlobStore:
    """A pipelined store on ``shared_pool``, for hypothesis tests."""
    return pipelined_store(tmp_path_factory.mktemp("piped") / "data", shared_pool, CallQueue())


def split(data: bytes, sizes: list[int]) -> list[bytes | memoryview]:
    """``data`` cut at ``sizes`` (cycled), alternating bytes and memoryview slices."""
    out: list[bytes | memoryview] = []
    view = memoryview(data)
    offset = 0
    i = 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        out.append(view[offset:offset + size] if i % 2 else data[offset:offset + size])
        offset += size
        i += 1
    return out


def test_store_with_threads_makes_pipelined_writers(piped: BlobStore, blobs: BlobStore) -> None:
    """A store given a thread pool hands out PipelinedBlobWriters, one without BlobWriters."""
    writer = piped.writer()
    try:
        assert isinstance(writer, PipelinedBlobWriter)
        assert writer.path.parent == piped.tmp and writer.path.exists()
    finally:
        writer.discard()
    plain = blobs.writer()
    try:
        assert type(plain) is BlobWriter
    finally:
        plain.discard()


def test_store_with_threads_needs_call_from_thread(tmp_path: Path, pool: ThreadPool) -> None:
    """Lanes must reach the reactor thread, so threads without call_from_thread are refused."""
    with pytest.raises(ValueError, match="call_from_thread"):
        BlobStore(tmp_path, Clock(NOW), threads=pool)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=st.binary(max_size=300_000),
    sizes=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=20),
)
def test_pipelined_digests_match_hashlib(
    shared_piped: BlobStore, data: bytes, sizes: list[int]
) -> None:
    """Random data written in random chunk sizes: after drain() the digests equal
    hashlib's over the whole data and the file holds exactly the data."""
    writer = shared_piped.writer(ALL)
    try:
        for chunk in split(data, sizes):
            writer.write(chunk)
        writer.drain()
        assert writer.digests() == expected_digests(data, ALL)
        writer.sync()
        assert writer.path.read_bytes() == data
    finally:
        writer.discard()
    assert not writer.path.exists()


def test_pipelined_order_is_kept_over_many_small_chunks(
    piped: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of tiny chunks, with the job handing its thread back every
    few hundred bytes, still reach the file and every hasher in order."""
    monkeypatch.setattr(blobs_module, "JOB_TURN", 300)
    data = sample_data()
    writer = piped.writer(ALL)
    for chunk in split(data, [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]):
        writer.write(chunk)
    writer.drain()
    assert writer.size == len(data)
    assert writer.digests() == expected_digests(data, ALL)
    writer.sync()
    assert writer.path.read_bytes() == data


def test_pipelined_writer_of_nothing(piped: BlobStore) -> None:
    """No bytes (and empty writes) drain at once to the digests of b'' and an empty file."""
    writer = piped.writer()
    writer.write(b"")
    writer.write(memoryview(b""))
    writer.drain()
    assert writer.digests() == expected_digests(b"")
    writer.sync()
    assert writer.path.read_bytes() == b""


def test_pipelined_writer_copies_mutable_buffers(piped: BlobStore, pool: ThreadPool) -> None:
    """A chunk the caller may reuse (a view of a bytearray) is copied before it waits."""
    writer = piped.writer()
    buffer = bytearray(b"a" * 100_000)
    gate, other = Gate(pool), Gate(pool)
    try:
        writer.write(memoryview(buffer))
        buffer[:] = b"b" * 100_000
    finally:
        gate.open()
        other.open()
    writer.drain()
    assert writer.digests() == expected_digests(b"a" * 100_000)


def test_digests_and_sync_need_drain_first(piped: BlobStore, pool: ThreadPool) -> None:
    """digests() and sync() refuse to run while the writer still has work."""
    writer = piped.writer()
    gate, other = Gate(pool), Gate(pool)
    try:
        writer.write(b"x" * 10_000)
        with pytest.raises(RuntimeError, match="drain"):
            writer.digests()
        with pytest.raises(RuntimeError, match="drain"):
            writer.sync()
    finally:
        gate.open()
        other.open()
    writer.drain()
    assert writer.digests() == expected_digests(b"x" * 10_000)
    writer.discard()


def test_backpressure_pauses_once_past_high_and_resumes_once_under_low(
    tmp_path: Path, reactor_calls: CallQueue
) -> None:
    """With the only pool thread held, the backlog grows: pause() comes exactly
    when it passes PIPELINE_HIGH and only once; resume() comes once, through
    call_from_thread, when the job has brought it under PIPELINE_LOW."""
    chunk = bytes(range(256)) * 256  # 64 KiB
    with started_pool(1) as pool:
        store = pipelined_store(tmp_path / "data", pool, reactor_calls)
        producer = Producer()
        writer = store.writer(pause=producer.pause, resume=producer.resume)
        assert isinstance(writer, PipelinedBlobWriter)
        gate = Gate(pool)
        written = 0
        try:
            while written <= PIPELINE_HIGH:
                assert producer.pauses == 0
                writer.write(chunk)
                written += len(chunk)
            assert producer.pauses == 1
            for _ in range(8):  # bytes already read still arrive while paused
                writer.write(chunk)
                written += len(chunk)
            assert producer.pauses == 1
            assert writer.backlog == written
            assert reactor_calls.pending() == 0 and producer.resumes == 0
        finally:
            gate.open()
        poll(lambda: reactor_calls.pending() > 0, "the job to ask for resume()")
        assert producer.resumes == 0  # only ever on the reactor thread
        reactor_calls.run()
        assert producer.resumes == 1
        assert writer.backlog < PIPELINE_LOW
        assert producer.threads == {threading.current_thread().name}
        writer.drain()
        reactor_calls.run()
        assert (producer.pauses, producer.resumes) == (1, 1)
        assert writer.digests() == expected_digests(chunk * (written // len(chunk)))
        writer.discard()


def fill_until_paused(pool: ThreadPool, writer: BlobWriter, producer: Producer,
                      chunk: bytes) -> None:
    """Write ``chunk`` while the pool is held back until the writer pauses the
    producer, then let the pool go."""
    gate = Gate(pool)
    try:
        while not producer.paused:
            writer.write(chunk)
    finally:
        gate.open()


def test_resume_waits_while_the_backlog_is_still_above_low(
    tmp_path: Path, reactor_calls: CallQueue
) -> None:
    """A resume request that reaches the reactor after more bytes came in (the
    backlog back above LOW) does not resume; a later one does, once."""
    chunk = b"z" * 65_536
    with started_pool(1) as pool:
        store = pipelined_store(tmp_path / "data", pool, reactor_calls)
        producer = Producer()
        writer = store.writer(pause=producer.pause, resume=producer.resume)
        assert isinstance(writer, PipelinedBlobWriter)
        fill_until_paused(pool, writer, producer, chunk)
        poll(lambda: reactor_calls.pending() > 0, "the job to ask for resume()")
        gate = Gate(pool)
        try:
            for _ in range(PIPELINE_LOW // len(chunk) + 1):
                writer.write(chunk)
            assert writer.backlog >= PIPELINE_LOW
            reactor_calls.run()
            assert producer.resumes == 0 and producer.paused
        finally:
            gate.open()
        poll(lambda: reactor_calls.pending() > 0, "a second request for resume()")
        reactor_calls.run()
        assert (producer.pauses, producer.resumes) == (1, 1)
        writer.drain()
        writer.discard()


def failing_write(file: Any, data: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_error_surfaces_from_drain_and_from_a_later_write(
    piped: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing file write (a full disk) is raised by drain() and then by every
    write(); digests() refuse; discard() still removes the temp file."""
    monkeypatch.setattr(blobs_module, "_write_all", failing_write)
    writer = piped.writer()
    writer.write(b"doomed" * 1000)
    with pytest.raises(OSError, match="No space left") as raised:
        writer.drain()
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="No space left"):
        writer.write(b"more")
    with pytest.raises(OSError, match="No space left"):
        writer.digests()
    writer.discard()
    assert not writer.path.exists()


def test_write_error_stops_the_upload_early(
    tmp_path: Path, reactor_calls: CallQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a write has failed, the job drops the rest of the backlog (so a
    paused upload is resumed) and the next write() raises: the upload stops early."""
    monkeypatch.setattr(blobs_module, "_write_all", failing_write)
    chunk = b"q" * 65_536
    with started_pool(1) as pool:
        store = pipelined_store(tmp_path / "data", pool, reactor_calls)
        producer = Producer()
        writer = store.writer(pause=producer.pause, resume=producer.resume)
        fill_until_paused(pool, writer, producer, chunk)
        poll(lambda: reactor_calls.pending() > 0, "the job to ask for resume()")
        reactor_calls.run()
        assert not producer.paused
        with pytest.raises(OSError, match="No space left"):
            writer.write(chunk)
        writer.discard()
        assert not writer.path.exists()


def test_discard_with_queued_work_removes_the_file_at_once(
    tmp_path: Path, reactor_calls: CallQueue
) -> None:
    """discard() while the writer has megabytes queued (none in hand) removes the file
    before returning, resumes a paused producer, and the queued jobs end
    without touching anything; a second discard() is harmless."""
    chunk = b"d" * 65_536
    with started_pool(1) as pool:
        store = pipelined_store(tmp_path / "data", pool, reactor_calls)
        producer = Producer()
        writer = store.writer(pause=producer.pause, resume=producer.resume)
        gate = Gate(pool)
        try:
            while not producer.paused:
                writer.write(chunk)
            writer.discard()
            assert not writer.path.exists()
            assert (producer.pauses, producer.resumes) == (1, 1)
        finally:
            gate.open()
        poll(lambda: pool_idle(pool), "the pool to be idle")
        writer.discard()
        assert files_under(store.root) == []
        assert reactor_calls.run() == 0  # no resume after the discard's own
        assert producer.resumes == 1
        with pytest.raises(OSError, match="discarded"):
            writer.drain()
        with pytest.raises(RuntimeError, match="after discard"):
            writer.write(b"late")


def test_discard_during_a_stalled_write_leaves_cleanup_to_the_job(
    piped: BlobStore, pool: ThreadPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """discard() does not wait long for a job stuck in a write: it returns after
    DISCARD_WAIT, and the job removes the file when the write ends; then no job
    is left running."""
    entered, release = threading.Event(), threading.Event()
    real_write = blobs_module._write_all

    def stalled_write(file: Any, data: Any) -> None:
        entered.set()
        assert release.wait(30)
        real_write(file, data)

    monkeypatch.setattr(blobs_module, "_write_all", stalled_write)
    writer = piped.writer()
    writer.write(b"in hand" * 10_000)
    writer.write(b"queued" * 10_000)
    assert entered.wait(10)
    started = time.monotonic()
    try:
        writer.discard()
        assert time.monotonic() - started < 5
        assert writer.path.exists()  # the job still holds its chunk
        writer.discard()  # twice, still in flight: harmless
    finally:
        release.set()
    poll(lambda: not writer.path.exists(), "the job to remove the file")
    poll(lambda: pool_idle(pool), "the pool to be idle")
    assert files_under(piped.root) == []
    writer.discard()


def test_discard_while_jobs_run_is_safe(piped: BlobStore, pool: ThreadPool) -> None:
    """discard() racing jobs that are busy with many chunks never raises, always
    removes the file, and leaves the pool idle."""
    data = os.urandom(65_536)
    for round_ in range(20):
        writer = piped.writer()
        for _ in range(round_ * 3):
            writer.write(data)
        writer.discard()
        poll(removed(writer.path), "the file to be removed")
    poll(lambda: pool_idle(pool), "the pool to be idle")
    assert files_under(piped.root) == []


def test_many_writers_share_a_pool_of_two_threads(
    piped: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty uploads fed in turns, on a pool of only two threads and with short
    turns, all end with the right digests and contents."""
    monkeypatch.setattr(blobs_module, "JOB_TURN", 64 * 1024)
    rng = random.Random(1234)
    contents = [rng.randbytes(rng.randrange(0, 600_000)) for _ in range(40)]
    writers = [piped.writer(ALL[:i % 3]) for i in range(len(contents))]
    pieces = [split(data, [rng.randrange(1, 100_000)]) for data in contents]
    while any(pieces):
        for writer, queue in zip(writers, pieces, strict=True):
            if queue:
                writer.write(queue.pop(0))
    for i, (writer, data) in enumerate(zip(writers, contents, strict=True)):
        writer.drain()
        assert writer.digests() == expected_digests(data, ALL[:i % 3])
        writer.sync()
        assert writer.path.read_bytes() == data
        writer.discard()
    assert files_under(piped.root) == []


def test_writing_without_running_threads_fails_cleanly(
    tmp_path: Path, reactor_calls: CallQueue
) -> None:
    """A store whose pool is not running refuses the upload with an OSError
    (from write() or drain()) instead of leaving drain() waiting forever."""
    pool = ThreadPool(minthreads=0, maxthreads=2)
    store = pipelined_store(tmp_path / "data", pool, reactor_calls)
    writer = store.writer()
    writer.write(b"nobody will hash this")
    with pytest.raises(OSError, match="not running"):
        writer.drain()
    with pytest.raises(OSError, match="not running"):
        writer.write(b"again")
    writer.discard()
    assert files_under(store.root) == []


def test_stop_fails_uploads_in_flight_quickly(tmp_path: Path, reactor_calls: CallQueue) -> None:
    """BlobStore.stop() makes the writers drop queued work: a writer with megabytes
    queued fails with OSError instead of being written out, and stop() returns."""
    pool = ThreadPool(minthreads=0, maxthreads=1)
    store = pipelined_store(tmp_path / "data", pool, reactor_calls)
    store.start()
    assert pool.started
    writer = store.writer()
    gate = Gate(pool)
    for _ in range(64):
        writer.write(b"s" * 65_536)
    stopper = threading.Thread(target=store.stop)
    stopper.start()
    poll(lambda: not pool.started, "stop() to begin")
    gate.open()
    stopper.join(10)
    assert not stopper.is_alive()
    with pytest.raises(OSError, match="stopping"):
        writer.drain()
    assert writer.path.stat().st_size < 64 * 65_536
    writer.discard()
    store.stop()  # twice: harmless


def test_writer_starts_writeback_as_it_goes(
    piped: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer asks for writeback of each WRITEBACK_EVERY bytes written, in
    order and without gaps, so sync() at the end has only the tail to flush."""
    ranges: list[tuple[int, int]] = []
    real = blobs_module._start_writeback

    def recording(fd: int, offset: int, length: int) -> None:
        ranges.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(blobs_module, "_start_writeback", recording)
    monkeypatch.setattr(blobs_module, "WRITEBACK_EVERY", 100_000)
    data = sample_data()  # 192,000 bytes
    writer = piped.writer()
    for chunk in split(data, [30_000, 7, 45_000]):
        writer.write(chunk)
    writer.drain()
    writer.sync()
    assert writer.path.read_bytes() == data
    assert ranges and ranges[0][0] == 0
    for (offset, length), (next_offset, _) in itertools.pairwise(ranges):
        assert next_offset == offset + length
    assert all(length >= 100_000 for _, length in ranges)
    assert len(data) - sum(length for _, length in ranges) < 100_000
    writer.discard()


def test_small_chunks_queued_together_are_written_in_batches(
    piped: BlobStore, pool: ThreadPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks waiting in the queue are joined into writes of up to JOB_BATCH
    bytes (one system call and one hash update each), in order; a chunk that
    does not fit waits for the next batch."""
    sizes: list[int] = []
    real = blobs_module._write_all

    def recording(file: Any, data: Any) -> None:
        sizes.append(len(data))
        real(file, data)

    monkeypatch.setattr(blobs_module, "_write_all", recording)
    monkeypatch.setattr(blobs_module, "JOB_BATCH", 100_000)
    data = sample_data()  # 192,000 bytes
    writer = piped.writer(ALL)
    gate, other = Gate(pool), Gate(pool)
    try:
        for chunk in split(data, [10_000]):
            writer.write(chunk)
    finally:
        gate.open()
        other.open()
    writer.drain()
    assert sizes == [100_000, 92_000]
    assert writer.digests() == expected_digests(data, ALL)
    writer.sync()
    assert writer.path.read_bytes() == data
    writer.discard()
