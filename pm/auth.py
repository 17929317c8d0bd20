"""Who is asking: the local administrator on the unix socket, or a token's grant.

Signature, algorithm, audience and expiry are checked by ``pm.tokens``; this
adds what needs the database: the token's row must exist and not be revoked.
The row is read on every request (no cache), so a revocation made by any node
sharing the database takes effect at once.

:class:`RepoReaders` decides who may read an authenticated repo: pip, uv and R
send the token as HTTP Basic with the user ``__token__`` (or as Bearer); the
index, the files and the UI's pages of such a repo all ask it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from pm.catalog import Repo, Source
from pm.errors import Forbidden, Unauthorized
from pm.tokens import TokenAuthority, TokenClaims, token_fingerprint, token_from_headers
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

    def can_read_repo(self, repo: Repo) -> bool:
        """Anyone reads a repo that is not authenticated; an authenticated one needs a
        repos:read grant naming it (or all repos), or global:admin."""
        return not repo.authenticated or self.claims is None \
            or self.claims.grant.covers_repo(repo.guid)

    def require_repo_read(self, repo: Repo) -> None:
        if not self.can_read_repo(repo):
            raise Forbidden(f"the token does not allow reading repo '{repo.name}': it needs "
                            "a repos:read token for it")


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


class RepoReaders:
    """Checks the credentials of a request for an authenticated repo.

    A repo that is not authenticated is read by anyone, and whatever credentials
    come with the request are not even looked at: pip and uv send a netrc's
    password to every URL of the host, and a stale one must not break the repos
    that need none.
    """

    def __init__(self, tokens: TokenChecker) -> None:
        self._tokens = tokens

    async def require_read(self, repo: Repo, authorization: bytes | None, *,
                           local: bool) -> None:
        """Return if the caller may read ``repo``; Unauthorized (401) without valid
        credentials, Forbidden (403) with a token that does not cover it."""
        if not repo.authenticated or local:
            return
        token = token_from_headers(authorization)
        if token is None:
            self._tokens.require_enabled()
            raise Unauthorized(
                f"repo '{repo.name}' requires authentication: send a repos:read token as the "
                "password of the user __token__ (HTTP Basic) or as 'Authorization: Bearer'")
        principal = await self._tokens.check(token)
        principal.require_repo_read(repo)

    async def readable(self, repos: Sequence[Repo], authorization: bytes | None, *,
                       local: bool) -> list[Repo]:
        """The repos of ``repos`` the caller may read. Credentials that are not valid
        count as none: a visitor of a page that lists repos is shown the public ones."""
        if local or not any(r.authenticated for r in repos):
            return list(repos)
        principal: Principal | None = None
        try:
            token = token_from_headers(authorization)
            if token is not None:
                principal = await self._tokens.check(token)
        except Unauthorized:
            principal = None
        return [r for r in repos
                if not r.authenticated or (principal is not None and principal.can_read_repo(r))]
