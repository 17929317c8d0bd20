"""Tests for the push multipart/form-data parser (pm.multipart)."""

from __future__ import annotations

import hashlib
import itertools
import random
import tracemalloc
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pm.multipart import (
    MultipartError,
    MultipartParser,
    PartHeaders,
    boundary_from_content_type,
)

BOUNDARY = b"b0undary-42"
DELIM = b"\r\n--" + BOUNDARY

Event = tuple[str, PartHeaders | bytes | None]
Part = tuple[PartHeaders, bytes]


class Recorder:
    """A PartHandler that records every call, checking that data slices are never empty."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def part_started(self, headers: PartHeaders) -> None:
        self.events.append(("start", headers))

    def part_data(self, data: bytes | memoryview) -> None:
        assert len(data) > 0, "part_data called with an empty slice"
        self.events.append(("data", bytes(data)))

    def part_ended(self) -> None:
        self.events.append(("end", None))

    def parts(self) -> list[Part]:
        """The parts seen, checking that calls came as start, data*, end."""
        parts: list[Part] = []
        current: PartHeaders | None = None
        data: list[bytes] = []
        for kind, value in self.events:
            if kind == "start":
                assert current is None and isinstance(value, PartHeaders)
                current, data = value, []
            elif kind == "data":
                assert current is not None and isinstance(value, bytes)
                data.append(value)
            else:
                assert current is not None
                parts.append((current, b"".join(data)))
                current = None
        assert current is None, "a part was started but never ended"
        return parts


class HashingHandler:
    """A PartHandler that keeps only a hash and size of each part, as a disk writer would."""

    def __init__(self) -> None:
        self.digests: list[tuple[str, str, int]] = []
        self._hash = hashlib.sha256()
        self._size = 0
        self._name = ""

    def part_started(self, headers: PartHeaders) -> None:
        self._hash = hashlib.sha256()
        self._size = 0
        self._name = headers.name

    def part_data(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._size += len(data)

    def part_ended(self) -> None:
        self.digests.append((self._name, self._hash.hexdigest(), self._size))


def parse(
    body: bytes, chunks: Iterable[bytes] | None = None, boundary: bytes = BOUNDARY
) -> list[Part]:
    """Parse ``body`` (or the given chunks of it) to completion and return its parts."""
    handler = Recorder()
    parser = MultipartParser(boundary, handler)
    for chunk in [body] if chunks is None else chunks:
        parser.feed(chunk)
    parser.close()
    assert parser.done
    return handler.parts()


def split(body: bytes, points: Sequence[int]) -> list[bytes]:
    """Cut ``body`` at the given offsets."""
    edges = [0, *sorted(points), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def build(
    parts: Sequence[tuple[bytes, bytes]],
    boundary: bytes = BOUNDARY,
    preamble: bytes = b"",
    epilogue: bytes = b"",
) -> bytes:
    """Encode (raw header block, data) pairs as a multipart body with CRLF line ends."""
    out = [preamble, b"--", boundary]
    for head, data in parts:
        out += [b"\r\n", head, b"\r\n\r\n", data, b"\r\n--", boundary]
    out += [b"--", epilogue]
    return b"".join(out)


def field(name: str, filename: str | None = None, content_type: str | None = None) -> bytes:
    """A form-data header block as urllib3/requests/twine write it."""
    head = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    if content_type is not None:
        head += f"\r\nContent-Type: {content_type}"
    return head.encode()


def summary(parts: list[Part]) -> list[tuple[str, str | None, str | None, bytes]]:
    return [(h.name, h.filename, h.content_type, data) for h, data in parts]


# Data that looks like the start of a delimiter but is not one.
NEAR_MISSES = [
    b"",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"-",
    b"\r\n-",
    b"\r\n--",
    DELIM[:-1],
    DELIM[:-1] + b"x",
    b"x" + DELIM[:-1],
    b"--" + BOUNDARY,
    b"\n--" + BOUNDARY,
    b"\r--" + BOUNDARY,
    b"\r\r\n--" + BOUNDARY[:-1],
    b"".join(DELIM[:k] for k in range(1, len(DELIM))),
    b"\r\n" * 50,
    bytes(range(256)),
]

SMALL_BODY = build(
    [
        (field("name"), b"demo"),
        (field(":action"), b"file_upload"),
        (
            field("content", "demo-1.0-py3-none-any.whl", "application/octet-stream"),
            b"PK\x03\x04" + b"".join(NEAR_MISSES[1:8]) + DELIM[:-1],
        ),
        (field("empty"), b""),
        (field("tail"), b"ends with CR\r"),
    ]
)
SMALL_EXPECTED = summary(parse(SMALL_BODY))


def test_small_body_parts() -> None:
    """A hand-built body yields each part's name, filename, type and exact data."""
    assert summary(parse(SMALL_BODY)) == [
        ("name", None, None, b"demo"),
        (":action", None, None, b"file_upload"),
        (
            "content",
            "demo-1.0-py3-none-any.whl",
            "application/octet-stream",
            b"PK\x03\x04" + b"".join(NEAR_MISSES[1:8]) + DELIM[:-1],
        ),
        ("empty", None, None, b""),
        ("tail", None, None, b"ends with CR\r"),
    ]


def test_every_split_point() -> None:
    """Splitting the body in two at any byte gives the same parts as feeding it whole."""
    for i in range(len(SMALL_BODY) + 1):
        assert summary(parse(SMALL_BODY, [SMALL_BODY[:i], SMALL_BODY[i:]])) == SMALL_EXPECTED, i


def test_every_pair_of_split_points() -> None:
    """Three-way splits, so a delimiter can straddle three feeds, change nothing."""
    body = build([(field("a"), DELIM[:-2] + b"\r\n-"), (field("b"), b"\r")])
    expected = summary(parse(body))
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert summary(parse(body, split(body, [i, j]))) == expected, (i, j)


def test_byte_by_byte() -> None:
    """Feeding one byte at a time gives the same parts as feeding the body whole."""
    chunks = [SMALL_BODY[i : i + 1] for i in range(len(SMALL_BODY))]
    assert summary(parse(SMALL_BODY, chunks)) == SMALL_EXPECTED


def test_urllib3_encoded_body() -> None:
    """A body from urllib3's encoder (what requests sends) parses at every split point."""
    filepost = pytest.importorskip("urllib3.filepost")
    payload = b"\x00binary\r\n--" + b"\r\n" * 3 + b"\xff" * 10
    body, content_type = filepost.encode_multipart_formdata(
        [
            ("name", "demo"),
            ("version", "1.0"),
            ("classifiers", "A :: B"),
            ("classifiers", "C :: D"),
            ("content", ("démo-1.0.tar.gz", payload, "application/gzip")),
        ]
    )
    boundary = boundary_from_content_type(content_type)
    expected = [
        ("name", None, None, b"demo"),
        ("version", None, None, b"1.0"),
        ("classifiers", None, None, b"A :: B"),
        ("classifiers", None, None, b"C :: D"),
        ("content", "démo-1.0.tar.gz", "application/gzip", payload),
    ]
    assert summary(parse(body, boundary=boundary)) == expected
    for i in range(len(body) + 1):
        assert summary(parse(body, [body[:i], body[i:]], boundary)) == expected, i


def test_requests_toolbelt_encoded_body() -> None:
    """A body from requests_toolbelt's MultipartEncoder (what twine uploads with) parses."""
    encoder_mod = pytest.importorskip("requests_toolbelt.multipart.encoder")
    payload = random.Random(7).randbytes(100_000)
    encoder = encoder_mod.MultipartEncoder(
        [
            (":action", "file_upload"),
            ("name", "demo"),
            ("sha256_digest", hashlib.sha256(payload).hexdigest()),
            ("content", ("demo-1.0-py3-none-any.whl", payload, "application/octet-stream")),
        ]
    )
    body = encoder.to_string()
    boundary = boundary_from_content_type(encoder.content_type)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    assert summary(parse(body, chunks, boundary)) == [
        (":action", None, None, b"file_upload"),
        ("name", None, None, b"demo"),
        ("sha256_digest", None, None, hashlib.sha256(payload).hexdigest().encode()),
        ("content", "demo-1.0-py3-none-any.whl", "application/octet-stream", payload),
    ]


@pytest.mark.parametrize("data", NEAR_MISSES, ids=repr)
def test_near_boundaries_are_data(data: bytes) -> None:
    """Data that only resembles a delimiter is delivered intact, wherever the body is split."""
    body = build([(field("f"), data), (field("g"), data + b"!")])
    expected = [("f", None, None, data), ("g", None, None, data + b"!")]
    assert summary(parse(body)) == expected
    for i in range(len(body) + 1):
        assert summary(parse(body, [body[:i], body[i:]])) == expected, i


_PIECES = [b"\r", b"\n", b"-", b"--", b"\r\n", b"\r\n--", b"x", b"\x00", b"\xff", BOUNDARY]
_PIECES += [DELIM[:k] for k in range(1, len(DELIM))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datas=st.lists(
        st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join), min_size=1, max_size=4
    ),
    preamble=st.sampled_from([b"", b"pre\r\n", b"\r\n"]),
    epilogue=st.sampled_from([b"", b"\r\n", b"\r\nepilogue" + DELIM]),
    data=st.data(),
)
def test_any_chunking_matches_whole(
    datas: list[bytes], preamble: bytes, epilogue: bytes, data: st.DataObject
) -> None:
    """parse(any chunking of a body) == parse(the whole body) == the encoded parts."""
    assume(all(DELIM not in d for d in datas))
    body = build(
        [(field(f"p{i}"), d) for i, d in enumerate(datas)], preamble=preamble, epilogue=epilogue
    )
    points = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    expected = [(f"p{i}", None, None, d) for i, d in enumerate(datas)]
    assert summary(parse(body)) == expected
    assert summary(parse(body, split(body, points))) == expected


def test_large_part_in_64k_chunks() -> None:
    """A 50 MiB part fed in 64 KiB chunks comes back byte-exact (compared by hash)."""
    size = 50 * 1024 * 1024
    payload = bytearray(random.Random(1).randbytes(size))
    # Plant delimiter look-alikes across many chunk edges so the split-tail path is exercised.
    for edge in range(65536, size - 65536, 65536 * 7):
        near = DELIM[:-1] + b"?"
        offset = edge - random.Random(edge).randrange(1, len(near))
        payload[offset : offset + len(near)] = near
    payload_bytes = bytes(payload)
    del payload
    body = build(
        [
            (field("content", "big.whl", "application/octet-stream"), payload_bytes),
            (field("x"), b"y"),
        ]
    )
    handler = HashingHandler()
    parser = MultipartParser(BOUNDARY, handler)
    for i in range(0, len(body), 65536):
        parser.feed(body[i : i + 65536])
    parser.close()
    assert handler.digests == [
        ("content", hashlib.sha256(payload_bytes).hexdigest(), size),
        ("x", hashlib.sha256(b"y").hexdigest(), 1),
    ]


def test_memory_stays_flat_for_large_part_and_epilogue() -> None:
    """Neither a 32 MiB part nor a 32 MiB epilogue is buffered: peak allocation stays small."""
    chunk = random.Random(2).randbytes(65536)
    head = b"--" + BOUNDARY + b"\r\n" + field("content", "big.whl") + b"\r\n\r\n"
    handler = HashingHandler()
    parser = MultipartParser(BOUNDARY, handler)
    tracemalloc.start()
    try:
        parser.feed(head)
        for _ in range(512):
            parser.feed(chunk)
        parser.feed(DELIM + b"--\r\n")
        for _ in range(512):
            parser.feed(chunk)
        parser.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert handler.digests[0][2] == 512 * 65536
    assert peak < 1024 * 1024, peak


def test_data_is_delivered_promptly() -> None:
    """Only a suffix that could begin a delimiter is held back; all other data is passed on."""
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler)
    parser.feed(b"--" + BOUNDARY + b"\r\n" + field("a") + b"\r\n\r\n")
    parser.feed(b"abc\r\r\nx\rq\r\n-y\r")
    assert b"".join(v for k, v in handler.events if isinstance(v, bytes)) == b"abc\r\r\nx\rq\r\n-y"
    parser.feed(b"\n--" + BOUNDARY[:3])
    assert handler.events[-1] == ("data", b"abc\r\r\nx\rq\r\n-y")
    parser.feed(b"zz")
    assert handler.events[-1] == ("data", b"\r\n--" + BOUNDARY[:3] + b"zz")


def test_preamble_and_epilogue_are_ignored() -> None:
    """Text before the first delimiter and after the closing one is not part of any part."""
    body = build(
        [(field("a"), b"1")],
        preamble=b"This is a preamble.\r\n--not-the-boundary\r\n",
        epilogue=b"\r\nThis is an epilogue." + DELIM + b"\r\n" + field("b") + b"\r\n\r\nx",
    )
    assert summary(parse(body)) == [("a", None, None, b"1")]


def test_body_opening_with_crlf_before_first_delimiter() -> None:
    """An empty preamble followed by CRLF and the delimiter is accepted."""
    assert summary(parse(b"\r\n" + build([(field("a"), b"1")]))) == [("a", None, None, b"1")]


def test_transport_padding_after_delimiters() -> None:
    """Spaces and tabs between a delimiter and its CRLF are allowed (RFC 2046)."""
    body = (
        b"--"
        + BOUNDARY
        + b" \t \r\n"
        + field("a")
        + b"\r\n\r\n1"
        + DELIM
        + b"\t\r\n"
        + field("b")
        + b"\r\n\r\n2"
        + DELIM
        + b"--  \r\n"
    )
    assert summary(parse(body)) == [("a", None, None, b"1"), ("b", None, None, b"2")]


def test_bare_lf_in_part_headers() -> None:
    """Header lines (and the delimiter line) ending in bare LF are accepted."""
    body = (
        b"--" + BOUNDARY + b"\n"
        b'Content-Disposition: form-data; name="a"\nContent-Type: text/plain\n\n'
        b"line1\nline2" + DELIM + b"--"
    )
    assert summary(parse(body)) == [("a", None, "text/plain", b"line1\nline2")]


def test_done_only_after_closing_boundary() -> None:
    """done turns true exactly when the closing --boundary-- has been read."""
    body = build([(field("a"), b"1")])
    parser = MultipartParser(BOUNDARY, Recorder())
    parser.feed(body[:-1])
    assert not parser.done
    parser.feed(body[-1:])
    assert parser.done
    parser.feed(b"more epilogue")
    parser.close()
    assert parser.done


def test_body_with_no_parts() -> None:
    """A body holding only the closing delimiter is valid and has no parts."""
    assert parse(b"--" + BOUNDARY + b"--\r\n") == []


def test_memoryview_and_bytearray_feeds() -> None:
    """feed() also accepts bytearray and memoryview chunks."""
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler)
    parser.feed(bytearray(SMALL_BODY[:50]))  # type: ignore[arg-type]
    parser.feed(memoryview(SMALL_BODY)[50:])  # type: ignore[arg-type]
    parser.close()
    assert summary(handler.parts()) == SMALL_EXPECTED


# --- part headers -------------------------------------------------------------


def headers_of(head: bytes) -> PartHeaders:
    """Parse a single part with the given raw header block and return its headers."""
    ((headers, _),) = parse(build([(head, b"x")]))
    return headers


def test_headers_are_case_insensitive_and_kept_in_order() -> None:
    """Header names match case-insensitively; all headers are returned lowercased in order."""
    h = headers_of(
        b'CONTENT-disposition:form-data;NAME="a"\r\ncontent-TYPE:  text/plain \r\nX-Y: z'
    )
    assert h.name == "a"
    assert h.content_type == "text/plain"
    assert h.headers == (
        ("content-disposition", 'form-data;NAME="a"'),
        ("content-type", "text/plain"),
        ("x-y", "z"),
    )


def test_disposition_parameters() -> None:
    """Token and quoted names, backslash escapes and quoted semicolons are parsed per RFC."""
    h = headers_of(b'Content-Disposition: Form-Data ; name=field ; filename="a\\"b\\\\c;d.whl"')
    assert (h.name, h.filename) == ("field", 'a"b\\c;d.whl')


def test_filename_is_raw_and_utf8() -> None:
    """UTF-8 filenames are decoded, and unsafe ones are passed through unsanitised."""
    h = headers_of(field("content", "../ünï/cödé.whl"))
    assert h.filename == "../ünï/cödé.whl"


def test_filename_star() -> None:
    """filename*=utf-8''... is decoded and preferred over a plain filename."""
    h = headers_of(
        b'Content-Disposition: form-data; name="f"; filename="fallback.whl"; '
        b"filename*=UTF-8''d%C3%A9mo-1.0.whl"
    )
    assert h.filename == "démo-1.0.whl"


def test_obs_fold_header_continuation() -> None:
    """A folded header line continues the previous header's value."""
    h = headers_of(b'Content-Disposition: form-data;\r\n name="folded"')
    assert h.name == "folded"


def test_form_field_without_filename() -> None:
    """A plain form field has no filename and no content type."""
    h = headers_of(field("name"))
    assert (h.name, h.filename, h.content_type) == ("name", None, None)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"Content-Type: text/plain", "multipart part without a name"),
        (b"Content-Disposition: form-data", "multipart part without a name"),
        (b'Content-Disposition: form-data; filename="a.whl"', "multipart part without a name"),
        (b"", "multipart part without a name"),
        (b'Content-Disposition: attachment; name="a"', "multipart part is not form-data"),
        (b'Content-Disposition: form-data; name="a"; name="b"', "Content-Disposition"),
        (b'Content-Disposition: form-data; name="a', "Content-Disposition"),
        (b"Content-Disposition: form-data; name", "Content-Disposition"),
        (b'Content-Disposition: form-data; name="a" junk', "Content-Disposition"),
        (
            b"Content-Disposition: form-data; name=\"a\"; filename*=latin2''x",
            "invalid filename\\* parameter",
        ),
        (b'Content-Disposition: form-data; name="a"\r\n\r', "malformed multipart part header"),
        (
            b'Content-Disposition: form-data; name="a"\r\nno colon',
            "malformed multipart part header",
        ),
        (
            b'Content-Disposition: form-data; name="a"\r\nBad Name: x',
            "malformed multipart part header",
        ),
        (b' Content-Disposition: form-data; name="a"', "malformed multipart part header"),
        (b'Content-Disposition: form-data; name="\xff"', "not valid UTF-8"),
    ],
)
def test_bad_part_headers(head: bytes, message: str) -> None:
    """Each kind of unacceptable part header block is rejected with a clear message."""
    with pytest.raises(MultipartError, match=message):
        parse(build([(head, b"x")]))


def test_headers_too_large() -> None:
    """A header block of max_header_size bytes is accepted; one byte more is rejected."""
    base = field("a") + b"\r\nX: "
    limit = 200
    ok_head = base + b"v" * (limit - len(base) - 4)  # the block includes its CRLF CRLF
    assert len(ok_head + b"\r\n\r\n") == limit
    for head, fails in ((ok_head, False), (ok_head + b"v", True)):
        body = build([(head, b"data")])
        for chunks in ([body], [body[i : i + 1] for i in range(len(body))]):
            parser = MultipartParser(BOUNDARY, Recorder(), max_header_size=limit)
            if fails:
                with pytest.raises(MultipartError, match="multipart part headers too large"):
                    for chunk in chunks:
                        parser.feed(chunk)
            else:
                for chunk in chunks:
                    parser.feed(chunk)
                parser.close()


def test_endless_headers_rejected_without_buffering() -> None:
    """A header block that never ends is rejected once it passes the limit."""
    parser = MultipartParser(BOUNDARY, Recorder())
    parser.feed(b"--" + BOUNDARY + b"\r\nX: ")
    with pytest.raises(MultipartError, match="headers too large"):
        for _ in range(100):
            parser.feed(b"a" * 1000)


# --- part limits and framing errors ---------------------------------------------


def test_too_many_parts() -> None:
    """max_parts parts are accepted; one more is rejected before its headers are read."""
    body = build([(field(f"p{i}"), b"x") for i in range(5)])
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler, max_parts=5)
    parser.feed(body)
    parser.close()
    assert len(handler.parts()) == 5

    body = build([(field(f"p{i}"), b"x") for i in range(6)])
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler, max_parts=5)
    with pytest.raises(MultipartError, match="too many multipart parts"):
        parser.feed(body)
    assert len([e for e in handler.events if e[0] == "start"]) == 5


def test_truncated_body_at_every_point() -> None:
    """A body cut short anywhere before its closing boundary fails at close()."""
    for i in range(len(SMALL_BODY) - 1):
        parser = MultipartParser(BOUNDARY, Recorder())
        parser.feed(SMALL_BODY[:i])
        with pytest.raises(
            MultipartError, match=r"^truncated multipart body: no closing boundary$"
        ):
            parser.close()


def test_garbage_instead_of_multipart() -> None:
    """A body that is not multipart at all is rejected (at close, or early if it is long)."""
    parser = MultipartParser(BOUNDARY, Recorder())
    parser.feed(b'{"json": "instead of multipart"}')
    with pytest.raises(MultipartError, match="truncated multipart body"):
        parser.close()

    parser = MultipartParser(BOUNDARY, Recorder())
    with pytest.raises(MultipartError, match="does not start with the boundary"):
        for _ in range(100):
            parser.feed(b"garbage " * 128)


def test_body_with_other_boundary() -> None:
    """A body encoded with a different boundary than the header announced is rejected."""
    body = build([(field("a"), b"1")], boundary=b"other")
    with pytest.raises(MultipartError):
        parse(body)


@pytest.mark.parametrize(
    "after",
    [b"X\r\n", b"\r\r\n", b"  x\r\n", b"-x", b"\r-", b" " * 2000],
    ids=repr,
)
def test_missing_crlf_after_delimiter(after: bytes) -> None:
    """A delimiter not followed by '--' or by optional padding and CRLF is rejected."""
    body = b"--" + BOUNDARY + after + field("a") + b"\r\n\r\nx" + DELIM + b"--"
    with pytest.raises(MultipartError, match="expected CRLF after the boundary"):
        parse(body)


def test_boundary_followed_by_text_inside_data() -> None:
    """The full delimiter inside data (forbidden by RFC 2046) ends the part and then fails."""
    body = build([(field("a"), b"abc" + DELIM + b"tail")])
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler)
    with pytest.raises(MultipartError, match="expected CRLF"):
        parser.feed(body)


def test_errors_are_sticky_and_silence_the_handler() -> None:
    """After an error no handler method is called and every feed/close raises again."""
    handler = Recorder()
    parser = MultipartParser(BOUNDARY, handler)
    bad = b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\n"
    with pytest.raises(MultipartError, match="without a name") as first:
        parser.feed(bad)
    seen = list(handler.events)
    for _ in range(2):
        with pytest.raises(MultipartError, match=str(first.value)):
            parser.feed(SMALL_BODY)
        with pytest.raises(MultipartError, match=str(first.value)):
            parser.close()
    assert handler.events == seen


def test_error_after_close_is_sticky() -> None:
    """close() on a truncated body keeps failing on later calls."""
    parser = MultipartParser(BOUNDARY, Recorder())
    parser.feed(SMALL_BODY[:10])
    for _ in range(2):
        with pytest.raises(MultipartError, match="truncated"):
            parser.close()
    with pytest.raises(MultipartError, match="truncated"):
        parser.feed(SMALL_BODY[10:])


def test_handler_exception_disables_parser() -> None:
    """An exception from the handler propagates, and the parser refuses further input."""

    class Refusing(Recorder):
        def part_data(self, data: bytes | memoryview) -> None:
            raise OSError("disk full")

    handler = Refusing()
    parser = MultipartParser(BOUNDARY, handler)
    with pytest.raises(OSError, match="disk full"):
        parser.feed(SMALL_BODY)
    seen = list(handler.events)
    with pytest.raises(MultipartError):
        parser.feed(b"x")
    with pytest.raises(MultipartError):
        parser.close()
    assert handler.events == seen


def test_feed_after_close_is_a_programming_error() -> None:
    """Feeding a parser that was closed cleanly raises RuntimeError."""
    parser = MultipartParser(BOUNDARY, Recorder())
    parser.feed(SMALL_BODY)
    parser.close()
    parser.close()
    with pytest.raises(RuntimeError):
        parser.feed(b"x")


@pytest.mark.parametrize(
    "boundary", [b"", b"a" * 71, b"bad\r\n", b"ends with space ", "é".encode()]
)
def test_constructor_rejects_invalid_boundary(boundary: bytes) -> None:
    """The parser refuses a boundary that RFC 2046 does not allow."""
    with pytest.raises(MultipartError, match="invalid multipart boundary"):
        MultipartParser(boundary, Recorder())


# --- Content-Type -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "boundary"),
    [
        ("multipart/form-data; boundary=abc123", b"abc123"),
        (b"multipart/form-data; boundary=abc123", b"abc123"),
        ('multipart/form-data; boundary="abc123"', b"abc123"),
        ('Multipart/Form-Data;BOUNDARY="with space and :/=?"', b"with space and :/=?"),
        (
            "multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundary7MA4YWxk",
            b"----WebKitFormBoundary7MA4YWxk",
        ),
        ("multipart/form-data; boundary=abc; charset=utf-8", b"abc"),
        ("  multipart/form-data ;  boundary = abc  ", b"abc"),
        ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
        ("multipart/form-data; boundary=a/b=c", b"a/b=c"),
    ],
)
def test_boundary_from_content_type(value: str | bytes, boundary: bytes) -> None:
    """The boundary is read from quoted or bare parameters, case-insensitively."""
    assert boundary_from_content_type(value) == boundary


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "Content-Type must be multipart/form-data"),
        ("", "Content-Type must be multipart/form-data"),
        ("application/json", "Content-Type must be multipart/form-data"),
        ("multipart/mixed; boundary=abc", "Content-Type must be multipart/form-data"),
        ("multipart/form-data-x; boundary=abc", "Content-Type must be multipart/form-data"),
        ("multipart/form-data", "multipart/form-data without a boundary"),
        ("multipart/form-data; charset=utf-8", "multipart/form-data without a boundary"),
        ("multipart/form-data; boundary=", "invalid multipart boundary"),
        ('multipart/form-data; boundary=""', "invalid multipart boundary"),
        ('multipart/form-data; boundary="abc', "invalid multipart boundary"),
        ("multipart/form-data; boundary=" + "x" * 71, "invalid multipart boundary"),
        ('multipart/form-data; boundary="ends in space "', "invalid multipart boundary"),
        ("multipart/form-data; boundary=a@b", "invalid multipart boundary"),
        ("multipart/form-data; boundary=a; boundary=b", "invalid multipart boundary"),
        ("multipart/form-data; boundary=abc\u00e9", "invalid multipart boundary"),
        (b"multipart/form-data; boundary=abc\xe9", "invalid multipart boundary"),
        ("multipart/form-data; charset", "malformed Content-Type header"),
    ],
)
def test_bad_content_type(value: str | bytes | None, message: str) -> None:
    """Each unacceptable Content-Type is rejected with its client-facing message."""
    with pytest.raises(MultipartError, match=f"^{message}$"):
        boundary_from_content_type(value)


def test_multipart_error_is_value_error() -> None:
    """MultipartError is a ValueError, so generic input-validation handlers catch it."""
    assert issubclass(MultipartError, ValueError)
