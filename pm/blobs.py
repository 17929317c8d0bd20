"""Files on disk under ``DataDir``: content-addressed, written atomically.

A blob is written to a temp file in ``DataDir/tmp`` (the same file system as its
final place), hashed as it is written, fsynced, then renamed into
``DataDir/files``. A crash leaves at most a temp file, which the sweep removes.

Blobs are shared: two sources may hold the same wheel, two wheels the same
metadata. So nothing removes a blob when one user of it goes (a deleted source,
an upload whose recording failed); :meth:`BlobStore.collect` removes those no
recorded file uses once they are ``TempMaxAge`` old. Placing a blob makes it
new again, which is what keeps an upload between placing and recording safe.

With a thread pool (the server's case) an upload's bytes are written and hashed
off the reactor thread by a :class:`PipelinedBlobWriter`; without one (unit
tests, tools) :class:`BlobWriter` does it all in the caller's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

TEMP_SUFFIX = ".part"
# A blob collect() moved into tmp/ while it decides: collect-<sha256><suffix>-<id>.part
_ASIDE_PREFIX = "collect-"

RunInThread = Callable[..., "Deferred[Any]"]
CallFromThread = Callable[..., object]
Chunk = bytes | memoryview


def hashing_threads(cpus: int | None) -> int:
    """Threads that write and hash uploads, shared by every upload of a server.

    One per CPU: the work is CPU-bound, and more threads than CPUs only add
    switching (on 2 CPUs, 4 threads made a 1 GiB upload ~10% slower than 2).
    At least 2, so that one write stalled on a slow disk does not stop the
    hashing of every other upload.
    """
    return max(2, cpus or 1)


# Backpressure of a pipelined writer: past HIGH bytes accepted but not yet
# processed by its slowest lane the connection is paused, under LOW resumed.
PIPELINE_HIGH = 8 * 1024 * 1024
PIPELINE_LOW = 2 * 1024 * 1024
# A lane job hands its pool thread back after this many bytes (and queues
# itself again), so a fast upload cannot keep a shared thread from the others.
LANE_TURN = 4 * 1024 * 1024
# How long discard() (on the reactor thread) waits for a lane to put down the
# chunk in hand before leaving the file's removal to that lane.
DISCARD_WAIT = 0.05
# drain() wakes this often to notice that the pool was stopped under it.
DRAIN_POLL = 0.5
# The write lane asks the kernel to start writing back every this many bytes,
# so that sync() at the end has little left to flush and a large upload does
# not pile up dirty pages until the kernel throttles it.
WRITEBACK_EVERY = 8 * 1024 * 1024


def _nothing() -> None:
    pass


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range``, if libc has it (the os module does not)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of ``fd`` to disk without waiting for it.

    Only a hint (as PostgreSQL's ``*_flush_after`` settings use it): the result is
    ignored, and ``sync()``'s fsync still makes the file durable and reports errors.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _write_all(file: BinaryIO, data: Chunk) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        if written is None:
            raise OSError("blob file would block")
        view = view[written:]


@dataclass(frozen=True)
class StoredBlob:
    """A blob found on disk: ``path_for(sha256, suffix)``."""

    sha256: str
    suffix: str


def _blob_name(name: str, suffixes: Sequence[str]) -> StoredBlob | None:
    sha256, suffix = name[:64], name[64:]
    if suffix not in suffixes or not _is_sha256(sha256):
        return None
    return StoredBlob(sha256, suffix)


def _aside_blob(name: str, suffixes: Sequence[str]) -> StoredBlob | None:
    """The blob a temp file named by ``collect`` holds, if it is one."""
    if not name.startswith(_ASIDE_PREFIX):
        return None
    return _blob_name(name[len(_ASIDE_PREFIX):].rsplit("-", 1)[0], suffixes)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class Digests:
    sha256: str
    blake2_256: str
    md5: str
    size: int


class BlobWriter:
    """A temp file that hashes what is written to it, in the caller's thread.

    Used when the store has no hashing threads. Call ``drain()`` (nothing to do
    here) before ``digests()`` and ``sync()``, as with :class:`PipelinedBlobWriter`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "xb", buffering=0)  # noqa: SIM115
        self._sha256 = hashlib.sha256()
        self._blake2 = hashlib.blake2b(digest_size=32)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data: Chunk) -> None:
        assert self._file is not None, "write after close"
        _write_all(self._file, data)
        self._sha256.update(data)
        self._blake2.update(data)
        self._md5.update(data)
        self.size += len(data)

    def drain(self) -> None:
        """Wait until everything written is on its way to disk; nothing to wait for here."""

    def digests(self) -> Digests:
        return Digests(self._sha256.hexdigest(), self._blake2.hexdigest(),
                       self._md5.hexdigest(), self.size)

    def sync(self) -> None:
        """Flush to stable storage and close; blocking, so call it in a thread."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def discard(self) -> None:
        file, self._file = self._file, None
        try:
            if file is not None:
                file.close()
        finally:
            self.path.unlink(missing_ok=True)


class _Pipeline:
    """What the pipelined writers of one store share."""

    def __init__(self, threads: ThreadPool, call_from_thread: CallFromThread) -> None:
        self.threads = threads
        self.call_from_thread = call_from_thread
        # Set by BlobStore.stop(): lanes drop their work so that stopping is quick.
        self.stopping = False


class _Lane:
    """One ordered actor of a writer: its chunks, and at most one pool job at a time."""

    __slots__ = ("chunks", "done", "process", "running", "scheduled")

    def __init__(self, process: Callable[[Chunk], object]) -> None:
        self.process = process
        self.chunks: deque[Chunk] = deque()
        self.scheduled = False  # a job of this lane is queued on the pool or running
        self.running = False  # that job holds a chunk: it is using the file or a hasher
        self.done = 0  # bytes processed, or dropped once the writer failed

    def drop(self) -> None:
        self.done += sum(len(chunk) for chunk in self.chunks)
        self.chunks.clear()


def _frozen(data: Chunk) -> Chunk:
    """``data`` itself if nothing can change it while it waits in a lane, else a copy.

    Twisted hands over bytes, and the multipart parser bytes or memoryview slices
    of the bytes it was fed: neither is ever copied here.
    """
    if type(data) is bytes:
        return data
    if isinstance(data, memoryview) and data.format == "B" and isinstance(data.obj, bytes):
        return data
    return bytes(data)


class PipelinedBlobWriter(BlobWriter):
    """A temp file written and hashed off the reactor thread, by three lanes.

    ``write`` (on the reactor thread) only queues the chunk on each lane: the
    file write + sha256, blake2b, md5 (the slowest, ~1.5 ns a byte). A lane is
    an ordered actor: a deque and, while it has chunks, exactly one job on the
    store's shared thread pool taking them in order, so the lanes run in
    parallel with each other and with the reactor (hashlib and file writes
    release the GIL) without a thread per upload.

    Backpressure: once more than ``PIPELINE_HIGH`` bytes wait for the slowest
    lane, ``pause`` is called; when the lanes bring that under ``PIPELINE_LOW``,
    ``resume`` is. Both run on the reactor thread (the lanes go through
    ``call_from_thread``) and strictly alternate.

    A failing lane (a full disk) stops the others; its error is raised by the
    next ``write`` and by ``drain``. ``drain`` blocks until the lanes are done:
    run it in a thread (never one of the store's pool). ``digests`` and ``sync``
    only after it.
    """

    def __init__(
        self,
        path: Path,
        pipeline: _Pipeline,
        *,
        pause: Callable[[], object] = _nothing,
        resume: Callable[[], object] = _nothing,
    ) -> None:
        super().__init__(path)
        self._pipeline = pipeline
        self._pause = pause
        self._resume = resume
        # One lock for the three lanes: the backlog is measured across them.
        self._cond = threading.Condition(threading.Lock())
        self._lanes = (
            _Lane(self._write_and_sha256),
            _Lane(self._blake2.update),
            _Lane(self._md5.update),
        )
        self._queued = 0
        # Bytes in the file, and how many of them writeback was started for
        # (both only used by the write lane).
        self._written = 0
        self._flushed = 0
        self._paused = False
        self._resume_scheduled = False
        self._error: BaseException | None = None
        self._cancelled = False
        # discard() left closing and removing the file to the lane in hand.
        self._orphaned = False

    @property
    def backlog(self) -> int:
        """Bytes accepted by ``write`` that the slowest lane has not processed yet."""
        with self._cond:
            return self._backlog()

    # Reactor thread -------------------------------------------------------

    def write(self, data: Chunk) -> None:
        """Queue ``data`` on every lane; raise the error of a lane that failed."""
        data = _frozen(data)
        submit: list[_Lane] = []
        pause = False
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._cancelled:
                raise RuntimeError("write after discard")
            n = len(data)
            if not n:
                return
            self.size += n
            self._queued += n
            for lane in self._lanes:
                lane.chunks.append(data)
                if not lane.scheduled:
                    lane.scheduled = True
                    submit.append(lane)
            if not self._paused and self._backlog() > PIPELINE_HIGH:
                self._paused = pause = True
        for lane in submit:
            self._submit(lane)
        if pause:
            self._pause()

    def _resume_if_low(self) -> None:
        with self._cond:
            self._resume_scheduled = False
            if not self._paused or self._backlog() >= PIPELINE_LOW:
                return
            self._paused = False
        self._resume()

    def discard(self) -> None:
        """Drop the lanes' work, close and remove the temp file; safe at any time, twice.

        The lanes finish at most the chunk in hand. discard waits up to
        ``DISCARD_WAIT`` for that (a 64 KiB write and hash take well under a
        millisecond); a lane still busy after that (a stalled disk) closes and
        removes the file itself when it puts the chunk down, so the reactor
        never waits on a stuck write.
        """
        with self._cond:
            self._cancelled = True
            for lane in self._lanes:
                lane.drop()
            resume, self._paused = self._paused, False
            self._cond.notify_all()
            if self._cond.wait_for(self._nothing_in_hand, DISCARD_WAIT):
                self._orphaned = False
                BlobWriter.discard(self)
            else:
                self._orphaned = True
        if resume:
            self._resume()

    # Any thread -----------------------------------------------------------

    def drain(self) -> None:
        """Block until every lane is done; raise the first lane error.

        Raises OSError if the writer was discarded or the store stopped.
        """
        with self._cond:
            while not self._idle():
                if not self._pipeline.threads.started:
                    raise OSError("the blob hashing threads stopped before the upload was written")
                self._cond.wait(DRAIN_POLL)
            self._raise_if_failed()

    def digests(self) -> Digests:
        with self._cond:
            if not self._idle():
                raise RuntimeError("digests() before drain()")
            self._raise_if_failed()
        return super().digests()

    def sync(self) -> None:
        with self._cond:
            if self._cancelled:
                return  # the file is discarded (or is being, by a lane)
            if not self._idle():
                raise RuntimeError("sync() before drain()")
            self._raise_if_failed()
        super().sync()

    # Lanes, on the pool -------------------------------------------------

    def _write_and_sha256(self, data: Chunk) -> None:
        assert self._file is not None, "write after close"
        _write_all(self._file, data)
        self._sha256.update(data)
        self._written += len(data)
        if self._written - self._flushed >= WRITEBACK_EVERY:
            _start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _submit(self, lane: _Lane) -> None:
        """Queue a job of ``lane`` (already marked scheduled) on the pool."""
        threads = self._pipeline.threads
        try:
            if not threads.started:
                raise OSError("the blob hashing threads are not running")
            threads.callInThread(self._run, lane)
        except Exception as e:
            with self._cond:
                lane.scheduled = False
                lane.drop()
                if self._error is None:
                    self._error = e if isinstance(e, OSError) else OSError(
                        f"the blob hashing threads refused work: {e!r}")
                self._cond.notify_all()

    def _run(self, lane: _Lane) -> None:
        """A job of ``lane``: its chunks in order, until none are left or its turn is up."""
        again = False
        with self._cond:
            try:
                again = self._take_turn(lane)
            except BaseException as e:  # a bug here must not leave drain() waiting forever
                if self._error is None:
                    self._error = e
                lane.drop()
                raise
            finally:
                if not again:
                    lane.scheduled = False
                    self._cond.notify_all()
        if again:
            self._submit(lane)

    def _take_turn(self, lane: _Lane) -> bool:
        """Process chunks (with the lock held, except around the work); True if more remain."""
        turn = 0
        while lane.chunks and turn < LANE_TURN:
            chunk = lane.chunks.popleft()
            if self._error is None and not self._cancelled and self._pipeline.stopping:
                self._error = OSError("the server is stopping")
            if self._error is None and not self._cancelled:
                lane.running = True
                error = self._unlocked(lane.process, chunk)
                lane.running = False
                if error is not None and self._error is None:
                    self._error = error
                if self._cancelled:
                    self._cond.notify_all()  # discard() may be waiting for the chunk in hand
                    if self._orphaned and self._nothing_in_hand():
                        # With the lock held, so a second discard() cannot race it.
                        self._orphaned = False
                        with contextlib.suppress(OSError):
                            BlobWriter.discard(self)
            lane.done += len(chunk)
            turn += len(chunk)
            del chunk
            if self._paused and not self._resume_scheduled and self._backlog() < PIPELINE_LOW:
                self._resume_scheduled = True
                error = self._unlocked(self._pipeline.call_from_thread, self._resume_if_low)
                if error is not None and self._error is None:
                    self._error = error
        return bool(lane.chunks)

    def _unlocked(self, work: Callable[..., object], *args: Any) -> BaseException | None:
        """Run ``work`` with the lock released; return what it raised."""
        self._cond.release()
        try:
            work(*args)
        except BaseException as e:
            return e
        finally:
            self._cond.acquire()
        return None

    # With the lock held ---------------------------------------------------

    def _backlog(self) -> int:
        return self._queued - min(lane.done for lane in self._lanes)

    def _idle(self) -> bool:
        return not any(lane.scheduled or lane.chunks for lane in self._lanes)

    def _nothing_in_hand(self) -> bool:
        return not any(lane.running for lane in self._lanes)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise OSError("the blob was discarded")


class BlobStore:
    """Content-addressed files under a root directory.

    Given ``threads`` (a pool this store owns: ``start()`` and ``stop()`` it with
    the server) and the reactor's ``call_from_thread``, uploads are written and
    hashed on that pool by :class:`PipelinedBlobWriter`; without, in the caller's
    thread by :class:`BlobWriter`.
    """

    def __init__(
        self,
        root: Path,
        clock: Callable[[], float],
        *,
        threads: ThreadPool | None = None,
        call_from_thread: CallFromThread | None = None,
        suffixes: Sequence[str] = ("",),
    ) -> None:
        self.root = root
        # What may follow a sha256 in a blob's name: "" for a package file, and
        # the ecosystems' companions. Anything else under files/ is left alone.
        self.suffixes = tuple(suffixes)
        self.files = root / "files"
        self.tmp = root / "tmp"
        self._clock = clock
        self._pipeline: _Pipeline | None = None
        if threads is not None:
            if call_from_thread is None:
                raise ValueError("a BlobStore with threads needs call_from_thread")
            self._pipeline = _Pipeline(threads, call_from_thread)

    def start(self) -> None:
        """Start the hashing threads, if any."""
        if self._pipeline is not None and not self._pipeline.threads.started:
            self._pipeline.stopping = False
            self._pipeline.threads.start()

    def stop(self) -> None:
        """Stop the hashing threads; uploads still being written fail.

        Blocking, but briefly: lanes drop the work they have not started.
        """
        if self._pipeline is not None and self._pipeline.threads.started:
            self._pipeline.stopping = True
            self._pipeline.threads.stop()

    def prepare(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def writer(
        self,
        pause: Callable[[], object] = _nothing,
        resume: Callable[[], object] = _nothing,
    ) -> BlobWriter:
        """A new temp blob; ``pause``/``resume`` the data's producer (pipelined only)."""
        path = self.tmp / f"upload-{uuid.uuid4().hex}{TEMP_SUFFIX}"
        if self._pipeline is None:
            return BlobWriter(path)
        return PipelinedBlobWriter(path, self._pipeline, pause=pause, resume=resume)

    def path_for(self, sha256: str, suffix: str = "") -> Path:
        if not _is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.files / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"

    def place(self, temp: Path, sha256: str, suffix: str = "") -> None:
        """Rename a synced temp file into place (over an identical one, if there).

        Blocking (directory fsync): call it in a thread.
        """
        target = self.path_for(sha256, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        # New again, however long ago its bytes were written: collect() leaves
        # a recently placed blob alone until its upload is recorded.
        os.utime(temp)
        os.replace(temp, target)
        _fsync_dir(target.parent)

    def write_bytes(self, data: bytes, sha256: str, suffix: str) -> None:
        """Write a small blob (signature, metadata) atomically; blocking."""
        temp = self.tmp / f"small-{uuid.uuid4().hex}{TEMP_SUFFIX}"
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.place(temp, sha256, suffix)

    def stale(self, max_age: float) -> list[StoredBlob]:
        """Blobs not placed for ``max_age`` seconds: what ``collect`` may remove; blocking."""
        limit = self._clock() - max_age
        found = []
        for first in _subdirectories(self.files):
            for second in _subdirectories(first):
                for entry in _entries(second):
                    blob = _blob_name(entry.name, self.suffixes)
                    if blob is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime < limit:
                            found.append(blob)
        return found

    def collect(self, blobs: list[StoredBlob], max_age: float) -> int:
        """Remove ``blobs`` (found by ``stale``, then checked unused); return how many.

        Blocking. An upload may place one of them again meanwhile: each is moved
        aside first and put back if the file moved is new, so a blob placed
        since ``stale`` looked is never lost (putting back is safe even over a
        newer copy: the name is the content's digest).
        """
        removed = 0
        limit = self._clock() - max_age
        for blob in blobs:
            path = self.path_for(blob.sha256, blob.suffix)
            # Named for the blob, so that if this process dies before deciding,
            # sweep() puts it back rather than leave a recorded file missing.
            aside = self.tmp / (f"{_ASIDE_PREFIX}{blob.sha256}{blob.suffix}-"
                                f"{uuid.uuid4().hex}{TEMP_SUFFIX}")
            try:
                os.rename(path, aside)
                fresh = os.stat(aside).st_mtime >= limit
            except FileNotFoundError:
                # Gone already, or put back by another node's sweep(): kept
                # for a later pass to decide.
                continue
            if fresh:
                os.replace(aside, path)
            else:
                os.unlink(aside)
                removed += 1
        return removed

    def sweep(self, max_age: float) -> int:
        """Remove temp files untouched for ``max_age`` seconds; return how many.

        An upload in progress keeps touching its file, so only abandoned ones
        (a crash, a killed process) are old; several nodes sharing DataDir are
        safe for the same reason. A blob a ``collect`` set aside and never
        decided about is put back in place, whatever its age (the next
        collection decides again).
        """
        removed = 0
        limit = self._clock() - max_age
        for entry in _entries(self.tmp):
            if not entry.name.endswith(TEMP_SUFFIX):
                continue
            try:
                aside = _aside_blob(entry.name, self.suffixes)
                if aside is not None:
                    os.replace(entry.path, self.path_for(aside.sha256, aside.suffix))
                elif entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _subdirectories(path: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(path) if e.is_dir(follow_symlinks=False)]


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
