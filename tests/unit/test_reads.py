"""The cached read path: the page cache, the change serial, and FastReads in front of the app."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from pm.changes import ChangeSerial
from pm.pagecache import Page, PageCache, cache_key
from tests.support.records import python_file
from tests.unit.appfixture import AppEnv, app_env
from tests.unit.test_app import Client

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _page(size: int) -> Page:
    return Page(etag=b'"x"', content_type=b"text/plain", body=b"x" * size)


def test_a_page_is_served_only_at_the_serial_it_was_made_at() -> None:
    """An entry made at serial 5 is a hit at 5 and a miss at 6."""
    cache = PageCache(1 << 20)
    key = cache_key(b"/python/latest/simple/", None)
    cache.put(key, 5, _page(10))
    assert cache.get(key, 5) == _page(10)
    assert cache.get(key, 6) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_cache_evicts_least_recently_used_past_its_bound() -> None:
    """Past max_bytes the entry used longest ago goes, and the total stays in bound."""
    cache = PageCache(3 * 1024 + 3 * 600)
    for name in ("a", "b", "c"):
        cache.put((name, ""), 1, _page(1000))
    assert cache.get(("a", ""), 1) is not None
    cache.put(("d", ""), 1, _page(1000))
    assert cache.get(("b", ""), 1) is None
    assert cache.get(("a", ""), 1) is not None
    assert cache.stats()["bytes"] <= cache.max_bytes


def test_a_page_larger_than_the_cache_is_not_kept() -> None:
    """A page over the whole bound is answered but not cached (it would evict all)."""
    cache = PageCache(1024)
    cache.put(("big", ""), 1, _page(4096))
    assert cache.stats()["entries"] == 0


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """The in-memory server."""
    with app_env(tmp_path) as built:
        yield built


@pytest_twisted.ensureDeferred
async def test_the_serial_grows_with_every_recorded_change(env: AppEnv) -> None:
    """Each change writes an event, so the serial read after it is larger, through
    the quick read-only connection and through the pool alike."""
    quick = ChangeSerial(env.database, env.database.dialect.quick_connect)
    pooled = ChangeSerial(env.database)
    before = await quick.current()
    assert before == await pooled.current()
    await env.python_source("serial")
    after = await quick.current()
    assert after > before and after == await pooled.current()
    quick.close()


@pytest_twisted.ensureDeferred
async def test_a_broken_quick_connection_falls_back_to_the_pool(env: AppEnv) -> None:
    """When the read-only connection cannot be made, the serial comes from the pool."""

    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    serial = ChangeSerial(env.database, refuse)
    assert await serial.current() == await ChangeSerial(env.database).current()


@pytest_twisted.ensureDeferred
async def test_fast_reads_serve_a_cached_page_until_the_next_change(env: AppEnv) -> None:
    """The second request for a page is a cache hit with the same bytes; a recorded
    file changes the serial, and the next request shows the file."""
    source = await env.python_source()
    repo = await env.catalog.create_repo("python", "python", "", "local-admin")
    await env.catalog.subscribe(repo.name, source.name, "local-admin")
    await env.python_files.add(python_file(source, "demo-1.0.tar.gz"))
    client = Client(env.parts.resource())
    pages = env.parts.pages.cache

    first = await client.get("/python/latest/simple/demo/", headers=JSON)
    second = await client.get("/python/latest/simple/demo/", headers=JSON)
    assert first.code == second.code == 200
    assert first.body == second.body and pages.hits >= 1
    assert first.header("ETag") == second.header("ETag")

    await env.python_files.add(python_file(source, "demo-2.0.tar.gz", version="2.0"))
    third = await client.get("/python/latest/simple/demo/", headers=JSON)
    assert third.json()["versions"] == ["1.0", "2.0"]
    assert third.header("ETag") != first.header("ETag")


@pytest_twisted.ensureDeferred
async def test_fast_reads_answer_304_and_head_from_the_cache(env: AppEnv) -> None:
    """A cached page answers If-None-Match with 304 and HEAD with headers only."""
    source = await env.python_source()
    await env.catalog.create_repo("python", "python", "", "local-admin")
    await env.catalog.subscribe("python", source.name, "local-admin")
    await env.python_files.add(python_file(source, "demo-1.0.tar.gz"))
    client = Client(env.parts.resource())
    first = await client.get("/python/latest/simple/")
    etag = first.header("ETag")
    assert etag is not None
    cached = await client.get("/python/latest/simple/", headers={"If-None-Match": etag})
    assert cached.code == 304 and cached.body == b""
    assert cached.header("Content-Length") in (None, "")
    head = await client.request("HEAD", "/python/latest/simple/")
    assert head.code == 200 and head.body == b""
    assert head.header("Content-Type") == first.header("Content-Type")


@pytest_twisted.ensureDeferred
async def test_several_ranges_get_the_whole_file_and_one_range_a_part(env: AppEnv) -> None:
    """A thousand ranges are answered promptly with the whole file (200); a single
    range still gets 206 with exactly those bytes."""
    source = await env.python_source()
    await env.catalog.create_repo("python", "python", "", "local-admin")
    await env.catalog.subscribe("python", source.name, "local-admin")
    content = bytes(range(256)) * 400
    record = python_file(source, "demo-1.0.tar.gz", content=content)
    env.blobs.write_bytes(content, record.sha256, "")
    await env.python_files.add(record)
    client = Client(env.parts.resource())
    url = "/python/latest/files/demo-1.0.tar.gz"

    many = ",".join(f"{i}-{i}" for i in range(1000))
    whole = await client.get(url, headers={"Range": f"bytes={many}"})
    assert whole.code == 200 and whole.body == content
    part = await client.get(url, headers={"Range": "bytes=10-19"})
    assert part.code == 206 and part.body == content[10:20]
