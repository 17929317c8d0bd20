"""``rspm add``: find package files, then stream each to the server.

Each file goes as one ``multipart/form-data`` POST whose Content-Length is
known before the first byte is sent (the parts' headers plus the file sizes),
read from disk in CHUNK_SIZE pieces: a file is never held in memory, however
large.  Its sha256 is computed in a first pass so the server can check what it
received.

What happens is told by a :class:`Reporter`: one line per file, and on a
terminal a progress bar for the whole run kept below those lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import click

from cli.client import ApiClient, ApiError, CliError, segment

__all__ = [
    "CHUNK_SIZE",
    "PACKAGE_SUFFIXES",
    "FilePart",
    "MultipartBody",
    "Package",
    "ProgressBar",
    "Reporter",
    "Result",
    "Skipped",
    "SourceFileError",
    "add_packages",
    "file_digest",
    "find_packages",
    "split_paths",
    "summarize",
    "summary_line",
    "upload_body",
]

CHUNK_SIZE = 1024 * 1024
PACKAGE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "local-python": (".whl", ".tar.gz", ".zip"),
    "local": (".tar.gz",),
}
# Only Python sources keep detached signatures.
SIGNED_TYPES = frozenset({"local-python"})
SIGNATURE_SUFFIX = ".asc"
NOT_A_PACKAGE = "not a package file"
UPLOADED = ("added", "unchanged", "replaced")
MESSAGES = {
    "added": "Added package '{filename}'",
    "unchanged": "Unchanged package '{filename}' (already present with the same contents)",
    "replaced": "Replaced package '{filename}'",
    "would-add": "Would add package '{filename}'",
    "skipped": "Skipped '{path}' ({error})",
}
MIB = 1024 * 1024


class SourceFileError(CliError):
    """A file to send could not be read, or changed size while being sent."""


# Finding the files --------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A package file to send, with the detached signature found beside it."""

    path: Path
    signature: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """A file found under a directory that is not sent."""

    path: Path
    reason: str


def split_paths(values: Sequence[str]) -> list[Path]:
    """The ``--path`` values (each comma-separated) as paths; CliError unless all exist."""
    paths = [Path(p.strip()) for value in values for p in value.split(",") if p.strip()]
    if not paths:
        raise CliError("--path names no file or directory")
    missing = [f"'{p}'" for p in paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or directory: {', '.join(missing)}")
    return paths


def _is_package(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(name.endswith(s) and len(name) > len(s) for s in suffixes)


def _signature_of(path: Path, signed: bool) -> Path | None:
    signature = path.with_name(path.name + SIGNATURE_SUFFIX)
    return signature if signed and signature.is_file() else None


def _scan(root: Path, suffixes: tuple[str, ...], signed: bool) -> Iterator[Package | Skipped]:
    """Files under ``root`` in a stable order: sorted, each directory before its subdirectories.

    Symbolic links to directories are not followed, so the walk stays in the
    tree and cannot loop; they are reported as skipped.
    """
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        for error in unreadable:
            yield Skipped(Path(error.filename or dirpath), f"cannot read it: {error.strerror}")
        unreadable.clear()
        dirnames.sort()
        here = Path(dirpath)
        names = set(filenames)
        linked = [d for d in dirnames if (here / d).is_symlink()]
        for name in sorted(filenames + linked):
            path = here / name
            if name in linked:
                yield Skipped(path, "symbolic link to a directory, not followed")
            elif not path.is_file():
                yield Skipped(path, "not a regular file")
            elif _is_package(name, suffixes):
                yield Package(path, _signature_of(path, signed))
            elif not (signed and name.endswith(SIGNATURE_SUFFIX)
                      and name[:-len(SIGNATURE_SUFFIX)] in names
                      and _is_package(name[:-len(SIGNATURE_SUFFIX)], suffixes)):
                yield Skipped(path, NOT_A_PACKAGE)
    for error in unreadable:
        yield Skipped(Path(error.filename or root), f"cannot read it: {error.strerror}")


def find_packages(paths: Sequence[Path], source_type: str) -> list[Package | Skipped]:
    """What ``rspm add`` sends to a ``source_type`` source, and what it skips, in order.

    Directories are walked; a file named explicitly must be a package file (or
    the signature of one that is sent).  A file reached twice is sent once.
    Raises CliError, listing every problem, for a directory without package
    files or a named file that is not one.
    """
    suffixes = PACKAGE_SUFFIXES[source_type]
    signed = source_type in SIGNED_TYPES
    items: list[Package | Skipped] = []
    seen: set[Path] = set()
    named_others: list[Path] = []
    problems: list[str] = []

    def keep(item: Package | Skipped) -> None:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(item)

    for path in paths:
        if path.is_dir():
            found = list(_scan(path, suffixes, signed))
            if not any(isinstance(item, Package) for item in found):
                problems.append(f"no package files found under '{path}'")
            for item in found:
                keep(item)
        elif not path.is_file():
            problems.append(f"'{path}' is not a regular file")
        elif _is_package(path.name, suffixes):
            keep(Package(path, _signature_of(path, signed)))
        else:
            named_others.append(path)
    signatures = {i.signature.resolve() for i in items if isinstance(i, Package) and i.signature}
    expected = ", ".join(suffixes)
    problems += [f"'{p}' is not a package file (a {source_type} source takes {expected})"
                 for p in named_others if p.resolve() not in signatures]
    if problems:
        raise CliError("; ".join(problems))
    return items


# The request body ------------------------------------------------------------------


@dataclass(frozen=True)
class FilePart:
    """A multipart part whose content is ``size`` bytes read from ``path``."""

    name: str
    path: Path
    size: int


def _param(key: str, value: str) -> str:
    # Quoted-string escapes; CR and LF percent-encoded as browsers do, so a
    # name can never end the header line.  RFC 8187 ``filename*`` carries the
    # exact UTF-8 name when the plain one cannot.
    plain = (value.replace("\\", "\\\\").replace('"', '\\"')
             .replace("\r", "%0D").replace("\n", "%0A"))
    if plain.isascii():
        return f'; {key}="{plain}"'
    fallback = plain.encode("ascii", "replace").decode()
    return f"; {key}=\"{fallback}\"; {key}*=UTF-8''{quote(value, safe='')}"


class MultipartBody:
    """A ``multipart/form-data`` body of text fields then file parts, of known length."""

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[FilePart],
                 boundary: str | None = None) -> None:
        # 128 random bits: no file will contain the delimiter by chance.
        self.boundary = boundary or f"rspm-{secrets.token_hex(16)}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        delimiter = f"--{self.boundary}\r\n"
        segments: list[bytes | FilePart] = []
        for name, value in fields:
            head = f"{delimiter}Content-Disposition: form-data{_param('name', name)}\r\n\r\n"
            segments.append(head.encode() + value.encode() + b"\r\n")
        for part in files:
            head = (f"{delimiter}Content-Disposition: form-data{_param('name', part.name)}"
                    f"{_param('filename', part.path.name)}\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n")
            segments.append(head.encode())
            segments.append(part)
            segments.append(b"\r\n")
        segments.append(f"--{self.boundary}--\r\n".encode())
        self._segments = segments
        self.file_bytes = sum(part.size for part in files)
        self.length = sum(s.size if isinstance(s, FilePart) else len(s) for s in segments)

    def chunks(self, chunk_size: int = CHUNK_SIZE,
               on_file_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The body, files read ``chunk_size`` bytes at a time; reports file bytes as read."""
        pending = b""
        for piece in self._segments:
            if isinstance(piece, bytes):
                pending += piece
                continue
            if pending:
                yield pending
                pending = b""
            for chunk in _read(piece, chunk_size):
                if on_file_bytes is not None:
                    on_file_bytes(len(chunk))
                yield chunk
        if pending:
            yield pending


def _read(part: FilePart, chunk_size: int) -> Iterator[bytes]:
    try:
        with part.path.open("rb") as f:
            remaining = part.size
            while remaining:
                chunk = f.read(min(chunk_size, remaining))
                if not chunk:
                    raise SourceFileError(f"'{part.path}' got shorter while being sent")
                remaining -= len(chunk)
                yield chunk
    except OSError as e:
        raise SourceFileError(f"cannot read '{part.path}': {e.strerror}") from None


def file_digest(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """The hex sha256 and the size of the file, read ``chunk_size`` bytes at a time."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def upload_body(package: Package, sha256: str, size: int, *, replace: bool,
                boundary: str | None = None) -> MultipartBody:
    """The body of ``POST /__api__/sources/{source}/packages`` for one file.

    The file itself comes last, so the server has the digest, the replace
    flag and the signature before the bulk of the body.
    """
    fields = [("sha256_digest", sha256)] + ([("replace", "true")] if replace else [])
    files = []
    if package.signature is not None:
        files.append(FilePart("gpg_signature", package.signature,
                              package.signature.stat().st_size))
    files.append(FilePart("content", package.path, size))
    return MultipartBody(fields, files, boundary)


# Progress and results --------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: GiB returns")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """One line on a terminal, redrawn in place, for a whole run of uploads.

    It shows files done, a bar, bytes sent of the total, the average rate (in
    MiB/s whatever the speed, so it reads the same from one run to the next),
    the time left and the file being sent.
    """

    def __init__(self, stream: TextIO, total_bytes: int, total_files: int, *,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None,
                 interval: float = 0.1) -> None:
        self._stream = stream
        self.total_bytes = total_bytes
        self.total_files = total_files
        self._clock = clock
        self._started = clock()
        self._width = width
        self._interval = interval
        self._drawn_at: float | None = None
        self._visible = False
        self.files_done = 0
        self.done_bytes = 0
        self.file_bytes = 0
        self.current = ""

    def begin_file(self, name: str) -> None:
        self.current = name
        self.file_bytes = 0
        self.draw()

    def advance(self, n: int) -> None:
        self.file_bytes += n
        if self._drawn_at is None or self._clock() - self._drawn_at >= self._interval:
            self.draw()

    def restart_file(self) -> None:
        """Forget the current file's bytes: it is being sent again."""
        self.file_bytes = 0

    def file_done(self, size: int) -> None:
        self.files_done += 1
        self.done_bytes += size
        self.file_bytes = 0
        self.current = ""
        self.draw()

    def render(self) -> str:
        width = self._width or _terminal_width(self._stream)
        sent = min(self.done_bytes + self.file_bytes, self.total_bytes)
        fraction = sent / self.total_bytes if self.total_bytes else 1.0
        elapsed = self._clock() - self._started
        rate = sent / elapsed if elapsed > 0 else 0.0
        left = (self.total_bytes - sent) / rate if rate > 0 else None
        head = f"{self.files_done}/{self.total_files} files"
        tail = (f"{int(fraction * 100):3d}%  {_size(sent)}/{_size(self.total_bytes)}  "
                f"{rate / MIB:.1f} MiB/s  ETA {_duration(left)}")
        name = f"  {self.current}" if self.current else ""
        # The bar gives way to the file's name, down to 10 cells.
        cells = max(10, min(40, width - 1 - len(head) - len(tail) - len(name) - 4))
        filled = int(cells * fraction)
        line = f"{head} [{'#' * filled}{'-' * (cells - filled)}] {tail}{name}"
        # One column short of the edge: a full line would wrap, and \r would
        # then redraw only its second half.
        return line[:max(width - 1, 1)]

    def draw(self) -> None:
        self._stream.write(f"\r{self.render()}\x1b[K")
        self._stream.flush()
        self._drawn_at = self._clock()
        self._visible = True

    def hide(self) -> None:
        if self._visible:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._visible = False

    def show(self) -> None:
        if not self._visible:
            self.draw()

    def finish(self) -> None:
        """Draw the final state and move below it."""
        self.draw()
        self._stream.write("\n")
        self._stream.flush()
        self._visible = False


def _terminal_width(stream: TextIO) -> int:
    """COLUMNS if set, else the terminal's width, else 80 (as shutil does, but for ``stream``:
    shutil.get_terminal_size asks stdout, which may well be a pipe)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        width = 0
    # A terminal whose size was never set (a fresh pty) reports 0 columns.
    return width if width > 0 else 80


@dataclass(frozen=True)
class Result:
    """What became of one file: a status from MESSAGES or "failed", and why."""

    path: Path
    status: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "filename": self.path.name, "status": self.status,
                "error": self.error}


class Reporter:
    """Tells what ``rspm add`` does: a line per file, and a progress bar if asked.

    Lines go above the bar, which is redrawn after each.  Failures go to
    ``err``; in JSON mode the other lines are left out (the caller prints the
    results at the end).
    """

    def __init__(self, out: TextIO, err: TextIO, *, json_mode: bool = False,
                 progress: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._err = err
        self._json = json_mode
        self._progress = progress
        self._clock = clock
        self.bar: ProgressBar | None = None

    def start(self, total_bytes: int, total_files: int) -> None:
        if self._progress:
            self.bar = ProgressBar(self._err, total_bytes, total_files, clock=self._clock)
            self.bar.draw()

    def line(self, text: str, *, err: bool = False) -> None:
        if self.bar is not None:
            self.bar.hide()
        click.echo(text, file=self._err if err else self._out)
        if self.bar is not None:
            self.bar.show()

    def note(self, text: str) -> None:
        self.line(text, err=True)

    def result(self, result: Result) -> None:
        if result.status == "failed":
            self.line(f"Failed to add package '{result.path.name}': {result.error}", err=True)
        elif not self._json:
            self.line(MESSAGES[result.status].format(
                filename=result.path.name, path=result.path, error=result.error))

    def begin_file(self, name: str) -> None:
        if self.bar is not None:
            self.bar.begin_file(name)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(n)

    def restart_file(self) -> None:
        if self.bar is not None:
            self.bar.restart_file()

    def file_done(self, size: int) -> None:
        if self.bar is not None:
            self.bar.file_done(size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.finish()
            self.bar = None


# Sending ---------------------------------------------------------------------------


def _upload_size(package: Package) -> int:
    """Bytes of the file and its signature: what the progress bar counts."""
    total = 0
    for path in (package.path, package.signature):
        if path is not None:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
    return total


def add_packages(api: ApiClient, source: str, items: Sequence[Package | Skipped], *,
                 replace: bool, dry_run: bool, reporter: Reporter) -> list[Result]:
    """Send every package in ``items`` (or, with ``dry_run``, nothing); one Result each.

    A refused file does not stop the run; the connection is kept alive from
    one file to the next, and a new one is made after a failure broke it.
    """
    url = f"/__api__/sources/{segment(source)}/packages"
    packages = [item for item in items if isinstance(item, Package)]
    if not dry_run:
        reporter.start(sum(_upload_size(p) for p in packages), len(packages))
    previous, api.notice = api.notice, reporter.note
    results: list[Result] = []
    try:
        for item in items:
            if isinstance(item, Skipped):
                result = Result(item.path, "skipped", item.reason)
            elif dry_run:
                result = Result(item.path, "would-add")
            else:
                reporter.begin_file(item.path.name)
                try:
                    result = _send(api, url, item, replace=replace, reporter=reporter)
                finally:
                    reporter.file_done(_upload_size(item))
            reporter.result(result)
            results.append(result)
    finally:
        api.notice = previous
        reporter.close()
    return results


def _send(api: ApiClient, url: str, package: Package, *, replace: bool,
          reporter: Reporter) -> Result:
    try:
        sha256, size = file_digest(package.path)
        body = upload_body(package, sha256, size, replace=replace)
    except OSError as e:
        return Result(package.path, "failed", f"cannot read '{e.filename}': {e.strerror}")

    def attempt() -> Iterator[bytes]:
        reporter.restart_file()
        return body.chunks(on_file_bytes=reporter.advance)

    try:
        value = api.send("POST", url, {"Content-Type": body.content_type}, body.length, attempt)
    except ApiError as e:
        hint = " (use --replace to replace it)" if e.status == 409 and not replace else ""
        return Result(package.path, "failed", e.message + hint)
    except CliError as e:
        return Result(package.path, "failed", str(e))
    status = value.get("status") if isinstance(value, dict) else None
    return Result(package.path, status if status in UPLOADED else "added")


def summarize(results: Sequence[Result], *, dry_run: bool) -> dict[str, int]:
    """How many files ended in each status (those a dry or real run can give)."""
    keys = ("would-add", "skipped") if dry_run else (*UPLOADED, "failed", "skipped")
    return {key: sum(r.status == key for r in results) for key in keys}


def summary_line(counts: dict[str, int]) -> str:
    if "would-add" in counts:
        parts = [f"{counts['would-add']} would be added"]
    else:
        parts = [f"{counts[key]} {key}" for key in (*UPLOADED, "failed")]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    return ", ".join(parts)
