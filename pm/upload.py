"""The Warehouse legacy upload API (``POST /upload/pypi/{source}``), streamed.

An :class:`UploadReceiver` is created as soon as a request's headers are in.
It checks the token and the source first, holding back (and pausing) the first
body bytes meanwhile; then every body chunk goes through the push multipart
parser, small form fields are kept, and the ``content`` part is hashed and
written straight to a temp blob. When the body is complete, ``finish`` runs the
checks Warehouse runs, records the file in one transaction and renames the
blob into place. Any failure or a disconnect removes the temp file: a refused
upload leaves no file and no row behind.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from pm.auth import LOCAL_ADMIN, Principal, TokenChecker
from pm.blobs import BlobStore, BlobWriter, RunInThread
from pm.errors import (
    BadUpload,
    Forbidden,
    NotFound,
    PackageManagerError,
    Unauthorized,
)
from pm.multipart import MultipartError, MultipartParser, PartHeaders, boundary_from_content_type
from pm.python import dists
from pm.signatures import MAX_SIGNATURE, SignatureChecker, SignatureInfo
from pm.store import PythonFile, Source, Store
from pm.tokens import token_from_headers

UPLOAD_PATH = re.compile(rb"^/upload/pypi/([A-Za-z0-9._-]{1,100})/?(?:\?.*)?$")

MAX_FIELD = 1024 * 1024
MAX_FIELDS_TOTAL = 8 * 1024 * 1024
MAX_PARTS = 1000
# Body bytes held in memory while the token is checked; past this the
# connection is paused, so a slow database never means a large buffer.
PENDING_LIMIT = 256 * 1024

DIGEST_FIELDS = {"md5_digest": "md5", "sha256_digest": "sha256", "blake2_256_digest": "blake2_256"}
FILETYPES = ("sdist", "bdist_wheel")


@dataclass(frozen=True)
class UploadResult:
    source: str
    filename: str
    project: str
    version: str
    sha256: str
    created: bool
    # A re-upload brought the signature the recorded file did not have.
    signature_added: bool = False

    def message(self) -> str:
        if self.created:
            return f"OK: {self.filename} added to {self.source}\n"
        if self.signature_added:
            return (f"OK: {self.filename} was already in {self.source} with the same "
                    f"contents; its signature was added\n")
        return f"OK: {self.filename} was already in {self.source} with the same contents\n"


class UploadService:
    """Creates receivers; holds what every upload needs."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        tokens: TokenChecker,
        signatures: SignatureChecker,
        clock: Callable[[], float],
        in_thread: RunInThread,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.tokens = tokens
        self.signatures = signatures
        self.clock = clock
        self.in_thread = in_thread

    @staticmethod
    def match(method: bytes, path: bytes) -> str | None:
        """The source name if this request is an upload."""
        if method.upper() != b"POST":
            return None
        found = UPLOAD_PATH.match(path)
        return found.group(1).decode("ascii") if found else None

    def receive(
        self,
        source_name: str,
        headers: Headers,
        *,
        local: bool,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
    ) -> UploadReceiver:
        return UploadReceiver(self, source_name, headers, local=local, pause=pause, resume=resume)


def _header(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    return values[0] if values else None


class UploadReceiver:
    """One upload in flight; fed by the request, finished by the route."""

    def __init__(
        self,
        service: UploadService,
        source_name: str,
        headers: Headers,
        *,
        local: bool,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self._service = service
        self._source_name = source_name
        self._headers = headers
        self._local = local
        self._pause = pause
        self._resume = resume
        # Who holds the transport paused: the authorisation (``_paused``) and
        # the blob writer's backlog; it is resumed when neither does.
        self._paused = False
        self._holds = 0
        self._pending: list[bytes] | None = []
        self._pending_size = 0
        self._error: PackageManagerError | None = None
        self._parser: MultipartParser | None = None
        self._received = False
        self.principal: Principal | None = None
        self.source: Source | None = None
        # What the multipart body carried.
        self.fields: dict[str, list[str]] = {}
        self._fields_size = 0
        self._part: str | None = None
        self._field_name = ""
        self._field_data = bytearray()
        self._filename: str | None = None
        self._writer: BlobWriter | None = None
        self._content_done = False
        self._signature: bytearray | None = None
        self._authorized: Deferred[None] = Deferred.fromCoroutine(self._authorize())

    # Authorisation, before any body byte is stored ------------------------

    async def _authorize(self) -> None:
        try:
            self.principal = await self._principal()
            self.source = await self._resolve_source(self.principal)
            self._parser = MultipartParser(
                boundary_from_content_type(_header(self._headers, b"content-type")),
                self,
                max_parts=MAX_PARTS,
            )
        except MultipartError as e:
            self._fail(BadUpload(str(e)))
        except PackageManagerError as e:
            self._fail(e)
        except Exception as e:
            self._service.log.failure("upload authorisation failed", None)
            self._fail(PackageManagerError(f"internal error: {type(e).__name__}"))
        pending, self._pending = self._pending or [], None
        for chunk in pending:
            self._deliver(chunk)
        if self._paused:
            self._paused = False
            self._release()

    async def _principal(self) -> Principal:
        if self._local:
            return LOCAL_ADMIN
        token = token_from_headers(_header(self._headers, b"authorization"))
        if token is None:
            self._service.tokens.require_enabled()
            raise Unauthorized(
                "authentication required: use the username __token__ and an API token "
                "as the password"
            )
        return await self._service.tokens.check(token)

    async def _resolve_source(self, principal: Principal) -> Source:
        try:
            source = await self._service.store.get_source(self._source_name)
        except NotFound:
            # A token limited to other sources learns nothing about which exist.
            if principal.claims is not None and principal.claims.grant.targets is not None \
                    and not principal.is_admin:
                raise Forbidden(
                    f"the token does not allow publishing to source '{self._source_name}'"
                ) from None
            raise
        principal.require_source_write(source)
        if source.type != "local-python":
            raise BadUpload(
                f"source '{source.name}' is of type '{source.type}' and cannot take Python "
                f"packages; upload to a local-python source"
            )
        return source

    def when_authorized(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the token and source are accepted (never if refused)."""

        def accepted(result: None) -> None:
            if self._error is None:
                callback()
            return result

        self._authorized.addCallback(accepted)

    # Body --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """A chunk of the request body, as it arrives."""
        if self._pending is not None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > PENDING_LIMIT and not self._paused:
                self._paused = True
                self._hold()
            return
        self._deliver(data)

    def _hold(self) -> None:
        self._holds += 1
        if self._holds == 1:
            self._pause()

    def _release(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            self._resume()

    def _deliver(self, data: bytes) -> None:
        if self._error is not None or self._parser is None:
            return  # refused: drain the rest so the client reads our answer
        try:
            self._parser.feed(data)
        except MultipartError as e:
            self._fail(BadUpload(str(e)))
        except PackageManagerError as e:
            self._fail(e)
        except OSError as e:
            self._service.log.error("writing upload failed: {e}", e=e)
            self._fail(PackageManagerError("the server could not store the upload"))

    def abort(self) -> None:
        """The request ended; if the upload was never finished, drop what it wrote."""
        if not self._received:
            self._fail(BadUpload("the upload ended before it was complete"))

    def _fail(self, error: PackageManagerError) -> None:
        if self._error is None:
            self._error = error
        self._discard()

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
        self.fields = {}
        self._signature = None
        self._field_data = bytearray()

    # PartHandler, called by the multipart parser ------------------------

    def part_started(self, headers: PartHeaders) -> None:
        if headers.name == "content":
            if self._writer is not None:
                raise BadUpload("more than one 'content' part")
            if not headers.filename:
                raise BadUpload("the 'content' part has no filename")
            self._filename = headers.filename
            self._writer = self._service.blobs.writer(pause=self._hold, resume=self._release)
            self._part = "content"
        elif headers.name == "gpg_signature":
            if self._signature is not None:
                raise BadUpload("more than one 'gpg_signature' part")
            self._signature = bytearray()
            self._part = "signature"
        else:
            self._part = "field"
            self._field_name = headers.name
            self._field_data = bytearray()

    def part_data(self, data: bytes | memoryview) -> None:
        if self._part == "content":
            assert self._writer is not None
            self._writer.write(data)
        elif self._part == "signature":
            assert self._signature is not None
            self._signature += data
            if len(self._signature) > MAX_SIGNATURE:
                raise BadUpload(f"gpg_signature is larger than {MAX_SIGNATURE} bytes")
        else:
            self._field_data += data
            self._fields_size += len(data)
            if len(self._field_data) > MAX_FIELD:
                raise BadUpload(
                    f"Field '{self._field_name}' is too large (over {MAX_FIELD} bytes)."
                )
            if self._fields_size > MAX_FIELDS_TOTAL:
                raise BadUpload(f"The form fields are too large (over {MAX_FIELDS_TOTAL} bytes).")

    def part_ended(self) -> None:
        if self._part == "content":
            self._content_done = True
        elif self._part == "field":
            try:
                value = self._field_data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadUpload(f"Field '{self._field_name}' is not valid UTF-8.") from None
            self.fields.setdefault(self._field_name, []).append(value)
            self._field_data = bytearray()
        self._part = None

    # Completion ----------------------------------------------------------

    async def finish(self) -> UploadResult:
        """Validate and record the upload; call once the whole body is in."""
        self._received = True
        try:
            await self._authorized
            if self._error is not None:
                raise self._error
            assert self._parser is not None and self.source is not None
            assert self.principal is not None
            try:
                self._parser.close()
            except MultipartError as e:
                raise BadUpload(str(e)) from None
            return await self._record(self.source, self.principal)
        except PackageManagerError as e:
            self._fail(e)
            raise
        finally:
            self._discard()

    def _field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0].strip() if values else None

    def _required(self, name: str) -> str:
        value = self._field(name)
        if not value:
            raise BadUpload(f"'{name}' is a required field.")
        return value

    async def _record(self, source: Source, principal: Principal) -> UploadResult:
        service = self._service
        action = self._field(":action")
        if action != "file_upload":
            raise BadUpload(f"Unknown :action '{action}'; only file_upload is supported.")
        if self._field("protocol_version") not in (None, "1"):
            raise BadUpload("Unknown protocol version; only protocol_version 1 is supported.")
        name = self._required("name")
        version = self._required("version")
        filetype = self._required("filetype")
        if filetype not in FILETYPES:
            raise BadUpload(f"Unknown type of file '{filetype}' (valid: {', '.join(FILETYPES)}).")
        if not dists.is_valid_project_name(name):
            raise BadUpload(f"'{name}' is an invalid value for name.")
        if self._writer is None or not self._content_done or self._filename is None:
            raise BadUpload("Upload payload does not have a file ('content' part is missing).")
        dist = dists.parse_filename(self._filename)
        dists.check_form_agrees(dist, name=name, version=version, filetype=filetype,
                                pyversion=self._field("pyversion"))
        writer = self._writer
        try:
            await service.in_thread(writer.drain)
        except OSError as e:
            service.log.error("writing upload failed: {e}", e=e)
            raise PackageManagerError("the server could not store the upload") from None
        digests = writer.digests()
        if digests.size == 0:
            raise BadUpload("The uploaded file is empty.")
        self._check_digests(digests.__dict__)

        signature = bytes(self._signature) if self._signature is not None else None
        existing = await service.store.python_file(source.guid, dist.filename)
        if existing is not None:
            if existing.sha256 != digests.sha256:
                raise BadUpload(
                    f"File already exists ('{dist.filename}', with different contents)."
                )
            added = signature is not None and await self._add_signature(
                existing, writer, signature, principal)
            return UploadResult(source.name, dist.filename, dist.project, dist.version,
                                digests.sha256, created=False, signature_added=added)

        await service.in_thread(writer.sync)
        metadata: dists.CoreMetadata = await service.in_thread(dists.inspect, writer.path, dist)
        signed: SignatureInfo | None = None
        if signature is not None:
            signed = await service.in_thread(service.signatures.check, writer.path, signature)

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
            blake2_256=digests.blake2_256,
            md5=digests.md5,
            requires_python=metadata.requires_python,
            summary=metadata.summary,
            metadata_sha256=metadata_sha,
            signature_sha256=signature_sha,
            signature_keyid=signed.keyid if signed else None,
            signature_trusted=signed.trusted if signed else None,
            yanked=False,
            uploaded_at=service.clock(),
            uploaded_by=principal.actor,
        )
        await service.in_thread(
            _place_all, service.blobs, writer, record, metadata.raw, signature
        )
        # If recording fails (a lost race for the filename, the database gone)
        # the placed blobs stay for housekeeping to collect: another upload of
        # the same bytes may have placed them too and not be recorded yet, so
        # removing them here could take a file from under its row.
        created = await service.store.add_python_file(record)
        added = False
        if created:
            service.log.info(
                "{actor} uploaded {filename} ({size} bytes) to {source}",
                actor=principal.actor, filename=dist.filename, size=digests.size,
                source=source.name,
            )
        elif signed is not None and signature_sha is not None:
            # An identical upload was recorded first, meanwhile: as after it,
            # this signature goes to the file if that has none.
            added = await service.store.add_python_signature(
                record, signature_sha, signed.keyid, signed.trusted, principal.actor)
        return UploadResult(source.name, dist.filename, dist.project, dist.version,
                            digests.sha256, created=created, signature_added=added)

    async def _add_signature(self, existing: PythonFile, writer: BlobWriter,
                             signature: bytes, principal: Principal) -> bool:
        """Check a re-upload's signature; give it to the recorded file if that has none.

        Checked either way, so a re-upload with a bad signature is refused as a
        first upload would be. A file already signed keeps its signature (a CI
        re-run signing again makes a new one each time).
        """
        service = self._service
        # The file is complete (drained) and about to be discarded: no fsync.
        signed = await service.in_thread(service.signatures.check, writer.path, signature)
        if existing.signature_sha256 is not None:
            return False
        signature_sha = hashlib.sha256(signature).hexdigest()
        await service.in_thread(service.blobs.write_bytes, signature, signature_sha, ".asc")
        return await service.store.add_python_signature(
            existing, signature_sha, signed.keyid, signed.trusted, principal.actor)

    def _check_digests(self, computed: dict[str, Any]) -> None:
        given = {f: self._field(f) for f in DIGEST_FIELDS}
        if not any(given.values()):
            raise BadUpload(
                "Include at least one message digest (md5_digest, sha256_digest or "
                "blake2_256_digest)."
            )
        for field_name, value in given.items():
            if value and value.lower() != computed[DIGEST_FIELDS[field_name]]:
                raise BadUpload(
                    f"The digest supplied does not match a digest calculated from the "
                    f"uploaded file ({field_name})."
                )


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
