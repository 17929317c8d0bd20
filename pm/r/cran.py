"""The index files of a CRAN-like repository, rendered from database rows.

R finds source packages through ``src/contrib/PACKAGES`` (and its ``.gz`` and ``.rds``
forms), and older versions through ``src/contrib/Meta/archive.rds``. The server renders them
from its records instead of scanning tarballs, so each function here reproduces what R's own
tools write, verified against R 4.2's ``tools::write_PACKAGES``:

* Fields, in ``tools:::.get_standard_repository_db_fields("source")`` order, each value as
  ``read.dcf`` would have read it from DESCRIPTION (lines trimmed, `` .`` lines blank, joined
  with newlines), empty values dropped, then ``SHA256`` and ``Filesize``, which
  ``write_PACKAGES`` lacks and pak (pkgcache) reads when the repository has no METADATA file.
* Text as ``write.dcf`` folds it at R's default width of 80: ``strwrap(width = 72)`` of
  ``"Tag: value"`` with continuation lines indented eight spaces, blank lines escaped as `` .``.
* Records ordered as ``write_PACKAGES`` lists tarballs in the C locale: by file name,
  ``{package}_{version}.tar.gz``, compared byte by byte. Several versions of one package are
  all written, as ``write_PACKAGES(latestOnly = FALSE)`` would; R keeps the newest.
* ``PACKAGES.rds`` is the matrix ``write_PACKAGES`` saves: every standard field a column,
  ``NA`` where absent, package names as row names; without ``SHA256``/``Filesize``, since R
  is its only reader and R's own has neither.

Two things write_PACKAGES does are left to the caller: it standardizes License
(``tools:::analyze_licenses``, e.g. ``GPL (>=2)`` becomes ``GPL (>= 2)``, and an unknown
licence is dropped) and it fills a missing NeedsCompilation from the tarball's ``src/``;
``R CMD build`` always writes NeedsCompilation, and licences pass through as uploaded.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pm.r import rds

STANDARD_FIELDS = (
    "Package", "Version", "Priority", "Depends", "Imports", "LinkingTo", "Suggests",
    "Enhances", "License", "License_is_FOSS", "License_restricts_use", "OS_type", "Archs",
    "MD5sum", "NeedsCompilation",
)

# write.dcf's defaults for getOption("width") == 80, which is what Rscript and R CMD run with.
_WIDTH = 72
_EXDENT = 8

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\n]*\n")
_WORD_BREAK = re.compile(r"[ \t\n]")
_SENTENCE_END = re.compile(r"[.?!][)\"']?$")
_ESCAPED_BLANK = re.compile(r"[ \t\r\f\v]+\.[ \t\r\f\v]*")


@dataclass(frozen=True)
class IndexEntry:
    """One source tarball in ``src/contrib``, as the index describes it."""

    package: str
    version: str
    fields: Mapping[str, str]  # DESCRIPTION fields as read from the package (all of them)
    md5: str  # hex md5 of the tarball
    sha256: str  # hex sha256 of the tarball
    size: int  # bytes


@dataclass(frozen=True)
class ArchivedFile:
    """An older version, served from ``src/contrib/Archive/{package}/``."""

    package: str
    version: str
    size: int
    uploaded_at: float  # epoch seconds


def render_packages(entries: Sequence[IndexEntry]) -> bytes:
    """``src/contrib/PACKAGES``, as ``tools::write_PACKAGES(type = "source")`` writes it."""
    records = []
    for entry in _in_index_order(entries):
        lines = [
            _fold(tag, value)
            for tag, value in zip(STANDARD_FIELDS, _standard_values(entry), strict=True)
            if value is not None
        ]
        lines += [f"SHA256: {entry.sha256}", f"Filesize: {entry.size}"]
        records.append("\n".join(lines) + "\n")
    return "\n".join(records).encode("utf-8")


def render_packages_gz(packages: bytes) -> bytes:
    """``PACKAGES.gz``: gzip with no timestamp, so equal indexes give equal bytes (and ETags)."""
    return gzip.compress(packages, compresslevel=9, mtime=0)


def render_packages_rds(entries: Sequence[IndexEntry]) -> bytes:
    """``PACKAGES.rds``, the character matrix ``write_PACKAGES`` saves, which R reads first."""
    ordered = _in_index_order(entries)
    matrix = rds.character_matrix(
        [_standard_values(entry) for entry in ordered],
        STANDARD_FIELDS,
        [entry.package for entry in ordered],
    )
    return rds.rds(matrix)


def render_archive_rds(archived: Mapping[str, Sequence[ArchivedFile]]) -> bytes:
    """``src/contrib/Meta/archive.rds``: per package, a ``file.info()`` data frame of its files.

    Row names are ``{package}/{package}_{version}.tar.gz``, the path under ``Archive/``.
    ``remotes::install_version()`` tries rows from the last one up, taking the first version
    that satisfies its request, so rows go in ascending R version order; pkgcache reads
    ``mtime``. The owner columns (uid, gid, uname, grname) are NA: no file has an owner here.
    Packages are in C-locale name order; a package with no files is left out.
    """
    frames: dict[str, rds.RObject] = {}
    for package in sorted(archived, key=_c_order):
        files = archived[package]
        if any(file.package != package for file in files):
            raise ValueError(f"archived files listed under {package!r} must be of that package")
        if files:
            ordered = sorted(files, key=lambda file: (_r_version_key(file.version),
                                                      file.uploaded_at))
            frames[package] = _file_info(ordered)
    return rds.rds(rds.named_list(frames))


def _file_info(files: Sequence[ArchivedFile]) -> rds.List:
    count = len(files)
    times = [file.uploaded_at for file in files]
    posixct = {"class": rds.Character(["POSIXct", "POSIXt"])}
    return rds.data_frame(
        {
            "size": rds.Double([float(file.size) for file in files]),
            "isdir": rds.Logical([False] * count),
            "mode": rds.Integer([0o644] * count, {"class": rds.Character(["octmode"])}),
            "mtime": rds.Double(times, posixct),
            "ctime": rds.Double(times, posixct),
            "atime": rds.Double(times, posixct),
            "uid": rds.Integer([None] * count),
            "gid": rds.Integer([None] * count),
            "uname": rds.Character([None] * count),
            "grname": rds.Character([None] * count),
        },
        row_names=[f"{f.package}/{f.package}_{f.version}.tar.gz" for f in files],
    )


def _in_index_order(entries: Sequence[IndexEntry]) -> list[IndexEntry]:
    return sorted(entries, key=lambda entry: _c_order(f"{entry.package}_{entry.version}.tar.gz"))


def _c_order(text: str) -> bytes:
    return text.encode("utf-8")


def _r_version_key(version: str) -> tuple[int, ...]:
    # package_version(): integers separated by "." or "-", at least two of them.
    if not re.fullmatch(r"\d+([.-]\d+)+", version):
        raise ValueError(f"{version!r} is not a valid R package version")
    return tuple(int(part) for part in re.split(r"[.-]", version))


def _standard_values(entry: IndexEntry) -> list[str | None]:
    """The row of write_PACKAGES' matrix: the standard fields, None for NA."""
    values: list[str | None] = []
    for tag in STANDARD_FIELDS:
        if tag == "Package":
            value: str | None = entry.package
        elif tag == "Version":
            value = entry.version
        elif tag == "MD5sum":
            value = entry.md5
        else:
            raw = entry.fields.get(tag)
            value = None if raw is None else _dcf_value(raw)
        values.append(value or None)
    return values


def _dcf_value(raw: str) -> str:
    """A field's value as read.dcf returns it (dcf.c), from either raw or already-read text.

    Lines lose their surrounding blanks and are joined with newlines; a continuation line that
    is only ``.`` (or, in already-read text, empty) is a blank line, kept only between lines.
    Applying it twice changes nothing.
    """
    first, *continuation = raw.split("\n")
    value = first.strip(" \t")
    blank_lines = 0
    for line in continuation:
        text = line.strip(" \t")
        if not text or _ESCAPED_BLANK.fullmatch(line):
            blank_lines += 1
            continue
        if value:
            value += "\n"
        value += "\n" * blank_lines + text
        blank_lines = 0
    return value


def _fold(tag: str, value: str) -> str:
    """``write.dcf``'s rendering of one field: formatDL(style = "list"), then escaping."""
    folded = "\n".join(_strwrap(f"{tag}: {value}"))
    folded = re.sub(r"\n[ \t]*\n", "\n .\n ", folded)
    return re.sub(r"\n \.([^\n])", r"\n  .\1", folded)


def _strwrap(text: str) -> list[str]:
    """R's ``strwrap(text, width = 72, exdent = 8)``, step for step (base/R/strwrap.R)."""
    lines: list[str] = []
    for paragraph in _r_strsplit(text, _PARAGRAPH_BREAK):
        words = _r_strsplit(paragraph, _WORD_BREAK)
        widths = [_display_width(word) for word in words]
        # Empty words (runs of blanks) go, except one after a sentence end: a double space.
        keep = [
            i for i, width in enumerate(widths)
            if width or (i > 0 and _SENTENCE_END.search(words[i - 1]))
        ]
        words = [words[i] for i in keep]
        widths = [widths[i] for i in keep]
        if not words:
            lines += ["", ""]
            continue
        lines += [*_break_lines(words, widths), ""]
    return lines[:-1] if lines else [""]


def _break_lines(words: list[str], widths: list[int]) -> list[str]:
    # Index arithmetic follows strwrap.R, 1-based like R, so the two can be read side by side.
    current = 0
    lower = [1]
    upper: list[int] = []
    lens: list[int] = []
    total = 0
    for width in widths:
        total += width + 1
        lens.append(total)
    max_length = _WIDTH
    first = True
    while lens:
        k = max(sum(1 for length in lens if length <= max_length), 1)
        if first:
            first = False
            max_length = _WIDTH - _EXDENT
        current += k
        upper.append(current - 1 if widths[current - 1] == 0 else current)
        if len(lens) > k:
            if widths[current] == 0:
                current += 1
                k += 1
            lower.append(current + 1)
        lens = [length - lens[k - 1] for length in lens[k:]] if len(lens) > k else []
    return [
        (" " * _EXDENT if block else "") + " ".join(words[lower[block] - 1 : upper[block]])
        for block in range(len(upper))
    ]


def _r_strsplit(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``strsplit(text, pattern)[[1]]``: a match at the very end yields no empty last piece."""
    pieces = []
    rest = text
    while rest:
        match = pattern.search(rest)
        if match is None:
            pieces.append(rest)
            break
        pieces.append(rest[: match.start()])
        rest = rest[match.end() :]
    return pieces


def _display_width(word: str) -> int:
    """``nchar(word, type = "w")``: exact for ASCII; East Asian wide characters count two."""
    if word.isascii():
        return len(word)
    width = 0
    for char in word:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
