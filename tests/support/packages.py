"""Real wheels and sdists, built by hand so tests control every byte."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path


def metadata(name: str, version: str, requires_python: str | None = None, *,
             summary: str | None = None, fields: Sequence[tuple[str, str]] = (),
             description: str = "") -> bytes:
    """Core metadata; ``fields`` are extra headers (Author, Project-URL, ...) and
    ``description`` the body (the README)."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             f"Summary: {name} for tests" if summary is None else f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"{key}: {value}" for key, value in fields)
    return ("\n".join(lines) + "\n\n" + description).encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    directory: Path,
    name: str = "example-package",
    version: str = "1.0.0",
    *,
    module: str | None = None,
    requires_python: str | None = ">=3.8",
    payload_size: int = 0,
    tag: str = "py3-none-any",
    summary: str | None = None,
    metadata_fields: Sequence[tuple[str, str]] = (),
    description: str = "",
) -> Path:
    """An installable wheel; ``payload_size`` adds a stored (incompressible) file;
    ``summary``, ``metadata_fields`` and ``description`` go into its METADATA."""
    module = module or name.replace("-", "_").replace(".", "_")
    dist = f"{name.replace('-', '_').replace('.', '_')}-{version}"
    path = directory / f"{dist}-{tag}.whl"
    files: list[tuple[str, bytes]] = [
        (f"{module}/__init__.py", f"VERSION = {version!r}\n".encode()),
        (f"{dist}.dist-info/METADATA", metadata(name, version, requires_python,
                                                summary=summary, fields=metadata_fields,
                                                description=description)),
        (f"{dist}.dist-info/WHEEL",
         f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()),
    ]
    record = [_record_line(p, d) for p, d in files]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files:
            zf.writestr(member, data)
        if payload_size:
            # Streamed in pieces so building a multi-GiB wheel needs no memory.
            digest = hashlib.sha256()
            info = zipfile.ZipInfo(f"{module}/payload.bin")
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=payload_size > zipfile.ZIP64_LIMIT) as out:
                left = payload_size
                block = os.urandom(1 << 20)
                while left:
                    piece = block[: min(left, len(block))]
                    out.write(piece)
                    digest.update(piece)
                    left -= len(piece)
            encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            record.append(f"{module}/payload.bin,sha256={encoded},{payload_size}")
        record.append(f"{dist}.dist-info/RECORD,,")
        zf.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def build_sdist(directory: Path, name: str = "example-package", version: str = "1.0.0",
                requires_python: str | None = ">=3.8") -> Path:
    """An sdist with PKG-INFO (not buildable: indexes only read its metadata)."""
    base = f"{name.replace('-', '_').replace('.', '_')}-{version}"
    path = directory / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in (
            (f"{base}/PKG-INFO", metadata(name, version, requires_python)),
            (f"{base}/README", b"test sdist\n"),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def digests(path: Path) -> dict[str, str]:
    """The three digests twine sends."""
    sha256, blake2, md5 = hashlib.sha256(), hashlib.blake2b(digest_size=32), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in (sha256, blake2, md5):
                h.update(chunk)
    return {"sha256_digest": sha256.hexdigest(), "blake2_256_digest": blake2.hexdigest(),
            "md5_digest": md5.hexdigest()}


def upload_fields(path: Path, name: str, version: str, filetype: str | None = None,
                  pyversion: str | None = None) -> list[tuple[str, str]]:
    """The form fields twine sends with a file, in twine's order."""
    wheel = path.name.endswith(".whl")
    return [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("metadata_version", "2.1"),
        ("name", name),
        ("version", version),
        ("filetype", filetype or ("bdist_wheel" if wheel else "sdist")),
        ("pyversion", pyversion or ("py3" if wheel else "source")),
        *digests(path).items(),
    ]


def multipart_body(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]],
                   boundary: str = "pmtestboundary0123456789") -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type; files are (field, filename, data)."""
    out = io.BytesIO()
    for key, value in fields:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
                  .encode())
        out.write(value.encode() + b"\r\n")
    for key, filename, data in files:
        out.write(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
