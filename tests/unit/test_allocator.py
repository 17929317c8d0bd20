"""The allocator settings the server makes at start, so upload reads reuse heap memory
(their effect on page faults and CPU is measured by bench/upload.py)."""

from __future__ import annotations

from pm.service import keep_read_buffers_on_the_heap


def test_glibc_takes_the_settings() -> None:
    """On glibc (Debian's C library) both mallopt settings are accepted."""
    assert keep_read_buffers_on_the_heap({"PATH": "/usr/bin"})


def test_an_operators_malloc_settings_are_left_alone() -> None:
    """With any MALLOC_* variable in the environment nothing is changed."""
    assert not keep_read_buffers_on_the_heap({"MALLOC_ARENA_MAX": "2"})
