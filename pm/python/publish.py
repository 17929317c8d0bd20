"""Publishing a Python distribution: through Warehouse's form, or through ``rspm add``.

Both check the file as Warehouse does (its name, its digests, the wheel's
METADATA or the sdist's PKG-INFO, its signature) and record it in one
transaction before the blob is visible in any index. They differ in what the
client tells: twine fills Warehouse's form (name, version, filetype, which must
agree with the filename), ``rspm add`` sends only the file, whose name says the
rest; and only ``rspm add`` may replace a file with other contents.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from twisted.logger import Logger

from pm.archives import quote
from pm.auth import Principal
from pm.blobs import BlobStore, BlobWriter, Digests, RunInThread
from pm.catalog import Source
from pm.errors import AlreadyExists, BadUpload, Conflict
from pm.filerows import ADDED, UNCHANGED
from pm.python import dists
from pm.python.files import PythonFile, PythonFiles
from pm.signatures import SignatureChecker, SignatureInfo
from pm.upload import (
    PublishResult,
    ReceivedUpload,
    content_digests,
    storing,
)

FILETYPES = ("sdist", "bdist_wheel")
# An R source package's name, {pkg}_{version}.tar.gz: said so when such a file
# is refused by a Python source, rather than only that it is a bad sdist.
_LOOKS_LIKE_R = re.compile(r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]_\d+([.-]\d+)+\.tar\.gz")


class PythonPublisher:
    """Checks and records Python distributions; ``warehouse`` and ``add`` are its two forms."""

    log = Logger()

    def __init__(
        self,
        files: PythonFiles,
        blobs: BlobStore,
        signatures: SignatureChecker,
        clock: Callable[[], float],
        in_thread: RunInThread,
    ) -> None:
        self.files = files
        self.blobs = blobs
        self.signatures = signatures
        self.clock = clock
        self.in_thread = in_thread
        self.warehouse = _WarehouseForm(self)
        self.add = _AddForm(self)

    def refuse_other(self, source: Source) -> BadUpload:
        return BadUpload(
            f"source '{source.name}' is of type '{source.type}' and cannot take Python "
            f"packages; upload to a local-python source"
        )

    async def publish(self, upload: ReceivedUpload, dist: dists.DistFilename, *,
                      require_digest: bool, replace: bool) -> PublishResult:
        source, principal = upload.source, upload.principal
        _, writer = upload.content()
        digests = await content_digests(upload, self.in_thread, self.log,
                                        require_digest=require_digest)
        signature = upload.signature
        existing = await self.files.file(source.guid, dist.filename)
        if existing is not None and existing.sha256 == digests.sha256:
            added = signature is not None and await self._add_signature(
                existing, writer, signature, principal)
            return self._result(source, dist, digests, UNCHANGED, added)
        if existing is not None and not replace:
            raise AlreadyExists(dist.filename, source.name)

        await storing(self.in_thread, writer.sync)
        metadata: dists.CoreMetadata = await self.in_thread(dists.inspect, writer.path, dist)
        signed: SignatureInfo | None = None
        if signature is not None:
            signed = await self.in_thread(self.signatures.check, writer.path, signature)

        # PEP 658 metadata only for wheels: an sdist's PKG-INFO may leave out
        # its dependencies, and pip would trust it instead of building.
        metadata_sha = hashlib.sha256(metadata.raw).hexdigest() \
            if dist.filetype == "bdist_wheel" else None
        signature_sha = hashlib.sha256(signature).hexdigest() if signature is not None else None
        record = PythonFile(
            source_guid=source.guid,
            project=dist.project,
            display_name=metadata.name,
            version=dist.version,
            filename=dist.filename,
            filetype=dist.filetype,
            python_version=dist.python_version,
            size=digests.size,
            sha256=digests.sha256,
            # Empty when not computed: a matching sha256 left them nothing to add.
            blake2_256=digests.blake2_256 or "",
            md5=digests.md5 or "",
            requires_python=metadata.requires_python,
            summary=metadata.summary,
            metadata_sha256=metadata_sha,
            signature_sha256=signature_sha,
            signature_keyid=signed.keyid if signed else None,
            signature_trusted=signed.trusted if signed else None,
            yanked=False,
            uploaded_at=self.clock(),
            uploaded_by=principal.actor,
            details=metadata.details,
        )
        await storing(self.in_thread, _place_all, self.blobs, writer, record, metadata.raw,
                      signature)
        # If recording fails (a lost race for the filename, the database gone)
        # the placed blobs stay for housekeeping to collect: another upload of
        # the same bytes may have placed them too and not be recorded yet, so
        # removing them here could take a file from under its row.
        if replace:
            status = await self.files.put(record)
        else:
            status = ADDED if await self.files.add(record, source.name) else UNCHANGED
        added = False
        if status != UNCHANGED:
            self.log.info(
                "{actor} {status} {filename} ({size} bytes) in {source}",
                actor=principal.actor, status=status, filename=dist.filename,
                size=digests.size, source=source.name,
            )
        elif signed is not None and signature_sha is not None:
            # An identical upload was recorded first, meanwhile: as after it,
            # this signature goes to the file if that has none.
            added = await self.files.add_signature(
                record, signature_sha, signed.keyid, signed.trusted, principal.actor)
        return self._result(source, dist, digests, status, added)

    @staticmethod
    def _result(source: Source, dist: dists.DistFilename, digests: Digests, status: str,
                signature_added: bool) -> PublishResult:
        return PublishResult(source.name, dist.filename, dist.project, dist.version,
                             digests.sha256, digests.size, status, signature_added)

    async def _add_signature(self, existing: PythonFile, writer: BlobWriter,
                             signature: bytes, principal: Principal) -> bool:
        """Check a re-upload's signature; give it to the recorded file if that has none.

        Checked either way, so a re-upload with a bad signature is refused as a
        first upload would be. A file already signed keeps its signature (a CI
        re-run signing again makes a new one each time).
        """
        # The file is complete (drained) and about to be discarded: no fsync.
        signed = await self.in_thread(self.signatures.check, writer.path, signature)
        if existing.signature_sha256 is not None:
            return False
        signature_sha = hashlib.sha256(signature).hexdigest()
        await storing(self.in_thread, self.blobs.write_bytes, signature, signature_sha, ".asc")
        return await self.files.add_signature(
            existing, signature_sha, signed.keyid, signed.trusted, principal.actor)


class _WarehouseForm:
    """Warehouse's legacy upload API, as twine and uv publish fill it in."""

    recorded_digests: frozenset[str] = frozenset()

    def __init__(self, publisher: PythonPublisher) -> None:
        self._publisher = publisher

    async def publish(self, upload: ReceivedUpload) -> PublishResult:
        action = upload.field(":action")
        if action != "file_upload":
            raise BadUpload(
                f"Unknown :action {quote(action or '')}; only file_upload is supported.")
        if upload.field("protocol_version") not in (None, "1"):
            raise BadUpload("Unknown protocol version; only protocol_version 1 is supported.")
        name = upload.required("name")
        version = upload.required("version")
        filetype = upload.required("filetype")
        if filetype not in FILETYPES:
            raise BadUpload(
                f"Unknown type of file {quote(filetype)} (valid: {', '.join(FILETYPES)}).")
        if not dists.is_valid_project_name(name):
            raise BadUpload(f"{quote(name)} is an invalid value for name.")
        filename, _ = upload.content()
        dist = dists.parse_filename(filename)
        dists.check_form_agrees(dist, name=name, version=version, filetype=filetype,
                                pyversion=upload.field("pyversion"))
        try:
            return await self._publisher.publish(upload, dist, require_digest=True,
                                                 replace=False)
        except AlreadyExists as e:
            # Warehouse's words, which twine users search for.
            raise BadUpload(
                f"File already exists ('{e.filename}', with different contents)."
            ) from None


class _AddForm:
    """``rspm add``: the file alone, its name saying the project and version."""

    recorded_digests: frozenset[str] = frozenset()

    def __init__(self, publisher: PythonPublisher) -> None:
        self._publisher = publisher

    async def publish(self, upload: ReceivedUpload) -> PublishResult:
        filename, _ = upload.content()
        replace = upload.field("replace") == "true"
        try:
            dist = dists.parse_filename(filename)
            return await self._publisher.publish(upload, dist, require_digest=False,
                                                 replace=replace)
        except AlreadyExists as e:
            raise Conflict(f"{e.message}; add it with --replace to replace it") from None
        except BadUpload as e:
            if _LOOKS_LIKE_R.fullmatch(filename):
                raise BadUpload(
                    f"source '{upload.source.name}' holds Python packages, and "
                    f"{filename!r} looks like an R source package: add it to an R (local) "
                    f"source ({e.message})") from None
            raise


def _place_all(
    blobs: BlobStore,
    writer: BlobWriter,
    record: PythonFile,
    metadata: bytes,
    signature: bytes | None,
) -> None:
    """Move the file into place and write its companions; blocking."""
    blobs.place(writer.path, record.sha256)
    if record.metadata_sha256:
        blobs.write_bytes(metadata, record.metadata_sha256, ".metadata")
    if signature is not None and record.signature_sha256:
        blobs.write_bytes(signature, record.signature_sha256, ".asc")

