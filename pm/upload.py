"""Streamed uploads, for every upload route and every ecosystem.

Two routes take a package file as ``multipart/form-data``: Warehouse's legacy
upload API (``POST /upload/pypi/{source}``, what twine and uv publish use) and
``POST /__api__/sources/{source}/packages`` (what ``rspm add`` uses, for any
kind of source). Both go through one :class:`UploadReceiver`, created as soon
as a request's headers are in. It checks the token and the source first,
holding back (and pausing) the first body bytes meanwhile; then every body
chunk goes through the push multipart parser, small form fields are kept, and
the ``content`` part is hashed and written straight to a temp blob (which
digests, :func:`digests_to_compute` decides from the fields before it). When the
body is complete, ``finish`` hands a :class:`ReceivedUpload` to the route's
:class:`Publisher` (the ecosystem's checks, the record, the blob's rename into
place). Any failure or a disconnect removes the temp file: a refused upload
leaves no file and no row behind.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from pm.auth import LOCAL_ADMIN, Principal, TokenChecker
from pm.blobs import BLAKE2_256, MD5, SHA256, BlobStore, BlobWriter, Digests, RunInThread
from pm.catalog import Catalog, Source
from pm.errors import (
    BadUpload,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PackageManagerError,
    TooLarge,
    Unauthorized,
)
from pm.filerows import ADDED, REPLACED, UNCHANGED
from pm.limits import Limits, UploadSlot, UploadSlots
from pm.multipart import (
    MultipartError,
    MultipartLimitError,
    MultipartParser,
    PartHeaders,
    boundary_from_content_type,
)
from pm.signatures import MAX_SIGNATURE
from pm.tokens import token_from_headers

WAREHOUSE = "warehouse"
ADD = "add"
# Which requests are uploads, known from the request line alone.
_UPLOAD_PATHS = (
    (WAREHOUSE, re.compile(rb"^/upload/pypi/([A-Za-z0-9._-]{1,100})/?(?:\?.*)?$")),
    (ADD, re.compile(rb"^/__api__/sources/([A-Za-z0-9._-]{1,100})/packages/?(?:\?.*)?$")),
)

# Body bytes held in memory while the token is checked; past this the
# connection is paused, so a slow database never means a large buffer.
PENDING_LIMIT = 256 * 1024
# Body bytes of a refused upload read and dropped, so a client that sends its
# whole body before reading sees the answer; past this the answer goes out at
# once and the connection is closed, so a refusal costs a bounded read.
DRAIN_LIMIT = 1024 * 1024

DIGEST_FIELDS = {"md5_digest": MD5, "sha256_digest": SHA256, "blake2_256_digest": BLAKE2_256}


@dataclass(frozen=True)
class UploadTarget:
    """An upload request: which route, into which source."""

    route: str
    source: str


@dataclass(frozen=True)
class PublishResult:
    source: str
    filename: str
    name: str
    version: str
    sha256: str
    size: int
    status: str
    # A re-upload brought the signature the recorded file did not have.
    signature_added: bool = False

    @property
    def created(self) -> bool:
        return self.status != UNCHANGED

    def message(self) -> str:
        """Warehouse's answer: one line that twine shows."""
        if self.status == ADDED:
            return f"OK: {self.filename} added to {self.source}\n"
        if self.status == REPLACED:
            return f"OK: {self.filename} replaced in {self.source}\n"
        if self.signature_added:
            return (f"OK: {self.filename} was already in {self.source} with the same "
                    f"contents; its signature was added\n")
        return f"OK: {self.filename} was already in {self.source} with the same contents\n"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "source": self.source, "filename": self.filename,
                "name": self.name, "version": self.version, "sha256": self.sha256,
                "size": self.size, "signature_added": self.signature_added}


@dataclass
class ReceivedUpload:
    """A complete upload body, handed to a :class:`Publisher`.

    The content is in ``writer``'s temp file, still to be drained (see
    :func:`content_digests`); the publisher must not remove it (the receiver
    does, whatever happens).
    """

    source: Source
    principal: Principal
    fields: dict[str, list[str]]
    filename: str | None
    writer: BlobWriter | None
    signature: bytes | None = field(repr=False)

    def field(self, name: str) -> str | None:
        return _first(self.fields, name)

    def required(self, name: str) -> str:
        value = self.field(name)
        if not value:
            raise BadUpload(f"'{name}' is a required field.")
        return value

    def content(self) -> tuple[str, BlobWriter]:
        if self.writer is None or self.filename is None:
            raise BadUpload("Upload payload does not have a file ('content' part is missing).")
        return self.filename, self.writer


class Publisher(Protocol):
    """What an upload route does with a complete upload, for one kind of source."""

    # Digests it records whatever the client sent (R's PACKAGES publishes md5),
    # computed while the content streams in.
    recorded_digests: frozenset[str]

    async def publish(self, upload: ReceivedUpload) -> PublishResult: ...


# Picks the publisher of a route for a source, or raises BadUpload when that
# route cannot take that kind of source.
PublisherFor = Callable[[str, Source], Publisher]


def _first(fields: Mapping[str, list[str]], name: str) -> str | None:
    """A form field's value: its first one, stripped, as Warehouse reads it."""
    values = fields.get(name)
    return values[0].strip() if values else None


def digests_to_compute(fields: Mapping[str, list[str]]) -> frozenset[str]:
    """The digests besides sha256 to compute for the content part, from the fields before it.

    sha256 is always computed: it names the blob and the index publishes it.
    Once the client's sha256 matches, the stored bytes are exactly the bytes
    it hashed, so its md5 and blake2b match by construction: checking them
    would cost CPU and add no safety (twine and uv publish send
    ``sha256_digest`` before the content). Without it, the strongest digest
    given is verified: blake2b if it came first. A form may also carry its
    digest fields after the file, and a field's value is its first one, so
    with neither here anything that comes later must be checkable: both are
    computed.
    """
    if _first(fields, "sha256_digest"):
        return frozenset()
    if _first(fields, "blake2_256_digest"):
        return frozenset({BLAKE2_256})
    return frozenset({BLAKE2_256, MD5})


def storage_error(e: OSError) -> PackageManagerError:
    """What the client is told when writing its upload failed."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the server's disk is full; the upload was not stored")
    return PackageManagerError("the server could not store the upload")


async def storing(in_thread: RunInThread, work: Callable[..., object], *args: Any) -> None:
    """Run a blocking write of an upload (fsync, rename into place) in a thread;
    a failure is told as :func:`storage_error` tells it (507 for a full disk)."""
    try:
        await in_thread(work, *args)
    except OSError as e:
        raise storage_error(e) from None


async def content_digests(upload: ReceivedUpload, in_thread: RunInThread, log: Logger,
                          *, require_digest: bool) -> Digests:
    """Wait for the content to be written, then check the digests the client sent.

    Every digest sent that was computed is checked: by :func:`digests_to_compute`
    that is sha256 whenever it is given, else the strongest one given.
    Warehouse requires at least one digest; ``rspm add`` sends sha256 but the
    API does not insist.
    """
    _, writer = upload.content()
    try:
        await in_thread(writer.drain)
    except OSError as e:
        log.error("writing upload failed: {e}", e=e)
        raise storage_error(e) from None
    digests = writer.digests()
    if digests.size == 0:
        raise BadUpload("The uploaded file is empty.")
    given = {f: upload.field(f) for f in DIGEST_FIELDS}
    if require_digest and not any(given.values()):
        raise BadUpload(
            "Include at least one message digest (md5_digest, sha256_digest or "
            "blake2_256_digest)."
        )
    for field_name, value in given.items():
        computed: str | None = getattr(digests, DIGEST_FIELDS[field_name])
        if value and computed is not None and value.lower() != computed:
            raise BadUpload(
                f"The digest supplied does not match a digest calculated from the "
                f"uploaded file ({field_name})."
            )
    return digests


class UploadService:
    """Creates receivers; holds what every upload needs."""

    log = Logger()

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        tokens: TokenChecker,
        publisher_for: PublisherFor,
        limits: Limits,
        slots: UploadSlots,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.tokens = tokens
        self.publisher_for = publisher_for
        self.limits = limits
        self.slots = slots

    @staticmethod
    def match(method: bytes, path: bytes) -> UploadTarget | None:
        """Which upload this request is, if it is one."""
        if method.upper() != b"POST":
            return None
        for route, pattern in _UPLOAD_PATHS:
            found = pattern.match(path)
            if found:
                return UploadTarget(route, found.group(1).decode("ascii"))
        return None

    def receive(
        self,
        target: UploadTarget,
        headers: Headers,
        *,
        local: bool,
        length: int | None = None,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
    ) -> UploadReceiver:
        """A receiver for an upload whose body is ``length`` bytes (None: chunked)."""
        return UploadReceiver(self, target, headers, local=local, length=length,
                              pause=pause, resume=resume)

    def receive_buffered(self, request: Request) -> UploadReceiver:
        """A receiver fed from a body a plain ``Site`` buffered (test harnesses)."""
        target = self.match(request.method, request.uri)
        if target is None:
            # The route took a name no source can have.
            raise NotFound("no such source: names are 1-100 ASCII letters, digits, "
                           "'-', '_' or '.'")
        assert request.content is not None
        request.content.seek(0, 2)
        receiver = self.receive(target, request.requestHeaders,
                                local=getattr(request, "local_admin", False),
                                length=request.content.tell())
        request.content.seek(0)
        while chunk := request.content.read(65536):
            receiver.feed(chunk)
        return receiver


def _header(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    return values[0] if values else None


class UploadReceiver:
    """One upload in flight; fed by the request, finished by the route."""

    def __init__(
        self,
        service: UploadService,
        target: UploadTarget,
        headers: Headers,
        *,
        local: bool,
        length: int | None,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self._service = service
        self._limits = service.limits
        self._length = length
        self._body_size = 0
        self._slot: UploadSlot | None = None
        self._target = target
        self._source_name = target.source
        self._publisher: Publisher | None = None
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
        self._drained = 0
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
            limit = self._limits.max_upload_size
            if self._length is not None and self._length > limit:
                raise TooLarge(f"the upload is {self._length} bytes; this server takes "
                               f"uploads of at most {limit} bytes")
            self.principal = await self._principal()
            claims = self.principal.claims
            self._slot = self._service.slots.acquire(None if claims is None else claims.guid)
            self.source = await self._resolve_source(self.principal)
            self._publisher = self._service.publisher_for(self._target.route, self.source)
            self._parser = MultipartParser(
                boundary_from_content_type(_header(self._headers, b"content-type")),
                self,
                max_parts=self._limits.max_form_parts,
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
                "as the password" if self._target.route == WAREHOUSE else
                "authentication required: send an API token as 'Authorization: Bearer <token>'"
            )
        return await self._service.tokens.check(token)

    async def _resolve_source(self, principal: Principal) -> Source:
        try:
            source = await self._service.catalog.get_source(self._source_name)
        except NotFound:
            # A token limited to other sources learns nothing about which exist.
            if principal.claims is not None and principal.claims.grant.targets is not None \
                    and not principal.is_admin:
                raise Forbidden(
                    f"the token does not allow publishing to source '{self._source_name}'"
                ) from None
            raise
        principal.require_source_write(source)
        return source

    def when_authorized(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the token and source are accepted (never if refused)."""

        def accepted(result: None) -> None:
            if self._error is None:
                callback()
            return result

        self._authorized.addCallback(accepted)

    def when_refused(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the token or the source is refused (never if accepted)."""

        def refused(result: None) -> None:
            if self._error is not None:
                callback()
            return result

        self._authorized.addCallback(refused)

    @property
    def drain_exhausted(self) -> bool:
        """Whether a refused upload has had DRAIN_LIMIT body bytes dropped since."""
        return self._drained > DRAIN_LIMIT

    # Body --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """A chunk of the request body, as it arrives."""
        self._body_size += len(data)
        if self._body_size > self._limits.max_upload_size and self._error is None:
            # A chunked body announced no length: it is refused once it passes the limit.
            self._fail(TooLarge(f"the upload is over {self._limits.max_upload_size} bytes, "
                                "this server's limit"))
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
            # Refused: drain the rest so the client reads our answer.
            self._drained += len(data)
            return
        try:
            self._parser.feed(data)
        except MultipartLimitError as e:
            self._fail(TooLarge(str(e)))
        except MultipartError as e:
            self._fail(BadUpload(str(e)))
        except PackageManagerError as e:
            self._fail(e)
        except OSError as e:
            self._service.log.error("writing upload failed: {e}", e=e)
            self._fail(storage_error(e))

    def abort(self) -> None:
        """The request ended: its upload slot is freed, and if the upload was never
        finished, what it wrote is dropped."""
        if not self._received:
            self._fail(BadUpload("the upload ended before it was complete"))
        if self._slot is not None:
            self._slot.release()

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
            assert self._publisher is not None, "parts are parsed once authorised"
            self._writer = self._service.blobs.writer(
                digests_to_compute(self.fields) | self._publisher.recorded_digests,
                pause=self._hold, resume=self._release)
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
            limits = self._limits
            if len(self._field_data) > limits.max_field_size:
                raise TooLarge(f"Field '{self._field_name}' is too large "
                               f"(over {limits.max_field_size} bytes).")
            if self._fields_size > limits.max_fields_total:
                raise TooLarge(
                    f"The form fields are too large (over {limits.max_fields_total} bytes).")

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

    async def finish(self) -> PublishResult:
        """Validate and record the upload; call once the whole body is in."""
        self._received = True
        try:
            await self._authorized
            if self._error is not None:
                raise self._error
            assert self._parser is not None and self.source is not None
            assert self.principal is not None and self._publisher is not None
            try:
                self._parser.close()
            except MultipartError as e:
                raise BadUpload(str(e)) from None
            if self._writer is not None and not self._content_done:
                raise BadUpload("the 'content' part is incomplete")
            return await self._publisher.publish(ReceivedUpload(
                source=self.source,
                principal=self.principal,
                fields=self.fields,
                filename=self._filename,
                writer=self._writer,
                signature=bytes(self._signature) if self._signature is not None else None,
            ))
        except PackageManagerError as e:
            self._fail(e)
            raise
        finally:
            self._discard()
