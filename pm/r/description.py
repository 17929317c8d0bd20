"""R source packages: the ``{package}_{version}.tar.gz`` filename and its DESCRIPTION.

The rules are R's own, so that what this server accepts is what R builds and
installs: names and versions as in ``tools:::.standard_regexps()``, the DCF
syntax of ``read.dcf`` (``src/main/dcf.c``) with the whitespace handling of
``tools:::.read_description``, which DESCRIPTION readers in R use.

DCF is parsed here rather than with python-debian's ``deb822``, which was
tried: it silently drops lines that are not ``Field: value`` (so it cannot say
what is wrong, or where), skips ``#`` lines as comments, accepts a blank before
the colon and lets a repeated field overwrite the first, keeps continuation
lines raw (leading blanks, `` .`` lines, a leading newline) where R folds
them, and guesses the encoding instead of reading the ``Encoding`` field.

Where R is lenient in ways that only hide mistakes, this module is strict: a
field name may not contain blanks, a field may not appear twice (R keeps the
last), and a DESCRIPTION that is not valid in its declared encoding (R
substitutes the bad bytes) or, without an ``Encoding`` field, not valid UTF-8
(R reads it in the session's native encoding), is refused.

Everything here is pure and blocking; the caller runs ``inspect`` in a thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pm.archives import DEFAULT_PREFIX, quote, refusal, scan_tar_gz
from pm.errors import BadUpload

MAX_FILENAME_LENGTH = 255
# Real DESCRIPTION files are a few KiB; the cap only stops a bomb.
MAX_DESCRIPTION_SIZE = 1024 * 1024

# tools:::.get_standard_repository_db_fields("source") in R 4.2, in its order.
INDEX_FIELDS: tuple[str, ...] = (
    "Package",
    "Version",
    "Priority",
    "Depends",
    "Imports",
    "LinkingTo",
    "Suggests",
    "Enhances",
    "License",
    "License_is_FOSS",
    "License_restricts_use",
    "OS_type",
    "Archs",
    "MD5sum",
    "NeedsCompilation",
)

# tools:::.standard_regexps(): valid_package_name and valid_package_version.
# [[:alpha:]] and [[:alnum:]] are locale-dependent in R; CRAN allows ASCII only.
_PACKAGE_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]")
_VERSION_RE = re.compile(r"(?:[0-9]+[.-])+[0-9]+")
_VERSION_SPLIT_RE = re.compile(r"[.-]")
_TARBALL_SUFFIX = ".tar.gz"
_FORM = "expected <package>_<version>.tar.gz"

# tools:::.keep_white_description_fields: free text whose layout is kept.
_KEEP_WHITE_FIELDS = frozenset({"Description", "Authors@R", "Author", "Built", "Packaged"})
# read.dcf: blank = space or tab; a field line is "Name:" then the value.
_FIELD_RE = re.compile(r"([^\s:]+):[ \t]*(.*)", re.ASCII | re.DOTALL)
_BLANK_RE = re.compile(r"[ \t]*")
# A continuation line holding only "." stands for an empty line.
_EMPTY_LINE_RE = re.compile(r"\s+\.\s*", re.ASCII)
# The Encoding values R and CRAN support, keyed by a spelling-insensitive form.
_ENCODINGS = {
    "utf8": "utf-8",
    "latin1": "latin-1",
    "iso88591": "latin-1",
    "latin2": "iso8859-2",
    "iso88592": "iso8859-2",
}


@dataclass(frozen=True)
class RFilename:
    """What an R source package's filename says: ``{package}_{version}.tar.gz``."""

    filename: str
    package: str
    version: str


@dataclass(frozen=True)
class Description:
    """A package's DESCRIPTION.

    ``fields`` holds every field in file order, decoded, with continuation
    lines joined by newlines as R reads them: folded (blanks around each line
    dropped) except for the free-text fields R keeps as written. ``raw`` is the
    member's exact bytes.
    """

    package: str
    version: str
    fields: dict[str, str]
    raw: bytes


def parse_filename(filename: str) -> RFilename:
    """Parse and validate an uploaded R source package's filename.

    Raises BadUpload unless it is ``{package}_{version}.tar.gz`` with a valid R
    package name and version.
    """
    if not filename:
        raise BadUpload("Cannot upload a file with an empty name.")
    if len(filename) > MAX_FILENAME_LENGTH:
        raise BadUpload(
            f"Filename is too long: {quote(filename)} (at most {MAX_FILENAME_LENGTH} characters)."
        )
    if "/" in filename or "\\" in filename:
        raise BadUpload(f"Cannot upload a file with '/' or '\\' in the name: {quote(filename)}.")
    invalid = f"Invalid R package filename {quote(filename)}"
    if not filename.endswith(_TARBALL_SUFFIX):
        raise BadUpload(f"{invalid}: R source packages are .tar.gz files, {_FORM}.")
    package, underscore, version = filename[: -len(_TARBALL_SUFFIX)].partition("_")
    if not underscore:
        raise BadUpload(f"{invalid}: {_FORM}.")
    if not _PACKAGE_RE.fullmatch(package):
        raise BadUpload(
            f"{invalid}: {quote(package)} is not a valid R package name (ASCII letters, digits "
            "and '.', starting with a letter and not ending with '.')."
        )
    if not _VERSION_RE.fullmatch(version):
        raise BadUpload(
            f"{invalid}: {quote(version)} is not a valid R package version (at least two "
            "numbers separated by '.' or '-')."
        )
    return RFilename(filename=filename, package=package, version=version)


def r_version_key(version: str) -> tuple[int, ...]:
    """Sort key of a valid R package version, ordered as R's ``package_version``.

    ``1.10.0 > 1.9.0`` and ``1.0-1 > 1.0`` ('.' and '-' separate alike).
    Raises ValueError for a string that is not a valid R package version.
    """
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"{version!r} is not a valid R package version")
    return tuple(int(part) for part in _VERSION_SPLIT_RE.split(version))


def parse_description(raw: bytes, source: str = "DESCRIPTION") -> Description:
    """Parse DESCRIPTION bytes (one DCF record) and check Package and Version.

    ``source`` names the file in refusal messages.
    """
    if b"\0" in raw:
        raise BadUpload(f"{source} contains a NUL byte.")
    # Latin-1 maps each byte to one character, so the DCF structure (all
    # ASCII) is found before the Encoding field says how to read the values.
    byte_fields = _parse_dcf(raw.decode("latin-1"), source)
    encoding = _codec(byte_fields, source)
    fields: dict[str, str] = {}
    for name, value in byte_fields.items():
        fields[_decode(name, encoding, source)] = _decode(value, encoding, source)
    package = _required(fields, "Package", source)
    version = _required(fields, "Version", source)
    if not _PACKAGE_RE.fullmatch(package):
        raise BadUpload(f"{source} has an invalid Package field: {quote(package)}.")
    if not _VERSION_RE.fullmatch(version):
        raise BadUpload(
            f"{source} has an invalid Version field: {quote(version)} (at least two numbers "
            "separated by '.' or '-')."
        )
    return Description(package=package, version=version, fields=fields, raw=raw)


def inspect(path: str | os.PathLike[str], name: RFilename) -> Description:
    """Validate an R source package and return its DESCRIPTION.

    The archive must hold only ``{package}/...`` members, among them one
    ``{package}/DESCRIPTION``, whose Package and Version are the filename's.
    """
    member = f"{name.package}/DESCRIPTION"
    scan = scan_tar_gz(
        path,
        want=lambda candidate: _parts(candidate) == [name.package, "DESCRIPTION"],
        max_member_size=MAX_DESCRIPTION_SIZE,
    )
    found = [candidate for candidate in scan.names if candidate in scan.wanted]
    if not found:
        raise _invalid(f"{member} not found")
    if len(found) > 1:
        raise _invalid(f"more than one {member}")
    for candidate in scan.names:
        parts = _parts(candidate)
        if len(parts) < 2 or parts[0] != name.package:
            raise _invalid(
                f"archive member {quote(candidate)} is outside the package directory "
                f"'{name.package}/'"
            )
    description = parse_description(scan.wanted[found[0]], member)
    if description.package != name.package:
        raise BadUpload(
            f"Package {quote(description.package)} in {member} does not match the filename "
            f"{quote(name.filename)}."
        )
    if description.version != name.version:
        raise BadUpload(
            f"Version {quote(description.version)} in {member} does not match the filename "
            f"{quote(name.filename)}."
        )
    return description


def _invalid(reason: str) -> BadUpload:
    return refusal(DEFAULT_PREFIX, reason)


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _parse_dcf(text: str, source: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    current: str | None = None
    ended_at: int | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if _BLANK_RE.fullmatch(line):
            # Blank lines end the record; those before it and at the end are
            # allowed, but R refuses a DESCRIPTION of more than one record.
            if fields and ended_at is None:
                ended_at = number
            current = None
            continue
        if ended_at is not None:
            raise BadUpload(
                f"{source} line {ended_at} is blank: a DESCRIPTION is one record "
                "(write ' .' for an empty line inside a field)."
            )
        if line[0] in " \t":
            if current is None:
                raise BadUpload(
                    f"{source} line {number} is a continuation line with no field before it."
                )
            fields[current] = _continue(fields[current], line, current in _KEEP_WHITE_FIELDS)
            continue
        match = _FIELD_RE.fullmatch(line)
        if match is None:
            raise BadUpload(
                f"{source} is not in DCF format: line {number} is not 'Field: value' "
                f"({quote(_printable(line))})."
            )
        current, value = match.groups()
        if current in fields:
            raise BadUpload(
                f"{source} line {number} repeats the field {quote(_printable(current))}."
            )
        fields[current] = value if current in _KEEP_WHITE_FIELDS else value.rstrip(" \t")
    return fields


def _continue(value: str, line: str, keep_white: bool) -> str:
    # As dcf.c: a " ." line adds an empty line; otherwise a newline separates
    # the new text from what is there, if anything is.
    if _EMPTY_LINE_RE.fullmatch(line):
        return value + "\n"
    text = line if keep_white else line.strip(" \t")
    return f"{value}\n{text}" if value else text


def _codec(fields: dict[str, str], source: str) -> str | None:
    declared = fields.get("Encoding")
    if declared is None:
        return None
    codec = _ENCODINGS.get(re.sub(r"[-_ ]", "", declared).lower())
    if codec is None:
        raise BadUpload(
            f"{source} has Encoding {quote(_printable(declared))}; use UTF-8, latin1 or latin2."
        )
    return codec


def _decode(text: str, codec: str | None, source: str) -> str:
    data = text.encode("latin-1")
    try:
        return data.decode(codec or "utf-8")
    except UnicodeDecodeError:
        if codec is None:
            raise BadUpload(
                f"{source} is not valid UTF-8 and has no Encoding field "
                "(add 'Encoding: latin1' if it is written in Latin-1)."
            ) from None
        raise BadUpload(f"{source} is not valid {codec}, as its Encoding field says.") from None


def _printable(text: str) -> str:
    # Names and values here are still undecoded bytes (as Latin-1 text).
    return text.encode("latin-1").decode("utf-8", "replace")


def _required(fields: dict[str, str], field: str, source: str) -> str:
    value = fields.get(field, "")
    if not value:
        raise BadUpload(f"{source} has no {field} field.")
    return value
