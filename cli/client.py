"""The JSON API client behind ``rspm``, on the standard library alone.

The CLI ships as a zipapp for a stock Python 3.9+, so this module uses
``http.client`` rather than an HTTP library: one kept-alive connection per
command, over the server's admin unix socket or over HTTP(S) with a token.
The connection factory is injectable, so tests can point the client anywhere.

Every failure becomes a :class:`CliError` whose message is one line fit to
show as is; nothing here prints a traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pm import __version__

__all__ = [
    "STATUS_PATH",
    "ApiClient",
    "ApiError",
    "CliError",
    "Target",
    "UnixHTTPConnection",
    "check_address",
    "connection_factory",
    "segment",
]

CONNECT_TIMEOUT = 30.0
# Once connected, how long to wait for the server: an upload's answer comes
# after the server has stored and indexed the whole file.
READ_TIMEOUT = 300.0
STATUS_PATH = "/__api__/status"
TLS_HINT = ("set SSL_CERT_FILE to a CA bundle that signs the server's certificate, "
            "or use --insecure-ssl-skip-verify")

ConnectionFactory = Callable[[], http.client.HTTPConnection]


class CliError(Exception):
    """A failure to report to the user as one line, with a non-zero exit."""


class ApiError(CliError):
    """The server answered with an error status; the message is its reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the server's local admin socket."""

    def __init__(self, socket_path: str, timeout: float = CONNECT_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Target:
    """Where the server is: a unix socket path, or an address and a token."""

    socket: Path | None = None
    address: str | None = None
    token: str | None = None

    def describe(self) -> str:
        if self.socket is not None:
            return f"the admin socket {self.socket}"
        return f"{self.address}"

    def base_path(self) -> str:
        """The address's path prefix (a server behind a proxy at /pm), without the last '/'."""
        if self.address is None:
            return ""
        return urlsplit(self.address).path.rstrip("/")


def check_address(address: str) -> None:
    """Raise CliError unless ``address`` is an http(s) URL with a host and a valid port."""
    parts = urlsplit(address)
    try:
        parts.port  # noqa: B018 - evaluating it is the check
    except ValueError:
        raise CliError(f"the address {address!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"the address {address!r} must look like https://host[:port]")


def connection_factory(target: Target, *, insecure: bool = False) -> ConnectionFactory:
    """Makes unconnected connections to ``target``; ``insecure`` skips TLS verification."""
    if target.socket is not None:
        path = str(target.socket)
        return lambda: UnixHTTPConnection(path)
    assert target.address is not None
    check_address(target.address)
    parts = urlsplit(target.address)
    host = parts.hostname or ""
    port = parts.port
    if parts.scheme == "https":
        # Honours SSL_CERT_FILE and SSL_CERT_DIR, as OpenSSL's default paths do.
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return lambda: http.client.HTTPSConnection(
            host, port, timeout=CONNECT_TIMEOUT, context=context)
    return lambda: http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)


def segment(value: str) -> str:
    """``value`` quoted to be one segment of a URL path."""
    return quote(value, safe="")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    text = (error.strerror if isinstance(error, OSError) else None) or str(error).strip()
    return text.rstrip(".") or type(error).__name__


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


_NOT_JSON = object()


def _loads(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_JSON


class ApiClient:
    """Requests to one server over one kept-alive connection; close() when done.

    ``notice`` receives the lines meant for stderr (``verbose`` request lines,
    the version warning), so a progress bar can print them above itself.
    """

    def __init__(
        self,
        target: Target,
        connect: ConnectionFactory | None = None,
        *,
        verbose: bool = False,
        notice: Callable[[str], None] = _stderr,
        client_version: str = __version__,
    ) -> None:
        self.target = target
        self.notice = notice
        self._connect = connect or connection_factory(target)
        self._verbose = verbose
        self._client_version = client_version
        self._base = target.base_path()
        self._conn: http.client.HTTPConnection | None = None
        self._version_checked = False

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, body: Any = None,
                params: Mapping[str, str] | None = None) -> Any:
        """Send a JSON request; return the decoded answer or raise CliError."""
        if params:
            path = f"{path}?{urlencode(params)}"
        data = b"" if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        return self.send(method, path, headers, len(data), lambda: [data] if data else [])

    def send(self, method: str, path: str, headers: Mapping[str, str], length: int,
             chunks: Callable[[], Iterable[bytes]]) -> Any:
        """Send a body of ``length`` bytes, streamed from ``chunks()``; return the JSON answer.

        ``chunks`` is called once per attempt: a kept-alive connection the
        server has closed in the meantime is retried once on a new one.
        """
        status, reason, raw, headers_in = self._exchange(method, path, headers, length, chunks)
        value = _loads(raw)
        if not self._version_checked:
            self._version_checked = True
            self._check_version(value if path == STATUS_PATH and status == 200 else None)
        if 300 <= status < 400:
            location = headers_in.get("Location", "")
            raise ApiError(f"the server answered {status} {reason}, pointing to {location!r}: "
                           "use that address", status)
        if status >= 400:
            message = value.get("error") if isinstance(value, dict) else None
            message = str(message or f"the server answered {status} {reason}")
            if status == 401 and self.target.token:
                message = f"the server refused the token: {message}"
            raise ApiError(message, status)
        if value is _NOT_JSON:
            raise CliError(f"{self.target.describe()} answered {status} with something that "
                           "is not JSON: is it a Package Manager server?")
        return value

    def close(self) -> None:
        self._drop()

    # The connection ----------------------------------------------------------

    def _open(self) -> http.client.HTTPConnection:
        if self._conn is not None:
            return self._conn
        conn = self._connect()
        where = self.target.describe()
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise CliError(f"TLS verification of {where} failed ({e.verify_message}); "
                           f"{TLS_HINT}") from None
        except ssl.SSLError as e:
            conn.close()
            raise CliError(f"TLS handshake with {where} failed ({e.reason or e}): "
                           "does the server speak HTTPS on that port?") from None
        except OSError as e:
            conn.close()
            hint = ("is the Package Manager server running?" if self.target.socket is not None
                    else "check --address (or PACKAGEMANAGER_ADDRESS) and that the server "
                         "is running")
            raise CliError(f"cannot reach the server at {where} ({_reason(e)}); {hint}") from None
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(
        self, method: str, path: str, headers: Mapping[str, str], length: int,
        chunks: Callable[[], Iterable[bytes]],
    ) -> tuple[int, str, bytes, http.client.HTTPMessage]:
        url = self._base + path
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._open()
            try:
                conn.putrequest(method, url, skip_accept_encoding=True)
                for name, value in self._headers(headers, method, length):
                    conn.putheader(name, value)
                conn.endheaders()
                for chunk in chunks():
                    conn.send(chunk)
                response = conn.getresponse()
                raw = response.read()
            except ConnectionError as e:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise CliError(f"the connection to {self.target.describe()} was lost during "
                               f"{method} {path} ({_reason(e)})") from None
            except socket.timeout:
                self._drop()
                raise CliError(f"no answer from {self.target.describe()} to {method} {path} "
                               f"within {READ_TIMEOUT:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                raise CliError(f"the request {method} {path} to {self.target.describe()} "
                               f"failed ({_reason(e)})") from None
            except BaseException:
                # Part of a request went out: the connection cannot carry another.
                self._drop()
                raise
            if response.will_close:
                self._drop()
            if self._verbose:
                self.notice(f"{method} {self._display(url)} -> {response.status} "
                            f"{response.reason}")
            return response.status, response.reason, raw, response.headers
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _headers(self, extra: Mapping[str, str], method: str,
                 length: int) -> list[tuple[str, str]]:
        headers = [("Accept", "application/json"),
                   ("User-Agent", f"rspm/{self._client_version}")]
        if self.target.token:
            headers.append(("Authorization", f"Bearer {self.target.token}"))
        if length or method not in ("GET", "HEAD"):
            headers.append(("Content-Length", str(length)))
        headers.extend(extra.items())
        return headers

    def _display(self, url: str) -> str:
        if self.target.socket is not None:
            return f"{url} on {self.target.socket}"
        parts = urlsplit(self.target.address or "")
        return f"{parts.scheme}://{parts.netloc}{url}"

    def _check_version(self, status: Any) -> None:
        """Warn once if the server's major.minor differs from ours; silent if unknowable."""
        if status is None:
            try:
                code, _, raw, _ = self._exchange("GET", STATUS_PATH, {}, 0, lambda: ())
            except CliError:
                return
            status = _loads(raw) if code == 200 else None
        server = status.get("version") if isinstance(status, dict) else None
        if isinstance(server, str) and _minor(server) != _minor(self._client_version):
            self.notice(f"Warning: the server runs Package Manager {server} and this rspm is "
                        f"{self._client_version}; commands may fail or behave differently "
                        "until their versions match")
