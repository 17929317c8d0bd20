"""Thousands of random and mutated upload bodies against a real server (issue 13).

A running server gets valid uploads on both upload routes (twine's Warehouse
form for a Python source, ``rspm add``'s API for an R source), then a stream
of mutations of them over keep-alive connections: parts dropped, duplicated
or reordered, field values emptied, garbled or made huge, digests and
filenames wrong, part headers broken or padded to the parser's limit,
boundaries that do not match, signatures that are noise, and the file or
the whole body bit-flipped, truncated or spliced. Every answer must be a 2xx
(the odd mutation that is still a valid upload) or a 4xx with a reason,
never a 5xx, and the server must keep answering. Afterwards nothing of a
refused upload may be left: no temp file, no row, no blob that a 2xx upload
did not bring.

The mutations come from a seeded ``random.Random``, so a run is repeatable;
each request is described, and a failure names the request that caused it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import random
import sqlite3
import string
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pm.multipart import MultipartError, MultipartParser, PartHeaders, boundary_from_content_type
from pm.python import dists
from tests.support.packages import build_sdist, build_wheel, metadata, upload_fields
from tests.support.rpackages import build_r_package
from tests.support.server import ServerProcess, wait_for

SEED = 13
REQUESTS = 3000
BUDGET = 60.0
# Fewer than this in the budget would mean the server (or the machine) is far too slow
# for the run to say much.
MIN_REQUESTS = 500
STATUS_EVERY = 100
PY_SOURCE, R_SOURCE = "local-python-src", "local-r-src"
WAREHOUSE, ADD = "warehouse", "add"
# The multipart parser's limit on one part's header block (pm.multipart's default).
MAX_PART_HEADERS = 16 * 1024


@dataclass
class Part:
    """One part of a form: a field, or a file when ``filename`` is set.

    ``head`` replaces the generated header block, to send broken ones.
    """

    name: str
    data: bytes
    filename: str | None = None
    head: bytes | None = None

    def header_block(self) -> bytes:
        if self.head is not None:
            return self.head
        disposition = f'form-data; name="{self.name}"'
        if self.filename is None:
            return f"Content-Disposition: {disposition}".encode()
        return (f'Content-Disposition: {disposition}; filename="{self.filename}"\r\n'
                "Content-Type: application/octet-stream").encode()


@dataclass
class Case:
    """One request: where it goes, its form, and the mutations that made it."""

    route: str
    source: str
    parts: list[Part]
    token: str | None
    boundary: str = "fuzzb0undary7MA4YWxkTrZu0gW"
    content_type: str | None = None
    body: bytes | None = None
    what: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        if self.route == WAREHOUSE:
            return f"/upload/pypi/{self.source}"
        return f"/__api__/sources/{self.source}/packages"

    def encoded(self) -> bytes:
        if self.body is not None:
            return self.body
        out = bytearray()
        for part in self.parts:
            out += b"--" + self.boundary.encode() + b"\r\n" + part.header_block() + b"\r\n\r\n"
            out += part.data + b"\r\n"
        out += b"--" + self.boundary.encode() + b"--\r\n"
        return bytes(out)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type
                   or f"multipart/form-data; boundary={self.boundary}"}
        if self.token is not None:
            if self.route == WAREHOUSE:
                credentials = base64.b64encode(f"__token__:{self.token}".encode()).decode()
                headers["Authorization"] = f"Basic {credentials}"
            else:
                headers["Authorization"] = f"Bearer {self.token}"
        return headers


def digest_fields(data: bytes) -> list[Part]:
    """The three digest fields twine sends for ``data``."""
    return [Part("md5_digest", hashlib.md5(data).hexdigest().encode()),
            Part("sha256_digest", hashlib.sha256(data).hexdigest().encode()),
            Part("blake2_256_digest", hashlib.blake2b(data, digest_size=32).hexdigest().encode())]


@dataclass(frozen=True)
class Material:
    """The valid files every case starts from."""

    wheel: Path
    sdist: Path
    r_package: Path

    def warehouse(self, path: Path, token: str) -> Case:
        fields = [(k, v) for k, v in upload_fields(path, "fuzz-demo", "1.0")
                  if not k.endswith("_digest")]
        data = path.read_bytes()
        parts = [Part(k, v.encode()) for k, v in fields] + digest_fields(data)
        return Case(WAREHOUSE, PY_SOURCE, [*parts, Part("content", data, path.name)], token)

    def add(self, path: Path, source: str, token: str, *, replace_: bool) -> Case:
        data = path.read_bytes()
        parts = [Part("sha256_digest", hashlib.sha256(data).hexdigest().encode())]
        if replace_:
            parts.append(Part("replace", b"true"))
        return Case(ADD, source, [*parts, Part("content", data, path.name)], token)


# Mutations -------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    """``data`` with one random edit, and what it was."""
    out = bytearray(data)
    kind = rng.choice(["flip", "set", "insert", "delete", "truncate", "duplicate", "zero",
                       "splice"] if out else ["insert"])
    at = rng.randrange(len(out)) if out else 0
    if kind == "flip":
        out[at] ^= 1 << rng.randrange(8)
    elif kind == "set":
        out[at] = rng.randrange(256)
    elif kind == "insert":
        out[at:at] = rng.randbytes(rng.randint(1, 32))
    elif kind == "delete":
        del out[at:at + rng.randint(1, 256)]
    elif kind == "truncate":
        del out[at:]
    elif kind == "duplicate":
        out[at:at] = out[at:at + rng.randint(1, 2048)]
    elif kind == "zero":
        size = min(rng.randint(1, 512), len(out) - at)
        out[at:at + size] = bytes(size)
    else:
        other = rng.choice(others)
        out[at:] = other[rng.randrange(len(other)):]
    return bytes(out), f"{kind}@{at}"


def noise_text(rng: random.Random) -> bytes:
    """A field value clients do not send: empty, blank, garbled, non-UTF-8 or huge.

    Huge values are letters and punctuation only: a run of more than 4300 digits is a
    known refusal-turned-500 of its own (test_huge_version_numbers_are_refused).
    """
    kind = rng.choice(["empty", "blank", "printable", "unicode", "binary", "huge", "long-line"])
    if kind == "empty":
        return b""
    if kind == "blank":
        return rng.choice([b" ", b"\t", b"\r\n", b"  \n "])
    if kind == "printable":
        return "".join(rng.choices(string.printable, k=rng.randint(1, 60))).encode()
    if kind == "unicode":
        return "".join(chr(rng.choice([0xE9, 0x2028, 0xFEFF, 0x1F600, 0x202E, 0x0])) +
                       rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 20))
                       ).encode()
    if kind == "binary":
        return rng.randbytes(rng.randint(1, 64))
    filler = rng.choice(["x", "foo-", "a.b_", "py3.", "bdist_", "\u00e9", "<>&'\""])
    size = rng.randint(10_000, 300_000) if kind == "huge" else rng.randint(256, 4000)
    return (filler * (size // len(filler) + 1))[:size].encode()


_FILENAMES = ["fuzz_demo-1.0-py3-none-any.whl", "fuzz_demo-1.0.tar.gz", "fuzz_demo-1.0.zip",
              "fuzz_demo-2.0-py3-none-any.whl", "other-1.0-py3-none-any.whl", "fuzzr_1.0.tar.gz",
              "fuzzr_2.0.tar.gz", "other_1.0.tar.gz", "fuzzr_1.0.zip", "../fuzzr_1.0.tar.gz",
              "..", ".hidden-1.0.tar.gz", "", " ", "a" * 300 + ".whl", "fuzz_d\u00e9mo-1.0.whl",
              "fuzz_demo-1.0-py3-none-any.whl\x00.tar.gz", "C:\\fuzzr_1.0.tar.gz",
              "fuzz_demo-1.0-1.tar.gz", "fuzz_demo-1.0-py3-none-any.WHL"]
_HEADS = [
    b"Content-Type: text/plain",
    b"",
    b'Content-Disposition: attachment; name="content"',
    b'Content-Disposition: form-data; name="content"; name="other"',
    b'Content-Disposition: form-data; name="content',
    b'Content-Disposition: form-data; name="content"; filename*=UTF-8\'\'fuzzr_1.0.tar.gz',
    b'Content-Disposition: form-data; name="content"; filename*=latin9\'\'x',
    b'Content-Disposition: form-data; name="content"; filename="\xff\xfe.whl"',
    b'Content-Disposition: form-data;\r\n name="content"; filename="fuzzr_1.0.tar.gz"',
    b' Content-Disposition: form-data; name="content"',
    b'Content-Disposition: form-data; name="content"\r\nBad Header: x',
    b'Content-Disposition: form-data; name="content"\r\nContent-Type: a\r\nContent-Type: b',
]
_CONTENT_TYPES = ["multipart/form-data", "multipart/form-data; boundary=", "text/plain",
                  "multipart/mixed; boundary={b}", "multipart/form-data; boundary=\"{b}\"",
                  "multipart/form-data; boundary={b}; charset=utf-8",
                  "multipart/form-data; boundary={b}x", "multipart/form-data; boundary=\"{b}",
                  "Multipart/Form-Data; BOUNDARY={b}", "multipart/form-data; boundary=a@b",
                  "multipart/form-data; boundary={b}; boundary=other"]


class Fuzzer:
    """Makes the cases: valid ones, then random mutations of them."""

    def __init__(self, rng: random.Random, material: Material, py_token: str,
                 r_token: str) -> None:
        self.rng = rng
        self.material = material
        self.py_token = py_token
        self.r_token = r_token
        self.files = [material.wheel.read_bytes(), material.sdist.read_bytes(),
                      material.r_package.read_bytes()]

    def valid(self) -> list[Case]:
        m = self.material
        return [m.warehouse(m.wheel, self.py_token), m.warehouse(m.sdist, self.py_token),
                m.add(m.r_package, R_SOURCE, self.r_token, replace_=False),
                m.add(m.wheel, PY_SOURCE, self.py_token, replace_=False)]

    def case(self) -> Case:
        rng = self.rng
        m = self.material
        roll = rng.random()
        if roll < 0.55:
            case = m.warehouse(rng.choice([m.wheel, m.sdist]), self.py_token)
        elif roll < 0.9:
            case = m.add(m.r_package, R_SOURCE, self.r_token, replace_=rng.random() < 0.5)
        else:
            case = m.add(rng.choice([m.wheel, m.sdist]), PY_SOURCE, self.py_token,
                         replace_=rng.random() < 0.5)
        mutations: list[Callable[[Case], None]] = [
            self.drop_part, self.duplicate_part, self.reorder, self.field_value,
            self.digest, self.filename, self.content, self.content, self.content,
            self.head, self.signature, self.padded_head, self.benign,
        ]
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            rng.choice(mutations)(case)
        if rng.random() < 0.08:
            self.content_type(case)
        if rng.random() < 0.03:
            self.credentials(case)
        if rng.random() < 0.25:
            body, what = mutate_bytes(rng, case.encoded(), [self.warehouse_body()])
            case.body = body
            case.what.append(f"body:{what}")
        return case

    def warehouse_body(self) -> bytes:
        return self.material.warehouse(self.material.wheel, self.py_token).encoded()

    def _pick(self, case: Case) -> Part | None:
        return self.rng.choice(case.parts) if case.parts else None

    def drop_part(self, case: Case) -> None:
        if case.parts:
            dropped = case.parts.pop(self.rng.randrange(len(case.parts)))
            case.what.append(f"drop:{dropped.name}")

    def duplicate_part(self, case: Case) -> None:
        part = self._pick(case)
        if part is not None:
            case.parts.insert(self.rng.randrange(len(case.parts) + 1), replace(part))
            case.what.append(f"duplicate:{part.name}")

    def reorder(self, case: Case) -> None:
        self.rng.shuffle(case.parts)
        case.what.append("reorder")

    def field_value(self, case: Case) -> None:
        fields = [p for p in case.parts if p.filename is None]
        if fields:
            part = self.rng.choice(fields)
            part.data = noise_text(self.rng)
            case.what.append(f"value:{part.name}={part.data[:20]!r}+{len(part.data)}")

    def digest(self, case: Case) -> None:
        rng = self.rng
        fields = [p for p in case.parts if p.name.endswith("_digest")]
        if not fields:
            return
        part = rng.choice(fields)
        kind = rng.choice(["random", "short", "upper", "other-file", "not-hex"])
        if kind == "random":
            part.data = rng.randbytes(len(part.data) // 2).hex().encode()
        elif kind == "short":
            part.data = part.data[:rng.randrange(len(part.data) + 1)]
        elif kind == "upper":
            part.data = part.data.upper()
        elif kind == "other-file":
            part.data = hashlib.sha256(rng.choice(self.files)).hexdigest().encode()
        else:
            part.data = b"z" * len(part.data)
        case.what.append(f"digest:{part.name}:{kind}")

    def filename(self, case: Case) -> None:
        content = [p for p in case.parts if p.filename is not None]
        if content:
            content[0].filename = self.rng.choice(_FILENAMES)
            case.what.append(f"filename:{content[0].filename[:40]!r}")

    def content(self, case: Case) -> None:
        """Damage the file; then, mostly, send digests that match the damaged file, so
        that the checks behind the digest check are reached."""
        rng = self.rng
        content = [p for p in case.parts if p.filename is not None]
        if not content:
            return
        part = content[0]
        kind = rng.choice(["bytes", "bytes", "bytes", "swap", "empty"])
        if kind == "bytes":
            part.data, what = mutate_bytes(rng, part.data, self.files)
        elif kind == "swap":
            part.data, what = rng.choice(self.files), "swap"
        else:
            part.data, what = b"", "empty"
        case.what.append(f"content:{what}")
        if rng.random() < 0.8:
            self._match_digests(case, part.data)

    def benign(self, case: Case) -> None:
        """Change the file so that it stays valid (the time in a gzip header, a zip
        comment), with digests to match: an upload the server should take."""
        content = [p for p in case.parts if p.filename is not None]
        if not content:
            return
        part = content[0]
        data = part.data
        if data.startswith(b"\x1f\x8b"):
            data = data[:4] + self.rng.randbytes(4) + data[8:]
        elif data.startswith(b"PK"):
            # The end of central directory record closes with the comment's length.
            comment = "".join(self.rng.choices(string.ascii_letters, k=20)).encode()
            data = data[:-2] + len(comment).to_bytes(2, "little") + comment
        part.data = data
        self._match_digests(case, data)
        case.what.append("benign")

    @staticmethod
    def _match_digests(case: Case, data: bytes) -> None:
        fresh = {p.name: p.data for p in digest_fields(data)}
        for p in case.parts:
            if p.name in fresh:
                p.data = fresh[p.name]

    def head(self, case: Case) -> None:
        part = self._pick(case)
        if part is not None:
            part.head = self.rng.choice(_HEADS)
            case.what.append(f"head:{part.name}:{part.head[:30]!r}")

    def padded_head(self, case: Case) -> None:
        """A part header block padded to just within the parser's limit, or just over."""
        part = self._pick(case)
        if part is None:
            return
        base = part.header_block() + b"\r\nX-Pad: "
        # The limit counts the block with its closing CRLF CRLF.
        room = MAX_PART_HEADERS - len(base) - 4
        size = room + self.rng.choice([0, 0, -1, 1, 100])
        part.head = base + b"p" * max(size, 0)
        case.what.append(f"padded-head:{part.name}:{size - room:+d}")

    def signature(self, case: Case) -> None:
        rng = self.rng
        data = rng.choice([b"", b"-----BEGIN PGP SIGNATURE-----\n\nnoise\n-----END PGP "
                           b"SIGNATURE-----\n", rng.randbytes(rng.randint(1, 300)),
                           b"\x89\x01" + rng.randbytes(200)])
        case.parts.insert(rng.randrange(len(case.parts) + 1),
                          Part("gpg_signature", data, f"{rng.choice(_FILENAMES)}.asc"))
        case.what.append(f"signature:{len(data)}")

    def content_type(self, case: Case) -> None:
        case.content_type = self.rng.choice(_CONTENT_TYPES).format(b=case.boundary)
        case.what.append(f"content-type:{case.content_type[:60]!r}")

    def credentials(self, case: Case) -> None:
        case.token = self.rng.choice([None, "not-a-token", self.r_token, self.py_token + "x"])
        case.what.append("credentials")


# The client side -----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    reason: str
    body: bytes


class Client:
    """One keep-alive HTTP connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: http.client.HTTPConnection | None = None
        self.connections = 0

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.connections += 1
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        answer = Answer(response.status, response.reason, response.read())
        if response.will_close:
            self.close()
        return answer

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def content_of(case: Case, body: bytes) -> tuple[str, bytes, bytes | None] | None:
    """What the server read as the file of an upload it took: (filename, data, signature).

    Read with the server's own parser: only uploads answered 2xx are looked at,
    and for them the question is which bytes were taken, not whether to take them.
    """
    handler = _Parts()
    try:
        parser = MultipartParser(boundary_from_content_type(case.headers()["Content-Type"]),
                                 handler)
        parser.feed(body)
        parser.close()
    except MultipartError:
        return None
    files = [(headers, data) for headers, data in handler.parts if headers.name == "content"]
    signatures = [data for headers, data in handler.parts if headers.name == "gpg_signature"]
    if len(files) != 1 or files[0][0].filename is None:
        return None
    return files[0][0].filename, files[0][1], signatures[0] if signatures else None


class _Parts:
    """A PartHandler that keeps every part whole."""

    def __init__(self) -> None:
        self.parts: list[tuple[PartHeaders, bytes]] = []
        self._data = bytearray()

    def part_started(self, headers: PartHeaders) -> None:
        self.parts.append((headers, b""))
        self._data = bytearray()

    def part_data(self, data: bytes | memoryview) -> None:
        self._data += data

    def part_ended(self) -> None:
        headers, _ = self.parts[-1]
        self.parts[-1] = (headers, bytes(self._data))


@dataclass
class Accepted:
    """An upload answered 2xx: what it brought may be stored."""

    filename: str
    sha256: str
    data: bytes
    signature: bytes | None


@dataclass
class Run:
    """What a fuzz run sent and was answered."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def send(client: Client, case: Case, run: Run, index: int) -> None:
    """Send one case and check its answer: 2xx, or 4xx with a reason; never 5xx."""
    body = case.encoded()
    label = f"request {index} ({case.route}: {', '.join(case.what) or 'valid'})"
    try:
        answer = client.request("POST", case.path, body, case.headers())
    except (OSError, http.client.HTTPException) as e:
        client.close()
        run.failures.append(f"{label}: no answer ({type(e).__name__}: {e})")
        return
    run.sent += 1
    run.statuses[answer.status] = run.statuses.get(answer.status, 0) + 1
    if 200 <= answer.status < 300:
        taken = content_of(case, body)
        if taken is None:
            run.failures.append(f"{label}: {answer.status} for a body with no single file")
            return
        filename, data, signature = taken
        sha256 = hashlib.sha256(data).hexdigest()
        if case.route == ADD and json.loads(answer.body)["sha256"] != sha256:
            run.failures.append(f"{label}: the server stored other bytes than were sent")
        run.accepted.append(Accepted(filename, sha256, data, signature))
    elif 400 <= answer.status < 500:
        if not answer.reason.strip() or not answer.body.strip():
            run.failures.append(f"{label}: {answer.status} without a reason")
    else:
        run.failures.append(f"{label}: {answer.status} {answer.reason!r} "
                            f"{answer.body[:300]!r}")


# The test ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def material() -> Iterator[Material]:
    """A valid wheel, sdist and R source package, built once."""
    with tempfile.TemporaryDirectory(prefix="pm-fuzz-") as directory:
        where = Path(directory)
        yield Material(build_wheel(where, "fuzz-demo", "1.0"), build_sdist(where, "fuzz-demo",
                                                                            "1.0"),
                       build_r_package(where, "fuzzr", "1.0"))


def stored_names(server: ServerProcess) -> set[str]:
    """The names of the blobs under DataDir/files."""
    assert server.data_dir is not None
    return {path.name for path in (server.data_dir / "files").rglob("*") if path.is_file()}


def temp_files(server: ServerProcess) -> list[Path]:
    """Every file under DataDir/tmp."""
    assert server.data_dir is not None
    return [path for path in (server.data_dir / "tmp").rglob("*") if path.is_file()]


def database_rows(server: ServerProcess) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(filename, sha256) of every python_files row and of every r_packages row."""
    assert server.data_dir is not None
    uri = f"file:{server.data_dir / 'db' / 'packagemanager.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        python = db.execute("SELECT filename, sha256 FROM python_files").fetchall()
        r = db.execute("SELECT filename, sha256 FROM r_packages").fetchall()
    return python, r


def allowed_blobs(accepted: list[Accepted], scratch: Path) -> set[str]:
    """The blob names 2xx uploads may have left: each file, its signature, and for a
    wheel the METADATA served beside it (read from the file as the server reads it)."""
    names: set[str] = set()
    for upload in accepted:
        names.add(upload.sha256)
        if upload.signature is not None:
            names.add(hashlib.sha256(upload.signature).hexdigest() + ".asc")
        if upload.filename.endswith(".whl"):
            path = scratch / "accepted.whl"
            path.write_bytes(upload.data)
            raw = dists.inspect(path, dists.parse_filename(upload.filename)).raw
            names.add(hashlib.sha256(raw).hexdigest() + ".metadata")
    return names


def test_fuzzed_uploads_are_refused_cleanly_and_leave_nothing(
        make_server: type[ServerProcess], material: Material, tmp_path: Path) -> None:
    """A few thousand random and mutated upload bodies on both upload routes are each
    answered 2xx or 4xx with a reason, never 5xx; the server keeps answering; and no
    temp file, row or blob is left from any upload it did not answer 2xx."""
    server = make_server().start()
    fuzzer = Fuzzer(random.Random(SEED), material, server.setup_python(), server.setup_r())
    client = Client(server.port)
    run = Run()

    valid = fuzzer.valid()
    for index, case in enumerate(valid):
        send(client, case, run, index)
    assert not run.failures, "\n".join(run.failures)
    assert len(run.accepted) == len(valid), "a valid upload was refused"

    started = time.monotonic()
    index = len(run.accepted)
    while run.sent < REQUESTS and time.monotonic() - started < BUDGET:
        send(client, fuzzer.case(), run, index)
        index += 1
        if index % STATUS_EVERY == 0:
            status = client.request("GET", "/__api__/status")
            assert status.status == 200, f"status after request {index}: {status}"
    elapsed = time.monotonic() - started
    client.close()
    summary = (f"{run.sent} requests in {elapsed:.1f}s over {client.connections} "
               f"connections; statuses {sorted(run.statuses.items())}; "
               f"{len({u.sha256 for u in run.accepted})} files taken")
    print(summary)

    assert not run.failures, f"{summary}\n" + "\n".join(run.failures[:50])
    assert run.sent >= MIN_REQUESTS, summary
    assert server.get("/__api__/status").status == 200

    # Refused uploads remove their temp files as they are answered, but the file
    # system work happens on the server's threads: give it a moment.
    wait_for(lambda: not temp_files(server), 10, "the temp files of refused uploads to go")
    accepted_shas = {upload.sha256 for upload in run.accepted}
    python_rows, r_rows = database_rows(server)
    assert python_rows and r_rows
    assert {sha for _, sha in python_rows + r_rows} <= accepted_shas
    assert {name for name, _ in python_rows + r_rows} <= {u.filename for u in run.accepted}
    left = stored_names(server) - allowed_blobs(run.accepted, tmp_path)
    assert not left, f"blobs no 2xx upload brought: {sorted(left)}"
    log = server.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-5000:]


def with_metadata(wheel: bytes, raw: bytes) -> bytes:
    """``wheel`` with its METADATA replaced by ``raw``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(wheel)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            data = raw if info.filename.endswith(".dist-info/METADATA") else source.read(info)
            archive.writestr(info.filename, data)
    return out.getvalue()


@pytest.mark.parametrize("where", ["form", "metadata"])
def test_huge_version_numbers_are_refused(make_server: type[ServerProcess], material: Material,
                                          where: str) -> None:
    """A version of one 5000-digit number, in the form or in a wheel's METADATA, is a
    400 refusal, not a server error."""
    server = make_server().start()
    token = server.setup_python()
    huge = "1." + "0" * 5000
    case = material.warehouse(material.wheel, token)
    if where == "form":
        next(p for p in case.parts if p.name == "version").data = huge.encode()
    else:
        data = with_metadata(material.wheel.read_bytes(), metadata("fuzz-demo", huge))
        case.parts = [p for p in case.parts if not p.name.endswith("_digest")]
        case.parts[-1:] = [*digest_fields(data), Part("content", data, material.wheel.name)]
    answer = Client(server.port).request("POST", case.path, case.encoded(), case.headers())
    assert answer.status == 400, (answer.status, answer.reason)
