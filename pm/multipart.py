"""Incremental (push) parser for ``multipart/form-data`` request bodies.

Uploads from ``twine``, ``uv`` and friends can be many GiB, and Twisted hands
the body over chunk by chunk (``Request.handleContentChunk``).  The parser is
therefore fed bytes as they arrive and reports part boundaries and part data to
a :class:`PartHandler` as soon as it can; it never holds more of the body than
one part's header block (bounded by ``max_header_size``) plus a tail shorter
than the delimiter.

Part data is located with ``bytes.find`` and handed out as zero-copy
``memoryview`` slices of the fed chunk, so large parts cost about one scan of
each byte.  See RFC 7578 (form-data) and RFC 2046 section 5.1 (multipart
syntax).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import unquote_to_bytes

__all__ = [
    "MultipartError",
    "MultipartLimitError",
    "MultipartParser",
    "PartHandler",
    "PartHeaders",
    "boundary_from_content_type",
]


class MultipartError(ValueError):
    """The body (or its Content-Type) is not acceptable multipart/form-data.

    The message is written for the client and is safe to send back as is.
    """


class MultipartLimitError(MultipartError):
    """The body is well-formed so far but over a limit: too many parts, or a part's
    headers too large."""


_NOT_FORM_DATA: Final = "Content-Type must be multipart/form-data"
_NO_BOUNDARY: Final = "multipart/form-data without a boundary"
_BAD_BOUNDARY: Final = "invalid multipart boundary"
_BAD_CONTENT_TYPE: Final = "malformed Content-Type header"
_TRUNCATED: Final = "truncated multipart body: no closing boundary"
_NO_START: Final = "multipart body does not start with the boundary"
_BAD_DELIMITER: Final = "malformed multipart boundary line: expected CRLF after the boundary"
_NO_NAME: Final = "multipart part without a name"
_NOT_FORM_DATA_PART: Final = "multipart part is not form-data"
_BAD_DISPOSITION: Final = "malformed Content-Disposition header in multipart part"
_BAD_FILENAME_STAR: Final = "invalid filename* parameter in multipart part"
_BAD_HEADER: Final = "malformed multipart part header"
_HEADER_NOT_UTF8: Final = "multipart part headers are not valid UTF-8"
_HEADERS_TOO_LARGE: Final = "multipart part headers too large"
_TOO_MANY_PARTS: Final = "too many multipart parts"
_ABORTED: Final = "multipart parsing was aborted"

# RFC 2046 section 5.1.1: 1..70 bchars, not ending in a space.
_BOUNDARY_RE: Final = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 9110 token, plus "*" which RFC 8187 extended parameter names (filename*) end with.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED_RE: Final = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.DOTALL)
# Unquoted values are read liberally (boundaries use chars such as "/" and "=" that are
# not token chars); whatever they contain is validated by the caller of the parameter.
_BARE_VALUE_RE: Final = re.compile(r'[^\s;"]+')

# Padding after a delimiter is legal but pointless; bound it so that a client cannot
# make us buffer an endless run of spaces.
_MAX_PADDING: Final = 1024

_CR: Final = 0x0D
_LF: Final = 0x0A
_DASH: Final = 0x2D

_PREAMBLE: Final = 0
_DELIMITER: Final = 1
_HEADERS: Final = 2
_DATA: Final = 3
_EPILOGUE: Final = 4


def _parse_parameters(text: str, error: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``value; a=b; c="d"`` into the stripped value and its parameters.

    Parameter names are lowercased; quoted-string values have their quoted-pairs
    (RFC 9110 section 5.6.4) undone.
    """
    n = len(text)
    i = text.find(";")
    if i == -1:
        i = n
    value = text[:i].strip(" \t")
    params: list[tuple[str, str]] = []
    while i < n:
        i += 1  # the ";"
        while i < n and text[i] in " \t":
            i += 1
        if i == n:
            break
        if text[i] == ";":
            continue
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise MultipartError(error)
        key = m.group().lower()
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i == n or text[i] != "=":
            raise MultipartError(error)
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            m = _QUOTED_RE.match(text, i)
            if m is None:
                raise MultipartError(error)
            param = _QUOTED_PAIR_RE.sub(lambda q: q.group(1), m.group(1))
        else:
            m = _BARE_VALUE_RE.match(text, i)
            if m is None:
                raise MultipartError(error)
            param = m.group()
        i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ";":
            raise MultipartError(error)
        params.append((key, param))
    return value, params


def boundary_from_content_type(value: bytes | str | None) -> bytes:
    """Return the boundary of a ``multipart/form-data`` Content-Type header value.

    Raises :class:`MultipartError` when the header is missing, names another
    media type, has no ``boundary`` parameter, or the boundary breaks RFC 2046.
    """
    if value is None:
        raise MultipartError(_NOT_FORM_DATA)
    if isinstance(value, bytes):
        # Header bytes are opaque octets; latin-1 maps each to one char so nothing is
        # lost, and any non-ASCII boundary fails the RFC 2046 check below anyway.
        value = value.decode("latin-1")
    media_type, _, _ = value.partition(";")
    if media_type.strip(" \t").lower() != "multipart/form-data":
        raise MultipartError(_NOT_FORM_DATA)
    try:
        _, params = _parse_parameters(value, _BAD_CONTENT_TYPE)
    except MultipartError:
        # A broken parameter list is most likely a broken boundary (e.g. an unclosed quote).
        if "boundary" in value.lower():
            raise MultipartError(_BAD_BOUNDARY) from None
        raise
    boundaries = [v for k, v in params if k == "boundary"]
    if not boundaries:
        raise MultipartError(_NO_BOUNDARY)
    if len(boundaries) > 1:
        raise MultipartError(_BAD_BOUNDARY)
    boundary = boundaries[0].encode("latin-1")
    if _BOUNDARY_RE.fullmatch(boundary) is None:
        raise MultipartError(_BAD_BOUNDARY)
    return boundary


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """The headers of one part.

    ``headers`` holds every header line in order, names lowercased and values
    stripped.  ``filename`` is exactly what the client sent (``filename*``
    preferred over ``filename``): it is not sanitised, so callers must validate it
    before using it as a path.
    """

    name: str
    filename: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...]


class PartHandler(Protocol):
    """Receives the parts of a multipart body as the parser finds them."""

    def part_started(self, headers: PartHeaders) -> None:
        """A part begins; its data follows."""

    def part_data(self, data: bytes | memoryview) -> None:
        """The next non-empty piece of the current part's data.

        A ``memoryview`` is a slice of the chunk given to ``feed``; it stays valid
        after the call (it keeps the chunk alive), but copy it if it is kept long.
        """

    def part_ended(self) -> None:
        """The current part is complete."""


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 8187 ``charset'lang'pct-encoded`` value (as in ``filename*``)."""
    charset, sep1, rest = value.partition("'")
    _, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2):
        raise MultipartError(_BAD_FILENAME_STAR)
    codec = charset.lower()
    if codec not in ("utf-8", "iso-8859-1", "us-ascii"):
        raise MultipartError(_BAD_FILENAME_STAR)
    try:
        return unquote_to_bytes(encoded).decode(codec)
    except UnicodeDecodeError:
        raise MultipartError(_BAD_FILENAME_STAR) from None


def _parse_part_headers(block: bytes) -> PartHeaders:
    """Parse a header block (lines without the terminating blank line)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(_HEADER_NOT_UTF8) from None
    fields: list[tuple[str, str]] = []
    if text:
        for raw in text.split("\n"):
            line = raw.removesuffix("\r")
            if "\r" in line:
                raise MultipartError(_BAD_HEADER)
            if line[:1] in (" ", "\t"):
                # obs-fold (RFC 5322 folding): still emitted by some old clients.
                if not fields:
                    raise MultipartError(_BAD_HEADER)
                key, prev = fields[-1]
                fields[-1] = (key, prev + " " + line.strip(" \t"))
                continue
            key, sep, val = line.partition(":")
            if not sep or _TOKEN_RE.fullmatch(key) is None:
                raise MultipartError(_BAD_HEADER)
            fields.append((key.lower(), val.strip(" \t")))

    disposition: str | None = None
    content_type: str | None = None
    for key, val in fields:
        if key == "content-disposition":
            if disposition is not None:
                raise MultipartError(_BAD_DISPOSITION)
            disposition = val
        elif key == "content-type":
            if content_type is not None:
                raise MultipartError(_BAD_HEADER)
            content_type = val
    if disposition is None:
        raise MultipartError(_NO_NAME)
    kind, params = _parse_parameters(disposition, _BAD_DISPOSITION)
    if kind.lower() != "form-data":
        raise MultipartError(_NOT_FORM_DATA_PART)
    seen: dict[str, str] = {}
    for key, val in params:
        if key in seen:
            # Two names or filenames would let the client pick which one a check sees.
            raise MultipartError(_BAD_DISPOSITION)
        seen[key] = val
    name = seen.get("name")
    if name is None:
        raise MultipartError(_NO_NAME)
    filename = seen.get("filename")
    if "filename*" in seen:
        filename = _decode_ext_value(seen["filename*"])
    return PartHeaders(
        name=name, filename=filename, content_type=content_type, headers=tuple(fields)
    )


class MultipartParser:
    """Push parser for a ``multipart/form-data`` body.

    Call :meth:`feed` with each chunk of the body and :meth:`close` at its end.
    Malformed input raises :class:`MultipartError`; from then on the parser makes
    no more handler calls and every ``feed``/``close`` raises again.  An exception
    raised by the handler propagates unchanged and likewise disables the parser.

    The preamble before the first boundary is skipped (but limited to
    ``max_header_size`` bytes, since real clients send none); the epilogue after
    the closing boundary is discarded unread.
    """

    __slots__ = (
        "_closed",
        "_delim",
        "_error",
        "_handler",
        "_head",
        "_line",
        "_max_header_size",
        "_max_parts",
        "_parts",
        "_skipped",
        "_state",
        "_tail",
    )

    def __init__(
        self,
        boundary: bytes,
        handler: PartHandler,
        *,
        max_parts: int = 1000,
        max_header_size: int = 16 * 1024,
    ) -> None:
        if _BOUNDARY_RE.fullmatch(boundary) is None:
            raise MultipartError(_BAD_BOUNDARY)
        if max_parts < 1 or max_header_size < 1:
            raise ValueError("max_parts and max_header_size must be positive")
        self._delim = b"\r\n--" + boundary
        self._handler = handler
        self._max_parts = max_parts
        self._max_header_size = max_header_size
        self._state = _PREAMBLE
        # The suffix of the previous chunk that may be the start of a delimiter.  Seeding
        # it with CRLF lets a body that opens with "--boundary" match the same CRLF-led
        # delimiter as every later one, so the first delimiter needs no special case.
        self._tail = b"\r\n"
        self._line = bytearray()
        self._head = bytearray()
        self._parts = 0
        self._skipped = 0
        self._error: str | None = None
        self._closed = False

    @property
    def done(self) -> bool:
        """Whether the closing ``--boundary--`` has been seen."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> None:
        """Parse the next chunk of the body, calling the handler as parts are found."""
        if self._error is not None:
            raise MultipartError(self._error)
        if self._closed:
            raise RuntimeError("MultipartParser.feed() called after close()")
        if not isinstance(data, bytes):
            # memoryview has no find(), and a caller-owned bytearray could change under
            # the memoryviews we hand to the handler.
            data = bytes(data)
        if not data or self._state == _EPILOGUE:
            return
        try:
            self._feed(data)
        except MultipartError as exc:
            self._error = str(exc)
            raise
        except BaseException:
            # The handler failed mid-part: our position in the body no longer matches
            # what the handler has seen, so continuing could only mislead it.
            self._error = _ABORTED
            raise

    def close(self) -> None:
        """Signal the end of the body; raise if the closing boundary was not seen."""
        if self._error is not None:
            raise MultipartError(self._error)
        self._closed = True
        if self._state != _EPILOGUE:
            self._error = _TRUNCATED
            raise MultipartError(_TRUNCATED)

    def _feed(self, data: bytes) -> None:
        pos = 0
        if self._tail:
            data, pos = self._join_tail(data)
        n = len(data)
        while pos < n:
            state = self._state
            if state in (_DATA, _PREAMBLE):
                pos = self._scan(data, pos)
            elif state == _DELIMITER:
                pos = self._read_delimiter_line(data, pos)
            elif state == _HEADERS:
                pos = self._read_headers(data, pos)
            else:
                return

    def _join_tail(self, data: bytes) -> tuple[bytes, int]:
        """Resolve a delimiter that may straddle the previous chunk and ``data``.

        Returns the buffer and offset to continue from.  Only a window of
        ``len(tail) + len(delimiter) - 1`` bytes is copied, never the whole chunk.
        """
        tail = self._tail
        self._tail = b""
        d = len(self._delim)
        if len(data) < d:
            # Both are shorter than a delimiter, so joining them costs next to nothing.
            return tail + data, 0
        window = tail + data[: d - 1]
        i = window.find(self._delim)
        if 0 <= i < len(tail):
            self._pass(tail, 0, i)
            self._found_delimiter()
            return data, i + d - len(tail)
        # No delimiter starts inside the tail: all of it is data (or preamble).
        self._pass(tail, 0, len(tail))
        return data, 0

    def _scan(self, data: bytes, pos: int) -> int:
        """Pass on data (or skip preamble) up to the next delimiter."""
        delim = self._delim
        i = data.find(delim, pos)
        if i != -1:
            self._pass(data, pos, i)
            self._found_delimiter()
            return i + len(delim)
        n = len(data)
        # Hold back the shortest suffix that could still grow into a delimiter; every
        # delimiter starts with CR, so only CRs need a closer look.
        k = data.find(b"\r", max(pos, n - len(delim) + 1))
        while k != -1 and not data.startswith(delim[: n - k], k):
            k = data.find(b"\r", k + 1)
        if k == -1:
            k = n
        self._pass(data, pos, k)
        if k < n:
            self._tail = data[k:]
        return n

    def _pass(self, data: bytes, start: int, end: int) -> None:
        if end <= start:
            return
        if self._state == _DATA:
            if start == 0 and end == len(data):
                self._handler.part_data(data)
            else:
                self._handler.part_data(memoryview(data)[start:end])
        else:
            self._skipped += end - start
            # +2 for the CRLF seeded into the tail, which is not the client's.
            if self._skipped > self._max_header_size + 2:
                raise MultipartError(_NO_START)

    def _found_delimiter(self) -> None:
        if self._state == _DATA:
            self._handler.part_ended()
        self._state = _DELIMITER
        self._line.clear()

    def _read_delimiter_line(self, data: bytes, pos: int) -> int:
        """Read what follows a delimiter: ``--`` (the end) or padding and a line break."""
        line = self._line
        before = len(line)
        line += data[pos : pos + _MAX_PADDING + 2 - before]
        m = len(line)
        if line[0] == _DASH:
            if m < 2:
                return pos + m - before
            if line[1] != _DASH:
                raise MultipartError(_BAD_DELIMITER)
            self._state = _EPILOGUE
            self._line = bytearray()
            return len(data)
        j = m - len(line.lstrip(b" \t"))
        if j == m:
            if m > _MAX_PADDING:
                raise MultipartError(_BAD_DELIMITER)
            return pos + m - before
        if line[j] == _LF:
            consumed = j + 1
        elif line[j] == _CR:
            if j + 1 == m:
                return pos + m - before
            if line[j + 1] != _LF:
                raise MultipartError(_BAD_DELIMITER)
            consumed = j + 2
        else:
            raise MultipartError(_BAD_DELIMITER)
        if self._parts >= self._max_parts:
            raise MultipartLimitError(_TOO_MANY_PARTS)
        self._parts += 1
        self._state = _HEADERS
        # The leading LF stands for the line break just consumed, so an empty header
        # block ends at the first blank line like any other.
        self._head = bytearray(b"\n")
        return pos + consumed - before

    def _read_headers(self, data: bytes, pos: int) -> int:
        """Collect a part's header block up to its blank line, then start the part."""
        head = self._head
        before = len(head)
        limit = self._max_header_size
        # Never take more than one byte beyond the limit: enough to know it is exceeded.
        head += data[pos : pos + limit + 2 - before]
        start = max(0, before - 2)
        crlf = head.find(b"\n\r\n", start)
        lf = head.find(b"\n\n", start)
        if crlf == -1 and lf == -1:
            if len(head) - 1 >= limit:
                raise MultipartLimitError(_HEADERS_TOO_LARGE)
            return pos + len(head) - before
        if lf == -1 or (crlf != -1 and crlf < lf):
            last, end = crlf, crlf + 3
        else:
            last, end = lf, lf + 2
        if end - 1 > limit:
            raise MultipartLimitError(_HEADERS_TOO_LARGE)
        headers = _parse_part_headers(bytes(head[1:last]))
        self._head = bytearray()
        self._state = _DATA
        self._handler.part_started(headers)
        return pos + end - before
