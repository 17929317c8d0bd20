"""Print MultipartParser throughput for one 256 MiB part fed in 64 KiB chunks.

Run: python bench/multipart_parse.py   (from the project root)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pm.multipart import MultipartParser, PartHeaders

BODY_SIZE = 256 * 1024 * 1024
CHUNK_SIZE = 64 * 1024
BOUNDARY = b"9051914041544843365972754266"


class CountingHandler:
    """Counts part bytes, like a handler that writes to disk but without the I/O."""

    def __init__(self) -> None:
        self.size = 0

    def part_started(self, headers: PartHeaders) -> None:
        pass

    def part_data(self, data: bytes | memoryview) -> None:
        self.size += len(data)

    def part_ended(self) -> None:
        pass


def measure(label: str, chunks: list[bytes]) -> None:
    """Parse one part of BODY_SIZE bytes made by cycling through ``chunks``."""
    head = (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="content"; filename="big.whl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    handler = CountingHandler()
    parser = MultipartParser(BOUNDARY, handler)
    start = time.perf_counter()
    parser.feed(head)
    for i in range(BODY_SIZE // CHUNK_SIZE):
        parser.feed(chunks[i % len(chunks)])
    parser.feed(tail)
    parser.close()
    elapsed = time.perf_counter() - start
    assert handler.size == BODY_SIZE, handler.size
    mib = BODY_SIZE / (1024 * 1024)
    print(
        f"{label}: {mib:.0f} MiB in {CHUNK_SIZE // 1024} KiB chunks: "
        f"{elapsed:.3f} s, {BODY_SIZE / elapsed / 1e6:.0f} MB/s"
    )


def main() -> None:
    # 16 MiB of distinct chunks, more than the CPU caches hold, so the scan reads memory
    # as it would for a real upload arriving from the network.
    random_chunks = [os.urandom(CHUNK_SIZE) for _ in range(256)]
    measure("random data", random_chunks)
    # Near-boundaries everywhere (and one straddling each chunk end) defeat find()'s
    # skipping and force the split-delimiter check on every chunk: the worst case.
    near = b"\r\n--" + BOUNDARY[:-1] + b"x"
    hostile = (near * (CHUNK_SIZE // len(near) + 1))[: CHUNK_SIZE - 6] + near[:6]
    measure("near-boundary data", [hostile])


if __name__ == "__main__":
    main()
