"""Unit tests for pm.tokens: minting, verification, headers and the key file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest

from pm import tokens
from pm.errors import BadRequest, Unauthorized
from pm.testing import Clock
from pm.tokens import (
    AUDIENCE,
    SCOPES,
    Grant,
    TokenAuthority,
    TokenClaims,
    generate_key,
    load_or_create_key,
    parse_expires,
    parse_scope,
    token_fingerprint,
    token_from_headers,
)
from tests.support.jwt import b64url, segments, unb64url

ISSUER = "https://pm.example.com"
START = 1_700_000_000.25
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def new_guid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def key() -> bytes:
    return generate_key()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def authority(key: bytes, clock: Clock) -> TokenAuthority:
    return TokenAuthority(key, ISSUER, clock)


DROP = object()


def valid_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "aud": AUDIENCE,
        "iss": ISSUER + "/",
        "iat": int(START),
        "exp": int(START) + 3600,
        "jti": new_guid(),
        "scopes": {"sources": new_guid()},
    }
    for name, value in overrides.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(payload: dict[str, Any], key: bytes, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS384/HS512 warn that a 32-byte key is short for them; irrelevant here.
        warnings.simplefilter("ignore")
        return jwt.encode(payload, key, algorithm=algorithm)


def sign_by_hand(body: bytes, key: bytes) -> str:
    """HS256-sign raw payload bytes, for payloads PyJWT's encoder refuses to produce."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(body)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def reason(excinfo: pytest.ExceptionInfo[Unauthorized]) -> str:
    return str(excinfo.value.args[0])


# --- mint / verify round trip -------------------------------------------------

SOURCE_A, SOURCE_B, REPO_A = (str(uuid.uuid4()) for _ in range(3))


@pytest.mark.parametrize(
    "grant",
    [
        Grant("sources:write", (SOURCE_A,)),
        Grant("sources:write", (SOURCE_A, SOURCE_B)),
        Grant("sources:write", None),
        Grant("repos:read", (REPO_A,)),
        Grant("repos:read", (REPO_A, SOURCE_B)),
        Grant("repos:read", None),
        Grant("global:admin", ()),
    ],
    ids=["one-source", "two-sources", "all-sources", "one-repo", "two-repos", "all-repos", "admin"],
)
def test_mint_verify_round_trip(authority: TokenAuthority, grant: Grant) -> None:
    """Every scope form survives mint → verify, and verify reports what mint returned."""
    guid = new_guid()
    token, minted = authority.mint(grant, guid=guid, expires_in=3600)
    verified = authority.verify(token)
    assert verified == minted
    assert verified == TokenClaims(
        guid=guid, grant=grant, issued_at=float(int(START)), expires_at=float(int(START) + 3600)
    )


@pytest.mark.parametrize(
    ("grant", "claim"),
    [
        (Grant("sources:write", (SOURCE_A,)), {"sources": SOURCE_A}),
        (Grant("sources:write", (SOURCE_A, SOURCE_B)), {"sources": [SOURCE_A, SOURCE_B]}),
        (Grant("sources:write", None), {"sources": "*"}),
        (Grant("repos:read", (REPO_A,)), {"repos": REPO_A}),
        (Grant("repos:read", (REPO_A, SOURCE_B)), {"repos": [REPO_A, SOURCE_B]}),
        (Grant("repos:read", None), {"repos": "*"}),
        (Grant("global:admin", ()), {"global": "admin"}),
    ],
)
def test_scopes_claim_forms(authority: TokenAuthority, grant: Grant, claim: dict[str, Any]) -> None:
    """The scopes claim takes the string / list / '*' / admin form chosen for each grant."""
    token, _ = authority.mint(grant, guid=new_guid(), expires_in=60)
    assert segments(token)[1]["scopes"] == claim


def test_payload_shape_matches_seed(authority: TokenAuthority) -> None:
    """A one-source token carries exactly aud, iss (one trailing slash), iat, exp, jti, scopes."""
    guid = new_guid()
    token, _ = authority.mint(Grant("sources:write", (SOURCE_A,)), guid=guid, expires_in=30 * 86400)
    header, payload = segments(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert payload == {
        "aud": "packagemanager",
        "iss": "https://pm.example.com/",
        "iat": int(START),
        "exp": int(START) + 30 * 86400,
        "jti": guid,
        "scopes": {"sources": SOURCE_A},
    }
    assert all(isinstance(payload[name], int) for name in ("iat", "exp"))


def test_issuer_gets_exactly_one_trailing_slash(key: bytes, clock: Clock) -> None:
    """An issuer given with a trailing slash does not end up with two."""
    token, _ = TokenAuthority(key, ISSUER + "/", clock).mint(
        Grant("global:admin", ()), guid=new_guid(), expires_in=None
    )
    assert segments(token)[1]["iss"] == ISSUER + "/"


def test_never_expiring_token_has_no_exp(authority: TokenAuthority, clock: Clock) -> None:
    """expires_in=None omits exp, and such a token stays valid however late it is used."""
    token, minted = authority.mint(Grant("sources:write", None), guid=new_guid(), expires_in=None)
    assert "exp" not in segments(token)[1]
    assert minted.expires_at is None
    clock.now += 100 * 365 * 86400
    assert authority.verify(token).expires_at is None


def test_issuer_is_not_enforced(key: bytes, clock: Clock) -> None:
    """A token minted under one server address verifies under another sharing the key."""
    token, _ = TokenAuthority(key, "https://old.example.com", clock).mint(
        Grant("global:admin", ()), guid=new_guid(), expires_in=60
    )
    assert TokenAuthority(key, ISSUER, clock).verify(token).grant.is_admin


def test_mint_rejects_bad_arguments(authority: TokenAuthority) -> None:
    """mint refuses a non-UUID guid and a non-positive or infinite lifetime."""
    grant = Grant("global:admin", ())
    for guid in ("not-a-uuid", new_guid().upper(), "{" + new_guid() + "}"):
        with pytest.raises(ValueError):
            authority.mint(grant, guid=guid, expires_in=60)
    for expires_in in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            authority.mint(grant, guid=new_guid(), expires_in=expires_in)


def test_short_key_refused(clock: Clock) -> None:
    """A key shorter than 32 bytes cannot build an authority."""
    with pytest.raises(ValueError):
        TokenAuthority(b"short", ISSUER, clock)


# --- expiry ------------------------------------------------------------------


def test_expiry_follows_injected_clock(authority: TokenAuthority, clock: Clock) -> None:
    """A token is valid until just before exp and refused from exp on, by the injected clock."""
    token, minted = authority.mint(Grant("sources:write", None), guid=new_guid(), expires_in=60)
    assert minted.expires_at is not None
    clock.now = minted.expires_at - 0.5
    authority.verify(token)
    clock.now = minted.expires_at
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(token)
    assert reason(excinfo) == "token has expired"


def test_sub_second_lifetime_rounds_up(authority: TokenAuthority) -> None:
    """A fractional lifetime is rounded up, so the token is not expired when minted."""
    token, minted = authority.mint(Grant("global:admin", ()), guid=new_guid(), expires_in=0.1)
    assert minted.expires_at == minted.issued_at + 1
    authority.verify(token)


def test_expired_by_real_time_but_not_by_clock(key: bytes) -> None:
    """Expiry is judged by the injected clock, not the wall clock PyJWT would use."""
    past = Clock(1_000_000.0)
    authority = TokenAuthority(key, ISSUER, past)
    token, _ = authority.mint(Grant("global:admin", ()), guid=new_guid(), expires_in=60)
    assert authority.verify(token).grant.is_admin


def test_future_iat_is_accepted(key: bytes) -> None:
    """A token whose iat is ahead of the wall clock (injected clock in the future) verifies."""
    future = Clock(time.time() + 10 * 86400)
    authority = TokenAuthority(key, ISSUER, future)
    token, _ = authority.mint(Grant("global:admin", ()), guid=new_guid(), expires_in=60)
    authority.verify(token)


def test_nbf_is_checked_against_clock(authority: TokenAuthority, key: bytes) -> None:
    """A foreign nbf claim is honoured against the injected clock."""
    token = sign(valid_payload(nbf=int(START) + 10), key)
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(token)
    assert reason(excinfo) == "token is not yet valid"
    authority.verify(sign(valid_payload(nbf=int(START) - 10), key))


# --- forgery and algorithm confusion ----------------------------------------


def test_flipped_signature_byte_refused(authority: TokenAuthority) -> None:
    """Changing one byte of the signature makes the token invalid."""
    token, _ = authority.mint(Grant("global:admin", ()), guid=new_guid(), expires_in=60)
    head, payload, signature = token.split(".")
    raw = bytearray(unb64url(signature))
    raw[0] ^= 0x01
    forged = f"{head}.{payload}.{b64url(bytes(raw))}"
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(forged)
    assert reason(excinfo) == "token signature is invalid"


def test_tampered_payload_refused(authority: TokenAuthority, key: bytes) -> None:
    """Swapping in a payload granting more, under the original signature, is refused."""
    token, _ = authority.mint(Grant("sources:write", (SOURCE_A,)), guid=new_guid(), expires_in=60)
    head, _payload, signature = token.split(".")
    upgraded = b64url(json.dumps(valid_payload(scopes={"global": "admin"})).encode())
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(f"{head}.{upgraded}.{signature}")
    assert reason(excinfo) == "token signature is invalid"


def test_other_key_refused(authority: TokenAuthority) -> None:
    """A token signed with a different key does not verify."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign(valid_payload(), generate_key()))
    assert reason(excinfo) == "token signature is invalid"


def test_alg_none_refused(authority: TokenAuthority) -> None:
    """An unsigned token (alg none, empty signature) is refused for its algorithm."""
    for alg in ("none", "None", "NONE"):
        header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = b64url(json.dumps(valid_payload(scopes={"global": "admin"})).encode())
        with pytest.raises(Unauthorized) as excinfo:
            authority.verify(f"{header}.{payload}.")
        assert reason(excinfo) == "token algorithm not allowed"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_refused(
    authority: TokenAuthority, key: bytes, algorithm: str
) -> None:
    """A token correctly signed with the same key but another HMAC algorithm is refused."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign(valid_payload(), key, algorithm))
    assert reason(excinfo) == "token algorithm not allowed"


def test_missing_alg_refused(authority: TokenAuthority, key: bytes) -> None:
    """A header without alg is refused as a disallowed algorithm."""
    header = b64url(json.dumps({"typ": "JWT"}).encode())
    payload = b64url(json.dumps(valid_payload()).encode())
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(f"{header}.{payload}.")
    assert reason(excinfo) == "token algorithm not allowed"


# --- claims -------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    ["other", "", ["packagemanager"], ["other", "packagemanager"], 5, DROP],
    ids=["other", "empty", "list", "list-with-ours", "number", "missing"],
)
def test_wrong_audience_refused(authority: TokenAuthority, key: bytes, aud: Any) -> None:
    """A token must carry exactly the audience 'packagemanager'."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign(valid_payload(aud=aud), key))
    assert reason(excinfo) == "token audience is invalid"


@pytest.mark.parametrize(
    "overrides",
    [
        {"jti": DROP},
        {"jti": None},
        {"jti": 12},
        {"jti": "not-a-uuid"},
        {"jti": str(uuid.uuid4()).upper()},
        {"jti": uuid.uuid4().hex},
        {"iat": DROP},
        {"iat": "1700000000"},
        {"iat": 1.5},
        {"iat": True},
        {"exp": "later"},
        {"exp": 1e12},
        {"exp": True},
        {"nbf": "soon"},
    ],
    ids=lambda overrides: "-".join(f"{k}={v!r}" for k, v in overrides.items()),
)
def test_malformed_claims_refused(
    authority: TokenAuthority, key: bytes, overrides: dict[str, Any]
) -> None:
    """Missing or mistyped jti/iat/exp/iss/nbf make a correctly signed token malformed."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign(valid_payload(**overrides), key))
    assert reason(excinfo) == "malformed token"


def test_non_string_iss_refused(authority: TokenAuthority, key: bytes) -> None:
    """A correctly signed token whose iss is not a string is malformed."""
    body = json.dumps(valid_payload(iss=7)).encode()
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign_by_hand(body, key))
    assert reason(excinfo) == "malformed token"


def test_missing_iss_is_accepted(authority: TokenAuthority, key: bytes) -> None:
    """iss is optional; only its type is checked when present."""
    authority.verify(sign(valid_payload(iss=DROP), key))


@pytest.mark.parametrize(
    "scopes",
    [
        DROP,
        None,
        "sources:write",
        ["sources"],
        {},
        {"sources": "*", "repos": "*"},
        {"sources": ""},
        {"sources": []},
        {"sources": [""]},
        {"sources": ["*"]},
        {"sources": [SOURCE_A, "*"]},
        {"sources": [SOURCE_A, 5]},
        {"sources": 5},
        {"sources": None},
        {"sources": {"guid": SOURCE_A}},
        {"repos": True},
        {"global": "root"},
        {"global": "*"},
        {"global": ["admin"]},
        {"packages": "*"},
        {"sources:write": SOURCE_A},
    ],
    ids=repr,
)
def test_bad_scopes_refused(authority: TokenAuthority, key: bytes, scopes: Any) -> None:
    """Anything but one of the documented scopes forms is refused."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign(valid_payload(scopes=scopes), key))
    assert reason(excinfo) == "token scopes are invalid"


def test_single_element_list_is_accepted(authority: TokenAuthority, key: bytes) -> None:
    """A one-element sources list means the same as the plain string form."""
    claims = authority.verify(sign(valid_payload(scopes={"sources": [SOURCE_A]}), key))
    assert claims.grant == Grant("sources:write", (SOURCE_A,))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "é.é.é",
        "eyJhbGciOiJIUzI1NiJ9.%%%.abc",
        b64url(b"[1,2]") + "." + b64url(b"{}") + ".",
        b64url(b"not json") + "." + b64url(b"{}") + ".",
        "x" * 10_000,
    ],
    ids=lambda g: repr(g[:20]),
)
def test_garbage_refused(authority: TokenAuthority, garbage: str) -> None:
    """Strings that are not JWTs are refused as malformed."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(garbage)
    assert reason(excinfo) == "malformed token"


def test_non_object_payload_refused(authority: TokenAuthority, key: bytes) -> None:
    """A correctly signed payload that is not a JSON object is malformed."""
    with pytest.raises(Unauthorized) as excinfo:
        authority.verify(sign_by_hand(b"[1, 2, 3]", key))
    assert reason(excinfo) == "malformed token"


def test_reasons_never_contain_token(authority: TokenAuthority, key: bytes) -> None:
    """No failure message quotes the token or any part of it."""
    good, _ = authority.mint(Grant("global:admin", ()), guid=new_guid(), expires_in=60)
    candidates = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        sign(valid_payload(aud="x"), key),
        sign(valid_payload(scopes={"x": 1}), key),
        sign(valid_payload(), generate_key()),
        "qwerty.asdfgh.zxcvbn",
    ]
    for token in candidates:
        with pytest.raises(Unauthorized) as excinfo:
            authority.verify(token)
        message = reason(excinfo)
        assert all(part not in message for part in token.split(".") if part)
        assert excinfo.value.__cause__ is None


# --- Grant ---------------------------------------------------------------------


def test_grant_coverage_rules() -> None:
    """Sources grants cover their sources only, repo grants their repos, admin everything."""
    one = Grant("sources:write", (SOURCE_A,))
    assert one.covers_source(SOURCE_A)
    assert not one.covers_source(SOURCE_B)
    assert not one.covers_repo(SOURCE_A)

    every_source = Grant("sources:write", None)
    assert every_source.covers_source(SOURCE_B)
    assert not every_source.covers_repo(REPO_A)

    repo = Grant("repos:read", (REPO_A,))
    assert repo.covers_repo(REPO_A)
    assert not repo.covers_repo(SOURCE_A)
    assert not repo.covers_source(REPO_A)

    every_repo = Grant("repos:read", None)
    assert every_repo.covers_repo(SOURCE_B)
    assert not every_repo.covers_source(SOURCE_B)

    admin = Grant("global:admin", ())
    assert admin.covers_source(SOURCE_A)
    assert admin.covers_repo(REPO_A)
    assert admin.is_admin
    assert not one.is_admin and not every_repo.is_admin


def test_grant_star_is_not_a_wildcard_target() -> None:
    """A literal '*' source GUID is neither accepted in targets nor matched as 'all'."""
    with pytest.raises(ValueError):
        Grant("sources:write", ("*",))
    assert not Grant("sources:write", (SOURCE_A,)).covers_source("*")


@pytest.mark.parametrize(
    ("scope", "targets"),
    [
        ("sources:read", None),
        ("sources:write", ()),
        ("sources:write", ("",)),
        ("repos:read", [REPO_A]),
        ("global:admin", None),
        ("global:admin", (SOURCE_A,)),
    ],
)
def test_grant_rejects_inconsistent_values(scope: str, targets: Any) -> None:
    """A Grant cannot be built with an unknown scope or targets that do not fit it."""
    with pytest.raises(ValueError):
        Grant(scope, targets)


# --- parse_scope / parse_expires -----------------------------------------------


def test_parse_scope_valid() -> None:
    """Each documented scope parses to itself."""
    for scope in SCOPES:
        assert parse_scope(scope) == scope
    assert SCOPES == ("sources:write", "repos:read", "global:admin")


@pytest.mark.parametrize("text", ["", "sources", "sources:read", "SOURCES:WRITE", "admin"])
def test_parse_scope_invalid(text: str) -> None:
    """Unknown scopes are a BadRequest listing the valid ones."""
    with pytest.raises(BadRequest) as excinfo:
        parse_scope(text)
    assert str(excinfo.value) == (
        f"unknown scope '{text}' (valid: sources:write, repos:read, global:admin)"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("45s", 45.0), ("5m", 300.0), ("2h", 7200.0), ("30d", 2_592_000.0)],
)
def test_parse_expires_valid(text: str, seconds: float) -> None:
    """<n>s/m/h/d become seconds."""
    assert parse_expires(text) == seconds


def test_parse_expires_never() -> None:
    """'never' means no expiry."""
    assert parse_expires("never") is None


@pytest.mark.parametrize(
    "text",
    ["30x", "", "d", "0d", "-1d", "1.5h", "30", "30 d", " 30d", "30D", "Never", "1w", "٣d"],
)
def test_parse_expires_invalid(text: str) -> None:
    """Anything else is a BadRequest naming the accepted forms."""
    with pytest.raises(BadRequest) as excinfo:
        parse_expires(text)
    assert str(excinfo.value) == (
        f"invalid --expires '{text}': use <n>s, <n>m, <n>h, <n>d or never"
    )


def test_parse_expires_absurdly_long() -> None:
    """A lifetime beyond 100 years is refused rather than overflowing."""
    with pytest.raises(BadRequest, match="use never"):
        parse_expires("9" * 400 + "d")
    assert parse_expires("36500d") == 36500 * 86400.0


# --- token_from_headers ------------------------------------------------------------


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def test_headers_bearer() -> None:
    """'Bearer <t>' yields t, whatever the scheme's case."""
    assert token_from_headers(b"Bearer abc.def.ghi") == "abc.def.ghi"
    assert token_from_headers(b"bearer abc.def.ghi") == "abc.def.ghi"
    assert token_from_headers(b"BEARER   abc.def.ghi  ") == "abc.def.ghi"


def test_headers_basic_token_user() -> None:
    """twine's Basic auth with user __token__ yields the password as the token."""
    assert token_from_headers(basic("__token__", "abc.def.ghi")) == "abc.def.ghi"
    header = b"bAsIc " + base64.b64encode(b"__token__:a:b")
    assert token_from_headers(header) == "a:b"


def test_headers_basic_other_user() -> None:
    """Basic auth with another user is refused with a hint about __token__."""
    with pytest.raises(Unauthorized) as excinfo:
        token_from_headers(basic("alice", "secret"))
    assert str(excinfo.value) == "use the username __token__ with an API token as the password"


def test_headers_absent() -> None:
    """No header, or an empty one, means no credentials."""
    assert token_from_headers(None) is None
    assert token_from_headers(b"") is None
    assert token_from_headers(b"   ") is None


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer",
        b"Bearer ",
        b"Bearer a b",
        b"Basic",
        b"Basic !!!notbase64",
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Basic " + base64.b64encode(b"__token__:"),
        b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),
        b"Digest username=x",
        b"abc.def.ghi",
        "Bearer tök".encode(),
    ],
)
def test_headers_malformed(header: bytes) -> None:
    """Headers that carry no usable token are refused, not ignored."""
    with pytest.raises(Unauthorized):
        token_from_headers(header)


def test_fingerprint_is_short_stable_and_opaque() -> None:
    """The fingerprint is a short, deterministic digest that does not contain the token."""
    token = "eyJhbGciOiJIUzI1NiJ9.payload.signature"
    fingerprint = token_fingerprint(token)
    assert fingerprint == token_fingerprint(token)
    assert fingerprint != token_fingerprint(token + "x")
    assert len(fingerprint) == 16
    assert fingerprint not in token and "payload" not in fingerprint


# --- key file --------------------------------------------------------------------


def test_generate_key_is_random_32_bytes() -> None:
    """generate_key returns 32 fresh bytes each time."""
    first, second = generate_key(), generate_key()
    assert len(first) == len(second) == 32
    assert first != second


def test_key_file_created_with_mode_0600(tmp_path: Path) -> None:
    """A missing key file is created, owner-only, holding the key as hex."""
    path = tmp_path / "token.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.key"]


def test_key_file_mode_ignores_permissive_umask(tmp_path: Path) -> None:
    """The key file is 0600 even when the process umask is 0."""
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "token.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "token.key").stat().st_mode) == 0o600


def test_key_file_reread(tmp_path: Path) -> None:
    """A second load returns the key created by the first."""
    path = tmp_path / "token.key"
    assert load_or_create_key(path) == load_or_create_key(path)


def test_key_file_written_by_hand_is_used(tmp_path: Path) -> None:
    """An existing owner-only hex key file is read as is."""
    path = tmp_path / "token.key"
    key = bytes(range(48))
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    assert load_or_create_key(path) == key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_with_loose_mode_refused(tmp_path: Path, mode: int) -> None:
    """A key file that group or others can access is refused, without printing the key."""
    path = tmp_path / "token.key"
    key = generate_key()
    path.write_text(key.hex())
    path.chmod(mode)
    with pytest.raises(PermissionError) as excinfo:
        load_or_create_key(path)
    assert "chmod 600" in str(excinfo.value)
    assert key.hex() not in str(excinfo.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"zz" * 32, b"ab" * 16, b"abc", b"\xff" * 64],
    ids=["empty", "not-hex", "too-short", "odd-length", "binary"],
)
def test_malformed_key_file_refused(tmp_path: Path, content: bytes) -> None:
    """A key file that is not at least 32 bytes of hex is refused."""
    path = tmp_path / "token.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ValueError, match="malformed"):
        load_or_create_key(path)


def test_key_path_that_is_a_directory_refused(tmp_path: Path) -> None:
    """A directory where the key file should be is refused."""
    path = tmp_path / "token.key"
    path.mkdir(mode=0o700)
    with pytest.raises((ValueError, OSError)):
        load_or_create_key(path)


def test_losing_creator_reads_winner_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another process creates the key between our check and our link, we adopt theirs."""
    path = tmp_path / "token.key"
    winner = generate_key()
    real_generate = tokens.generate_key

    def generate_after_rival_won() -> bytes:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.write(fd, winner.hex().encode())
        os.close(fd)
        return real_generate()

    monkeypatch.setattr(tokens, "generate_key", generate_after_rival_won)
    assert load_or_create_key(path) == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.key"]


def test_concurrent_creators_agree(tmp_path: Path) -> None:
    """Processes started together on a missing key file all end up with one key."""
    path = tmp_path / "token.key"
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from pm.tokens import load_or_create_key\n"
        "go = Path(sys.argv[2])\n"
        "while not go.exists():\n"
        "    time.sleep(0.001)\n"
        "print(load_or_create_key(Path(sys.argv[1])).hex())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=PROJECT_ROOT,
        )
        for _ in range(8)
    ]
    time.sleep(0.5)
    go.touch()
    keys = set()
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        keys.add(out.decode().strip())
    assert len(keys) == 1
    assert path.read_text().strip() == keys.pop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "token.key"]
