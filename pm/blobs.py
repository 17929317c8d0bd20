"""Files on disk under ``DataDir``: content-addressed, written atomically.

A blob is written to a temp file in ``DataDir/tmp`` (the same file system as its
final place), hashed as it is written, fsynced, then renamed into
``DataDir/files``. A crash leaves at most a temp file, which the sweep removes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred

TEMP_SUFFIX = ".part"

RunInThread = Callable[..., "Deferred[Any]"]


@dataclass(frozen=True)
class Digests:
    sha256: str
    blake2_256: str
    md5: str
    size: int


class BlobWriter:
    """A temp file that hashes what is written to it.

    ``write`` runs on the reactor thread: hashlib and the file write release
    the GIL for large buffers, and each call handles one network read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "xb", buffering=0)  # noqa: SIM115
        self._sha256 = hashlib.sha256()
        self._blake2 = hashlib.blake2b(digest_size=32)
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None, "write after close"
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:
                raise OSError("blob file would block")
            view = view[written:]
        self._sha256.update(data)
        self._blake2.update(data)
        self._md5.update(data)
        self.size += len(data)

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
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class BlobStore:
    """Content-addressed files under a root directory."""

    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self.root = root
        self.files = root / "files"
        self.tmp = root / "tmp"
        self._clock = clock

    def prepare(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def writer(self) -> BlobWriter:
        return BlobWriter(self.tmp / f"upload-{uuid.uuid4().hex}{TEMP_SUFFIX}")

    def path_for(self, sha256: str, suffix: str = "") -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.files / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"

    def place(self, temp: Path, sha256: str, suffix: str = "") -> bool:
        """Rename a synced temp file into place; False if it was already there.

        Blocking (directory fsync): call it in a thread.
        """
        target = self.path_for(sha256, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = target.exists()
        os.replace(temp, target)
        _fsync_dir(target.parent)
        return not existed

    def write_bytes(self, data: bytes, sha256: str, suffix: str) -> bool:
        """Write a small blob (signature, metadata) atomically; blocking."""
        temp = self.tmp / f"small-{uuid.uuid4().hex}{TEMP_SUFFIX}"
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self.place(temp, sha256, suffix)

    def remove(self, sha256: str, suffix: str = "") -> None:
        self.path_for(sha256, suffix).unlink(missing_ok=True)

    def sweep(self, max_age: float) -> int:
        """Remove temp files untouched for ``max_age`` seconds; return how many.

        An upload in progress keeps touching its file, so only abandoned ones
        (a crash, a killed process) are old; several nodes sharing DataDir are
        safe for the same reason.
        """
        removed = 0
        limit = self._clock() - max_age
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.endswith(TEMP_SUFFIX):
                continue
            try:
                if entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
