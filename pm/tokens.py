"""API tokens for remote publishing.

Tokens are HS256 JWTs minted by ``rspm create token`` and presented by twine
(HTTP Basic, user ``__token__``) or curl (``Authorization: Bearer``). The
signature proves the server minted the token; revocation and the existence of
the sources or repos it names are checked by the caller against the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import secrets
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from pm.errors import BadRequest, Unauthorized

SCOPES = ("sources:write", "repos:read", "global:admin")
AUDIENCE = "packagemanager"
ALGORITHM = "HS256"
KEY_BYTES = 32

# Beyond this a duration is surely a typo, and a huge one would overflow the
# float conversion; "never" is the honest way to ask for no expiry.
MAX_EXPIRES_SECONDS = 100 * 366 * 86400

_SCOPE_CLAIM_KEYS = {"sources:write": "sources", "repos:read": "repos"}
_CLAIM_KEY_SCOPES = {value: key for key, value in _SCOPE_CLAIM_KEYS.items()}
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EXPIRES_RE = re.compile(r"([0-9]+)([smhd])")
_TOKEN_USERNAME = "__token__"

_MALFORMED = "malformed token"
_BAD_SCOPES = "token scopes are invalid"
_BAD_HEADER = "malformed Authorization header"


def parse_scope(text: str) -> str:
    """Validate a ``--scope`` value."""
    if text not in SCOPES:
        raise BadRequest(f"unknown scope '{text}' (valid: {', '.join(SCOPES)})")
    return text


def parse_expires(text: str) -> float | None:
    """Turn an ``--expires`` value into seconds; ``None`` means the token never expires."""
    if text == "never":
        return None
    match = _EXPIRES_RE.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise BadRequest(f"invalid --expires '{text}': use <n>s, <n>m, <n>h, <n>d or never")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_EXPIRES_SECONDS:
        raise BadRequest(f"invalid --expires '{text}': at most 100 years; use never instead")
    return float(seconds)


@dataclass(frozen=True)
class Grant:
    """What a token allows; the store records the same value.

    ``targets`` holds source GUIDs (``sources:write``) or repo GUIDs
    (``repos:read``); ``None`` means all of them; it is ``()`` for
    ``global:admin``.
    """

    scope: str
    targets: tuple[str, ...] | None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}")
        if self.scope == "global:admin":
            if self.targets != ():
                raise ValueError("a global:admin grant takes no targets")
            return
        if self.targets is None:
            return
        # An empty tuple would read as "nothing" here but as "everything" to
        # anyone who confuses it with None; "*" inside a list is ambiguous the
        # same way. Refusing both keeps the token's meaning unmistakable.
        if not isinstance(self.targets, tuple) or not self.targets:
            raise ValueError(f"a {self.scope} grant needs None (all) or a non-empty tuple")
        for target in self.targets:
            if not isinstance(target, str) or not target or target == "*":
                raise ValueError(f"invalid {self.scope} target {target!r}")

    @property
    def is_admin(self) -> bool:
        return self.scope == "global:admin"

    def covers_source(self, source_guid: str) -> bool:
        """True if the grant allows publishing to that source."""
        return self._covers("sources:write", source_guid)

    def covers_repo(self, repo_guid: str) -> bool:
        """True if the grant allows reading that repo."""
        return self._covers("repos:read", repo_guid)

    def _covers(self, scope: str, guid: str) -> bool:
        if self.is_admin:
            return True
        if self.scope != scope:
            return False
        return self.targets is None or guid in self.targets


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    guid: str
    grant: Grant
    issued_at: float
    expires_at: float | None


def generate_key() -> bytes:
    """A fresh random signing key."""
    return secrets.token_bytes(KEY_BYTES)


def load_or_create_key(path: Path) -> bytes:
    """Read the signing key from ``path``, creating it (mode 0600) if it does not exist.

    Creation goes through a private temporary file and a hard link, so when
    several processes start at once exactly one key wins and every process
    reads that one; a reader never sees a half-written file.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = generate_key()
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        try:
            # The umask may only narrow the mode, but an odd one could drop
            # the owner's read bit and make the key unreadable to ourselves.
            os.fchmod(fd, 0o600)
            os.write(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_key(path)
        _fsync_directory(path.parent)
    finally:
        temp.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"token key file {path} is not a regular file")
        # Whoever can read the key can mint admin tokens, and whoever can
        # write it can swap in a key of their own: both must be refused.
        if info.st_mode & 0o077:
            raise PermissionError(
                f"token key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 on it"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(4096)
    finally:
        os.close(fd)
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < KEY_BYTES:
        # The content is deliberately not quoted: it may be a real key.
        raise ValueError(
            f"token key file {path} is malformed: expected at least {KEY_BYTES} bytes as hex"
        )
    return key


def _fsync_directory(directory: Path) -> None:
    # Makes the new link survive a crash; some filesystems cannot open a
    # directory for this, and the key is then merely less durable.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class TokenAuthority:
    """Mints and verifies tokens with one key."""

    def __init__(self, key: bytes, issuer: str, clock: Callable[[], float]) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"token key must be at least {KEY_BYTES} bytes")
        self._key = key
        self._issuer = issuer.rstrip("/") + "/"
        self._clock = clock

    def mint(self, grant: Grant, *, guid: str, expires_in: float | None) -> tuple[str, TokenClaims]:
        """Sign a token for ``grant``; returns it with the claims ``verify`` will report."""
        if not _is_canonical_uuid(guid):
            raise ValueError(f"token guid must be a lowercase UUID string, not {guid!r}")
        issued_at = int(self._clock())
        expires_at: int | None = None
        if expires_in is not None:
            if not math.isfinite(expires_in) or expires_in <= 0:
                raise ValueError(f"expires_in must be positive and finite, not {expires_in!r}")
            # Rounding up keeps a sub-second lifetime from expiring at birth.
            expires_at = issued_at + math.ceil(expires_in)
        payload: dict[str, Any] = {
            "aud": AUDIENCE,
            "iss": self._issuer,
            "iat": issued_at,
        }
        if expires_at is not None:
            payload["exp"] = expires_at
        payload["jti"] = guid
        payload["scopes"] = _scopes_claim(grant)
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        claims = TokenClaims(
            guid=guid,
            grant=grant,
            issued_at=float(issued_at),
            expires_at=None if expires_at is None else float(expires_at),
        )
        return token, claims

    def verify(self, token: str, *, any_time: bool = False) -> TokenClaims:
        """Check a presented token; raises ``Unauthorized`` with a reason that never quotes it.

        ``any_time`` skips the expiry and not-before checks: to name a token
        (to revoke it) it need only be ours, not valid now.
        """
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={
                    "require": ["aud", "iat", "jti", "scopes"],
                    "strict_aud": True,
                    # PyJWT reads the wall clock; time claims are checked
                    # below against the injected one instead.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    # One key may serve several addresses of the same server.
                    "verify_iss": False,
                },
            )
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("token algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            reason = {"aud": "token audience is invalid", "scopes": _BAD_SCOPES}
            raise Unauthorized(reason.get(exc.claim, _MALFORMED)) from None
        except jwt.PyJWTError:
            raise Unauthorized(_MALFORMED) from None
        return self._check_payload(payload, any_time)

    def _check_payload(self, payload: dict[str, Any], any_time: bool) -> TokenClaims:
        now = self._clock()
        issued_at = payload["iat"]
        if not _is_int(issued_at):
            raise Unauthorized(_MALFORMED)
        if "iss" in payload and not isinstance(payload["iss"], str):
            raise Unauthorized(_MALFORMED)
        if "nbf" in payload:
            not_before = payload["nbf"]
            if not _is_int(not_before):
                raise Unauthorized(_MALFORMED)
            if not_before > now and not any_time:
                raise Unauthorized("token is not yet valid")
        expires_at = payload.get("exp")
        if expires_at is not None:
            if not _is_int(expires_at):
                raise Unauthorized(_MALFORMED)
            if expires_at <= now and not any_time:
                raise Unauthorized("token has expired")
        guid = payload["jti"]
        # The GUID is the key of the revocation lookup, so only the one
        # spelling the server mints is accepted.
        if not isinstance(guid, str) or not _is_canonical_uuid(guid):
            raise Unauthorized(_MALFORMED)
        grant = _grant_from_claim(payload["scopes"])
        return TokenClaims(
            guid=guid,
            grant=grant,
            issued_at=float(issued_at),
            expires_at=None if expires_at is None else float(expires_at),
        )


def _scopes_claim(grant: Grant) -> dict[str, Any]:
    if grant.is_admin:
        return {"global": "admin"}
    key = _SCOPE_CLAIM_KEYS[grant.scope]
    if grant.targets is None:
        return {key: "*"}
    if len(grant.targets) == 1:
        return {key: grant.targets[0]}
    return {key: list(grant.targets)}


def _grant_from_claim(scopes: Any) -> Grant:
    if not isinstance(scopes, dict) or len(scopes) != 1:
        raise Unauthorized(_BAD_SCOPES)
    ((key, value),) = scopes.items()
    if key == "global":
        if value != "admin":
            raise Unauthorized(_BAD_SCOPES)
        return Grant("global:admin", ())
    scope = _CLAIM_KEY_SCOPES.get(key)
    if scope is None:
        raise Unauthorized(_BAD_SCOPES)
    targets: tuple[str, ...] | None
    if value == "*":
        targets = None
    elif isinstance(value, str):
        targets = (value,)
    elif isinstance(value, list):
        targets = tuple(value)
    else:
        raise Unauthorized(_BAD_SCOPES)
    try:
        return Grant(scope, targets)
    except ValueError:
        raise Unauthorized(_BAD_SCOPES) from None


def _is_int(value: Any) -> bool:
    # JSON true/false decode to bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def token_from_headers(authorization: bytes | None) -> str | None:
    """Extract the token from an ``Authorization`` header value.

    Accepts ``Bearer <token>`` (curl) and ``Basic`` with user ``__token__``
    (twine); returns ``None`` when no credentials were sent.
    """
    if authorization is None:
        return None
    try:
        header = authorization.decode("ascii").strip()
    except UnicodeDecodeError:
        raise Unauthorized(_BAD_HEADER) from None
    if not header:
        return None
    parts = header.split()
    if len(parts) != 2:
        raise Unauthorized(_BAD_HEADER)
    scheme, credentials = parts
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials
    if scheme != "basic":
        raise Unauthorized("unsupported Authorization scheme: use Bearer or Basic")
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthorized(_BAD_HEADER) from None
    user, separator, password = decoded.partition(":")
    if not separator:
        raise Unauthorized(_BAD_HEADER)
    if user != _TOKEN_USERNAME:
        raise Unauthorized("use the username __token__ with an API token as the password")
    if not password:
        raise Unauthorized(_BAD_HEADER)
    return password


def token_fingerprint(token: str) -> str:
    """A short digest that identifies a token in logs without revealing it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]
