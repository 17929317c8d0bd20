"""The JSON API client behind ``rspm``: over the admin socket or over HTTP.

The HTTP client (a treq ``HTTPClient``) is injected, so the same code talks to
the local socket, to a remote server with a token, or to a test double.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import treq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.web.client import Agent, ResponseFailed
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

T = TypeVar("T")


class CliError(Exception):
    """A failure to report to the user as one line, with a non-zero exit."""


@implementer(IAgentEndpointFactory)
@dataclass(frozen=True)
class _UnixEndpoints:
    reactor: Any
    path: str

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=10)


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


class ApiClient:
    def __init__(self, http: Any, target: Target) -> None:
        self._http = http
        self._target = target
        self._base = "http://localhost" if target.socket is not None \
            else (target.address or "").rstrip("/")

    @classmethod
    def for_target(cls, reactor: Any, target: Target) -> ApiClient:
        if target.socket is not None:
            agent = Agent.usingEndpointFactory(reactor, _UnixEndpoints(reactor, str(target.socket)))
        else:
            agent = Agent(reactor, connectTimeout=30)
        return cls(treq.client.HTTPClient(agent), target)

    async def request(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        url = self._base + path + (f"?{urlencode(params)}" if params else "")
        headers = {b"accept": [b"application/json"]}
        if self._target.token:
            headers[b"authorization"] = [f"Bearer {self._target.token}".encode()]
        data = None
        if body is not None:
            headers[b"content-type"] = [b"application/json"]
            data = json.dumps(body).encode()
        try:
            response = await self._http.request(method, url, headers=headers, data=data)
            raw = await response.content()
        except (ConnectError, ConnectionRefusedError, DNSLookupError, ResponseFailed) as e:
            hint = "is the Package Manager server running?" if self._target.socket \
                else "check PACKAGEMANAGER_ADDRESS and that the server is running"
            reason = _reason(e)
            raise CliError(
                f"cannot reach the server at {self._target.describe()} ({reason}); {hint}"
            ) from None
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = None
        if response.code >= 400:
            message = value.get("error") if isinstance(value, dict) else None
            raise CliError(message or f"the server answered {response.code} {response.phrase!r}")
        return value

    def get(self, path: str, params: dict[str, str] | None = None) -> Awaitable[Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Awaitable[Any]:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Awaitable[Any]:
        return self.request("DELETE", path)


def _reason(error: BaseException) -> str:
    if isinstance(error, ResponseFailed) and error.reasons:
        return str(error.reasons[0].value) or type(error.reasons[0].value).__name__
    text = str(error).strip()
    return text.rstrip(".") or type(error).__name__


def run(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run one coroutine on the reactor and return its result (once per process)."""
    from twisted.internet import reactor as installed

    reactor: Any = installed
    outcome: list[Any] = []

    async def main() -> None:
        try:
            outcome.append(("ok", await work(reactor)))
        except BaseException as e:  # handed back to the caller's thread of control
            outcome.append(("error", e))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(main()))
    reactor.run(installSignalHandlers=True)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    result: T = value
    return result
