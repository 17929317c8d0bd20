"""Unit tests for pm.config: the configuration schema, its parsers and the loader."""

import dataclasses
import errno
import os
from pathlib import Path
from typing import NoReturn

import pytest

import pm.config
from pm.config import Config, load_config, parse_bool, parse_config, parse_duration
from pm.errors import ConfigError
from pm.limits import Limits

FILE = "/etc/rspm/test.gcfg"


def config(text: str) -> Config:
    """Parse ``text`` as if it were the file /etc/rspm/test.gcfg."""
    return parse_config(text, FILE)


def error(text: str, filename: str = "etc/x.gcfg") -> str:
    """The message of the ConfigError that parsing ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename)
    return str(info.value)


# --- defaults and the Config object ---------------------------------------------------


def test_defaults() -> None:
    """An empty file gives the documented default for every setting."""
    c = config("")
    assert c == Config(
        path=Path(FILE),
        address="http://localhost:4242",
        data_dir=Path("/var/lib/rstudio-pm"),
        sock_file_dir=Path("/var/run/rstudio-pm"),
        listen_host="",
        listen_port=4242,
        https_listen_host="",
        https_listen_port=None,
        https_certificate=None,
        https_key=None,
        https_permanent=False,
        provider="sqlite",
        sqlite_dir=Path("/var/lib/rstudio-pm/db"),
        postgres_url=None,
        api_token_auth=False,
        new_repos_auth_by_default=False,
        temp_max_age=3600.0,
        cleanup_interval=600.0,
        trusted_keys=(),
        cache_max_size=64 * 1024 * 1024,
        access_log=Path("/var/lib/rstudio-pm/logs/access.log"),
        max_upload_size=16 * 1024**3,
        max_field_size=1024**2,
        max_form_parts=1000,
        max_header_size=16 * 1024,
        header_timeout=30.0,
        idle_timeout=300.0,
        min_body_rate=1024,
        max_uploads=128,
        max_uploads_per_token=64,
    )
    assert c.limits == Limits()


def test_limits_are_read() -> None:
    """Every [Limits] key reaches the Limits the server is built with."""
    c = config("[Limits]\nMaxUploadSize = 2GiB\nMaxFieldSize = 64k\nMaxFormParts = 50\n"
               "MaxHeaderSize = 8KiB\nHeaderTimeout = 10s\nIdleTimeout = 1m\n"
               "MinBodyRate = 0\nMaxUploads = 0\nMaxUploadsPerToken = 4\n")
    assert c.limits == Limits(
        max_upload_size=2 * 1024**3, max_field_size=64 * 1024, max_form_parts=50,
        max_header_size=8 * 1024, header_timeout=10.0, idle_timeout=60.0, min_body_rate=0,
        max_uploads=0, max_uploads_per_token=4)


@pytest.mark.parametrize(("line", "reason"), [
    ("MaxUploadSize = 10", "must be at least 1024 bytes"),
    ("MaxFormParts = 3", "must be at least 30"),
    ("MaxUploads = -1", "not a whole number"),
    ("MaxUploadsPerToken = many", "not a whole number"),
    ("HeaderTimeout = 0", "must be longer than zero"),
    ("MinBodyRate = fast", "is not a size"),
])
def test_bad_limits_are_refused(line: str, reason: str) -> None:
    """A [Limits] value out of range stops the start with the key and the reason."""
    with pytest.raises(ConfigError) as raised:
        config(f"[Limits]\n{line}\n")
    assert f"[Limits] {line.split()[0]}" in str(raised.value)
    assert reason in str(raised.value)


def test_comments_and_empty_sections_give_defaults() -> None:
    """Comments and known sections without keys change nothing."""
    assert config("; nothing\n[Server]\n# still nothing\n[HTTP]\n") == config("")


def test_socket_path() -> None:
    """socket_path is rstudio-pm.sock inside SockFileDir."""
    c = config("[Server]\nSockFileDir = /run/pm\n")
    assert c.socket_path == Path("/run/pm/rstudio-pm.sock")


def test_config_is_frozen() -> None:
    """A Config cannot be changed after loading."""
    c = config("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.listen_port = 1  # type: ignore[misc]


def test_repr_hides_postgres_url() -> None:
    """The Postgres URL, which usually holds a password, is left out of repr()."""
    c = config("[Database]\nProvider = postgres\n[Postgres]\nURL = postgres://u:s3cret@db/pm\n")
    assert "s3cret" not in repr(c)
    assert c.postgres_url == "postgres://u:s3cret@db/pm"


def test_full_file() -> None:
    """Every key can be set; each lands in its field with its type."""
    c = config(
        """
        ; a complete configuration
        [Server]
        Address = https://pm.example.com/
        DataDir = /srv/pm
        SockFileDir = /run/pm

        [HTTP]
        Listen = 127.0.0.1:8080
        AccessLog = /var/log/pm/access.log

        [HTTPS]
        Listen = 127.0.0.1:8443
        Certificate = /etc/rspm/tls/chain.pem
        Key = /etc/rspm/tls/key.pem
        Permanent = true

        [Database]
        Provider = Postgres

        [SQLite]
        Dir = /srv/sqlite

        [Postgres]
        URL = "postgresql://pm:pw@db.example.com:5432/pm?sslmode=require"

        [Authentication]
        APITokenAuth = yes
        NewReposAuthByDefault = on

        [Storage]
        TempMaxAge = 2h
        CleanupInterval = 30s

        [Signatures]
        TrustedKeys = /etc/rspm/keys/a.asc
        TrustedKeys = /etc/rspm/keys/b.asc
        [Cache]
        MaxSize = 512k

        [Limits]
        MaxUploadSize = 100MiB
        MaxFieldSize = 2MiB
        MaxFormParts = 200
        MaxHeaderSize = 32KiB
        HeaderTimeout = 20s
        IdleTimeout = 2m
        MinBodyRate = 4KiB
        MaxUploads = 32
        MaxUploadsPerToken = 8
        """
    )
    assert c == Config(
        path=Path(FILE),
        address="https://pm.example.com",
        data_dir=Path("/srv/pm"),
        sock_file_dir=Path("/run/pm"),
        listen_host="127.0.0.1",
        listen_port=8080,
        https_listen_host="127.0.0.1",
        https_listen_port=8443,
        https_certificate=Path("/etc/rspm/tls/chain.pem"),
        https_key=Path("/etc/rspm/tls/key.pem"),
        https_permanent=True,
        provider="postgres",
        sqlite_dir=Path("/srv/sqlite"),
        postgres_url="postgresql://pm:pw@db.example.com:5432/pm?sslmode=require",
        api_token_auth=True,
        new_repos_auth_by_default=True,
        temp_max_age=7200.0,
        cleanup_interval=30.0,
        trusted_keys=(Path("/etc/rspm/keys/a.asc"), Path("/etc/rspm/keys/b.asc")),
        cache_max_size=512 * 1024,
        access_log=Path("/var/log/pm/access.log"),
        max_upload_size=100 * 1024**2,
        max_field_size=2 * 1024**2,
        max_form_parts=200,
        max_header_size=32 * 1024,
        header_timeout=20.0,
        idle_timeout=120.0,
        min_body_rate=4096,
        max_uploads=32,
        max_uploads_per_token=8,
    )


def test_names_are_case_insensitive() -> None:
    """Section and key names match in any case."""
    c = config("[server]\nDATADIR = /a\n[http]\nlisten = :1\n[sqlite]\ndir = /b\n")
    assert (c.data_dir, c.listen_port, c.sqlite_dir) == (Path("/a"), 1, Path("/b"))


def test_sections_may_be_split() -> None:
    """A section may appear more than once; its keys are gathered."""
    c = config("[Server]\nDataDir = /a\n[HTTP]\nListen = :1\n[Server]\nSockFileDir = /b\n")
    assert (c.data_dir, c.sock_file_dir) == (Path("/a"), Path("/b"))


def test_values_may_be_quoted() -> None:
    """Quoted values are unquoted before validation, so they may hold ';' or '#'."""
    c = config('[Server]\nDataDir = "/srv/with ; semicolon"\nAddress = "http://h/a" ; hmm\n')
    assert c.data_dir == Path("/srv/with ; semicolon")
    assert c.address == "http://h/a"
    assert error('[Server]\nAddress = "http://h/a#b"\n').startswith(
        'etc/x.gcfg:2: [Server] Address = "http://h/a#b": the URL must not have'
    )


# --- paths ----------------------------------------------------------------------------


def test_relative_paths_resolve_against_config_directory() -> None:
    """Relative paths are taken from the directory that holds the config file."""
    c = config(
        "[Server]\nDataDir = ../var\nSockFileDir = run\n[SQLite]\nDir = db2\n"
        "[Signatures]\nTrustedKeys = keys/a.asc\n"
    )
    assert c.data_dir == Path("/etc/rspm/../var")
    assert c.sock_file_dir == Path("/etc/rspm/run")
    assert c.sqlite_dir == Path("/etc/rspm/db2")
    assert c.trusted_keys == (Path("/etc/rspm/keys/a.asc"),)


def test_relative_config_file_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config named by a relative path still yields absolute paths, tied to its directory."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "dev.gcfg").write_text("[Server]\nDataDir = ../var\n")
    monkeypatch.chdir(tmp_path)
    c = load_config("etc/dev.gcfg")
    assert c.path == Path("etc/dev.gcfg")
    assert c.data_dir.is_absolute()
    assert c.data_dir == tmp_path / "etc" / ".." / "var"
    assert c.data_dir.resolve() == (tmp_path / "var").resolve()


def test_access_log_defaults_under_data_dir() -> None:
    """Without [HTTP] AccessLog, access lines go to {DataDir}/logs/access.log; a relative
    path is relative to the file's directory."""
    assert config("[Server]\nDataDir = /srv/pm\n").access_log == Path("/srv/pm/logs/access.log")
    assert config("[HTTP]\nAccessLog = access.log\n").access_log == Path("/etc/rspm/access.log")


def test_sqlite_dir_defaults_under_data_dir() -> None:
    """Without [SQLite] Dir, the database lives in {DataDir}/db, wherever DataDir is."""
    assert config("[Server]\nDataDir = /srv/pm\n").sqlite_dir == Path("/srv/pm/db")
    assert config("[Server]\nDataDir = data\n").sqlite_dir == Path("/etc/rspm/data/db")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('""', "empty path"),
        ("~/pm", '"~" is not expanded'),
        ("~pm/data", '"~" is not expanded'),
    ],
)
def test_bad_path(raw: str, reason: str) -> None:
    """Empty paths and home-directory paths are refused."""
    message = error(f"[Server]\n\nDataDir = {raw}\n")
    assert message.startswith("etc/x.gcfg:3: [Server] DataDir = ")
    assert message.endswith(reason) or reason in message


# --- [Server] Address -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("http://localhost:4242", "http://localhost:4242"),
        ("http://localhost:4242/", "http://localhost:4242"),
        ("https://pm.example.com", "https://pm.example.com"),
        ("HTTPS://pm.example.com//", "HTTPS://pm.example.com"),
        ("https://example.com/pm/", "https://example.com/pm"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://10.0.0.1", "http://10.0.0.1"),
    ],
)
def test_address(raw: str, stored: str) -> None:
    """Address is an http(s) URL with a host, stored without trailing slashes."""
    assert config(f"[Server]\nAddress = {raw}\n").address == stored


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("localhost:4242", "not an http:// or https:// URL"),
        ("ftp://example.com", "not an http:// or https:// URL"),
        ("http://", "the URL has no host"),
        ("http:///path", "the URL has no host"),
        ("http://:80", "the URL has no host"),
        ("http://example.com:99999", "not a valid URL"),
        ("http://example.com:port", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ('"http://exa mple.com"', "not a URL"),
        ('""', "not a URL"),
        ("http://user:pw@example.com", "must not contain a user name or password"),
        ("http://example.com/?x=1", "must not have a query or fragment"),
    ],
)
def test_bad_address(raw: str, reason: str) -> None:
    """A bad Address is refused with the file, line, key, value and reason."""
    message = error(f"[Server]\nAddress = {raw}\n")
    assert message.startswith("etc/x.gcfg:2: [Server] Address = ")
    assert message.endswith(reason) or f": {reason}" in message


# --- [HTTP] Listen --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        (":4242", "", 4242),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:1", "localhost", 1),
        ("pm.example.com:443", "pm.example.com", 443),
        ("[::1]:4242", "::1", 4242),
        ("[::]:0", "::", 0),
        ("[fe80::1%eth0]:4242", "fe80::1%eth0", 4242),
        (":65535", "", 65535),
        (":00080", "", 80),
    ],
)
def test_listen(raw: str, host: str, port: int) -> None:
    """Listen is [host]:port; an empty host means all interfaces; IPv6 loses its brackets."""
    c = config(f"[HTTP]\nListen = {raw}\n")
    assert (c.listen_host, c.listen_port) == (host, port)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("abc", 'not a listen address like ":4242" or "127.0.0.1:4242"'),
        ("4242", "not a listen address"),
        (":", "not a listen address"),
        ("127.0.0.1:", "not a listen address"),
        (":-1", "not a listen address"),
        (":http", "not a listen address"),
        (":123456", "not a listen address"),
        ("::1:4242", "not a listen address"),
        ("[::1]", "not a listen address"),
        (":65536", "port 65536 is out of range 0..65535"),
        ("[nope]:80", "'nope' is not an IPv6 address"),
        ("[127.0.0.1]:80", "is not an IPv6 address"),
        ("256.0.0.1:80", "'256.0.0.1' is not an IPv4 address"),
        ("bad_host:80", "'bad_host' is not a host name or IP address"),
        ('""', "not a listen address"),
    ],
)
def test_bad_listen(raw: str, reason: str) -> None:
    """A bad Listen is refused with the file, line, key, value and reason."""
    message = error(f"[Server]\n\n[HTTP]\n\n\n\n\n\nListen = {raw}\n")
    assert message.startswith("etc/x.gcfg:9: [HTTP] Listen = ")
    assert reason in message


def test_bad_listen_message_exactly() -> None:
    """The message has the documented shape: file:line: [Section] Key = "value": reason."""
    assert error("[HTTP]\nListen = abc\n") == (
        'etc/x.gcfg:2: [HTTP] Listen = "abc": not a listen address like ":4242" or "127.0.0.1:4242"'
    )


# --- [Database] Provider and [Postgres] URL -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"), [("sqlite", "sqlite"), ("SQLite", "sqlite"), ("POSTGRES", "postgres")]
)
def test_provider(raw: str, stored: str) -> None:
    """Provider is sqlite or postgres in any case, stored in lower case."""
    c = config(f"[Database]\nProvider = {raw}\n[Postgres]\nURL = postgres://db/pm\n")
    assert c.provider == stored


@pytest.mark.parametrize("raw", ["mysql", "postgresql", '""', "sqlite3"])
def test_bad_provider(raw: str) -> None:
    """Any other provider is refused, listing the known ones."""
    message = error(f"[Database]\nProvider = {raw}\n")
    assert message.startswith("etc/x.gcfg:2: [Database] Provider = ")
    assert message.endswith("not a database provider (known: sqlite, postgres)")


def test_postgres_url_required_for_postgres() -> None:
    """Provider = postgres without [Postgres] URL names the missing key and the cause."""
    assert error("[Server]\n[Database]\nProvider = postgres\n") == (
        'etc/x.gcfg:3: [Postgres] URL: required when [Database] Provider = "postgres"'
    )


def test_postgres_url_not_required_for_sqlite() -> None:
    """With SQLite, the Postgres URL may be absent (None) or present (kept)."""
    assert config("").postgres_url is None
    assert config("[Postgres]\nURL = postgres://db/pm\n").postgres_url == "postgres://db/pm"


@pytest.mark.parametrize(
    "url", ["postgres://db/pm", "postgresql://u:p@db:5432/pm", "PostgreSQL:///pm?host=/run"]
)
def test_postgres_url(url: str) -> None:
    """postgres:// and postgresql:// URLs are accepted as written."""
    c = config(f"[Database]\nProvider = postgres\n[Postgres]\nURL = {url}\n")
    assert c.postgres_url == url


@pytest.mark.parametrize("url", ["mysql://db/pm", "db.example.com", "postgres:db", '""'])
def test_bad_postgres_url(url: str) -> None:
    """Anything else is refused with the file, line and key."""
    message = error(f"[Postgres]\nURL = {url}\n")
    assert message.startswith("etc/x.gcfg:2: [Postgres] URL = ")
    assert message.endswith("not a postgres:// or postgresql:// URL")


def test_bad_postgres_url_hides_password() -> None:
    """A refused Postgres URL is shown with its password masked."""
    message = error("[Postgres]\nURL = postgress://pm:s3cret@db/pm\n")
    assert "s3cret" not in message
    assert '"postgress://pm:***@db/pm"' in message


def test_unparseable_postgres_url_is_hidden_entirely() -> None:
    """If the URL cannot even be split, none of it is shown."""
    message = error("[Postgres]\nURL = mysql://u:pw@[db/pm\n")
    assert "pw" not in message
    assert '"<hidden>"' in message


# --- [Authentication] APITokenAuth and parse_bool -------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("on", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("Off", False),
        ("no", False),
        ("0", False),
        ('" true "', True),
    ],
)
def test_api_token_auth(raw: str, expected: bool) -> None:
    """APITokenAuth accepts the boolean words in any case."""
    assert config(f"[Authentication]\nAPITokenAuth = {raw}\n").api_token_auth is expected


def test_bare_boolean_key_means_true() -> None:
    """A bare APITokenAuth line, as in git, means true."""
    assert config("[Authentication]\nAPITokenAuth\n").api_token_auth is True
    assert config("[Authentication]\nAPITokenAuth ; on\n").api_token_auth is True


@pytest.mark.parametrize("raw", ["", "2", "enabled", "y", "t", "nope"])
def test_bad_boolean(raw: str) -> None:
    """Other words, and the empty string, are not booleans."""
    message = error(f"[Authentication]\nAPITokenAuth = {raw}\n")
    assert message == (
        f'etc/x.gcfg:2: [Authentication] APITokenAuth = "{raw}": '
        "not a boolean (true/false, on/off, yes/no, 1/0)"
    )


def test_parse_bool() -> None:
    """parse_bool reads the boolean words and raises ValueError on anything else."""
    assert parse_bool("YES") is True
    assert parse_bool(" off ") is False
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool("maybe")


# --- [Storage] and parse_duration -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("250ms", 0.25),
        ("1s500ms", 1.5),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("30m1h", 5400.0),
        (" 10m ", 600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations are plain seconds or numbers with ms/s/m/h/d units, combinable."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a duration"),
        ("-5m", "must not be negative"),
        ("-1", "must not be negative"),
        ("abc", "not a duration"),
        ("5", None),
        ("5x", "not a duration"),
        ("h", "not a duration"),
        ("1h 30m", "not a duration"),
        ("1H", "not a duration"),
        ("1.h", "not a duration"),
        (".5h", "not a duration"),
        ("1.5", "not a duration"),
        ("5mm", "not a duration"),
        ("1e3s", "not a duration"),
        ("9" * 400 + "d", "too long"),
        ("9" * 400, "too long"),
    ],
)
def test_parse_duration_errors(text: str, reason: str | None) -> None:
    """Negative, empty, garbage and overflowing durations raise ValueError."""
    if reason is None:
        assert parse_duration(text) == 5.0
        return
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_storage_durations() -> None:
    """TempMaxAge and CleanupInterval take durations, in seconds."""
    c = config("[Storage]\nTempMaxAge = 1h30m\nCleanupInterval = 45\n")
    assert (c.temp_max_age, c.cleanup_interval) == (5400.0, 45.0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("TempMaxAge = -1h", "a duration must not be negative"),
        ("TempMaxAge = soon", "not a duration"),
        ("TempMaxAge = 0", "must be longer than zero"),
        ("CleanupInterval = 0s", "must be longer than zero"),
    ],
)
def test_bad_storage_duration(line: str, reason: str) -> None:
    """Storage durations must be valid and longer than zero."""
    key = line.split(" ", 1)[0]
    message = error(f"[Storage]\n{line}\n")
    assert message.startswith(f"etc/x.gcfg:2: [Storage] {key} = ")
    assert reason in message


# --- [Signatures] TrustedKeys ---------------------------------------------------------


def test_trusted_keys_repeat_in_order() -> None:
    """Each TrustedKeys line appends a key file, in file order, across split sections."""
    c = config(
        "[Signatures]\nTrustedKeys = /k/a.asc\ntrustedkeys = b.asc\n"
        "[Server]\n[signatures]\nTrustedKeys = /k/c.asc\n"
    )
    assert c.trusted_keys == (Path("/k/a.asc"), Path("/etc/rspm/b.asc"), Path("/k/c.asc"))


def test_trusted_keys_default_empty() -> None:
    """Without TrustedKeys there are no trusted keys."""
    assert config("[Signatures]\n").trusted_keys == ()


def test_bad_trusted_key_names_its_line() -> None:
    """A bad TrustedKeys value reports its own line."""
    message = error("[Signatures]\nTrustedKeys = /a.asc\nTrustedKeys =\n")
    assert message == 'etc/x.gcfg:3: [Signatures] TrustedKeys = "": empty path'


# --- [HTTPS] -----------------------------------------------------------------------------

HTTPS = "[HTTPS]\nListen = :4443\nCertificate = tls/cert.pem\nKey = tls/key.pem\n"


def test_https_listener() -> None:
    """[HTTPS] Listen with Certificate and Key gives a TLS listener; the PEM paths resolve
    against the file's directory; without Permanent, HTTP is not redirected."""
    c = config(HTTPS)
    assert (c.https_listen_host, c.https_listen_port) == ("", 4443)
    assert c.https_certificate == Path("/etc/rspm/tls/cert.pem")
    assert c.https_key == Path("/etc/rspm/tls/key.pem")
    assert c.https_permanent is False
    assert c.listen_port == 4242


@pytest.mark.parametrize(("line", "expected"), [("Permanent", True), ("Permanent = on", True),
                                                ("Permanent = false", False)])
def test_https_permanent(line: str, expected: bool) -> None:
    """Permanent is a boolean; written bare it is true."""
    assert config(f"{HTTPS}{line}\n").https_permanent is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[HTTPS]\nListen = :4443\n",
         "etc/x.gcfg:2: [HTTPS] Listen: needs [HTTPS] Certificate and [HTTPS] Key too"),
        ("[HTTPS]\nListen = :4443\nKey = k.pem\n",
         "etc/x.gcfg:2: [HTTPS] Listen: needs [HTTPS] Certificate too"),
        ("[HTTPS]\nCertificate = c.pem\nKey = k.pem\n",
         "etc/x.gcfg:2: [HTTPS] Certificate: needs [HTTPS] Listen too"),
        ("[HTTP]\nListen = :80\n[HTTPS]\nPermanent = true\n",
         "etc/x.gcfg:4: [HTTPS] Permanent: needs [HTTPS] Listen too"),
    ],
)
def test_https_keys_need_each_other(text: str, message: str) -> None:
    """A listener without its certificate or key, or a certificate, key or redirect without
    a listener, is refused at the line of the key given alone."""
    assert error(text) == message


@pytest.mark.parametrize(
    ("http", "https"),
    [(":4242", ":4242"), ("127.0.0.1:8080", "127.0.0.1:8080"), (":8080", "127.0.0.1:8080"),
     ("127.0.0.1:8080", ":8080")],
)
def test_https_listen_cannot_take_the_http_address(http: str, https: str) -> None:
    """HTTPS on the address HTTP listens on (the same, or a wildcard covering it) is
    refused before the server would fail to bind."""
    text = f"[HTTP]\nListen = {http}\n[HTTPS]\nListen = {https}\nCertificate = c\nKey = k\n"
    port = https.rpartition(":")[2]
    assert error(text) == f"etc/x.gcfg:4: [HTTPS] Listen: port {port} is [HTTP] Listen's already"


@pytest.mark.parametrize(("http", "https"), [("127.0.0.1:8080", "127.0.0.2:8080"),
                                             (":0", ":0"), (":80", ":443")])
def test_https_listen_may_share_a_port_on_another_host(http: str, https: str) -> None:
    """The same port on two different hosts, or two ephemeral ports, is fine."""
    text = f"[HTTP]\nListen = {http}\n[HTTPS]\nListen = {https}\nCertificate = c\nKey = k\n"
    assert config(text).https_listen_port == int(https.rpartition(":")[2])


def test_https_bad_listen_names_the_section() -> None:
    """A bad [HTTPS] Listen is reported as such, with the reason [HTTP] Listen gets."""
    assert error("[HTTPS]\nListen = 4443\nCertificate = c\nKey = k\n") == (
        'etc/x.gcfg:2: [HTTPS] Listen = "4443": not a listen address like ":4242" or '
        '"127.0.0.1:4242"'
    )


def test_https_files_are_not_read_when_parsing(tmp_path: Path) -> None:
    """Certificate and Key may name files that do not exist (yet, or for this user): rspm
    reads the same file to find the admin socket; the server checks them at start."""
    missing = tmp_path / "absent.pem"
    c = config(f"[HTTPS]\nListen = :4443\nCertificate = {missing}\nKey = {missing}\n")
    assert c.https_certificate == c.https_key == missing


# --- schema errors --------------------------------------------------------------------


def test_unknown_section() -> None:
    """An unknown section is named with the file and line and the known sections listed."""
    assert error("[Server]\nDataDir = /a\n\n\n\n\n[Databse]\nProvider = sqlite\n") == (
        "etc/x.gcfg:7: [Databse]: unknown section (known: Authentication, Cache, Database, "
        "HTTP, HTTPS, Limits, Postgres, SQLite, Server, Signatures, Storage)"
    )


def test_unknown_empty_section() -> None:
    """A misspelt section with no keys under it is still refused, at its header's line."""
    assert error("[Server]\nDataDir = /a\n[Authentcation]\n").startswith(
        "etc/x.gcfg:3: [Authentcation]: unknown section (known: "
    )


def test_unknown_section_with_subsection() -> None:
    """An unknown section with a subsection is shown with it."""
    assert error('[Remote "origin"]\nURL = x\n').startswith(
        'etc/x.gcfg:1: [Remote "origin"]: unknown section (known: '
    )


def test_subsections_are_refused() -> None:
    """Known sections take no subsection."""
    assert error('[Server "main"]\nDataDir = /a\n') == (
        'etc/x.gcfg:1: [Server "main"]: [Server] takes no subsection'
    )


def test_unknown_key() -> None:
    """An unknown key is named with its section and the keys that section does know."""
    assert error("[Server]\nDataDir = /a\nDataDirectory = /b\n") == (
        "etc/x.gcfg:3: [Server] DataDirectory: unknown key "
        "(known in [Server]: Address, DataDir, SockFileDir)"
    )


def test_key_from_another_section_is_unknown() -> None:
    """A real key in the wrong section is still an unknown key there."""
    assert error("[HTTP]\nAddress = http://x\n") == (
        "etc/x.gcfg:2: [HTTP] Address: unknown key (known in [HTTP]: Listen, AccessLog)"
    )


@pytest.mark.parametrize(
    ("text", "key", "first", "line"),
    [
        ("[Server]\nDataDir = /a\nDataDir = /b\n", "[Server] DataDir", 2, 3),
        ("[HTTP]\nListen = :1\n[Server]\n[http]\nLISTEN = :1\n", "[HTTP] Listen", 2, 5),
        (
            "[Authentication]\nAPITokenAuth\nAPITokenAuth = no\n",
            "[Authentication] APITokenAuth",
            2,
            3,
        ),
    ],
)
def test_repeated_key(text: str, key: str, first: int, line: int) -> None:
    """A non-repeatable key given twice is an error, even with the same value or spelling."""
    assert error(text) == f"etc/x.gcfg:{line}: {key}: set more than once (first on line {first})"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("Server", "Address"),
        ("Server", "DataDir"),
        ("HTTP", "Listen"),
        ("HTTPS", "Listen"),
        ("HTTPS", "Certificate"),
        ("HTTPS", "Key"),
        ("Database", "Provider"),
        ("Postgres", "URL"),
        ("Storage", "TempMaxAge"),
        ("Signatures", "TrustedKeys"),
    ],
)
def test_bare_key_needs_value(section: str, key: str) -> None:
    """Only booleans may be written as a bare key; others say a value is needed."""
    assert error(f"[{section}]\n{key}\n") == (
        f"etc/x.gcfg:2: [{section}] {key}: needs a value ({key} = ...)"
    )


def test_syntax_errors_come_from_gcfg() -> None:
    """Syntax errors are reported like schema errors, with file and line."""
    assert error("DataDir = /a\n") == 'etc/x.gcfg:1: key "DataDir" before any [section] header'
    assert error('[Server]\nDataDir = "/a\n') == "etc/x.gcfg:2: unterminated quoted string"


def test_values_are_shown_quoted_with_escapes() -> None:
    """A bad value is quoted in gcfg syntax, so blanks and control characters are visible."""
    assert error('[HTTP]\nListen = "a\\tb "\n').startswith(
        'etc/x.gcfg:2: [HTTP] Listen = "a\\tb ": '
    )


# --- load_config ----------------------------------------------------------------------


def test_load_config(tmp_path: Path) -> None:
    """load_config reads the file; relative paths resolve against its directory."""
    path = tmp_path / "pm.gcfg"
    path.write_text("[Server]\nDataDir = data\n[HTTP]\nListen = :8080\n", encoding="utf-8")
    c = load_config(path)
    assert c.path == path
    assert c.data_dir == tmp_path / "data"
    assert c.sqlite_dir == tmp_path / "data" / "db"
    assert c.listen_port == 8080
    assert load_config(str(path)) == c


def test_load_config_reports_errors_with_the_path(tmp_path: Path) -> None:
    """Errors in a loaded file are prefixed with the path as it was given."""
    path = tmp_path / "pm.gcfg"
    path.write_text("[Server]\nNope = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}:2: \\[Server\\] Nope: unknown key"):
        load_config(path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path and the OS reason."""
    path = tmp_path / "absent.gcfg"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read configuration: No such file or directory"


def test_load_config_directory(tmp_path: Path) -> None:
    """A directory in place of the file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match=f"^{tmp_path}: cannot read configuration: "):
        load_config(tmp_path)


def test_load_config_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be opened is a ConfigError naming the path and the OS reason.

    The failure is simulated, because permission bits do not stop root.
    """
    path = tmp_path / "secret.gcfg"
    path.write_text("[Server]\n")

    def refuse(file: object, *args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), file)

    monkeypatch.setattr(pm.config, "open", refuse, raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read configuration: {os.strerror(errno.EACCES)}"


def test_load_config_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError naming the path."""
    path = tmp_path / "latin1.gcfg"
    path.write_bytes(b"[Server]\nDataDir = /caf\xe9\n")
    with pytest.raises(ConfigError, match=f"^{path}: cannot read configuration: not UTF-8"):
        load_config(path)


@pytest.mark.parametrize(("text", "size"), [("65536", 65536), ("64k", 65536), ("64KiB", 65536),
                                           ("8MiB", 8 << 20), ("1g", 1 << 30)])
def test_cache_size_takes_units(text: str, size: int) -> None:
    """[Cache] MaxSize is bytes, or a number with k, M or G (binary units)."""
    assert config(f"[Cache]\nMaxSize = {text}\n").cache_max_size == size


@pytest.mark.parametrize("text", ["lots", "-1", "1k", "64 apples"])
def test_a_bad_or_tiny_cache_size_is_refused(text: str) -> None:
    """A size that is not one, or under 64k, stops the server with the key named."""
    with pytest.raises(ConfigError, match=r"\[Cache\] MaxSize"):
        config(f"[Cache]\nMaxSize = {text}\n")
