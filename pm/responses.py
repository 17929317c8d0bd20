"""HTTP status codes for domain exceptions, and the error answers every app shares.

This is the one place a failure's status is chosen. Each Klein app of the web
layer (the admin API, the repos, the UI) calls :func:`share_error_handlers`,
so an error looks the same whichever app raised it.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException

from pm.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PackageManagerError,
    StoreUnavailable,
    Unauthorized,
)


class NotAcceptable(PackageManagerError):
    """No representation the client accepts."""


_STATUS: tuple[tuple[type[PackageManagerError], int], ...] = (
    (BadRequest, http.BAD_REQUEST),
    (Unauthorized, http.UNAUTHORIZED),
    (Forbidden, http.FORBIDDEN),
    (NotFound, http.NOT_FOUND),
    (NotAcceptable, http.NOT_ACCEPTABLE),
    (Conflict, http.CONFLICT),
    (StoreUnavailable, http.SERVICE_UNAVAILABLE),
)

_log = Logger(namespace="packagemanager")


def status_for(error: PackageManagerError) -> int:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return http.INTERNAL_SERVER_ERROR


def reason(message: str) -> bytes:
    # twine and curl print the reason phrase, so the message goes there too;
    # it must be one line of printable ASCII.
    line = "".join(c if " " <= c < "\x7f" else " " for c in message)
    return line[:300].encode("ascii")


def json_body(request: Request, value: Any, code: int = http.OK,
              phrase: bytes | None = None) -> bytes:
    request.setResponseCode(code, phrase)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value, indent=2).encode() + b"\n"


def domain_error(self: Any, request: Any, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, PackageManagerError)
    code = status_for(error)
    if code == http.INTERNAL_SERVER_ERROR:
        _log.failure("request failed", failure)
    phrase = reason(error.message)
    if code == http.UNAUTHORIZED:
        request.setHeader(b"www-authenticate", b'Basic realm="packagemanager"')
    request.setHeader(b"x-content-type-options", b"nosniff")
    path = request.path or b""
    if path.startswith(b"/__api__/"):
        return json_body(request, {"error": error.message, "code": code}, code, phrase)
    request.setResponseCode(code, phrase)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"{code} {error.message}\n".encode()


def unexpected_error(self: Any, request: Any, failure: Failure) -> bytes:
    if failure.check(HTTPException):
        # Klein's own routing answers (404, 405, slash redirects).
        failure.raiseException()
    _log.failure("unhandled error in {uri}", failure, uri=request.uri)
    request.setResponseCode(http.INTERNAL_SERVER_ERROR, b"Internal server error")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return b"500 Internal server error: see the server log\n"


def share_error_handlers(app: Klein) -> None:
    app.handle_errors(PackageManagerError)(domain_error)
    app.handle_errors(Exception)(unexpected_error)


def arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def accept(request: Request) -> str | None:
    value = request.getHeader(b"accept")
    return value.decode("latin-1") if value else None
