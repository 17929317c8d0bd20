"""API tokens end to end: the real ``twistd packagemanager``, the real ``rspm`` and curl.

Covers what the seed's "Remote Publishing" page promises: ``rspm create token``
prints a JWT once, ``rspm list tokens`` describes tokens without revealing them,
and every request over HTTP is checked for signature, algorithm, expiry,
revocation and scope, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.jwt import b64url, hs256, segments
from tests.support.packages import build_wheel, multipart_body, upload_fields
from tests.support.server import ServerProcess, wait_for

SOURCE = "local-python-src"
NOTICE = (
    "Generated an access token. Be sure to record this token immediately since you "
    "will not be able to retrieve it later."
)
JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
THIRTY_DAYS = 30 * 86400


# JWT helpers -----------------------------------------------------------------


def flip_signature(token: str) -> str:
    """The token with one character in the middle of its signature changed.

    The last character is avoided: some of its bits are padding, so changing it
    may not change the decoded signature at all.
    """
    head, payload, signature = token.split(".")
    i = len(signature) // 2
    replacement = "A" if signature[i] != "A" else "B"
    return f"{head}.{payload}.{signature[:i]}{replacement}{signature[i + 1:]}"


# rspm helpers ----------------------------------------------------------------


def create_token(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> str:
    token = server.rspm("create", "token", "--quiet", *args, env=env).stdout.strip()
    assert JWT.fullmatch(token), token
    return token


def list_tokens(server: ServerProcess, *args: str,
                env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = json.loads(
        server.rspm("--output-format=json", "list", "tokens", *args, env=env).stdout
    )
    return value


def token_guids(server: ServerProcess, *args: str) -> list[str]:
    return [t["guid"] for t in list_tokens(server, *args)]


def source_guid(server: ServerProcess, name: str) -> str:
    sources = json.loads(server.rspm("--output-format=json", "list", "sources").stdout)
    (guid,) = [s["guid"] for s in sources if s["name"] == name]
    assert isinstance(guid, str)
    return guid


def create_source(server: ServerProcess, name: str) -> str:
    server.rspm("create", "source", f"--name={name}", "--type=local-python")
    return source_guid(server, name)


def guid_of(token: str) -> str:
    jti = segments(token)[1]["jti"]
    assert isinstance(jti, str)
    return jti


def remote_env(server: ServerProcess, token: str) -> dict[str, str]:
    """rspm talking HTTP with ``token``; the config path is broken so the socket cannot be used."""
    env = server.env(PACKAGEMANAGER_ADDRESS=server.address, PACKAGEMANAGER_TOKEN=token)
    env["PACKAGEMANAGER_CONFIG"] = str(server.root / "no-such-config.gcfg")
    return env


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A one-line error on stderr, a non-zero exit, no traceback and nothing on stdout."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stdout == "", result.stdout
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def assert_not_logged(server: ServerProcess, tokens: Iterable[str]) -> None:
    """Neither a token nor its signature part appears in the server's log or its access
    log."""
    log = server.log()
    assert log, "the server log is empty"
    log += server.access_log()
    for token in tokens:
        assert token not in log
        signature = token.split(".")[-1]
        if len(signature) >= 16:
            assert signature not in log


# HTTP with curl -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    code: int
    reason: str
    body: str


@dataclass
class Uploader:
    """POSTs a small valid wheel upload with curl, with whatever Authorization is given."""

    directory: Path
    body_path: Path
    content_type: str

    @classmethod
    def build(cls, directory: Path) -> Uploader:
        directory.mkdir(parents=True, exist_ok=True)
        wheel = build_wheel(directory, "example-package", "1.0.0")
        body, content_type = multipart_body(
            upload_fields(wheel, "example-package", "1.0.0"),
            [("content", wheel.name, wheel.read_bytes())],
        )
        body_path = directory / "upload.body"
        body_path.write_bytes(body)
        return cls(directory, body_path, content_type)

    def send(self, server: ServerProcess, authorization: str | None,
             source: str = SOURCE) -> Reply:
        return curl(self.directory, server.url(f"/upload/pypi/{source}"), authorization,
                    ["-X", "POST", "-H", f"Content-Type: {self.content_type}",
                     "--data-binary", f"@{self.body_path}"])

    def bearer(self, server: ServerProcess, token: str, source: str = SOURCE) -> Reply:
        return self.send(server, f"Bearer {token}", source)

    def basic(self, server: ServerProcess, token: str, source: str = SOURCE,
              user: str = "__token__") -> Reply:
        credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
        return self.send(server, f"Basic {credentials}", source)


def curl(directory: Path, url: str, authorization: str | None,
         extra: list[str] | None = None) -> Reply:
    """One curl request; returns the status code, the reason phrase and the body."""
    headers_path = directory / "curl.headers"
    body_path = directory / "curl.body"
    command = ["curl", "-s", "-o", str(body_path), "-D", str(headers_path),
               "-w", "%{http_code}", *(extra or [])]
    if authorization is not None:
        command += ["-H", f"Authorization: {authorization}"]
    command.append(url)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    status_lines = [line for line in headers_path.read_text("latin-1").splitlines()
                    if line.startswith("HTTP/")]
    parts = status_lines[-1].split(" ", 2)
    return Reply(int(result.stdout), parts[2].strip() if len(parts) > 2 else "",
                 body_path.read_text(errors="replace"))


@pytest.fixture
def uploader(tmp_path: Path) -> Uploader:
    """A ready-made upload body for ``example-package`` 1.0.0 (re-uploading it answers 200)."""
    return Uploader.build(tmp_path / "upload")


@pytest.fixture
def python_server(server: ServerProcess) -> ServerProcess:
    """The running server with the seed's ``local-python-src`` source served by repo ``python``."""
    server.rspm("create", "source", f"--name={SOURCE}", "--type=local-python")
    server.rspm("create", "repo", "--name=python", "--type=python")
    server.rspm("subscribe", "--repo=python", f"--source={SOURCE}")
    return server


# 1. APITokenAuth = false ---------------------------------------------------------


def test_disabled_api_token_auth_refuses_creation_and_every_bearer(
    make_server: type[ServerProcess], provider: str, request: pytest.FixtureRequest,
    uploader: Uploader,
) -> None:
    """With APITokenAuth = false, `rspm create token` names the setting and any token is 401."""
    if provider == "postgres":
        server = make_server(provider="postgres", postgres_url=request.getfixturevalue("pg_url"),
                             api_token_auth=False).start()
    else:
        server = make_server(api_token_auth=False).start()
    assert server.get("/__api__/status").json()["api_token_auth"] is False
    create_source(server, SOURCE)

    result = server.rspm("create", "token", f"--sources={SOURCE}", "--scope=sources:write",
                         check=False)
    assert_clean_failure(result, "[Authentication] APITokenAuth")
    assert NOTICE not in result.stderr
    assert list_tokens(server) == []

    # Tokens that would pass every check but the switch: well-formed claims, any key.
    now = int(time.time())
    claims = {"aud": "packagemanager", "iss": server.address + "/", "iat": now,
              "exp": now + 3600, "jti": str(uuid.uuid4()), "scopes": {"global": "admin"}}
    forged = hs256({"alg": "HS256", "typ": "JWT"}, claims, os.urandom(32))
    for token in (forged, "not-a-jwt"):
        for reply in (uploader.bearer(server, token), uploader.basic(server, token)):
            assert reply.code == 401, reply
            assert "disabled" in reply.reason, reply
        api = curl(uploader.directory, server.url("/__api__/tokens"), f"Bearer {token}")
        assert api.code == 401, api
        assert "APITokenAuth" in json.loads(api.body)["error"]


def test_tokens_minted_before_disabling_are_refused_after_restart(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """A good token stops working once APITokenAuth is switched off and the server restarted."""
    server = python_server
    token = create_token(server, f"--sources={SOURCE}", "--scope=sources:write")
    assert uploader.bearer(server, token).code == 200

    server.stop()
    server.api_token_auth = False
    server.write_config()
    server.start()

    for reply in (uploader.bearer(server, token), uploader.basic(server, token)):
        assert reply.code == 401, reply
        assert "disabled" in reply.reason, reply
    # The token is still listed (locally) and can still be revoked by GUID.
    assert token_guids(server) == [guid_of(token)]
    server.rspm("revoke", "token", f"--guid={guid_of(token)}")
    assert token_guids(server, "--revoked=yes") == [guid_of(token)]
    assert_not_logged(server, [token])


# 2. The seed's command and the JWT it prints ------------------------------------


def test_seed_create_token_command_prints_notice_and_token(server: ServerProcess) -> None:
    """The seed's exact command: notice on stderr, the token alone on stdout, seed-shaped JWT."""
    guid = create_source(server, SOURCE)
    before = time.time()
    result = server.rspm("create", "token", "--description=Local Python token",
                         f"--sources={SOURCE}", "--expires=30d", "--scope=sources:write")
    after = time.time()

    assert NOTICE in result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    token = result.stdout.strip()
    assert JWT.fullmatch(token), token

    header, payload = segments(token)
    assert header["alg"] == "HS256"
    assert header.get("typ", "JWT") == "JWT"
    assert set(payload) == {"aud", "iss", "iat", "exp", "jti", "scopes"}, payload
    assert payload["aud"] == "packagemanager"
    assert payload["iss"] == server.address + "/"
    assert isinstance(payload["iat"], int) and int(before) - 1 <= payload["iat"] <= after + 1
    assert isinstance(payload["exp"], int)
    assert abs(payload["exp"] - payload["iat"] - THIRTY_DAYS) <= 1, payload
    assert str(uuid.UUID(payload["jti"])) == payload["jti"]
    assert payload["scopes"] == {"sources": guid}

    # The jti is the GUID the listing shows, with the seed's description.
    (listed,) = list_tokens(server)
    assert listed["guid"] == payload["jti"]
    assert listed["description"] == "Local Python token"
    assert listed["scope"] == "sources:write"
    assert listed["targets"] == [SOURCE]
    assert listed["expires"] == pytest.approx(payload["exp"], abs=1)


def test_quiet_prints_only_the_token(server: ServerProcess) -> None:
    """`--quiet` prints the token alone on stdout and nothing at all on stderr."""
    create_source(server, SOURCE)
    result = server.rspm("create", "token", "--quiet", "--description=Local Python token",
                         f"--sources={SOURCE}", "--expires=30d", "--scope=sources:write")
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    assert JWT.fullmatch(result.stdout.strip())
    assert segments(result.stdout.strip())[1]["scopes"] == {"sources": source_guid(server, SOURCE)}


def test_token_claims_follow_expires_sources_and_scope(server: ServerProcess) -> None:
    """never drops exp; several sources give a list; '*' stays '*'; global:admin is global."""
    first = create_source(server, "src-a")
    second = create_source(server, "src-b")
    server.rspm("create", "repo", "--name=python", "--type=python")

    never = segments(create_token(server, "--sources=src-a", "--expires=never"))[1]
    assert "exp" not in never
    assert never["scopes"] == {"sources": first}

    default = segments(create_token(server, "--sources=src-a"))[1]
    assert "exp" not in default, "the default lifetime is never"

    several = segments(create_token(server, "--sources=src-a,src-b", "--expires=1h"))[1]
    assert several["scopes"] == {"sources": [first, second]}
    assert abs(several["exp"] - several["iat"] - 3600) <= 1

    everything = segments(create_token(server, "--sources=*", "--scope=sources:write"))[1]
    assert everything["scopes"] == {"sources": "*"}

    admin = segments(create_token(server, "--scope=global:admin"))[1]
    assert admin["scopes"] == {"global": "admin"}

    # Every token has its own jti, and each is listed.
    listed = token_guids(server)
    assert len(listed) == len(set(listed)) == 5
    assert {never["jti"], default["jti"], several["jti"], everything["jti"],
            admin["jti"]} == set(listed)


# 3. Bad input ---------------------------------------------------------------------


BAD_INPUT: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("--sources=local-python-src", "--expires=30x"), ("30x",)),
    (("--sources=local-python-src", "--expires=0d"), ("0d",)),
    (("--sources=local-python-src", "--scope=bogus"), ("bogus",)),
    (("--sources=unknown",), ("unknown",)),
    (("--sources=local-python-src,unknown",), ("unknown",)),
    (("--scope=sources:write",), ("--sources",)),
    (("--sources=*,local-python-src",), ("*",)),
]


def test_bad_create_token_input_fails_cleanly(server: ServerProcess) -> None:
    """Bad --expires, --scope or --sources: non-zero, a clear message, no traceback, no token."""
    create_source(server, SOURCE)
    kept = create_token(server, f"--sources={SOURCE}")
    for args, words in BAD_INPUT:
        result = server.rspm("create", "token", "--description=bad", *args, check=False)
        try:
            assert_clean_failure(result, *words)
            assert NOTICE not in result.stderr
        except AssertionError as e:
            raise AssertionError(f"rspm create token {' '.join(args)}: {e}") from None
        assert token_guids(server) == [guid_of(kept)], args
    assert "Traceback" not in server.log()


# 4. rspm list tokens -----------------------------------------------------------------


def test_list_tokens_describes_tokens_but_never_shows_them(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """Text and JSON listings show GUID, description, scope, targets, dates; never the token."""
    server = python_server
    create_source(server, "other-src")
    writer = create_token(server, "--description=Local Python token", f"--sources={SOURCE}",
                          "--expires=30d", "--scope=sources:write")
    admin = create_token(server, "--description=CI admin", "--scope=global:admin")
    both = create_token(server, "--description=Two sources", f"--sources={SOURCE},other-src")
    revoked = create_token(server, "--description=Gone", f"--sources={SOURCE}")
    server.rspm("revoke", "token", f"--guid={guid_of(revoked)}")
    before_use = time.time()
    assert uploader.bearer(server, writer).code == 200
    tokens = [writer, admin, both, revoked]

    listing = {t["guid"]: t for t in list_tokens(server)}
    assert set(listing) == {guid_of(t) for t in tokens}
    for entry in listing.values():
        assert {"guid", "description", "scope", "targets", "created", "expires", "revoked",
                "last_used"} <= set(entry), entry

    w = listing[guid_of(writer)]
    payload = segments(writer)[1]
    assert (w["description"], w["scope"], w["targets"]) == (
        "Local Python token", "sources:write", [SOURCE])
    assert w["created"] == pytest.approx(payload["iat"], abs=1)
    assert w["expires"] == pytest.approx(payload["exp"], abs=1)
    assert w["revoked"] is None
    assert w["last_used"] is not None and w["last_used"] >= before_use - 1

    a = listing[guid_of(admin)]
    assert (a["description"], a["scope"], a["expires"]) == ("CI admin", "global:admin", None)
    assert a["last_used"] is None
    assert listing[guid_of(both)]["targets"] == [SOURCE, "other-src"]
    assert listing[guid_of(revoked)]["revoked"] is not None

    json_text = server.rspm("--output-format=json", "list", "tokens").stdout
    text = server.rspm("list", "tokens").stdout
    for output in (json_text, text):
        for token in tokens:
            assert token not in output
            assert token.split(".")[2] not in output

    header, *rows = text.splitlines()
    for column in ("GUID", "DESCRIPTION", "SCOPE", "TARGETS", "CREATED", "EXPIRES", "REVOKED",
                   "LAST USED"):
        assert column in header, header
    assert len(rows) == 4, text

    def row(token: str) -> str:
        (line,) = [r for r in rows if guid_of(token) in r]
        return line

    assert "Local Python token" in row(writer) and "sources:write" in row(writer)
    assert SOURCE in row(writer)
    expires_day = time.strftime("%Y-%m-%d", time.gmtime(payload["exp"]))
    assert expires_day in row(writer)
    assert "global:admin" in row(admin) and "never" in row(admin)
    assert f"{SOURCE}, other-src" in row(both)
    # Unused tokens show "-" as last use; revoked shows a date instead of "no".
    assert row(admin).rstrip().endswith("-")
    assert not row(writer).rstrip().endswith("-")
    assert " no " in row(writer)
    assert " no " not in row(revoked)
    assert_not_logged(server, tokens)


def test_list_tokens_filters_expired_and_revoked(server: ServerProcess) -> None:
    """--expired=yes|no and --revoked=yes|no select exactly the matching tokens."""
    create_source(server, SOURCE)
    live = guid_of(create_token(server, "--description=live", f"--sources={SOURCE}",
                                "--expires=30d"))
    short = guid_of(create_token(server, "--description=short", f"--sources={SOURCE}",
                                 "--expires=1s"))
    gone = guid_of(create_token(server, "--description=gone", f"--sources={SOURCE}"))
    server.rspm("revoke", "token", f"--guid={gone}")

    wait_for(lambda: token_guids(server, "--expired=yes") == [short], 15,
             "the 1s token to be listed as expired")
    assert sorted(token_guids(server, "--expired=no")) == sorted([live, gone])
    assert token_guids(server, "--revoked=yes") == [gone]
    assert sorted(token_guids(server, "--revoked=no")) == sorted([live, short])
    assert token_guids(server, "--expired=no", "--revoked=no") == [live]
    assert token_guids(server, "--expired=yes", "--revoked=yes") == []

    (expired,) = list_tokens(server, "--expired=yes")
    assert expired["expired"] is True
    text = server.rspm("list", "tokens", "--expired=yes").stdout
    (line,) = [r for r in text.splitlines() if short in r]
    assert "(expired)" in line
    assert live not in text and gone not in text

    bad = server.rspm("list", "tokens", "--expired=maybe", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


# 5. Verified on every request --------------------------------------------------------


def test_good_token_uploads_with_bearer_and_basic(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """The seed's token uploads with curl's Bearer and with twine's Basic __token__."""
    server = python_server
    token = create_token(server, "--description=Local Python token", f"--sources={SOURCE}",
                         "--expires=30d", "--scope=sources:write")
    bearer = uploader.bearer(server, token)
    assert bearer.code == 200, bearer
    assert "example_package-1.0.0-py3-none-any.whl" in bearer.body
    basic = uploader.basic(server, token)
    assert basic.code == 200, basic
    # A '*' token and an admin token may publish too.
    assert uploader.bearer(server, create_token(server, "--sources=*")).code == 200
    admin = create_token(server, "--scope=global:admin")
    assert uploader.basic(server, admin).code == 200
    simple = server.get("/python/latest/simple/example-package/")
    assert simple.status == 200 and b"example_package-1.0.0" in simple.body
    assert_not_logged(server, [token, admin])


def test_missing_malformed_and_forged_tokens_are_refused(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """No, malformed, forged, alg:none, foreign-key or tampered tokens: 401 with a reason."""
    server = python_server
    good = create_token(server, f"--sources={SOURCE}", "--expires=30d")
    header, payload = segments(good)
    _, good_payload, good_signature = good.split(".")
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    admin_payload = b64url(json.dumps({**payload, "scopes": {"global": "admin"}}).encode())
    head = good.split(".")[0]
    refused = {
        "forged signature": flip_signature(good),
        "alg none, no signature": f"{none_header}.{good_payload}.",
        "alg none, kept signature": f"{none_header}.{good_payload}.{good_signature}",
        "another key": hs256(header, payload, os.urandom(32)),
        "tampered payload": f"{head}.{admin_payload}.{good_signature}",
        "malformed": "not-a-jwt",
        "truncated": good.rsplit(".", 1)[0],
    }

    missing = uploader.send(server, None)
    assert missing.code == 401, missing
    assert "authentication required" in missing.reason, missing
    assert missing.reason in missing.body

    for what, token in refused.items():
        for reply in (uploader.bearer(server, token), uploader.basic(server, token)):
            assert reply.code == 401, (what, reply)
            assert reply.reason and reply.reason != "Unauthorized", (what, reply)
            assert reply.reason in reply.body, (what, reply)
            assert token not in reply.body
    assert "signature" in uploader.bearer(server, refused["forged signature"]).reason
    assert "signature" in uploader.bearer(server, refused["another key"]).reason
    assert "algorithm" in uploader.bearer(server, refused["alg none, no signature"]).reason

    wrong_user = uploader.basic(server, good, user="admin")
    assert wrong_user.code == 401 and "__token__" in wrong_user.reason, wrong_user
    bad_scheme = uploader.send(server, f"Token {good}")
    assert bad_scheme.code == 401, bad_scheme

    # The same checks guard the JSON API.
    for token in refused.values():
        api = curl(uploader.directory, server.url("/__api__/tokens"), f"Bearer {token}")
        assert api.code == 401, api
    # The good token still works after all that.
    assert uploader.bearer(server, good).code == 200
    assert_not_logged(server, [good, *refused.values()])


def test_expired_token_is_refused(python_server: ServerProcess, uploader: Uploader) -> None:
    """A token created with --expires=1s is refused with 401 'expired' once its time is up."""
    server = python_server
    token = create_token(server, f"--sources={SOURCE}", "--expires=1s")
    reply = wait_for(lambda: (r := uploader.bearer(server, token)).code == 401 and r, 15,
                     "the 1s token to be refused")
    assert "expired" in reply.reason, reply
    basic = uploader.basic(server, token)
    assert basic.code == 401 and "expired" in basic.reason, basic
    assert_not_logged(server, [token])


@pytest.mark.parametrize("by", ["guid", "token"])
def test_revoked_token_is_refused_on_the_next_request(
    python_server: ServerProcess, uploader: Uploader, by: str,
) -> None:
    """`rspm revoke token --guid` or `--token` makes the very next request 401 'revoked'."""
    server = python_server
    token = create_token(server, f"--sources={SOURCE}", "--expires=30d")
    other = create_token(server, f"--sources={SOURCE}")
    assert uploader.bearer(server, token).code == 200

    value = f"--guid={guid_of(token)}" if by == "guid" else f"--token={token}"
    result = server.rspm("revoke", "token", value)
    assert guid_of(token) in result.stdout
    assert token not in result.stdout + result.stderr

    for reply in (uploader.bearer(server, token), uploader.basic(server, token)):
        assert reply.code == 401, reply
        assert "revoked" in reply.reason, reply
    assert uploader.bearer(server, other).code == 200, "only the named token is revoked"
    (listed,) = list_tokens(server, "--revoked=yes")
    assert listed["guid"] == guid_of(token)
    assert_not_logged(server, [token, other])


def test_token_for_another_source_is_forbidden(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """A valid token for one source gets 403 on another, existing or not."""
    server = python_server
    create_source(server, "other-src")
    token = create_token(server, "--sources=other-src")
    for reply in (uploader.bearer(server, token), uploader.basic(server, token)):
        assert reply.code == 403, reply
        assert SOURCE in reply.reason, reply
    missing = uploader.bearer(server, token, source="no-such-src")
    assert missing.code == 403, missing
    assert uploader.bearer(server, token, source="other-src").code == 200
    assert_not_logged(server, [token])


def test_token_whose_source_was_deleted_is_refused_not_500(
    python_server: ServerProcess, uploader: Uploader,
) -> None:
    """After `rspm delete source` its tokens get 401 or 403, never 500, even if re-created."""
    server = python_server
    token = create_token(server, f"--sources={SOURCE}")
    assert uploader.bearer(server, token).code == 200
    server.rspm("delete", "source", f"--name={SOURCE}")

    gone = uploader.bearer(server, token)
    assert gone.code in (401, 403), gone
    assert gone.reason and SOURCE in gone.reason, gone
    # Re-creating a source under the same name makes a new GUID the token does not cover.
    create_source(server, SOURCE)
    again = uploader.basic(server, token)
    assert again.code in (401, 403), again

    (listed,) = list_tokens(server)
    assert listed["guid"] == guid_of(token)
    assert "Traceback" not in server.log()
    assert '" 500 ' not in server.access_log()
    assert_not_logged(server, [token])


# 6. Remote administration --------------------------------------------------------------


def test_remote_administration_with_a_global_admin_token(
    server: ServerProcess, uploader: Uploader,
) -> None:
    """With PACKAGEMANAGER_ADDRESS and a global:admin token, rspm administers over HTTP."""
    admin = create_token(server, "--description=remote admin", "--scope=global:admin")
    env = remote_env(server, admin)
    actor = f"token:{guid_of(admin)}"

    server.rspm("create", "source", "--name=remote-src", "--type=local-python", env=env)
    server.rspm("create", "repo", "--name=remote-repo", "--type=python", env=env)
    server.rspm("subscribe", "--repo=remote-repo", "--source=remote-src", env=env)
    created = server.rspm("create", "token", "--description=made remotely",
                          "--sources=remote-src", "--expires=1d", env=env)
    assert NOTICE in created.stderr
    token = created.stdout.strip()
    assert JWT.fullmatch(token)
    payload = segments(token)[1]
    assert payload["iss"] == server.address + "/"
    assert payload["scopes"] == {"sources": source_guid(server, "remote-src")}

    sources = json.loads(server.rspm("--output-format=json", "list", "sources", env=env).stdout)
    assert [s["name"] for s in sources] == ["remote-src"]
    repos = json.loads(server.rspm("--output-format=json", "list", "repos", env=env).stdout)
    assert [(r["name"], r["sources"]) for r in repos] == [("remote-repo", ["remote-src"])]
    listing = {t["guid"]: t for t in list_tokens(server, env=env)}
    assert set(listing) == {guid_of(admin), guid_of(token)}
    assert listing[guid_of(token)]["created_by"] == actor
    assert token not in server.rspm("list", "tokens", env=env).stdout

    assert uploader.bearer(server, token, source="remote-src").code == 200
    server.rspm("revoke", "token", f"--guid={guid_of(token)}", env=env)
    refused = uploader.bearer(server, token, source="remote-src")
    assert refused.code == 401 and "revoked" in refused.reason, refused

    second = create_token(server, "--sources=remote-src", env=env)
    server.rspm("revoke", "token", f"--token={second}", env=env)
    assert uploader.basic(server, second, source="remote-src").code == 401

    # The admin token revoked (locally): the remote CLI is refused, with the reason.
    server.rspm("revoke", "token", f"--guid={guid_of(admin)}")
    after = server.rspm("list", "tokens", env=env, check=False)
    assert_clean_failure(after, "revoked")
    assert admin not in after.stderr
    assert_not_logged(server, [admin, token, second])


def test_remote_administration_needs_global_admin(
    server: ServerProcess, uploader: Uploader,
) -> None:
    """A sources:write token cannot administer remotely: each command fails naming global:admin."""
    create_source(server, SOURCE)
    admin = create_token(server, "--scope=global:admin")
    writer = create_token(server, f"--sources={SOURCE}", "--scope=sources:write")
    env = remote_env(server, writer)
    commands = [
        ("create", "source", "--name=sneaky", "--type=local-python"),
        ("create", "repo", "--name=sneaky", "--type=python"),
        ("create", "token", "--scope=global:admin"),
        ("create", "token", f"--sources={SOURCE}"),
        ("subscribe", "--repo=python", f"--source={SOURCE}"),
        ("list", "sources"),
        ("list", "repos"),
        ("list", "tokens"),
        ("revoke", "token", f"--guid={guid_of(admin)}"),
        ("delete", "source", f"--name={SOURCE}"),
    ]
    for command in commands:
        result = server.rspm(*command, env=env, check=False)
        assert_clean_failure(result, "global:admin")
        assert writer not in result.stderr

    for path in ("/__api__/tokens", "/__api__/sources", "/__api__/repos"):
        reply = curl(uploader.directory, server.url(path), f"Bearer {writer}")
        assert reply.code == 403, (path, reply)
        assert "global:admin" in json.loads(reply.body)["error"], reply

    # Nothing changed: no new source, repo or token, and the admin token is not revoked.
    sources = json.loads(server.rspm("--output-format=json", "list", "sources").stdout)
    assert [s["name"] for s in sources] == [SOURCE]
    assert json.loads(server.rspm("--output-format=json", "list", "repos").stdout) == []
    assert sorted(token_guids(server)) == sorted([guid_of(admin), guid_of(writer)])
    assert token_guids(server, "--revoked=yes") == []
    # Missing token with an address: a clear message, not a traceback.
    no_token = server.env(PACKAGEMANAGER_ADDRESS=server.address)
    assert_clean_failure(server.rspm("list", "tokens", env=no_token, check=False),
                         "PACKAGEMANAGER_TOKEN")
    assert_not_logged(server, [admin, writer])


def test_api_refusals_name_the_reason_in_the_status_line(
    make_server: type[ServerProcess], uploader: Uploader,
) -> None:
    """A refused /__api__/ request carries its reason in the status line, as uploads do.

    pm/app.py's error handler sets the reason phrase to the message (as the
    upload route shows), so curl and proxies log why; the JSON body is not the
    only place it appears.
    """
    server = make_server().start()
    create_source(server, SOURCE)
    writer = create_token(server, f"--sources={SOURCE}")
    upload = uploader.bearer(server, writer, source="elsewhere")
    assert upload.code == 403 and "elsewhere" in upload.reason, upload

    forbidden = curl(uploader.directory, server.url("/__api__/tokens"), f"Bearer {writer}")
    assert forbidden.code == 403, forbidden
    assert "global:admin" in forbidden.reason, forbidden
    revoked = create_token(server, "--scope=global:admin")
    server.rspm("revoke", "token", f"--guid={guid_of(revoked)}")
    refused = curl(uploader.directory, server.url("/__api__/tokens"), f"Bearer {revoked}")
    assert refused.code == 401, refused
    assert "revoked" in refused.reason, refused


# 7. Revocation across nodes ------------------------------------------------------------


def test_revocation_on_one_node_is_seen_by_the_other_at_once(
    make_server: type[ServerProcess], pg_url: str, uploader: Uploader,
) -> None:
    """Two servers on one PostgreSQL and DataDir: a token revoked on one is 401 on the other."""
    first = make_server(provider="postgres", postgres_url=pg_url).start()
    second = make_server(provider="postgres", postgres_url=pg_url,
                         data_dir=first.data_dir).start()
    assert first.port != second.port
    assert first.socket_path != second.socket_path
    assert first.data_dir == second.data_dir

    token = first.setup_python(SOURCE)
    assert uploader.bearer(first, token).code == 200
    assert uploader.bearer(second, token).code == 200, "same key: the second node accepts it"
    minted_on_second = create_token(second, f"--sources={SOURCE}")
    assert uploader.basic(first, minted_on_second).code == 200

    first.rspm("revoke", "token", f"--guid={guid_of(token)}")
    on_second = uploader.bearer(second, token)
    assert on_second.code == 401 and "revoked" in on_second.reason, on_second
    assert uploader.basic(second, token).code == 401
    assert token_guids(second, "--revoked=yes") == [guid_of(token)]

    # And the other way round, revoking by the token itself.
    second.rspm("revoke", "token", f"--token={minted_on_second}")
    on_first = uploader.basic(first, minted_on_second)
    assert on_first.code == 401 and "revoked" in on_first.reason, on_first

    fresh = create_token(first, f"--sources={SOURCE}")
    assert uploader.bearer(second, fresh).code == 200, "other tokens are unaffected"
    for node in (first, second):
        assert_not_logged(node, [token, minted_on_second, fresh])
