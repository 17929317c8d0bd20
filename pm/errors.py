"""Domain exceptions.

Modules below the web app raise these; the app's error handlers alone turn them
into HTTP status codes, so the meaning of a failure is decided where it happens
and its status in one place.
"""


class PackageManagerError(Exception):
    """Base class: the message is safe to show to the client."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadRequest(PackageManagerError):
    """The request is malformed or asks for something invalid."""


class BadUpload(BadRequest):
    """An upload was refused; nothing of it was kept."""


class TooLarge(BadUpload):
    """A body, form field or form is over its configured limit; nothing of it was kept."""


class NotFound(PackageManagerError):
    """The named thing does not exist."""


class Conflict(PackageManagerError):
    """The thing already exists, or the change contradicts the current state."""


class AlreadyExists(Conflict):
    """A package file of that name is stored with different contents.

    Each upload route words it for its clients: twine expects Warehouse's 400
    "File already exists", ``rspm add`` a 409 that suggests ``--replace``.
    """

    def __init__(self, filename: str, source: str) -> None:
        super().__init__(f"'{filename}' already exists in source '{source}' with different "
                         "contents")
        self.filename = filename
        self.source = source


class Unauthorized(PackageManagerError):
    """No credentials, or credentials that are malformed, forged, expired or revoked."""


class Forbidden(PackageManagerError):
    """Valid credentials that do not cover the action."""


class StoreUnavailable(PackageManagerError):
    """The database cannot be reached; the request may succeed later."""


class RetryLater(PackageManagerError):
    """Refused for now, not for good: the client may try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(RetryLater):
    """The server has as many uploads in flight as it takes."""


class TooManyUploads(RetryLater):
    """One token has as many uploads in flight as it may."""


class InsufficientStorage(PackageManagerError):
    """The server's disk (or quota) is full; nothing of the request was kept."""


class ConfigError(PackageManagerError):
    """The configuration file is missing or invalid."""
