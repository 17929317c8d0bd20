"""Publishing an R source package with ``rspm add``.

The filename is checked first (R's rules for names and versions), then the
tarball's ``{pkg}/DESCRIPTION`` is read in a thread and must agree with it;
the file is recorded in one transaction before any index shows it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from pm.blobs import MD5, BlobStore, RunInThread
from pm.errors import AlreadyExists, BadUpload, Conflict
from pm.filerows import UNCHANGED
from pm.r import description
from pm.r.files import RFiles, RPackageFile
from pm.upload import PublishResult, ReceivedUpload, content_digests, storing


class RPublisher:
    """Checks and records R source packages."""

    log = Logger()
    # md5 whatever the client sent: PACKAGES publishes it as MD5sum.
    recorded_digests = frozenset({MD5})

    def __init__(self, files: RFiles, blobs: BlobStore, clock: Callable[[], float],
                 in_thread: RunInThread) -> None:
        self.files = files
        self.blobs = blobs
        self.clock = clock
        self.in_thread = in_thread

    async def publish(self, upload: ReceivedUpload) -> PublishResult:
        source, principal = upload.source, upload.principal
        filename, writer = upload.content()
        name = description.parse_filename(filename)
        if upload.signature is not None:
            raise BadUpload("signatures are kept for Python packages only; "
                            "send the R package without its .asc")
        replace = upload.field("replace") == "true"
        digests = await content_digests(upload, self.in_thread, self.log, require_digest=False)
        assert digests.md5 is not None, "recorded_digests asks the writer for it"

        def result(status: str) -> PublishResult:
            return PublishResult(source.name, filename, name.package, name.version,
                                 digests.sha256, digests.size, status)

        existing = await self.files.file(source.guid, filename)
        if existing is not None and existing.sha256 == digests.sha256:
            return result(UNCHANGED)
        if existing is not None and not replace:
            raise Conflict(f"{AlreadyExists(filename, source.name).message}; "
                           "add it with --replace to replace it")
        await storing(self.in_thread, writer.sync)
        read: description.Description = await self.in_thread(
            description.inspect, writer.path, name)
        record = RPackageFile(
            source_guid=source.guid,
            package=read.package,
            version=read.version,
            filename=filename,
            size=digests.size,
            sha256=digests.sha256,
            md5=digests.md5,
            fields=dict(read.fields),
            archived=False,
            uploaded_at=self.clock(),
            uploaded_by=principal.actor,
        )
        await storing(self.in_thread, self.blobs.place, writer.path, digests.sha256)
        # As for Python: a failed record leaves the placed blob to housekeeping.
        try:
            status = await self.files.put(record, source.name, replace=replace)
        except AlreadyExists as e:
            raise Conflict(f"{e.message}; add it with --replace to replace it") from None
        if status != UNCHANGED:
            self.log.info("{actor} {status} {filename} ({size} bytes) in {source}",
                          actor=principal.actor, status=status, filename=filename,
                          size=digests.size, source=source.name)
        return result(status)
