"""Housekeeping: abandoned temp files and blobs no recorded file uses are removed,
once old; blobs a recorded file uses never are."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import pytest_twisted

from pm.catalog import Source
from pm.housekeeping import IN_USE_BATCH, Housekeeper, InUse, Swept
from pm.python.files import PythonFile, PythonFiles
from tests.support.records import python_file
from tests.unit.appfixture import AppEnv, app_env, in_thread


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A fresh in-memory server."""
    with app_env(tmp_path) as built:
        yield built


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_use(env: AppEnv) -> list[InUse]:
    """What the server asks: every ecosystem's digests_in_use."""
    return [env.parts.python.digests_in_use, env.parts.r.digests_in_use]


async def record(env: AppEnv, source: Source, filename: str, content: bytes,
                 metadata: bytes, signature: bytes | None = None) -> PythonFile:
    """Place a file's blobs and record it, as an upload does."""
    env.blobs.write_bytes(content, sha(content), "")
    env.blobs.write_bytes(metadata, sha(metadata), ".metadata")
    if signature is not None:
        env.blobs.write_bytes(signature, sha(signature), ".asc")
    row = python_file(source, filename, content=content, metadata_sha256=sha(metadata),
                      signature_sha256=sha(signature) if signature is not None else None)
    assert await env.python_files.add(row)
    return row


@pytest_twisted.ensureDeferred
async def test_deleting_a_source_frees_only_what_nothing_else_uses(env: AppEnv) -> None:
    """After a source is deleted, housekeeping removes the files only it used (its own
    wheel, its signature) and keeps what another source's file still uses (a shared wheel
    and metadata)."""
    kept_source = await env.python_source("kept")
    gone_source = await env.python_source("gone")
    await record(env, kept_source, "demo-1.0-py3-none-any.whl", b"shared", b"meta")
    await record(env, gone_source, "demo-1.0-py3-none-any.whl", b"shared", b"meta", b"sig")
    await record(env, gone_source, "demo-2.0-py3-none-any.whl", b"only gone", b"meta")
    await env.catalog.delete_source("gone", "test")

    swept = await env.housekeep()

    assert swept == Swept(temp_files=0, blobs=2)
    assert env.stored_files() == sorted([env.blobs.path_for(sha(b"shared")),
                                         env.blobs.path_for(sha(b"meta"), ".metadata")])


@pytest_twisted.ensureDeferred
async def test_new_unused_blobs_and_temp_files_are_kept(env: AppEnv) -> None:
    """An unused blob younger than max_age (an upload between placing and recording)
    and an upload still being written (its writer holds the temp file) are kept; once
    the blob is old and the writer gone, both are removed."""
    env.blobs.write_bytes(b"placed, not yet recorded", sha(b"placed, not yet recorded"), "")
    writer = env.blobs.writer()
    writer.write(b"half an upload")
    await in_thread(writer.drain)
    part = writer.path
    env.clock.now = time.time() + 60  # a minute later: young, as max_age goes
    housekeeper = Housekeeper(env.blobs, in_use(env), in_thread, 3600)

    assert await housekeeper.run() == Swept(temp_files=0, blobs=0)
    assert len(env.stored_files()) == 1 and part.exists()

    writer.discard()
    assert await env.housekeep() == Swept(temp_files=0, blobs=1)
    assert env.stored_files() == [] and not part.exists()


@pytest_twisted.ensureDeferred
async def test_many_blobs_are_checked_in_batches(env: AppEnv) -> None:
    """More unused blobs than one in-use query takes are all found and removed, and a used
    one among them is kept."""
    source = await env.python_source()
    used = await record(env, source, "demo-1.0-py3-none-any.whl", b"used", b"used meta")
    for i in range(IN_USE_BATCH + 5):
        data = f"orphan {i}".encode()
        env.blobs.write_bytes(data, sha(data), "")

    swept = await env.housekeep()

    assert swept.blobs == IN_USE_BATCH + 5
    assert env.stored_files() == sorted([env.blobs.path_for(used.sha256),
                                         env.blobs.path_for(sha(b"used meta"), ".metadata")])


class BrokenPythonFiles(PythonFiles):
    """A Python files table whose database is unreachable for the in-use query."""

    async def digests_in_use(self, digests: object) -> set[str]:
        raise ConnectionError("database unreachable")


@pytest_twisted.ensureDeferred
async def test_a_failed_pass_removes_nothing_and_reports_none(tmp_path: Path) -> None:
    """When the database cannot say what is in use, a pass removes no blob and returns
    None instead of raising, so the timer calling it keeps running."""
    with app_env(tmp_path, python_files=BrokenPythonFiles) as env:
        env.blobs.write_bytes(b"maybe used", sha(b"maybe used"), "")
        env.clock.now = 1e12
        housekeeper = Housekeeper(env.blobs, in_use(env), in_thread, 3600)

        assert await housekeeper.run() is None
        assert len(env.stored_files()) == 1


@pytest_twisted.ensureDeferred
async def test_a_blob_any_ecosystem_uses_is_kept(env: AppEnv) -> None:
    """Each ecosystem is asked about every batch: a blob that only one of them uses is
    kept, and a blob none uses is removed."""
    for data in (b"python's", b"r's", b"nobody's"):
        env.blobs.write_bytes(data, sha(data), "")
    asked: list[tuple[str, list[str]]] = []

    def ecosystem(name: str, uses: bytes) -> InUse:
        async def digests_in_use(digests: Sequence[str]) -> set[str]:
            asked.append((name, list(digests)))
            return {d for d in digests if d == sha(uses)}
        return digests_in_use

    env.clock.now = time.time() + 3600 + 60
    housekeeper = Housekeeper(env.blobs, [ecosystem("python", b"python's"),
                                          ecosystem("r", b"r's")], in_thread, 3600)

    assert await housekeeper.run() == Swept(temp_files=0, blobs=1)
    everything = sorted(sha(d) for d in (b"python's", b"r's", b"nobody's"))
    assert asked == [("python", everything), ("r", everything)]
    assert env.stored_files() == sorted([env.blobs.path_for(sha(b"python's")),
                                         env.blobs.path_for(sha(b"r's"))])
