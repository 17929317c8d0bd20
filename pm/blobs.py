"""Files on disk under ``DataDir``: content-addressed, written atomically.

A blob is written to a temp file in ``DataDir/tmp`` (the same file system as its
final place), hashed as it is written, fsynced, then renamed into
``DataDir/files``. A crash leaves at most a temp file, which the sweep removes.
Its writer holds an advisory lock (``flock``) on the temp file from creating it
until it is renamed into place or removed, so the sweep tells a dead writer's
file (it can take the lock) from a live one's, in this process or another
sharing DataDir, and removes the former at once rather than after ``TempMaxAge``.

Blobs are shared: two sources may hold the same wheel, two wheels the same
metadata. So nothing removes a blob when one user of it goes (a deleted source,
an upload whose recording failed); :meth:`BlobStore.collect` removes those no
recorded file uses once they are ``TempMaxAge`` old. Placing a blob makes it
new again, which is what keeps an upload between placing and recording safe.

With a thread pool (the server's case) an upload's bytes are written and hashed
off the reactor thread by a :class:`PipelinedBlobWriter`; without one (unit
tests, tools) :class:`BlobWriter` does it all in the caller's thread. Every
writer computes sha256, which names the blob; the caller asks for the others
(md5, blake2b) only where something needs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

TEMP_SUFFIX = ".part"
# Temp files whose writer holds a lock on them while it lives.
_LOCKED_PREFIXES = ("upload-", "small-")
# Errors of a file system that has no flock: its temp files go by age alone.
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS)
# How often a writer creates its temp file again if a sweep removed it between
# its creation and its lock (the sweep saw a file nobody held).
_CREATE_ATTEMPTS = 3
# A blob collect() moved into tmp/ while it decides: collect-<sha256><suffix>-<id>.part
_ASIDE_PREFIX = "collect-"

RunInThread = Callable[..., "Deferred[Any]"]
CallFromThread = Callable[..., object]
Chunk = bytes | memoryview


def hashing_threads(cpus: int | None) -> int:
    """Threads that write and hash uploads, shared by every upload of a server.

    An upload is written and hashed by one job at a time, so one thread per
    CPU lets as many uploads work at once as there are cores, without more
    threads than cores to switch between. At least 2, so that one write
    stalled on a slow disk does not stop every other upload.
    """
    return max(2, cpus or 1)


# Backpressure of a pipelined writer: past HIGH bytes accepted but not yet
# written and hashed the connection is paused, under LOW resumed.
PIPELINE_HIGH = 8 * 1024 * 1024
PIPELINE_LOW = 2 * 1024 * 1024
# A writer's job hands its pool thread back after this many bytes (and queues
# itself again), so a fast upload cannot keep a shared thread from the others.
JOB_TURN = 4 * 1024 * 1024
# The job joins small queued chunks into one write and one hash update of up to
# this many bytes: a client that sends in small pieces (uv publish) makes the
# reactor read tens of KiB at a time, and each chunk alone would cost a system
# call, a lock round trip and a GIL handover.
JOB_BATCH = 1024 * 1024
# How long discard() (on the reactor thread) waits for the job to put down the
# chunk in hand before leaving the file's removal to that job.
DISCARD_WAIT = 0.05
# drain() wakes this often to notice that the pool was stopped under it.
DRAIN_POLL = 0.5
# A writer asks the kernel to start writing back every this many bytes, so
# that the disk works while the upload arrives, sync() at the end has little
# left to flush, and a large upload does not pile up dirty pages until the
# kernel throttles it.
WRITEBACK_EVERY = 8 * 1024 * 1024

# Digest names, as Warehouse's form fields spell them without "_digest".
SHA256 = "sha256"
BLAKE2_256 = "blake2_256"
MD5 = "md5"
_HASHERS: dict[str, Callable[[], Any]] = {
    SHA256: hashlib.sha256,
    BLAKE2_256: lambda: hashlib.blake2b(digest_size=32),
    MD5: lambda: hashlib.md5(usedforsecurity=False),
}


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


def _create_locked(path: Path) -> BinaryIO:
    """Create ``path`` (it must not exist) and hold an exclusive flock on it.

    Between the creation and the lock a sweep may find the file unheld and
    remove it: then the file is created again, so a writer never writes to a
    file no longer in tmp/. The lock is waited for, not tried: on a new file
    only such a sweep can hold it, and only while it unlinks. On a file system
    without flock the file is returned unlocked (the sweep goes by age there).
    """
    for _ in range(_CREATE_ATTEMPTS):
        file: BinaryIO = open(path, "xb", buffering=0)  # noqa: SIM115
        try:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    raise
                return file
            if os.fstat(file.fileno()).st_nlink > 0:
                return file
        except BaseException:
            file.close()
            raise
        file.close()
    raise OSError(errno.EAGAIN, "the temp file was removed as soon as it was created", str(path))


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
    """Hex digests of a blob: sha256 always, the others only if they were asked for."""

    sha256: str
    size: int
    blake2_256: str | None = None
    md5: str | None = None


class BlobWriter:
    """A temp file that hashes what is written to it, in the caller's thread.

    It computes sha256 (which names the blob), and the digests in ``also``
    (``BLAKE2_256``, ``MD5``). Used when the store has no hashing threads.
    Call ``drain()`` (nothing to do here) before ``digests()`` and ``sync()``,
    as with :class:`PipelinedBlobWriter`.
    """

    def __init__(self, path: Path, also: Collection[str] = ()) -> None:
        self.path = path
        self._hashers = {name: _HASHERS[name]() for name in (SHA256, *also)}
        # Open (and so locked) until discard(): a synced file is still to be placed.
        self._file: BinaryIO | None = _create_locked(path)
        self.size = 0
        # How many of the bytes written writeback was started for.
        self._flushed = 0

    def write(self, data: Chunk) -> None:
        self._consume(data)

    def _consume(self, data: Chunk) -> None:
        """Write ``data`` to the file and every hasher; blocking."""
        assert self._file is not None, "write after close"
        _write_all(self._file, data)
        for hasher in self._hashers.values():
            hasher.update(data)
        self.size += len(data)
        if self.size - self._flushed >= WRITEBACK_EVERY:
            _start_writeback(self._file.fileno(), self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def drain(self) -> None:
        """Wait until everything written is on its way to disk; nothing to wait for here."""

    def digests(self) -> Digests:
        found = {name: hasher.hexdigest() for name, hasher in self._hashers.items()}
        return Digests(found[SHA256], self.size, found.get(BLAKE2_256), found.get(MD5))

    def sync(self) -> None:
        """Flush to stable storage; blocking, so call it in a thread.

        The file stays open, and locked, until ``discard()``: the sweep must not
        take it for an abandoned one while it waits to be placed.
        """
        if self._file is not None:
            os.fsync(self._file.fileno())

    def discard(self) -> None:
        """Remove the temp file if it is still in tmp/ (not placed), and close it."""
        file, self._file = self._file, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            if file is not None:
                file.close()


class _Pipeline:
    """What the pipelined writers of one store share."""

    def __init__(self, threads: ThreadPool, call_from_thread: CallFromThread) -> None:
        self.threads = threads
        self.call_from_thread = call_from_thread
        # Set by BlobStore.stop(): writers drop their work so that stopping is quick.
        self.stopping = False


def _frozen(data: Chunk) -> Chunk:
    """``data`` itself if nothing can change it while it waits in the queue, else a copy.

    Twisted hands over bytes, and the multipart parser bytes or memoryview slices
    of the bytes it was fed: neither is ever copied here.
    """
    if type(data) is bytes:
        return data
    if isinstance(data, memoryview) and data.format == "B" and isinstance(data.obj, bytes):
        return data
    return bytes(data)


class PipelinedBlobWriter(BlobWriter):
    """A temp file written and hashed off the reactor thread.

    ``write`` (on the reactor thread) only queues the chunk. The writer is an
    ordered actor: a deque and, while it has chunks, exactly one job on the
    store's shared thread pool that writes and hashes them in order, so the
    work runs beside the reactor (hashlib and file writes release the GIL)
    without a thread per upload.

    Backpressure: once more than ``PIPELINE_HIGH`` bytes wait, ``pause`` is
    called; when the job brings that under ``PIPELINE_LOW``, ``resume`` is.
    Both run on the reactor thread (the job goes through ``call_from_thread``)
    and strictly alternate.

    A failed write (a full disk) drops the rest; its error is raised by the
    next ``write`` and by ``drain``. ``drain`` blocks until the queue is
    done: run it in a thread (never one of the store's pool). ``digests``,
    and ``sync`` only after it.
    """

    def __init__(
        self,
        path: Path,
        pipeline: _Pipeline,
        *,
        also: Collection[str] = (),
        pause: Callable[[], object] = _nothing,
        resume: Callable[[], object] = _nothing,
    ) -> None:
        super().__init__(path, also)
        self._pipeline = pipeline
        self._pause = pause
        self._resume = resume
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[Chunk] = deque()
        self._waiting = 0  # bytes accepted by write() not yet written and hashed (or dropped)
        self._scheduled = False  # a job is queued on the pool or running
        self._in_hand = False  # that job holds a chunk: it is using the file and the hashers
        self._paused = False
        self._resume_scheduled = False
        self._error: BaseException | None = None
        self._cancelled = False
        # discard() left closing and removing the file to the job.
        self._orphaned = False

    @property
    def backlog(self) -> int:
        """Bytes accepted by ``write`` that are not written and hashed yet."""
        with self._cond:
            return self._waiting

    # Reactor thread -------------------------------------------------------

    def write(self, data: Chunk) -> None:
        """Queue ``data``; raise the error of a write that failed."""
        data = _frozen(data)
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._cancelled:
                raise RuntimeError("write after discard")
            if not len(data):
                return
            self._chunks.append(data)
            self._waiting += len(data)
            submit, self._scheduled = not self._scheduled, True
            pause = not self._paused and self._waiting > PIPELINE_HIGH
            self._paused = self._paused or pause
        if submit:
            self._submit()
        if pause:
            self._pause()

    def _resume_if_low(self) -> None:
        with self._cond:
            self._resume_scheduled = False
            if not self._paused or self._waiting >= PIPELINE_LOW:
                return
            self._paused = False
        self._resume()

    def discard(self) -> None:
        """Drop the queued work, close and remove the temp file; safe at any time, twice.

        The job finishes at most the chunk in hand. discard waits up to
        ``DISCARD_WAIT`` for that (a 1 MiB write and hash take about a
        millisecond); a job still busy after that (a stalled disk) closes and
        removes the file itself when it puts the chunk down, so the reactor
        never waits on a stuck write.
        """
        with self._cond:
            self._cancelled = True
            self._drop()
            resume, self._paused = self._paused, False
            self._cond.notify_all()
            if self._cond.wait_for(lambda: not self._in_hand, DISCARD_WAIT):
                self._orphaned = False
                BlobWriter.discard(self)
            else:
                self._orphaned = True
        if resume:
            self._resume()

    # Any thread -----------------------------------------------------------

    def drain(self) -> None:
        """Block until every queued chunk is written and hashed; raise the first error.

        Raises OSError if the writer was discarded or the store stopped.
        """
        with self._cond:
            while self._scheduled or self._chunks:
                if not self._pipeline.threads.started:
                    raise OSError("the blob hashing threads stopped before the upload was written")
                self._cond.wait(DRAIN_POLL)
            self._raise_if_failed()

    def digests(self) -> Digests:
        self._check_drained()
        return super().digests()

    def sync(self) -> None:
        with self._cond:
            if self._cancelled:
                return  # the file is discarded (or is being, by the job)
        self._check_drained()
        super().sync()

    def _check_drained(self) -> None:
        with self._cond:
            if self._scheduled or self._chunks:
                raise RuntimeError("the writer has work queued: call drain() first")
            self._raise_if_failed()

    # The job, on the pool -------------------------------------------------

    def _submit(self) -> None:
        """Queue a job (already marked scheduled) on the pool."""
        threads = self._pipeline.threads
        try:
            if not threads.started:
                raise OSError("the blob hashing threads are not running")
            threads.callInThread(self._run)
        except Exception as e:
            with self._cond:
                self._scheduled = False
                self._drop()
                if self._error is None:
                    self._error = e if isinstance(e, OSError) else OSError(
                        f"the blob hashing threads refused work: {e!r}")
                self._cond.notify_all()

    def _run(self) -> None:
        """Write and hash queued chunks in order, until none are left or the turn is up."""
        again = False
        with self._cond:
            try:
                again = self._take_turn()
            except BaseException as e:  # a bug here must not leave drain() waiting forever
                if self._error is None:
                    self._error = e
                self._drop()
                raise
            finally:
                if not again:
                    self._scheduled = False
                    self._cond.notify_all()
        if again:
            self._submit()

    def _take_turn(self) -> bool:
        """Process chunks (with the lock held, except around the work); True if more remain."""
        turn = 0
        while self._chunks and turn < JOB_TURN:
            batch = self._take_batch()
            size = sum(len(chunk) for chunk in batch)
            if self._error is None and not self._cancelled and self._pipeline.stopping:
                self._error = OSError("the server is stopping")
            if self._error is None and not self._cancelled:
                self._in_hand = True
                error = self._unlocked(self._consume_batch, batch)
                self._in_hand = False
                if error is not None and self._error is None:
                    self._error = error
                if self._cancelled:
                    self._cond.notify_all()  # discard() may be waiting for the chunk in hand
                    if self._orphaned:
                        # With the lock held, so a second discard() cannot race it.
                        self._orphaned = False
                        with contextlib.suppress(OSError):
                            BlobWriter.discard(self)
            self._waiting -= size
            turn += size
            del batch
            if self._paused and not self._resume_scheduled and self._waiting < PIPELINE_LOW:
                self._resume_scheduled = True
                error = self._unlocked(self._pipeline.call_from_thread, self._resume_if_low)
                if error is not None and self._error is None:
                    self._error = error
        return bool(self._chunks)

    def _take_batch(self) -> list[Chunk]:
        """The next queued chunk, with those after it while they fit in JOB_BATCH."""
        batch = [self._chunks.popleft()]
        size = len(batch[0])
        while self._chunks and size + len(self._chunks[0]) <= JOB_BATCH:
            size += len(self._chunks[0])
            batch.append(self._chunks.popleft())
        return batch

    def _consume_batch(self, batch: list[Chunk]) -> None:
        self._consume(batch[0] if len(batch) == 1 else b"".join(batch))

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

    def _drop(self) -> None:
        self._waiting -= sum(len(chunk) for chunk in self._chunks)
        self._chunks.clear()

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

        Blocking, but briefly: writers drop the work they have not started.
        """
        if self._pipeline is not None and self._pipeline.threads.started:
            self._pipeline.stopping = True
            self._pipeline.threads.stop()

    def prepare(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def writer(
        self,
        also: Collection[str] = (),
        pause: Callable[[], object] = _nothing,
        resume: Callable[[], object] = _nothing,
    ) -> BlobWriter:
        """A new temp blob hashed with sha256 and the digests in ``also``.

        ``pause``/``resume`` the data's producer (pipelined only).
        """
        path = self.tmp / f"upload-{uuid.uuid4().hex}{TEMP_SUFFIX}"
        if self._pipeline is None:
            return BlobWriter(path, also)
        return PipelinedBlobWriter(path, self._pipeline, also=also, pause=pause, resume=resume)

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
        # Placed with the file open, so its lock keeps the sweep off until then.
        with _create_locked(temp) as f:
            try:
                _write_all(f, data)
                os.fsync(f.fileno())
                self.place(temp, sha256, suffix)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise

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
        """Remove abandoned temp files; return how many.

        A writer's temp file (``upload-``, ``small-``) is removed as soon as no
        one holds its lock, whatever its age: its writer died (a crash, a
        killed process). One a live writer holds, in this process or another
        node sharing DataDir, is left alone. Where the lock cannot be checked
        (a file system without flock) and for any other temp file, age decides:
        untouched for ``max_age`` seconds (an upload in progress keeps touching
        its file). A blob a ``collect`` set aside and never decided about is
        put back in place, whatever its age (the next collection decides again).
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
                    continue
                unheld = (_remove_if_unheld(Path(entry.path))
                          if entry.name.startswith(_LOCKED_PREFIXES) else None)
                if unheld is None and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    unheld = True
                removed += bool(unheld)
            except FileNotFoundError:
                continue
        return removed


def _remove_if_unheld(path: Path) -> bool | None:
    """Remove ``path`` if no one holds its lock: True if removed, False if held.

    None if the file system cannot say (no flock). The lock is taken on a
    description of its own (flock locks belong to one), and the file unlinked
    while it is held, so its writer cannot be between creating and locking it
    unnoticed (see :func:`_create_locked`). Raises FileNotFoundError if it went.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in _NO_FLOCK:
                return None
            raise
        os.unlink(path)
        return True
    finally:
        os.close(fd)


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
