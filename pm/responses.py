"""HTTP status codes for domain exceptions, and the error answers every app shares.

This is the one place a failure's status is chosen. Each Klein app of the web
layer (the admin API, the repos, the UI) calls :func:`share_error_handlers`,
so an error looks the same whichever app raised it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import NotFound as NotFoundRoute

from pm.accesslog import redact
from pm.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PackageManagerError,
    RetryLater,
    ServerBusy,
    StoreUnavailable,
    TooLarge,
    TooManyUploads,
    Unauthorized,
)

# RFC 6585's code, which twisted.web.http does not name.
TOO_MANY_REQUESTS = 429


class NotAcceptable(PackageManagerError):
    """No representation the client accepts."""


_STATUS: tuple[tuple[type[PackageManagerError], int], ...] = (
    (TooLarge, http.REQUEST_ENTITY_TOO_LARGE),
    (BadRequest, http.BAD_REQUEST),
    (Unauthorized, http.UNAUTHORIZED),
    (Forbidden, http.FORBIDDEN),
    (NotFound, http.NOT_FOUND),
    (NotAcceptable, http.NOT_ACCEPTABLE),
    (Conflict, http.CONFLICT),
    (StoreUnavailable, http.SERVICE_UNAVAILABLE),
    (ServerBusy, http.SERVICE_UNAVAILABLE),
    (TooManyUploads, TOO_MANY_REQUESTS),
    (InsufficientStorage, http.INSUFFICIENT_STORAGE_SPACE),
)

_log = Logger(namespace="packagemanager")

# Every HTML page the server renders (the UI and error pages) sends these. The
# policy allows no script at all, inline or not: the pages need none, and text
# from uploaded metadata that escaped escaping still cannot run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HTML_HEADERS = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)

# An error page for a browser: (the app instance, request, status, message) -> body.
# The UI passes its own; every other app gets the plain one below.
HtmlErrorPage = Callable[[Any, Request, int, str], bytes]


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


def set_html_headers(request: Request) -> None:
    for name, value in HTML_HEADERS:
        request.setHeader(name, value)


def wants_html(request: Request) -> bool:
    """Whether the client is a browser: outside the API, text/html is its first choice.

    pip and uv list text/html after their own types, curl and twine send */*;
    they keep the plain-text answers.
    """
    if (request.path or b"").startswith(b"/__api__/"):
        return False
    best, best_q = None, 0.0
    for item in (accept(request) or "").split(","):
        media, *params = (p.strip().lower() for p in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > best_q:
            best, best_q = media, quality
    return best in ("text/html", "application/xhtml+xml")


_TITLES = {http.NOT_FOUND: "Not found", http.INTERNAL_SERVER_ERROR: "Server error"}


def plain_error_page(owner: Any, request: Request, code: int, message: str) -> bytes:
    """A small error page with the UI's stylesheet, for apps that have no page of their own."""
    title = html.escape(f"{code} {_TITLES.get(code, 'Error')}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{title} - Package Manager</title>'
        '<link rel="stylesheet" href="/static/ui.css"><link rel="icon" href="data:,">'
        '</head><body>'
        '<header class="top"><a class="brand" href="/">Package Manager</a></header>'
        f'<main id="content" class="error"><h1>{title}</h1><p>{html.escape(message)}</p>'
        '<p><a href="/">All repositories</a></p>'
        '<form class="search big" role="search" action="/search" method="get">'
        '<label for="error-q">Search for a package</label><div class="row">'
        '<input id="error-q" type="search" name="q" maxlength="200">'
        '<button type="submit">Search</button></div></form></main></body></html>\n'
    ).encode()


def _html_answer(page: HtmlErrorPage, owner: Any, request: Request, code: int,
                 message: str) -> bytes:
    set_html_headers(request)
    return page(owner, request, code, message)


def domain_error(self: Any, request: Any, failure: Failure,
                 html_page: HtmlErrorPage = plain_error_page) -> bytes:
    error = failure.value
    assert isinstance(error, PackageManagerError)
    code = status_for(error)
    if code == http.INTERNAL_SERVER_ERROR:
        _log.failure("request failed", failure)
    phrase = reason(error.message)
    if code == http.UNAUTHORIZED:
        request.setHeader(b"www-authenticate", b'Basic realm="packagemanager"')
    if isinstance(error, RetryLater):
        request.setHeader(b"retry-after", str(error.retry_after).encode())
    request.setHeader(b"x-content-type-options", b"nosniff")
    path = request.path or b""
    if path.startswith(b"/__api__/"):
        return json_body(request, {"error": error.message, "code": code}, code, phrase)
    request.setResponseCode(code, phrase)
    if wants_html(request):
        return _html_answer(html_page, self, request, code, error.message)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"{code} {error.message}\n".encode()


def unexpected_error(self: Any, request: Any, failure: Failure,
                     html_page: HtmlErrorPage = plain_error_page) -> bytes:
    if failure.check(HTTPException):
        # Klein's own routing answers (404, 405, slash redirects); a browser
        # asking for a page that no route has gets a page that says so.
        if failure.check(NotFoundRoute) and wants_html(request):
            request.setResponseCode(http.NOT_FOUND, b"Not found")
            path = (request.path or b"").decode("utf-8", "replace")[:200]
            return _html_answer(html_page, self, request, http.NOT_FOUND,
                                f"There is no page at {path}.")
        failure.raiseException()
    _log.failure("unhandled error in {uri}", failure,
                 uri=redact((request.uri or b"").decode("latin-1")))
    request.setResponseCode(http.INTERNAL_SERVER_ERROR, b"Internal server error")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if wants_html(request):
        return _html_answer(html_page, self, request, http.INTERNAL_SERVER_ERROR,
                            "Something went wrong on the server; its log says what.")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"500 Internal server error: see the server log\n"


def share_error_handlers(app: Klein, html_page: HtmlErrorPage = plain_error_page) -> None:
    """Register the shared handlers; ``html_page`` renders what browsers are shown."""

    def on_domain_error(self: Any, request: Any, failure: Failure) -> bytes:
        return domain_error(self, request, failure, html_page)

    def on_unexpected_error(self: Any, request: Any, failure: Failure) -> bytes:
        return unexpected_error(self, request, failure, html_page)

    app.handle_errors(PackageManagerError)(on_domain_error)
    app.handle_errors(Exception)(on_unexpected_error)


def arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def accept(request: Request) -> str | None:
    value = request.getHeader(b"accept")
    return value.decode("latin-1") if value else None
