"""Validation of uploaded Python distributions (wheels and sdists).

The rules and messages follow Warehouse's legacy upload API (``twine upload``),
so a file refused by PyPI is refused here for the same reason and with a
message the uploader can search for. The one deliberate difference is that
wheel platform tags are not checked against PyPI's allow-list: a private
repository legitimately hosts ``linux_x86_64`` and similar local builds.

Everything here is pure and blocking; the caller runs ``inspect*`` in a thread.
Archives are never extracted: only the core metadata member is read, and its
size is capped so that a compressed bomb cannot exhaust memory.
"""

from __future__ import annotations

import email.header
import email.message
import email.parser
import email.policy
import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from pm.archives import (
    COMPRESSION_RATIO_MIN_SIZE,
    COMPRESSION_RATIO_THRESHOLD,
    MAX_MEMBERS,
    check_compression_ratio,
    check_member_name,
    quote,
    scan_tar_gz,
)
from pm.errors import BadUpload

MAX_FILENAME_LENGTH = 255
# METADATA of real projects is at most a few hundred KiB (long READMEs); the
# cap only has to stop a member that claims or inflates to gigabytes.
MAX_METADATA_SIZE = 10 * 1024 * 1024
# COMPRESSION_RATIO_MIN_SIZE and COMPRESSION_RATIO_THRESHOLD (Warehouse's
# zip-bomb rule, shared with R packages) are imported from pm.archives but
# passed explicitly, so the values bound here are the ones Python uploads get.

FILETYPE_WHEEL = "bdist_wheel"
FILETYPE_SDIST = "sdist"
SDIST_PYTHON_VERSION = "source"
# Filetypes Warehouse's form knows; any of them other than ours gets the
# extension message rather than "Unknown type of file."
_KNOWN_FILETYPES = frozenset(
    {
        "bdist_dmg",
        "bdist_dumb",
        "bdist_egg",
        "bdist_msi",
        "bdist_rpm",
        "bdist_wheel",
        "bdist_wininst",
        "sdist",
    }
)
_SDIST_EXTENSIONS = (".tar.gz", ".zip")

_PROJECT_NAME_RE = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE | re.ASCII)
_NORMALIZE_RE = re.compile(r"[-_.]+")
# Tag components are identifiers in practice (cp311, manylinux_2_17_x86_64);
# checked here because packaging only validates them from 26.3 on.
_TAG_COMPONENT_RE = re.compile(r"[A-Za-z0-9_]+", re.ASCII)

_CORE_METADATA_HELP = (
    "See https://packaging.python.org/specifications/core-metadata for more information."
)
_EXTENSION_HELP = (
    "See https://packaging.python.org/en/latest/specifications/source-distribution-format/ "
    "and https://packaging.python.org/en/latest/specifications/binary-distribution-format/ "
    "for more information."
)


def normalize_name(name: str) -> str:
    """Return the PEP 503 normalized form of a project name."""
    return _NORMALIZE_RE.sub("-", name).lower()


def is_valid_project_name(name: str) -> bool:
    """Whether ``name`` is a valid core-metadata project name (PEP 508, ASCII only)."""
    # fullmatch, not match with "$": "$" would accept a trailing newline.
    return _PROJECT_NAME_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class DistFilename:
    """What an upload's filename says about the distribution."""

    filename: str
    project: str
    version: str
    filetype: str
    python_version: str


@dataclass(frozen=True)
class CoreMetadata:
    """Core metadata read from inside a distribution.

    ``raw`` is the member's exact bytes, to be served verbatim for PEP 658;
    ``name`` and ``version`` are as written in it (stripped), not normalized.
    """

    raw: bytes
    name: str
    version: str
    requires_python: str | None
    summary: str | None
    # What a project page shows: the description and the fields of
    # DETAIL_FIELDS that are present (lists for the repeatable ones).
    details: dict[str, str | list[str]] = field(default_factory=dict)


# Shown on a project's page; kept as written, escaped or sanitised when shown.
DETAIL_FIELDS = ("Author", "Author-email", "Maintainer", "Maintainer-email", "License",
                 "License-Expression", "Home-page", "Keywords", "Description-Content-Type")
DETAIL_LISTS = ("Project-URL", "Classifier", "Requires-Dist", "Provides-Extra")


def _details(message: email.message.Message) -> dict[str, str | list[str]]:
    details: dict[str, str | list[str]] = {}
    for name in DETAIL_FIELDS:
        values = _header_values(message, name)
        if values and values[0].strip():
            details[name] = values[0].strip()
    for name in DETAIL_LISTS:
        values = [v.strip() for v in _header_values(message, name) if v.strip()]
        if values:
            details[name] = values
    # Metadata 2.1 puts the description in the body; older files in a header
    # whose continuation lines start with 8 spaces or "|".
    body = message.get_payload()
    description = body if isinstance(body, str) and body.strip() else None
    if description is None:
        header = _header_values(message, "Description")
        if header:
            lines = header[0].splitlines()
            description = "\n".join([lines[0], *(
                line[8:] if line.startswith(" " * 8) else line.lstrip(" |")
                for line in lines[1:])]) if lines else None
    if description and description.strip() and description.strip() != "UNKNOWN":
        details["Description"] = description
    return details


def parse_filename(filename: str) -> DistFilename:
    """Parse and validate an uploaded distribution's filename.

    Raises BadUpload for anything that is not a well-formed wheel, ``.tar.gz``
    sdist or legacy ``.zip`` sdist name, or that could be unsafe as a path.
    """
    if not filename:
        raise BadUpload("Cannot upload a file with an empty name.")
    if len(filename) > MAX_FILENAME_LENGTH:
        raise BadUpload(
            f"Filename is too long: {quote(filename)} (at most {MAX_FILENAME_LENGTH} characters)."
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in filename):
        raise BadUpload(
            "Cannot upload a file with non-printable characters (ordinals 0-31) "
            f"or the DEL character (ordinal 127) in the name: {quote(filename)}."
        )
    if "/" in filename or "\\" in filename:
        raise BadUpload(f"Cannot upload a file with '/' or '\\' in the name: {quote(filename)}.")
    if ".." in filename:
        raise BadUpload(f"Cannot upload a file with '..' in the name: {quote(filename)}.")
    if filename.startswith("."):
        raise BadUpload(f"Cannot upload a file whose name starts with '.': {quote(filename)}.")
    # Every valid name, version and tag is ASCII; refusing the rest up front
    # also keeps Unicode case-folding tricks out of the regexes below.
    if not filename.isascii():
        raise BadUpload(
            f"Cannot upload a file with non-ASCII characters in the name: {quote(filename)}."
        )

    if filename.endswith(".whl"):
        return _parse_wheel_filename(filename)
    if filename.endswith(_SDIST_EXTENSIONS):
        return _parse_sdist_filename(filename)
    raise BadUpload(
        f"Invalid file extension for {quote(filename)}: Use .tar.gz, .whl or .zip extension. "
        + _EXTENSION_HELP
    )


def _parse_wheel_filename(filename: str) -> DistFilename:
    try:
        _name, version, _build, _tags = parse_wheel_filename(filename)
    # ValueError, as for versions: packaging lets a huge version escape as one.
    except ValueError as exc:
        raise BadUpload(str(exc)) from None
    parts = filename[: -len(".whl")].split("-")
    # packaging accepts any Unicode word character and a leading or trailing
    # "_" in the escaped name; a project name is stricter than that.
    if not is_valid_project_name(parts[0]):
        raise BadUpload(f"Invalid project name in wheel filename: {quote(filename)}.")
    python_tag, abi_tag, platform_tag = parts[-3:]
    for tag in (python_tag, abi_tag, platform_tag):
        if not all(_TAG_COMPONENT_RE.fullmatch(part) for part in tag.split(".")):
            raise BadUpload(
                f"Invalid wheel filename (invalid tag {quote(tag)}): {quote(filename)}.")
    return DistFilename(
        filename=filename,
        project=normalize_name(parts[0]),
        version=str(version),
        filetype=FILETYPE_WHEEL,
        python_version=python_tag,
    )


def _parse_sdist_filename(filename: str) -> DistFilename:
    try:
        _name, version = parse_sdist_filename(filename)
    except ValueError as exc:
        raise BadUpload(f"Invalid source distribution filename: {exc}") from None
    name_part = _sdist_stem(filename).rpartition("-")[0]
    if not is_valid_project_name(name_part):
        raise BadUpload(
            f"Invalid source distribution filename: invalid project name {quote(name_part)} "
            f"in {quote(filename)}."
        )
    return DistFilename(
        filename=filename,
        project=normalize_name(name_part),
        version=str(version),
        filetype=FILETYPE_SDIST,
        python_version=SDIST_PYTHON_VERSION,
    )


def _sdist_stem(filename: str) -> str:
    for extension in _SDIST_EXTENSIONS:
        if filename.endswith(extension):
            return filename[: -len(extension)]
    raise ValueError(f"not an sdist filename: {filename!r}")


def _parse_version(value: str, field: str) -> Version:
    try:
        return Version(value)
    # ValueError, of which InvalidVersion is one: a run of more than 4,300
    # digits exceeds Python's int conversion limit, which packaging lets escape.
    except ValueError:
        raise BadUpload(
            f"{quote(value)} is an invalid value for {field}. "
            f"Error: Not a valid PEP 440 version. {_CORE_METADATA_HELP}"
        ) from None


def check_form_agrees(
    dist: DistFilename,
    *,
    name: str,
    version: str,
    filetype: str,
    pyversion: str | None,
) -> None:
    """Refuse an upload whose form fields contradict its filename.

    ``name`` must normalize to the filename's project, ``version`` must be the
    same PEP 440 version, ``filetype`` must match the extension, and
    ``pyversion`` (when given) must be the wheel's python tag, or ``source``
    for an sdist.
    """
    if not is_valid_project_name(name):
        raise BadUpload(
            f"{quote(name)} is an invalid value for Name. Error: Start and end with a letter "
            "or numeral containing only ASCII numeric and '.', '_' and '-'. " + _CORE_METADATA_HELP
        )
    form_version = _parse_version(version, "Version")
    if normalize_name(name) != dist.project:
        _refuse_ambiguous_sdist(dist, name, form_version)
        prefix = normalize_name(name).replace("-", "_")
        raise BadUpload(
            f"Start filename for {quote(name)} with {quote(prefix)} (got {quote(dist.filename)})."
        )
    if form_version != Version(dist.version):
        raise BadUpload(
            f"Version in filename should be {quote(str(form_version))} not {quote(dist.version)}."
        )

    if filetype not in _KNOWN_FILETYPES:
        raise BadUpload(f"Unknown type of file: {quote(filetype)}.")
    if filetype != dist.filetype:
        extension = ".whl" if dist.filetype == FILETYPE_WHEEL else _sdist_extension(dist.filename)
        raise BadUpload(
            f"Invalid file extension: Extension {extension} is invalid for filetype "
            f"{filetype}. See https://www.python.org/dev/peps/pep-0527 for more information."
        )

    # twine always sends pyversion, but other clients leave it empty.
    if not pyversion:
        return
    if dist.filetype == FILETYPE_SDIST:
        if pyversion != SDIST_PYTHON_VERSION:
            raise BadUpload("Use 'source' as Python version for an sdist.")
        return
    # Compared as sets: "py2.py3" and "py3.py2" name the same compressed tag set,
    # and clients differ in the order they rebuild it in.
    if set(pyversion.split(".")) != set(dist.python_version.split(".")):
        raise BadUpload(
            f"Python version {quote(pyversion)} does not match the python tag "
            f"{dist.python_version!r} of {quote(dist.filename)}."
        )


def _sdist_extension(filename: str) -> str:
    return next(ext for ext in _SDIST_EXTENSIONS if filename.endswith(ext))


def _refuse_ambiguous_sdist(dist: DistFilename, name: str, form_version: Version) -> None:
    # A pre-PEP 625 sdist such as "foo-1.0-1.tar.gz" (version 1.0-1, i.e.
    # 1.0.post1) is read by the last-dash rule as project "foo-1.0" version 1.
    # Warehouse resolves this with the metadata; here the filename must be
    # unambiguous, so say how to rename it instead of blaming the project name.
    if dist.filetype != FILETYPE_SDIST:
        return
    stem = _sdist_stem(dist.filename)
    if stem.count("-") < 2:
        return
    alt_name, version_head, version_tail = stem.rsplit("-", 2)
    alt_version = f"{version_head}-{version_tail}"
    try:
        same_version = Version(alt_version) == form_version
    except ValueError:
        return
    if same_version and normalize_name(alt_name) == normalize_name(name):
        expected = (
            f"{normalize_name(name).replace('-', '_')}-{form_version}"
            f"{_sdist_extension(dist.filename)}"
        )
        raise BadUpload(
            f"Filename {quote(dist.filename)} is ambiguous: a '-' inside the version "
            f"cannot be told from the name separator. Rename it to {expected!r}."
        )


# Archive inspection


_INVALID = "Invalid distribution file"


def _invalid(reason: str) -> BadUpload:
    return BadUpload(f"{_INVALID}: {reason}")


def _read_capped(stream: IO[bytes], declared_size: int, member: str) -> bytes:
    # The declared size can lie (or be huge): refuse early on it, then read at
    # most one byte past the cap so an understated size cannot slip through.
    if declared_size > MAX_METADATA_SIZE:
        raise _invalid(f"{quote(member)} is larger than {MAX_METADATA_SIZE} bytes")
    data = stream.read(MAX_METADATA_SIZE + 1)
    if len(data) > MAX_METADATA_SIZE:
        raise _invalid(f"{quote(member)} is larger than {MAX_METADATA_SIZE} bytes")
    return data


def _header_values(message: email.message.Message, field: str) -> list[str]:
    values: list[str] = []
    for value in message.get_all(field, []):
        if isinstance(value, email.header.Header):
            # compat32 wraps headers holding non-ASCII bytes in a Header; core
            # metadata is UTF-8, with latin-1 for the oldest distutils output.
            text = []
            for chunk, _charset in email.header.decode_header(value):
                data = (
                    chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "surrogateescape")
                )
                try:
                    text.append(data.decode("utf-8"))
                except UnicodeDecodeError:
                    text.append(data.decode("latin-1"))
            values.append("".join(text))
        else:
            values.append(str(value))
    return values


def _optional_header(message: email.message.Message, field: str, source: str) -> str | None:
    values = _header_values(message, field)
    if len(values) > 1:
        raise BadUpload(f"{source} has more than one {field} field.")
    # Continuation lines of a folded header are joined with single spaces.
    value = " ".join(line.strip() for line in values[0].splitlines()).strip() if values else ""
    return value or None


def _required_header(message: email.message.Message, field: str, source: str) -> str:
    value = _optional_header(message, field, source)
    if value is None:
        raise BadUpload(f"{source} has no {field} field. {_CORE_METADATA_HELP}")
    return value


def _parse_core_metadata(raw: bytes, source: str, dist: DistFilename) -> CoreMetadata:
    """Parse METADATA/PKG-INFO bytes and check them against the filename."""
    # headersonly: the body (Metadata 2.1+ Description) is free text that must
    # not be interpreted as MIME.
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        raw, headersonly=True
    )
    name = _required_header(message, "Name", source)
    version = _required_header(message, "Version", source)
    requires_python = _optional_header(message, "Requires-Python", source)
    summary = _optional_header(message, "Summary", source)

    if normalize_name(name) != dist.project:
        raise BadUpload(
            f"Name {quote(name)} in {source} does not match the project {dist.project!r} "
            f"of {quote(dist.filename)}."
        )
    metadata_version = _parse_version(version, "Version")
    if metadata_version != Version(dist.version):
        raise BadUpload(
            f"Version in filename should be {quote(str(metadata_version))} not {dist.version!r}."
        )
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise BadUpload(
                f"{quote(requires_python)} is an invalid value for Requires-Python. "
                f"Error: Invalid specifier. {_CORE_METADATA_HELP}"
            ) from None
    return CoreMetadata(
        raw=raw,
        name=name,
        version=version,
        requires_python=requires_python,
        summary=summary,
        details=_details(message),
    )


def _open_zip(fileobj: IO[bytes]) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(fileobj):
        raise _invalid("not a zip archive")
    _check_zip_entry_count(fileobj)
    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, OSError):
        raise _invalid("not a zip archive") from None


def _too_many_members() -> BadUpload:
    return _invalid(f"the archive has more than {MAX_MEMBERS} members")


# A central directory entry's fixed part, and where in it the three lengths of
# its variable parts (name, extra field, comment) are.
_CENTRAL_ENTRY = struct.Struct("<4s24xHHH12x")
_CENTRAL_SIGNATURE = b"PK\x01\x02"


def _check_zip_entry_count(fileobj: IO[bytes]) -> None:
    """Refuse an archive whose central directory holds more than MAX_MEMBERS entries.

    zipfile builds a ZipInfo for every central directory entry on opening,
    about 500 bytes each, whatever count the end record states. So the entries
    are counted first, the way zipfile walks them (from the end record it
    finds, zip64 included), reading only each entry's fixed part.
    """
    end = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]
    if end is None:
        raise _invalid("not a zip archive")
    if end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:  # type: ignore[attr-defined]
        raise _too_many_members()
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    # Bytes before the archive (a self-extractor's stub) shift every offset.
    start = end[zipfile._ECD_LOCATION] - size  # type: ignore[attr-defined]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    fileobj.seek(start)
    walked = count = 0
    while walked < size:
        fixed = fileobj.read(_CENTRAL_ENTRY.size)
        if len(fixed) < _CENTRAL_ENTRY.size:
            return
        signature, *lengths = _CENTRAL_ENTRY.unpack(fixed)
        if signature != _CENTRAL_SIGNATURE:
            # zipfile refuses it when it opens the archive.
            return
        count += 1
        if count > MAX_MEMBERS:
            raise _too_many_members()
        fileobj.seek(sum(lengths), io.SEEK_CUR)
        walked += _CENTRAL_ENTRY.size + sum(lengths)


def _check_zip_members(archive: zipfile.ZipFile, packed: int) -> None:
    infos = archive.infolist()
    seen: set[str] = set()
    for info in infos:
        check_member_name(info.filename, prefix=_INVALID)
        # Two entries with one name: installers and this code could pick
        # different ones, so what is served would not be what gets installed.
        if info.filename in seen:
            raise _invalid(f"archive member {quote(info.filename)} appears more than once")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise _invalid(f"archive member {quote(info.filename)} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _invalid("File does not use a supported compression type")
    check_compression_ratio(
        sum(info.file_size for info in infos),
        packed,
        min_size=COMPRESSION_RATIO_MIN_SIZE,
        threshold=COMPRESSION_RATIO_THRESHOLD,
        prefix=_INVALID,
    )


def _read_zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    try:
        with archive.open(info) as stream:
            return _read_capped(stream, info.file_size, name)
    # A corrupt local header makes zipfile seek to a negative offset (OSError)
    # or decode a name that is not UTF-8 (ValueError).
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError):
        raise _invalid(f"{quote(name)} is corrupt") from None


def inspect_wheel(path: str | os.PathLike[str], dist: DistFilename) -> CoreMetadata:
    """Validate a wheel file and return its ``.dist-info/METADATA``."""
    if dist.filetype != FILETYPE_WHEEL:
        raise ValueError(f"{dist.filename!r} is not a wheel")
    # Warehouse's expected path is built from the filename's own name and
    # version text; it is what the refusal message names.
    raw_name, raw_version = dist.filename.split("-", 2)[:2]
    expected = f"{raw_name}-{raw_version}.dist-info/METADATA"
    missing = f"Wheel '{dist.filename}' does not contain the required METADATA file: {expected}"

    # Opening the file ourselves lets a missing or unreadable path surface as
    # the server error it is (is_zipfile would report it as "not a zip").
    with open(path, "rb") as fileobj, _open_zip(fileobj) as archive:
        _check_zip_members(archive, os.fstat(fileobj.fileno()).st_size)
        names = archive.namelist()
        # pip refuses a wheel with two .dist-info directories, so "the" METADATA
        # must be unique even when another one is not named after the project.
        dist_info_dirs = sorted(
            {
                parts[0]
                for parts in (name.split("/") for name in names)
                if len(parts) > 1 and parts[0].endswith(".dist-info")
            }
        )
        if len(dist_info_dirs) > 1:
            raise BadUpload(
                f"Wheel '{dist.filename}' has more than one .dist-info directory: "
                + ", ".join(dist_info_dirs)
            )
        if not dist_info_dirs:
            raise BadUpload(missing)
        dist_info = dist_info_dirs[0]
        member = f"{dist_info}/METADATA"
        if member not in names:
            raise BadUpload(missing)
        if not _dist_info_matches(dist_info, dist):
            raise BadUpload(f"{missing} (found {member})")
        # Installers refuse a wheel without these two, as Warehouse does.
        if f"{dist_info}/WHEEL" not in names:
            raise _invalid(f"WHEEL not found at {dist_info}/WHEEL")
        if f"{dist_info}/RECORD" not in names:
            raise BadUpload(
                f"Wheel '{dist.filename}' does not contain the required RECORD file: "
                f"{dist_info}/RECORD"
            )
        raw = _read_zip_member(archive, member)
    return _parse_core_metadata(raw, member, dist)


def _dist_info_matches(directory: str, dist: DistFilename) -> bool:
    # Build backends differ in how they escape the name (Foo_Bar, foo_bar,
    # typed_D3DShot) and some leave the version unnormalized, so both sides are
    # compared after normalization rather than as text.
    name, sep, version = directory[: -len(".dist-info")].rpartition("-")
    if not sep or normalize_name(name) != dist.project:
        return False
    try:
        return Version(version) == Version(dist.version)
    except ValueError:
        return False


def _member_parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _find_pkg_info(names: Iterable[str], dist: DistFilename) -> str:
    """The single ``{top}/PKG-INFO`` of an sdist whose members all sit under one directory."""
    top_levels: set[str] = set()
    candidates: list[str] = []
    for name in names:
        parts = _member_parts(name)
        if not parts:
            continue
        top_levels.add(parts[0])
        if len(parts) == 2 and parts[1] == "PKG-INFO":
            candidates.append(name)
    expected = f"{_sdist_stem(dist.filename)}/PKG-INFO"
    if len(top_levels) != 1:
        raise _invalid("Incorrect number of top-level directories in sdist")
    if not candidates:
        raise _invalid(f"PKG-INFO not found at {expected}")
    if len(candidates) > 1:
        raise _invalid("more than one top-level PKG-INFO in sdist")
    return candidates[0]


def _inspect_zip_sdist(path: str | os.PathLike[str], dist: DistFilename) -> CoreMetadata:
    with open(path, "rb") as fileobj, _open_zip(fileobj) as archive:
        _check_zip_members(archive, os.fstat(fileobj.fileno()).st_size)
        member = _find_pkg_info(
            (info.filename for info in archive.infolist() if not info.is_dir()), dist
        )
        raw = _read_zip_member(archive, member)
    return _parse_core_metadata(raw, "PKG-INFO", dist)


def _is_pkg_info_candidate(name: str) -> bool:
    parts = _member_parts(name)
    return len(parts) == 2 and parts[1] == "PKG-INFO"


def _inspect_tar_sdist(path: str | os.PathLike[str], dist: DistFilename) -> CoreMetadata:
    # Every candidate is read while the stream is there (rewinding a gzip
    # stream means decompressing it all again); _find_pkg_info then refuses
    # the sdist unless exactly one of them is the top-level PKG-INFO.
    scan = scan_tar_gz(
        path,
        want=_is_pkg_info_candidate,
        max_member_size=MAX_METADATA_SIZE,
        prefix=_INVALID,
        ratio_min_size=COMPRESSION_RATIO_MIN_SIZE,
        ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
    )
    member = _find_pkg_info(scan.names, dist)
    return _parse_core_metadata(scan.wanted[member], "PKG-INFO", dist)


def inspect_sdist(path: str | os.PathLike[str], dist: DistFilename) -> CoreMetadata:
    """Validate a ``.tar.gz`` or ``.zip`` sdist and return its top-level PKG-INFO.

    Warehouse requires PKG-INFO in every sdist, so its absence is a refusal.
    """
    if dist.filetype != FILETYPE_SDIST:
        raise ValueError(f"{dist.filename!r} is not an sdist")
    if dist.filename.endswith(".zip"):
        return _inspect_zip_sdist(path, dist)
    return _inspect_tar_sdist(path, dist)


def inspect(path: str | os.PathLike[str], dist: DistFilename) -> CoreMetadata:
    """Validate a distribution file of either type and return its core metadata."""
    if dist.filetype == FILETYPE_WHEEL:
        return inspect_wheel(path, dist)
    if dist.filetype == FILETYPE_SDIST:
        return inspect_sdist(path, dist)
    raise BadUpload(f"Unknown type of file: {dist.filetype!r}.")
