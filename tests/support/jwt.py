"""Reading and hand-crafting JWTs, so tests can inspect and forge tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a JWT, without checking the signature."""
    header, payload, _signature = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(payload))


def hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A JWT signed with ``key`` (so tests can forge with a key of their own)."""
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    )
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
