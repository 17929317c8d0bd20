"""Who is asking: the local administrator on the unix socket, or a token's grant.

Signature, algorithm, audience and expiry are checked by ``pm.tokens``; this
adds what needs the database: the token's row must exist and not be revoked.
The row is read on every request (no cache), so a revocation made by any node
sharing the database takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

from pm.catalog import Source
from pm.errors import Forbidden, Unauthorized
from pm.tokens import TokenAuthority, TokenClaims, token_fingerprint
from pm.tokenstore import TokenStore

TOKENS_DISABLED = (
    "API tokens are disabled on this server; set [Authentication] APITokenAuth = true "
    "in the server's configuration file and restart it"
)

# last_used_at is informational; writing it at most this often keeps a busy
# CI from turning every download into a database write.
_TOUCH_INTERVAL = 60.0


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: ``claims`` is None for the local administrator."""

    claims: TokenClaims | None

    @property
    def is_admin(self) -> bool:
        return self.claims is None or self.claims.grant.is_admin

    @property
    def actor(self) -> str:
        return "local-admin" if self.claims is None else f"token:{self.claims.guid}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this action needs the global:admin scope")

    def require_source_write(self, source: Source) -> None:
        if self.claims is not None and not self.claims.grant.covers_source(source.guid):
            raise Forbidden(f"the token does not allow publishing to source '{source.name}'")


LOCAL_ADMIN = Principal(None)


class TokenChecker:
    """Turns an ``Authorization`` header into a :class:`Principal`."""

    log = Logger()

    def __init__(
        self,
        authority: TokenAuthority | None,
        store: TokenStore,
        clock: Callable[[], float],
    ) -> None:
        # authority is None when [Authentication] APITokenAuth is off.
        self.authority = authority
        self._store = store
        self._clock = clock
        self._touched: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.authority is not None

    def require_enabled(self) -> TokenAuthority:
        if self.authority is None:
            raise Unauthorized(TOKENS_DISABLED)
        return self.authority

    async def check(self, token: str) -> Principal:
        authority = self.require_enabled()
        claims = authority.verify(token)
        record = await self._store.get_token(claims.guid)
        if record is None:
            self.log.info("refused unknown token {fp}", fp=token_fingerprint(token))
            raise Unauthorized("token is not known to this server")
        if record.revoked_at is not None:
            self.log.info("refused revoked token {guid}", guid=claims.guid)
            raise Unauthorized("token has been revoked")
        now = self._clock()
        if now - self._touched.get(claims.guid, 0.0) >= _TOUCH_INTERVAL:
            self._touched[claims.guid] = now
            await self._store.touch_token(claims.guid, now)
        return Principal(claims)
