"""The access log, with credentials taken out of every line.

Twisted's ``Site`` logs each request line, referrer and user agent; it never
logs the ``Authorization`` header, which is where pip, uv, R and twine put a
token. A token can still reach a line: a URL with ``?token=...``, an absolute
request URI with ``user:password@`` (as a proxy sends it), or a referrer that
carried one. Every line goes through :func:`redact` before it is written.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.http import combinedLogFormatter

MASK = "***"

# A JWT (our tokens), wherever it appears: base64url header "{"..., payload, signature.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# A query parameter whose (percent-decoded) name says it holds a secret.
_SECRET_NAME = re.compile(r"token|passw|pwd|secret|auth|key|jwt|credential|signature|sig$",
                          re.IGNORECASE)
_PARAMETER = re.compile(r"([?&;])([^=&;?#\s\"]*)=([^&;#\s\"]*)")
# user:password@ in a URL's authority.
_USERINFO = re.compile(r"(://[^/?#\s\"@:]*):[^/?#\s\"@]*@")


def _percent_decoded(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if _SECRET_NAME.search(_percent_decoded(name)):
        value = MASK
    return f"{separator}{name}={value}"


def redact(line: str) -> str:
    """``line`` with JWTs, secret-named query values and URL passwords replaced by ***."""
    line = _USERINFO.sub(rf"\1:{MASK}@", line)
    line = _PARAMETER.sub(_parameter, line)
    return _JWT.sub(MASK, line)


def redacted_log_formatter(timestamp: str, request: Any) -> str:
    """``Site(logFormatter=...)``: the combined log format, redacted."""
    return redact(combinedLogFormatter(timestamp, request))
