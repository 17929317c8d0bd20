"""Index pages and file lookups already answered, kept while the database is unchanged.

Each entry remembers the change serial (``pm.changes``) it was made at and is
served only while the serial is the same, so nothing here is ever stale, on
one node or several. Entries are evicted least recently used first once the
cache holds more than ``max_bytes``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What an entry costs besides its body: the key, the headers, the bookkeeping.
_OVERHEAD = 512

CacheKey = tuple[str, str]


@dataclass(frozen=True)
class Page:
    """A cached answer: bytes to send, or a file on disk to send."""

    etag: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes | None = None
    file: Path | None = None

    @property
    def size(self) -> int:
        return _OVERHEAD + (len(self.body) if self.body is not None else 0)


def cache_key(path: bytes, accept: bytes | None) -> CacheKey:
    """Pages differ by path and by what the client accepts (PEP 691 negotiation)."""
    return (path.decode("latin-1"), (accept or b"").decode("latin-1"))


class PageCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, tuple[int, Page]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey, serial: int) -> Page | None:
        found = self._entries.get(key)
        if found is None or found[0] != serial:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def put(self, key: CacheKey, serial: int, page: Page) -> None:
        if page.size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1].size
        self._entries[key] = (serial, page)
        self._bytes += page.size
        while self._bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._entries), "bytes": self._bytes,
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}
