"""Database records for tests that need a recorded file without uploading one."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from pm.store import PythonFile, Source

# Any fixed time: the tests that use these records compare them, never age them.
UPLOADED_AT = 1_700_000_005.25


def python_file(
    source: Source,
    filename: str,
    *,
    project: str = "demo",
    version: str = "1.0",
    content: bytes | None = None,
    **changes: Any,
) -> PythonFile:
    """A complete PythonFile record whose digests derive from ``content``."""
    data = content if content is not None else filename.encode()
    record = PythonFile(
        source_guid=source.guid,
        project=project,
        display_name=project.title(),
        version=version,
        filename=filename,
        filetype="sdist" if filename.endswith(".tar.gz") else "bdist_wheel",
        python_version="source" if filename.endswith(".tar.gz") else "py3",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        blake2_256=hashlib.blake2b(data, digest_size=32).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        requires_python=">=3.9",
        summary="A demo project",
        metadata_sha256=hashlib.sha256(b"metadata" + data).hexdigest(),
        signature_sha256=None,
        signature_keyid=None,
        signature_trusted=None,
        yanked=False,
        uploaded_at=UPLOADED_AT,
        uploaded_by="token:ci",
    )
    return replace(record, **changes)
