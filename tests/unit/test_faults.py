"""Unit tests for faults: the flock sweep of dead writers' temp files, and a full disk."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pm.blobs import TEMP_SUFFIX, BlobStore
from pm.errors import InsufficientStorage
from pm.responses import status_for
from pm.testing import Clock
from pm.upload import storage_error

NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> BlobStore:
    blobs = BlobStore(tmp_path / "data", clock)
    blobs.prepare()
    return blobs


def _age(path: Path, seconds: float) -> None:
    os.utime(path, (NOW - seconds, NOW - seconds))


def test_a_held_temp_file_survives_a_sweep_however_old(store: BlobStore) -> None:
    """A live writer's temp file is kept even once older than max_age: its lock says alive."""
    writer = store.writer()
    try:
        writer.write(b"arriving slowly")
        _age(writer.path, DAY)
        assert store.sweep(60) == 0
        assert writer.path.exists()
    finally:
        writer.discard()
    assert not writer.path.exists()


def test_an_unheld_temp_file_is_removed_at_once(store: BlobStore) -> None:
    """An upload or small temp file nobody holds (its writer died) goes at the first sweep,
    however new; other temp files still wait for max_age."""
    dead_upload = store.tmp / f"upload-dead{TEMP_SUFFIX}"
    dead_small = store.tmp / f"small-dead{TEMP_SUFFIX}"
    other = store.tmp / f"other-new{TEMP_SUFFIX}"
    for path in (dead_upload, dead_small, other):
        path.write_bytes(b"half")
        os.utime(path, (NOW, NOW))
    assert store.sweep(DAY) == 2
    assert not dead_upload.exists() and not dead_small.exists()
    assert other.exists()


def test_another_node_cannot_remove_a_file_this_one_holds(store: BlobStore,
                                                          clock: Clock) -> None:
    """A second BlobStore on the same DataDir (another node) leaves a held file alone, and
    removes it once its writer lets go without removing it (as a killed one would)."""
    other_node = BlobStore(store.root, clock)
    writer = store.writer()
    writer.write(b"held")
    _age(writer.path, DAY)
    assert other_node.sweep(0) == 0
    assert writer.path.exists()
    os.link(writer.path, store.tmp / f"upload-copy{TEMP_SUFFIX}")
    writer.discard()
    assert other_node.sweep(DAY) == 1
    assert list(store.tmp.iterdir()) == []


def test_a_killed_writers_file_is_swept_at_once(store: BlobStore) -> None:
    """A writer in a process killed with SIGKILL leaves its temp file, unheld: the next
    sweep removes it without waiting for max_age."""
    script = (
        "import sys, time, os\n"
        "from pathlib import Path\n"
        "from pm.blobs import BlobStore\n"
        "w = BlobStore(Path(sys.argv[1]), time.time).writer()\n"
        "w.write(b'x' * 4096)\n"
        "print(w.path, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(store.root)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert child.stdout is not None
        path = Path(child.stdout.readline().strip())
        assert path.exists()
        assert store.sweep(DAY) == 0, "held by the live child"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert path.exists()
    assert store.sweep(DAY) == 1
    assert not path.exists()


def test_a_synced_file_stays_held_until_placed(store: BlobStore) -> None:
    """Between sync() and place() the temp file is still locked, so a sweep cannot take it;
    placing it and discarding the writer afterwards leaves the blob in place."""
    data = b"a complete wheel"
    sha = hashlib.sha256(data).hexdigest()
    writer = store.writer()
    writer.write(data)
    writer.drain()
    writer.sync()
    assert store.sweep(0) == 0
    store.place(writer.path, sha)
    writer.discard()
    assert store.path_for(sha).read_bytes() == data
    assert list(store.tmp.iterdir()) == []


def test_without_flock_the_sweep_goes_by_age(store: BlobStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without flock (ENOLCK), the lock says nothing: a fresh temp file
    is kept, an old one removed."""
    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr("pm.blobs.fcntl.flock", no_flock)
    fresh = store.tmp / f"upload-fresh{TEMP_SUFFIX}"
    old = store.tmp / f"upload-old{TEMP_SUFFIX}"
    for path in (fresh, old):
        path.write_bytes(b"?")
    os.utime(fresh, (NOW, NOW))
    _age(old, DAY)
    writer = store.writer()  # created unlocked, without an error
    os.utime(writer.path, (NOW, NOW))
    assert store.sweep(3600) == 1
    assert fresh.exists() and writer.path.exists() and not old.exists()
    writer.discard()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test (as root) and unmounted after."""
    mountpoint = Path(tempfile.mkdtemp(prefix="pm-tiny-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()


def test_a_full_disk_is_insufficient_storage(tiny_disk: Path, clock: Clock) -> None:
    """Writing past a full disk raises ENOSPC, which the upload maps to a 507 with a clear
    reason; the discarded writer leaves no temp file and the next small write succeeds."""
    store = BlobStore(tiny_disk, clock)
    store.prepare()
    writer = store.writer()
    with pytest.raises(OSError) as raised:
        for _ in range(4):
            writer.write(b"\0" * (512 * 1024))
    writer.discard()
    assert raised.value.errno == errno.ENOSPC
    error = storage_error(raised.value)
    assert isinstance(error, InsufficientStorage)
    assert status_for(error) == 507
    assert error.message == "the server's disk is full; the upload was not stored"
    assert list(store.tmp.iterdir()) == []
    sha = hashlib.sha256(b"fits").hexdigest()
    store.write_bytes(b"fits", sha, "")
    assert store.path_for(sha).read_bytes() == b"fits"


def test_write_bytes_on_a_full_disk_leaves_no_temp_file(tiny_disk: Path, clock: Clock) -> None:
    """A small blob that does not fit raises ENOSPC and removes its temp file."""
    store = BlobStore(tiny_disk, clock)
    store.prepare()
    data = b"\1" * (2 * 1024 * 1024)
    with pytest.raises(OSError) as raised:
        store.write_bytes(data, hashlib.sha256(data).hexdigest(), "")
    assert raised.value.errno == errno.ENOSPC
    assert list(store.tmp.iterdir()) == []


def test_other_write_errors_stay_a_server_error() -> None:
    """An I/O error that is not a full disk (EIO) is still the generic 500."""
    error = storage_error(OSError(errno.EIO, "I/O error"))
    assert not isinstance(error, InsufficientStorage)
    assert status_for(error) == 500
    assert status_for(storage_error(OSError(errno.EDQUOT, "quota"))) == 507
