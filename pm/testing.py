"""Test doubles shipped with the server, as ``treq.testing`` ships treq's.

Tests of this project and of code built on it use these instead of defining
their own.
"""

from __future__ import annotations


class Clock:
    """A settable clock: expiry, ages and uptime are tested without waiting."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
