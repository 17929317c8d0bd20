"""What one client may take of the server: sizes, times and concurrent uploads.

Every limit comes from ``[Limits]`` in the configuration (see :class:`Limits`
for the defaults) and is refused with its own status and a reason: 413 for a
body, field or form too large, 431 for headers too large, 408 for a client too
slow to send its headers or its body, and, when too many uploads run at once,
503 (the server's limit) or 429 (one token's), both with ``Retry-After``.

:class:`UploadSlots` counts the uploads in flight. It lives in memory, so on
several nodes each node enforces its own ``MaxUploads``; a token's uploads are
counted per node too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pm.errors import ServerBusy, TooManyUploads

MiB = 1024 * 1024
# What a refused upload is told to wait before trying again: uploads are
# long, so a slot rarely frees within a second.
RETRY_AFTER = 10


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The configured limits; the defaults are what an unset key means."""

    # Bytes of an upload's body (the whole multipart form, file included).
    max_upload_size: int = 16 * 1024 * MiB
    # Bytes of one form field's value; all fields together may have 8 times that.
    max_field_size: int = MiB
    # Parts of an upload's form (fields, the file and the signature).
    max_form_parts: int = 1000
    # Bytes of a request line and its headers together.
    max_header_size: int = 16 * 1024
    # Seconds a client has, from connecting or from a request's first byte,
    # to send the request line and every header.
    header_timeout: float = 30.0
    # Seconds a connection may stay silent, between requests or mid-body.
    idle_timeout: float = 300.0
    # Bytes per second a body must average over each stretch of
    # ``rate_window`` seconds; 0 checks nothing.
    min_body_rate: int = 1024
    rate_window: float = 30.0
    # Uploads in flight at once on this server, and for one token; 0 is no limit.
    max_uploads: int = 128
    max_uploads_per_token: int = 64

    @property
    def max_fields_total(self) -> int:
        return 8 * self.max_field_size


class UploadSlot:
    """One upload's place among the uploads in flight; release it when the request ends."""

    def __init__(self, slots: UploadSlots, holder: str | None) -> None:
        self._slots = slots
        self._holder = holder
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._holder)


class UploadSlots:
    """Counts uploads in flight, in all and per token, against :class:`Limits`."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._in_flight = 0
        self._per_holder: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, holder: str | None) -> UploadSlot:
        """A slot for an upload by ``holder`` (a token's id; None is the local
        administrator, who is never refused), or :class:`ServerBusy` /
        :class:`TooManyUploads` when the limits are reached."""
        limits = self._limits
        if holder is not None:
            if limits.max_uploads and self._in_flight >= limits.max_uploads:
                raise ServerBusy(
                    f"the server is receiving {self._in_flight} uploads, its limit; "
                    f"try again in {RETRY_AFTER} seconds", retry_after=RETRY_AFTER)
            if limits.max_uploads_per_token \
                    and self._per_holder[holder] >= limits.max_uploads_per_token:
                raise TooManyUploads(
                    f"this token already has {self._per_holder[holder]} uploads in flight, "
                    f"its limit; try again in {RETRY_AFTER} seconds", retry_after=RETRY_AFTER)
            self._per_holder[holder] += 1
        self._in_flight += 1
        return UploadSlot(self, holder)

    def _release(self, holder: str | None) -> None:
        self._in_flight -= 1
        if holder is not None:
            self._per_holder[holder] -= 1
            if not self._per_holder[holder]:
                del self._per_holder[holder]
