"""A bounded, single-pass reader of untrusted ``.tar.gz`` archives.

Python sdists and R source packages are both uploaded as ``.tar.gz``. The
server looks inside them (member names for layout checks, and the content of
one metadata member) without extracting anything, and must neither spend
unbounded memory or CPU on a hostile archive nor see a different archive from
the one GNU tar, R's ``untar`` or pip's ``tarfile`` will later unpack.

The 512-byte headers are parsed here rather than by ``tarfile`` because
``tarfile`` cannot be bounded or made strict from outside: it reads a GNU long
name or pax header whole into memory before a caller sees it, it ends the
archive silently at the first invalid header (GNU tar skips that block and
goes on listing the members behind it), it never looks past the end-of-archive
block, and it resolves ambiguous header combinations (two long names, a long
name plus a pax path, a prefix field in a non-ustar header, data on a link)
differently from GNU tar and R. Anything that readers could disagree on is
refused here instead. Parsing the headers directly is also about three times
faster than iterating a ``tarfile``, which matters for the CPU an archive of
MAX_MEMBERS empty members costs.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pm.errors import BadUpload

MAX_MEMBERS = 100_000
# Bytes, after the name is assembled from prefix, GNU long name or pax path.
MAX_NAME_LENGTH = 4096
# GNU long names are bounded by MAX_NAME_LENGTH; this bounds pax headers, which
# may also carry comments and extended attributes.
MAX_EXTENDED_HEADER_SIZE = 64 * 1024
# Callers accept one metadata member and refuse an archive with several, but
# only after the scan; this keeps what is read into memory until then small.
MAX_WANTED_MEMBERS = 4
# The names kept for the caller (every member but directories); with
# MAX_MEMBERS alone, 4 KiB names could still hold hundreds of MiB.
MAX_NAMES_SIZE = 32 * 1024 * 1024
# Warehouse's zip-bomb rule: an archive is refused when it unpacks to more than
# COMPRESSION_RATIO_MIN_SIZE and to more than COMPRESSION_RATIO_THRESHOLD times
# its own size. For tar.gz the rule also bounds the CPU spent scanning it.
COMPRESSION_RATIO_MIN_SIZE = 64 * 1024 * 1024
COMPRESSION_RATIO_THRESHOLD = 50
DEFAULT_PREFIX = "Invalid package file"

_BLOCK = 512
_CHUNK = 1024 * 1024
_REGULAR = (b"0", b"\0", b"7")
_SPECIAL = (b"3", b"4", b"6")
_NOT_TAR = "not a gzip-compressed tar archive"
_CORRUPT = "corrupt or truncated tar archive"

_DRIVE_RE = re.compile(r"[A-Za-z]:")
_MEMBER_SPLIT_RE = re.compile(r"[\\/]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_OCTAL_RE = re.compile(rb"[0-7]+")
_DECIMAL_RE = re.compile(rb"[0-9]+")


@dataclass(frozen=True)
class TarScan:
    """What a scan found.

    ``names`` are the members other than directories (regular files and
    links), as named in the archive and in archive order; ``wanted`` maps the
    name of each regular file that ``want`` accepted to its content.
    """

    names: tuple[str, ...]
    wanted: dict[str, bytes]


def quote(name: str) -> str:
    """``repr`` of a name taken from an upload, cut to its first 80 characters."""
    # Refusal messages travel back in HTTP status lines and logs; a hostile
    # name must not make them huge.
    if len(name) > 80:
        return repr(name[:80] + "...")
    return repr(name)


def refusal(prefix: str, reason: str) -> BadUpload:
    """The BadUpload for ``reason``, worded as ``{prefix}: {reason}``."""
    return BadUpload(f"{prefix}: {reason}")


def check_member_name(name: str, *, prefix: str = DEFAULT_PREFIX) -> None:
    """Refuse archive paths that would land outside the extraction directory."""
    if not name:
        raise refusal(prefix, "archive member with an empty name")
    if _CONTROL_RE.search(name):
        raise refusal(
            prefix, f"archive member {quote(name)} has a NUL or control character in its name"
        )
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        raise refusal(prefix, f"archive member {quote(name)} has an absolute path")
    if ".." in _MEMBER_SPLIT_RE.split(name):
        raise refusal(prefix, f"archive member {quote(name)} refers to a parent directory ('..')")


def check_compression_ratio(
    unpacked: int,
    packed: int,
    *,
    min_size: int = COMPRESSION_RATIO_MIN_SIZE,
    threshold: int = COMPRESSION_RATIO_THRESHOLD,
    prefix: str = DEFAULT_PREFIX,
) -> None:
    """Refuse an archive that unpacks to more than ``min_size`` and ``threshold`` x ``packed``."""
    if unpacked > min_size and unpacked > threshold * max(packed, 1):
        raise refusal(prefix, f"File exceeds compression ratio of {threshold}")


def scan_tar_gz(
    path: str | os.PathLike[str],
    *,
    want: Callable[[str], bool],
    max_member_size: int,
    prefix: str = DEFAULT_PREFIX,
    max_members: int = MAX_MEMBERS,
    ratio_min_size: int = COMPRESSION_RATIO_MIN_SIZE,
    ratio_threshold: int = COMPRESSION_RATIO_THRESHOLD,
) -> TarScan:
    """Check a ``.tar.gz`` archive from start to end and read the members ``want`` accepts.

    The file is decompressed once, front to back. Every member name and link
    target is checked (no absolute path, '..', control character, link out of
    the archive or through another link, member below a link), special files
    are refused, and the archive must end cleanly: after the end-of-archive
    block only zero bytes may follow, and the gzip stream must be complete. A
    tar stream that stops between members without that block is accepted, as
    GNU tar and tarfile accept it.

    ``want`` is asked about every member but directories; a member it accepts
    must be a regular file of at most ``max_member_size`` bytes, and at most
    MAX_WANTED_MEMBERS may be accepted. Every refusal is a BadUpload worded
    ``{prefix}: {reason}``; a missing or unreadable ``path`` raises OSError.
    """
    with open(path, "rb") as fileobj:
        packed = os.fstat(fileobj.fileno()).st_size
        with gzip.GzipFile(fileobj=fileobj, mode="rb") as stream:
            reader = _Reader(stream, packed, ratio_min_size, ratio_threshold, prefix)
            return _Scanner(reader, want, max_member_size, max_members, prefix).scan()


class _Reader:
    """The decompressed stream, counted so the ratio rule sees every byte."""

    def __init__(
        self, stream: gzip.GzipFile, packed: int, min_size: int, threshold: int, prefix: str
    ) -> None:
        self._stream = stream
        self._packed = packed
        self._min_size = min_size
        self._threshold = threshold
        self._prefix = prefix
        self.offset = 0

    def _read(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            # Failing before the first decompressed byte: the file is not gzip.
            raise refusal(self._prefix, _NOT_TAR if self.offset == 0 else _CORRUPT) from None
        self.offset += len(data)
        check_compression_ratio(
            self.offset,
            self._packed,
            min_size=self._min_size,
            threshold=self._threshold,
            prefix=self._prefix,
        )
        return data

    def block(self) -> bytes | None:
        """The next header block, or None where the stream ends cleanly between blocks."""
        data = self._read(_BLOCK)
        if not data:
            return None
        if len(data) < _BLOCK:
            raise refusal(self._prefix, _CORRUPT)
        return data

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, then skip the padding to the next block."""
        data = self._read(size)
        if len(data) < size:
            raise refusal(self._prefix, _CORRUPT)
        self.skip(-size % _BLOCK)
        return data

    def read_padded(self, size: int) -> bytes:
        """``size`` bytes and the padding to the next block, together."""
        padded = size + -size % _BLOCK
        data = self._read(padded)
        if len(data) < padded:
            raise refusal(self._prefix, _CORRUPT)
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            data = self._read(min(size, _CHUNK))
            if not data:
                raise refusal(self._prefix, _CORRUPT)
            size -= len(data)

    def expect_zeros_to_end(self) -> None:
        """Read to the end of the gzip stream, refusing anything but zero padding."""
        while data := self._read(_CHUNK):
            # Members hidden here would be listed by `tar --ignore-zeros`.
            if data.count(0) != len(data):
                raise refusal(self._prefix, "data after the end of the tar archive")


@dataclass(frozen=True)
class _Header:
    kind: bytes
    size: int
    name: bytes
    linkname: bytes


@dataclass
class _Pending:
    """The extended headers read for the member that follows them."""

    long_name: bytes | None = None
    long_link: bytes | None = None
    pax: dict[bytes, bytes] | None = None

    def empty(self) -> bool:
        return self.long_name is None and self.long_link is None and self.pax is None


class _Scanner:
    """One pass over the headers, and what it has found so far."""

    def __init__(
        self,
        reader: _Reader,
        want: Callable[[str], bool],
        max_member_size: int,
        max_members: int,
        prefix: str,
    ) -> None:
        self._reader = reader
        self._want = want
        self._max_member_size = max_member_size
        self._max_members = max_members
        self._prefix = prefix
        self._names: list[str] = []
        self._names_size = 0
        self._wanted: dict[str, bytes] = {}
        self._links = _Links()
        # Each symbolic link's name, and the path its target is reached by.
        self._link_paths: list[tuple[str, list[str]]] = []
        self._pending = _Pending()
        self._members = 0

    def _invalid(self, reason: str) -> BadUpload:
        return refusal(self._prefix, reason)

    def scan(self) -> TarScan:
        first = True
        while True:
            start = self._reader.offset
            block = self._reader.block()
            if block is None or block.count(0) == _BLOCK:
                if first and block is None:
                    raise self._invalid(_NOT_TAR)
                if not self._pending.empty():
                    raise self._invalid(f"{_CORRUPT} (extended header without a member)")
                if block is not None:
                    self._reader.expect_zeros_to_end()
                break
            header = self._parse_header(block, start, first)
            first = False
            self._process(header)
        self._check_symlink_targets()
        return TarScan(names=tuple(self._names), wanted=self._wanted)

    def _parse_header(self, block: bytes, start: int, first: bool) -> _Header:
        def corrupt(what: str) -> BadUpload:
            # The first block decides whether this is a tar archive at all.
            if first:
                return self._invalid(_NOT_TAR)
            return self._invalid(f"{_CORRUPT} ({what} at byte {start})")

        stored = _octal(block[148:156])
        unsigned = sum(block) - sum(block[148:156]) + 8 * ord(" ")
        if stored != unsigned and stored != sum(struct.unpack("148b8x356b", block)) + 256:
            raise corrupt("bad header checksum")
        size = _octal(block[124:136])
        if size is None:
            raise corrupt("bad size field")
        # tarfile ends the archive at a header whose numbers it cannot read,
        # and GNU tar fails there: both would see other members than this scan.
        for start_, end in _NUMBER_FIELDS:
            field = block[start_:end]
            if _octal(field) is None and field[0] not in _BASE256:
                raise corrupt("bad number in header")
        name = block[:100].rstrip(b"\0")
        if block[257:263] == b"ustar\0":
            prefix = block[345:500].rstrip(b"\0")
            if prefix:
                name = prefix + b"/" + name
        elif block[345] != 0:
            # tarfile and R prepend this field to the name, GNU tar reads it as
            # a timestamp unless the header is POSIX ustar.
            raise corrupt("name prefix outside a ustar header")
        return _Header(block[156:157], size, name, block[157:257].rstrip(b"\0"))

    def _process(self, header: _Header) -> None:
        kind = header.kind
        if kind in (b"L", b"K"):
            if header.size > MAX_NAME_LENGTH + 1:
                what = "name" if kind == b"L" else "link target"
                raise self._invalid(f"archive member {what} longer than {MAX_NAME_LENGTH} bytes")
            # The whole padded block, up to its first NUL: what tarfile and
            # GNU tar take for the name, whatever the size field says.
            value = self._reader.read_padded(header.size).split(b"\0", 1)[0]
            if kind == b"L" and self._pending.long_name is None:
                self._pending.long_name = value
            elif kind == b"K" and self._pending.long_link is None:
                self._pending.long_link = value
            else:
                raise self._invalid(f"{_CORRUPT} (repeated extended header)")
            return
        if kind in (b"x", b"g"):
            if header.size > MAX_EXTENDED_HEADER_SIZE:
                raise self._invalid(
                    f"archive has an extended header larger than {MAX_EXTENDED_HEADER_SIZE} bytes"
                )
            records = self._parse_pax(self._reader.read(header.size))
            if kind == b"x":
                if self._pending.pax is not None:
                    raise self._invalid(f"{_CORRUPT} (repeated extended header)")
                self._pending.pax = records
                return
            # Global headers apply to every later member for GNU tar but only
            # to the next one for tarfile, and R ignores them: only comments
            # (as written by `git archive`) are harmless.
            if not self._pending.empty() or records.keys() & {b"path", b"linkpath", b"size"}:
                raise self._invalid("archive has a global extended header that sets member fields")
        self._members += 1
        if self._members > self._max_members:
            raise self._invalid(f"archive has more than {self._max_members} members")
        if kind != b"g":
            self._member(header)

    def _parse_pax(self, data: bytes) -> dict[bytes, bytes]:
        malformed = self._invalid(f"{_CORRUPT} (malformed extended header)")
        records: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(data):
            if data[pos] == 0 and data.count(0, pos) == len(data) - pos:
                break
            space = data.find(b" ", pos, pos + 20)
            if space < 0 or not _DECIMAL_RE.fullmatch(data, pos, space):
                raise malformed
            end = pos + int(data[pos:space])
            if end <= space + 1 or end > len(data) or data[end - 1] != ord("\n"):
                raise malformed
            key, equals, value = data[space + 1 : end - 1].partition(b"=")
            if not key or not equals:
                raise malformed
            if key.startswith(b"GNU.sparse."):
                raise self._invalid("archive has a sparse member, which is not supported")
            if key == b"size" and not _DECIMAL_RE.fullmatch(value):
                raise malformed
            records[key] = value
            pos = end
        return records

    def _take_pending(self, header: _Header) -> tuple[bytes, bytes, int]:
        pending, self._pending = self._pending, _Pending()
        pax = pending.pax or {}
        long_name, long_link = pending.long_name, pending.long_link
        # tarfile lets whichever of the two comes last win, GNU tar the pax one.
        if (long_name is not None and b"path" in pax) or (
            long_link is not None and b"linkpath" in pax
        ):
            raise self._invalid(f"{_CORRUPT} (conflicting extended headers)")
        name = pax.get(b"path", long_name if long_name is not None else header.name)
        link = pax.get(b"linkpath", long_link if long_link is not None else header.linkname)
        size = int(pax[b"size"]) if b"size" in pax else header.size
        return name, link, size

    def _decode(self, raw: bytes, what: str) -> str:
        if len(raw) > MAX_NAME_LENGTH:
            raise self._invalid(f"archive member {what} longer than {MAX_NAME_LENGTH} bytes")
        # As tarfile does: the bytes of a name that is not UTF-8 survive.
        return raw.decode("utf-8", "surrogateescape")

    def _member(self, header: _Header) -> None:
        raw_name, raw_link, size = self._take_pending(header)
        name = self._decode(raw_name, "name")
        check_member_name(name, prefix=self._prefix)
        parts = _parts(name)
        self._check_not_under_symlink(name, parts)
        kind = header.kind
        if kind in _SPECIAL:
            raise self._invalid(f"archive member {quote(name)} is a special file")
        if kind not in (*_REGULAR, b"1", b"2", b"5"):
            raise self._invalid(
                f"archive member {quote(name)} has an unsupported type {kind.decode('latin-1')!r}"
            )
        if kind not in _REGULAR and (size or header.size):
            # tarfile reads no data after a link or directory header, GNU tar
            # skips it: the members behind it would differ.
            raise self._invalid(f"archive member {quote(name)} is not a file but has data")
        if kind == b"5":
            return
        if kind in _REGULAR and name.endswith("/"):
            raise self._invalid(f"archive member {quote(name)} is a file with a directory name")
        self._keep_name(name)
        wanted = self._want(name)
        if kind == b"1":
            self._hard_link(self._decode(raw_link, "link target"))
        elif kind == b"2":
            self._symlink(name, parts, self._decode(raw_link, "link target"))
        if wanted and kind not in _REGULAR:
            raise self._invalid(f"{quote(name)} is not a regular file")
        if not wanted:
            self._reader.skip(size + -size % _BLOCK)
            return
        if size > self._max_member_size:
            raise self._invalid(f"{quote(name)} is larger than {self._max_member_size} bytes")
        if len(self._wanted) >= MAX_WANTED_MEMBERS:
            raise self._invalid(
                f"archive has more than {MAX_WANTED_MEMBERS} members like {quote(name)}"
            )
        self._wanted[name] = self._reader.read(size)

    def _keep_name(self, name: str) -> None:
        self._names_size += len(name)
        if self._names_size > MAX_NAMES_SIZE:
            raise self._invalid(f"archive member names total more than {MAX_NAMES_SIZE} bytes")
        self._names.append(name)

    def _check_not_under_symlink(self, name: str, parts: Sequence[str]) -> None:
        # Extracting a member below a symlink writes wherever the link points.
        link = self._links.first_link_on(parts)
        if link is not None:
            raise self._invalid(
                f"archive member {quote(name)} is under the symbolic link {quote(link)}"
            )

    def _hard_link(self, target: str) -> None:
        check_member_name(target, prefix=self._prefix)
        self._check_not_under_symlink(target, _parts(target))

    def _symlink(self, name: str, parts: Sequence[str], target: str) -> None:
        if _CONTROL_RE.search(target):
            raise self._invalid(f"archive member {quote(name)} has a control character in its link")
        if target.startswith(("/", "\\")) or _DRIVE_RE.match(target):
            raise self._invalid(f"archive member {quote(name)} links to an absolute path")
        path = [*parts[:-1], *target.split("/")]
        depth = 0
        for step in path:
            if step == "..":
                depth -= 1
                if depth < 0:
                    raise self._invalid(f"archive member {quote(name)} links outside the archive")
            elif step not in ("", "."):
                depth += 1
        # Targets are kept until the end of the scan: they count as names.
        self._names_size += len(target)
        self._links.add(parts)
        self._link_paths.append((name, path))

    def _check_symlink_targets(self) -> None:
        # The lexical resolution in _symlink is the real one only if it passes
        # through no other link ("a -> .." then "b -> a/.."). Checked once all
        # links are known: whoever follows them does so after extraction.
        for name, path in self._link_paths:
            link = self._links.first_link_on(path)
            if link is not None:
                raise self._invalid(
                    f"archive member {quote(name)} links through the symbolic link {quote(link)}"
                )


class _Links:
    """The paths of the archive's symbolic links, as a tree of path components.

    A tree rather than a set of paths, so that asking whether a path passes
    through a link costs one look-up per component however deep the path is.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[int, str], int] = {}
        self._links: set[int] = set()

    def add(self, parts: Sequence[str]) -> None:
        node = 0
        for part in parts:
            node = self._children.setdefault((node, part), len(self._children) + 1)
        self._links.add(node)

    def first_link_on(self, path: Sequence[str]) -> str | None:
        """The first link that ``path`` (relative, "." and ".." allowed) goes through.

        A link at the very end of ``path`` is not gone through, only named.
        """
        if not self._links:
            return None
        nodes: list[int | None] = []
        names: list[str] = []
        for index, step in enumerate(path):
            if step in ("", "."):
                continue
            if step == "..":
                if nodes:
                    nodes.pop()
                    names.pop()
                continue
            parent = nodes[-1] if nodes else 0
            node = None if parent is None else self._children.get((parent, step))
            nodes.append(node)
            names.append(step)
            if node in self._links and index < len(path) - 1:
                return "/".join(names)
        return None


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in name.split("/") if part not in ("", "."))


# mode, uid, gid, mtime, devmajor, devminor: numbers every tar reader parses.
_NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
# GNU's base-256 numbers (large uids, mtimes) start with one of these bytes.
_BASE256 = (0x80, 0xFF)


def _octal(field: bytes) -> int | None:
    # As tarfile and GNU tar read numeric fields: up to a NUL, spaces around.
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    # Base-256 sizes (members over 8 GiB) fail here too: R cannot read them.
    if not _OCTAL_RE.fullmatch(text):
        return None
    return int(text, 8)
