"""A writer of R's serialization format, for the few objects a CRAN-like repository publishes.

``PACKAGES.rds`` and ``src/contrib/Meta/archive.rds`` are ``saveRDS()`` files: gzip around
R's serialization stream (``src/main/serialize.c``). This module writes that stream, format
version 2 in XDR (big-endian), for character, integer, double and logical vectors, generic
lists and ``NULL``, each with attributes; nothing else (no environments, closures or ALTREP).
Version 2 rather than 3 because every R since 1.4 reads it and version 3 only adds what these
objects never hold (ALTREP, a native-encoding header). Strings are written as R marks them:
ASCII, or UTF-8.

Why hand-written: ``rdata`` 1.1.0, the maintained Python RDS reader that also writes, declares
``Requires-Dist: numpy, xarray, pandas`` (checked in its wheel's metadata), and the other
writers need numpy too (``pyreadr`` 0.5.8: numpy, narwhals and a C extension; ``rds2py``
0.10.6: numpy, biocutils). That is a scientific stack on the server for two small objects.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

# SEXP type codes and flag bits, as in Rinternals.h and serialize.c.
_SYMSXP = 1
_LISTSXP = 2
_CHARSXP = 9
_LGLSXP = 10
_INTSXP = 13
_REALSXP = 14
_STRSXP = 16
_VECSXP = 19
_REFSXP = 255
_NILVALUE_SXP = 254
_IS_OBJECT = 1 << 8
_HAS_ATTR = 1 << 9
_HAS_TAG = 1 << 10
_UTF8_MASK = 1 << 3
_ASCII_MASK = 1 << 6

_NA_INTEGER = -(2**31)
# NA_real_ is the NaN whose low word is 1954 (arithmetic.c); any other NaN reads as NaN.
_NA_REAL = struct.pack(">II", 0x7FF00000, 1954)
_MAX_LENGTH = 2**31 - 1


def _r_version(major: int, minor: int, patch: int) -> int:
    return major * 65536 + minor * 256 + patch


# Informational only: readers check the minimum version below, never the writer's.
_WRITER_VERSION = _r_version(4, 2, 0)
_MIN_READER_VERSION = _r_version(2, 3, 0)


@dataclass(frozen=True)
class Character:
    """A character vector; ``None`` is ``NA_character_``."""

    values: Sequence[str | None]
    attributes: Mapping[str, RObject] = field(default_factory=dict)


@dataclass(frozen=True)
class Integer:
    """An integer vector; ``None`` is ``NA_integer_``."""

    values: Sequence[int | None]
    attributes: Mapping[str, RObject] = field(default_factory=dict)


@dataclass(frozen=True)
class Double:
    """A double vector; ``None`` is ``NA_real_`` (``math.nan`` stays ``NaN``)."""

    values: Sequence[float | None]
    attributes: Mapping[str, RObject] = field(default_factory=dict)


@dataclass(frozen=True)
class Logical:
    """A logical vector; ``None`` is ``NA``."""

    values: Sequence[bool | None]
    attributes: Mapping[str, RObject] = field(default_factory=dict)


@dataclass(frozen=True)
class List:
    """A generic vector (VECSXP); a ``None`` element is ``NULL``."""

    values: Sequence[RObject]
    attributes: Mapping[str, RObject] = field(default_factory=dict)


RObject: TypeAlias = Character | Integer | Double | Logical | List | None


def named_list(items: Mapping[str, RObject]) -> List:
    """``list(name = value, ...)``."""
    return List(list(items.values()), {"names": Character(list(items))})


def data_frame(columns: Mapping[str, RObject], row_names: Sequence[str] | None = None) -> List:
    """A ``data.frame`` of equal-length columns, with character row names or R's automatic ones.

    Automatic row names are stored compactly as ``c(NA_integer_, -nrow)``, as R stores them.
    """
    if row_names is None:
        first = next(iter(columns.values()), None)
        nrow = len(first.values) if first is not None else 0
        stored: RObject = Integer([None, -nrow])
    else:
        stored = Character(list(row_names))
    return List(
        list(columns.values()),
        {"names": Character(list(columns)), "class": Character(["data.frame"]),
         "row.names": stored},
    )


def character_matrix(
    rows: Sequence[Sequence[str | None]],
    column_names: Sequence[str],
    row_names: Sequence[str] | None = None,
) -> Character:
    """A character matrix (R stores it column by column) with ``dimnames``."""
    ncol = len(column_names)
    if any(len(row) != ncol for row in rows):
        raise ValueError("every row needs one value per column")
    values = [row[j] for j in range(ncol) for row in rows]
    dimnames = List([
        Character(list(row_names)) if row_names else None,
        Character(list(column_names)),
    ])
    return Character(values, {"dim": Integer([len(rows), ncol]), "dimnames": dimnames})


def serialize(obj: RObject) -> bytes:
    """The uncompressed serialization stream, as ``serialize(obj, NULL, version = 2)`` gives."""
    writer = _Writer()
    writer.raw(b"X\n")
    for number in (2, _WRITER_VERSION, _MIN_READER_VERSION):
        writer.integer(number)
    writer.item(obj)
    return bytes(writer.out)


def rds(obj: RObject) -> bytes:
    """A ``saveRDS()`` file: the stream, gzip-compressed with no timestamp, so it is stable."""
    return gzip.compress(serialize(obj), compresslevel=6, mtime=0)


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        # Symbols are reference objects: the second use of a name points back to the first.
        self._symbols: dict[str, int] = {}

    def raw(self, data: bytes) -> None:
        self.out += data

    def integer(self, number: int) -> None:
        self.out += struct.pack(">i", number)

    def item(self, obj: RObject) -> None:
        if obj is None:
            self.integer(_NILVALUE_SXP)
            return
        attributes = obj.attributes
        flags = _HAS_ATTR if attributes else 0
        if "class" in attributes:
            flags |= _IS_OBJECT
        if len(obj.values) > _MAX_LENGTH:
            raise ValueError("long vectors are not supported")
        if isinstance(obj, Character):
            self.integer(_STRSXP | flags)
            self.integer(len(obj.values))
            for text in obj.values:
                self.charsxp(text)
        elif isinstance(obj, Integer):
            self.integer(_INTSXP | flags)
            self.integer(len(obj.values))
            for number in obj.values:
                self.integer(_r_integer(number))
        elif isinstance(obj, Logical):
            self.integer(_LGLSXP | flags)
            self.integer(len(obj.values))
            for truth in obj.values:
                self.integer(_NA_INTEGER if truth is None else int(truth))
        elif isinstance(obj, Double):
            self.integer(_REALSXP | flags)
            self.integer(len(obj.values))
            for real in obj.values:
                self.raw(_NA_REAL if real is None else struct.pack(">d", real))
        else:
            self.integer(_VECSXP | flags)
            self.integer(len(obj.values))
            for element in obj.values:
                self.item(element)
        if attributes:
            self.pairlist(attributes)

    def pairlist(self, attributes: Mapping[str, RObject]) -> None:
        for name, value in attributes.items():
            self.integer(_LISTSXP | _HAS_TAG)
            self.symbol(name)
            self.item(value)
        self.integer(_NILVALUE_SXP)

    def symbol(self, name: str) -> None:
        index = self._symbols.get(name)
        if index is not None:
            self.integer((index << 8) | _REFSXP)
            return
        self._symbols[name] = len(self._symbols) + 1
        self.integer(_SYMSXP)
        self.charsxp(name)

    def charsxp(self, text: str | None) -> None:
        if text is None:
            self.integer(_CHARSXP)
            self.integer(-1)
            return
        encoded = text.encode("utf-8")
        mark = _ASCII_MASK if text.isascii() else _UTF8_MASK
        self.integer(_CHARSXP | (mark << 12))
        self.integer(len(encoded))
        self.raw(encoded)


def _r_integer(number: int | None) -> int:
    if number is None:
        return _NA_INTEGER
    if not _NA_INTEGER < number <= _MAX_LENGTH:
        raise ValueError(f"{number} is outside R's integer range")
    return number

