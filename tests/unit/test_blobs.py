"""Unit tests for pm.blobs: hashing temp files, content-addressed placement, the sweep."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pm.blobs import TEMP_SUFFIX, BlobStore, BlobWriter, Digests

NOW = 1_700_000_000.0
# Deliberately uneven: empty writes, one byte, odd sizes, a large chunk, memoryviews.
CHUNK_SIZES = (0, 1, 7, 0, 4096, 3, 65_537, 1, 100_000, 13)


class FakeClock:
    """A settable clock, so ages are tested without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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


def expected_digests(data: bytes) -> Digests:
    return Digests(
        sha256=hashlib.sha256(data).hexdigest(),
        blake2_256=hashlib.blake2b(data, digest_size=32).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
    )


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at NOW."""
    return FakeClock(NOW)


@pytest.fixture
def blobs(tmp_path: Path, clock: FakeClock) -> BlobStore:
    """A prepared blob store under a temp directory."""
    store = BlobStore(tmp_path / "data", clock)
    store.prepare()
    return store


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_prepare_creates_files_and_tmp_directories(tmp_path: Path, clock: FakeClock) -> None:
    """prepare() creates DataDir/files and DataDir/tmp, and is safe to call twice."""
    store = BlobStore(tmp_path / "data", clock)
    store.prepare()
    store.prepare()
    assert store.files == tmp_path / "data" / "files"
    assert store.tmp == tmp_path / "data" / "tmp"
    assert store.files.is_dir()
    assert store.tmp.is_dir()


def test_writer_digests_match_hashlib_over_uneven_chunks(blobs: BlobStore) -> None:
    """Digests of data written in uneven chunks equal hashlib's over the whole data."""
    data = sample_data()
    assert sum(len(c) for c in chunks(data)) == len(data)
    writer = blobs.writer()
    for chunk in chunks(data):
        writer.write(chunk)
    assert writer.size == len(data)
    assert writer.digests() == expected_digests(data)
    writer.sync()
    assert writer.path.read_bytes() == data
    # Digests stay available after the file is closed.
    assert writer.digests() == expected_digests(data)


def test_writer_of_nothing_has_the_digests_of_empty_data(blobs: BlobStore) -> None:
    """A writer that received no bytes reports the digests of b'' and size 0."""
    writer = blobs.writer()
    writer.sync()
    assert writer.digests() == expected_digests(b"")
    assert writer.path.read_bytes() == b""


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
    """place() renames the temp file to files/ab/cd/<sha256> and reports it as new."""
    data = b"a wheel, say"
    writer = blobs.writer()
    writer.write(data)
    writer.sync()
    sha = writer.digests().sha256
    assert blobs.place(writer.path, sha) is True
    target = blobs.files / sha[:2] / sha[2:4] / sha
    assert blobs.path_for(sha) == target
    assert target.read_bytes() == data
    assert not writer.path.exists()
    assert list(blobs.tmp.iterdir()) == []


def test_place_reports_an_existing_blob(blobs: BlobStore) -> None:
    """Placing the same content twice reports False the second time and keeps one file."""
    data = b"same bytes twice"
    sha = hashlib.sha256(data).hexdigest()
    results = []
    for _ in range(2):
        writer = blobs.writer()
        writer.write(data)
        writer.sync()
        results.append(blobs.place(writer.path, sha))
        assert not writer.path.exists()
    assert results == [True, False]
    assert files_under(blobs.root) == [blobs.path_for(sha)]
    assert blobs.path_for(sha).read_bytes() == data


def test_place_with_a_suffix_is_a_separate_blob(blobs: BlobStore) -> None:
    """A suffix (e.g. '.asc') names a different file next to the distribution's."""
    sha = hashlib.sha256(b"dist").hexdigest()
    assert blobs.write_bytes(b"dist", sha, "") is True
    assert blobs.write_bytes(b"signature", sha, ".asc") is True
    assert blobs.path_for(sha, ".asc") == blobs.path_for(sha).with_name(f"{sha}.asc")
    assert blobs.path_for(sha).read_bytes() == b"dist"
    assert blobs.path_for(sha, ".asc").read_bytes() == b"signature"


def test_write_bytes_places_atomically_and_reports_new_or_existing(blobs: BlobStore) -> None:
    """write_bytes() stores small blobs, True when new, False after, and leaves no temp file."""
    data = b"Metadata-Version: 2.1\nName: demo\n"
    sha = hashlib.sha256(data).hexdigest()
    assert blobs.write_bytes(data, sha, ".metadata") is True
    assert blobs.write_bytes(data, sha, ".metadata") is False
    assert blobs.path_for(sha, ".metadata").read_bytes() == data
    assert list(blobs.tmp.iterdir()) == []


def test_remove_deletes_a_blob_and_ignores_a_missing_one(blobs: BlobStore) -> None:
    """remove() deletes the blob; removing it again is not an error."""
    sha = hashlib.sha256(b"gone").hexdigest()
    blobs.write_bytes(b"gone", sha, "")
    blobs.remove(sha)
    assert not blobs.path_for(sha).exists()
    blobs.remove(sha)


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


def test_sweep_removes_only_old_temp_files(blobs: BlobStore) -> None:
    """sweep() deletes '.part' files older than max_age and keeps fresh or other files."""
    max_age = 3600.0
    old_part = _touch(blobs.tmp / f"upload-old{TEMP_SUFFIX}", NOW - max_age - 10)
    old_small = _touch(blobs.tmp / f"small-old{TEMP_SUFFIX}", NOW - 10 * max_age)
    fresh_part = _touch(blobs.tmp / f"upload-fresh{TEMP_SUFFIX}", NOW - max_age + 10)
    future_part = _touch(blobs.tmp / f"upload-future{TEMP_SUFFIX}", NOW + 60)
    old_other = _touch(blobs.tmp / "notes.txt", NOW - 10 * max_age)
    old_blob = _touch(blobs.path_for("ab" * 32), NOW - 10 * max_age)
    old_part_in_files = _touch(blobs.files / f"stray{TEMP_SUFFIX}", NOW - 10 * max_age)

    assert blobs.sweep(max_age) == 2

    assert not old_part.exists()
    assert not old_small.exists()
    for kept in (fresh_part, future_part, old_other, old_blob, old_part_in_files):
        assert kept.exists(), kept


def test_sweep_uses_the_injected_clock(blobs: BlobStore, clock: FakeClock) -> None:
    """The same file is kept or swept depending only on the injected clock's time."""
    part = _touch(blobs.tmp / f"upload-x{TEMP_SUFFIX}", NOW - 100)
    assert blobs.sweep(500) == 0
    assert part.exists()
    clock.now = NOW + 401
    assert blobs.sweep(500) == 1
    assert not part.exists()
    assert blobs.sweep(500) == 0


def test_sweep_keeps_a_file_exactly_at_the_age_limit(blobs: BlobStore) -> None:
    """A temp file exactly max_age old is not yet abandoned (the limit is exclusive)."""
    part = _touch(blobs.tmp / f"upload-edge{TEMP_SUFFIX}", NOW - 600)
    assert blobs.sweep(600) == 0
    assert part.exists()


def test_sweep_keeps_a_writer_in_progress(blobs: BlobStore, clock: FakeClock) -> None:
    """An open upload whose file was just written is not removed by the sweep."""
    writer = blobs.writer()
    try:
        writer.write(b"still uploading")
        clock.now = writer.path.stat().st_mtime + 1
        assert blobs.sweep(60) == 0
        assert writer.path.exists()
    finally:
        writer.discard()


def test_sweep_without_a_tmp_directory_removes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    """Before prepare() has run there is nothing to sweep, and no error."""
    store = BlobStore(tmp_path / "never-prepared", clock)
    assert store.sweep(0) == 0
