"""The server's configuration: schema, defaults, and loading from a gcfg file.

The whole schema is the table ``_SCHEMA`` below: one row per key, naming its
section, its parser, the Config field(s) it fills and its default.  Anything
not in the table is an error, so a misspelt section or key cannot silently
leave a setting at its default.

Every error is a ConfigError whose message starts ``{file}:{line}:`` and names
the ``[Section] Key`` concerned, so it can be shown to an operator as is.
"""

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from pm import gcfg
from pm.errors import ConfigError
from pm.limits import Limits

__all__ = ["Config", "load_config", "parse_bool", "parse_config", "parse_duration",
           "parse_size"]

_SOCKET_NAME = "rstudio-pm.sock"


@dataclass(frozen=True, kw_only=True)
class Config:
    """A validated configuration; build it with load_config or parse_config.

    All paths are absolute: relative paths in the file are resolved against the
    directory holding the file.  Durations are in seconds.
    """

    path: Path
    address: str
    data_dir: Path
    sock_file_dir: Path
    listen_host: str
    listen_port: int
    # The port is None when there is no TLS listener. Certificate and key are
    # PEM files that the server reads at start, not the loader.
    https_listen_host: str
    https_listen_port: int | None
    https_certificate: Path | None
    https_key: Path | None
    # The HTTP listener redirects every request to HTTPS.
    https_permanent: bool
    provider: str
    sqlite_dir: Path
    # Kept out of repr: the URL usually carries the database password, and
    # configs end up in logs and tracebacks.
    postgres_url: str | None = field(repr=False)
    api_token_auth: bool
    # Whether a repo created without --authenticated or --no-authenticated requires a token.
    new_repos_auth_by_default: bool
    temp_max_age: float
    cleanup_interval: float
    trusted_keys: tuple[Path, ...]
    # Bytes of index pages and file lookups kept in memory (pm.pagecache).
    cache_max_size: int
    # The access log file (pm.accesslog); logrotate moves it, SIGHUP or SIGUSR1 reopens it.
    access_log: Path
    # [Limits], gathered by the ``limits`` property.
    max_upload_size: int
    max_field_size: int
    max_form_parts: int
    max_header_size: int
    header_timeout: float
    idle_timeout: float
    min_body_rate: int
    max_uploads: int
    max_uploads_per_token: int

    @property
    def limits(self) -> Limits:
        """What one client may take of the server (pm.limits)."""
        return Limits(
            max_upload_size=self.max_upload_size, max_field_size=self.max_field_size,
            max_form_parts=self.max_form_parts, max_header_size=self.max_header_size,
            header_timeout=self.header_timeout, idle_timeout=self.idle_timeout,
            min_body_rate=self.min_body_rate, max_uploads=self.max_uploads,
            max_uploads_per_token=self.max_uploads_per_token)

    @property
    def socket_path(self) -> Path:
        """The Unix socket the command-line tools use to reach the server."""
        return self.sock_file_dir / _SOCKET_NAME


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read configuration: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{filename}: cannot read configuration: not UTF-8 ({exc})") from exc
    return parse_config(text, filename)


def parse_config(text: str, filename: str) -> Config:
    """Validate configuration ``text`` as if read from the file ``filename``.

    ``filename`` names the file in error messages, becomes ``Config.path``, and
    its directory is what relative paths are resolved against.
    """
    base = Path(filename).absolute().parent
    given: dict[_Key, list[tuple[int, Any]]] = {}

    def check_section(name: str, subsection: str | None, line: int) -> None:
        _section(name, subsection, f"{filename}:{line}:")

    for entry in gcfg.parse(text, filename, check_section):
        key = _lookup(entry, filename)
        where = f"{filename}:{entry.line}: {key}"
        if not key.repeatable and key in given:
            raise ConfigError(f"{where}: set more than once (first on line {given[key][0][0]})")
        raw = entry.value if entry.value is not None else key.bare
        if raw is None:
            raise ConfigError(f"{where}: needs a value ({key.name} = ...)")
        try:
            value = key.parse(raw, base)
        except ValueError as exc:
            shown = _redact_url(raw) if key.secret else raw
            raise ConfigError(f"{where} = {gcfg.quote(shown)}: {exc}") from None
        given.setdefault(key, []).append((entry.line, value))

    values: dict[str, Any] = {}
    for key in _SCHEMA:
        if key.repeatable:
            value = tuple(parsed for _, parsed in given.get(key, ()))
        elif key in given:
            value = given[key][0][1]
        elif isinstance(key.default, str):
            value = key.parse(key.default, base)
        elif key.default is None:
            value = None
        else:
            value = key.default(values)
        if len(key.fields) == 1:
            values[key.fields[0]] = value
        else:
            values.update(zip(key.fields, value, strict=True))

    for key in (k for k in _SCHEMA if k in given):
        missing = [str(other) for other in _needed(key) if other not in given]
        if missing:
            raise ConfigError(
                f"{filename}:{given[key][0][0]}: {key}: needs {' and '.join(missing)} too")
    _check_listeners(values, given, filename)

    for key in _SCHEMA:
        if key.required_when is None or key in given:
            continue
        cause_field, cause_value = key.required_when
        if values[cause_field] == cause_value:
            cause = next(k for k in _SCHEMA if cause_field in k.fields)
            line = f":{given[cause][0][0]}" if cause in given else ""
            raise ConfigError(
                f"{filename}{line}: {key}: required when {cause} = {gcfg.quote(cause_value)}"
            )
    return Config(path=Path(filename), **values)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``30s``, ``5m``, ``1h30m``, ``2d``, ``1.5h``, ``250ms``.

    A plain integer is seconds; otherwise it is a sequence of numbers with units
    ms, s, m, h, d as in Go's time.ParseDuration.  Raises ValueError.
    """
    text = text.strip()
    if text.startswith("-"):
        raise ValueError("a duration must not be negative")
    garbage = ValueError('not a duration like "90", "30s", "5m", "1h30m" or "2d"')
    if not text:
        raise garbage
    if re.fullmatch(r"[0-9]+", text):
        total = float(text)
    else:
        total = 0.0
        pos = 0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                raise garbage
            total += float(match["number"]) * _DURATION_UNITS[match["unit"]]
            pos = match.end()
    if not math.isfinite(total):
        raise ValueError("duration is too long")
    return total


def parse_bool(text: str) -> bool:
    """Read true/false, on/off, yes/no or 1/0 (any case).  Raises ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("not a boolean (true/false, on/off, yes/no, 1/0)")


@dataclass(frozen=True)
class _Key:
    """One row of the schema."""

    section: str
    name: str
    # Turns the text of the value into the field's value; raises ValueError
    # with a reason.  The second argument is the directory relative paths are
    # resolved against.
    parse: Callable[[str, Path], Any]
    # The Config field(s) filled; with several, parse returns a tuple of that size.
    fields: tuple[str, ...]
    # Text parsed like a value written in the file, a function of the fields
    # already filled (keys are filled in table order), or None for no value.
    default: str | Callable[[Mapping[str, Any]], Any] | None = None
    # What a bare "Key" line stands for; None means the key needs a value.
    bare: str | None = None
    # Repeats append to a tuple, which defaults to empty.
    repeatable: bool = False
    # (field, value): the key must be given when that field has that value.
    required_when: tuple[str, str] | None = None
    # The value may hold a password, which error messages must not show.
    secret: bool = False
    # Keys of the same section that must be given with this one.
    needs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.section}] {self.name}"


def _parse_address(text: str, base: Path) -> str:
    if not text or any(char.isspace() for char in text):
        raise ValueError("not a URL")
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - evaluated for the ValueError a bad port raises
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if url.scheme.lower() not in ("http", "https"):
        raise ValueError("not an http:// or https:// URL")
    if not url.hostname:
        raise ValueError("the URL has no host")
    if url.username is not None:
        raise ValueError("the URL must not contain a user name or password")
    if "?" in text or "#" in text:
        raise ValueError("the URL must not have a query or fragment")
    # Stored without the slash so that callers can append "/path" as is.
    return text.rstrip("/")


def _parse_path(text: str, base: Path) -> Path:
    if not text:
        raise ValueError("empty path")
    if "\0" in text:
        raise ValueError("the path contains a NUL character")
    if text.startswith("~"):
        # The server usually runs as a service account whose home is not the
        # one the author meant, so "~" is refused rather than expanded.
        raise ValueError('"~" is not expanded; write the path out in full')
    path = Path(text)
    return path if path.is_absolute() else base / path


def _parse_listen(text: str, base: Path) -> tuple[str, int]:
    match = _LISTEN.fullmatch(text)
    if match is None:
        raise ValueError('not a listen address like ":4242" or "127.0.0.1:4242"')
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    if match["ipv6"] is not None:
        host = match["ipv6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        return host, port
    host = match["host"]
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif host and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host, port


def _parse_provider(text: str, base: Path) -> str:
    provider = text.lower()
    if provider not in _PROVIDERS:
        raise ValueError(f"not a database provider (known: {', '.join(_PROVIDERS)})")
    return provider


def _parse_postgres_url(text: str, base: Path) -> str:
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in ("postgres", "postgresql"):
        raise ValueError("not a postgres:// or postgresql:// URL")
    return text


def _parse_bool(text: str, base: Path) -> bool:
    return parse_bool(text)


def _parse_interval(text: str, base: Path) -> float:
    # Zero would mean "delete uploads as they arrive" or "clean up in a busy
    # loop", never what anyone wants.
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


_SIZE = re.compile(r"(\d+)\s*([kmg]?)i?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """A size in bytes: ``65536``, ``64k``, ``64MiB``, ``1g``."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a size (like 64MiB, 512k or 1g)")
    return int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]


def _parse_cache_size(text: str, base: Path) -> int:
    size = parse_size(text)
    if size < 64 * 1024:
        raise ValueError("must be at least 64k")
    return size


def _size_at_least(minimum: int) -> Callable[[str, Path], int]:
    def parse(text: str, base: Path) -> int:
        size = parse_size(text)
        if size < minimum:
            raise ValueError(f"must be at least {minimum} bytes")
        return size
    return parse


def _count_at_least(minimum: int) -> Callable[[str, Path], int]:
    def parse(text: str, base: Path) -> int:
        if not re.fullmatch(r"\s*[0-9]+\s*", text):
            raise ValueError("not a whole number")
        count = int(text)
        if count < minimum:
            raise ValueError(f"must be at least {minimum}")
        return count
    return parse


def _needed(key: _Key) -> list[_Key]:
    return [_KEYS[(key.section.lower(), name.lower())] for name in key.needs]


def _no_listener(values: Mapping[str, Any]) -> tuple[str, None]:
    return "", None


def _check_listeners(values: Mapping[str, Any], given: Mapping[_Key, list[tuple[int, Any]]],
                     filename: str) -> None:
    """ConfigError if the HTTPS listener would bind the HTTP listener's address."""
    port = values["https_listen_port"]
    if port is None or port == 0 or port != values["listen_port"]:
        return
    hosts = {values["listen_host"], values["https_listen_host"]}
    if len(hosts) == 1 or "" in hosts:
        key = _KEYS[("https", "listen")]
        raise ConfigError(f"{filename}:{given[key][0][0]}: {key}: port {port} is "
                          "[HTTP] Listen's already")


def _sqlite_dir_default(values: Mapping[str, Any]) -> Path:
    data_dir: Path = values["data_dir"]
    return data_dir / "db"


def _access_log_default(values: Mapping[str, Any]) -> Path:
    data_dir: Path = values["data_dir"]
    return data_dir / "logs" / "access.log"


def _redact_url(text: str) -> str:
    try:
        url = urlsplit(text)
        has_password = url.password is not None
    except ValueError:
        return "<hidden>"
    if not has_password:
        return text
    userinfo, _, hostport = url.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url._replace(netloc=f"{user}:***@{hostport}").geturl()


_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})
_PROVIDERS = ("sqlite", "postgres")
_DURATION_UNITS = MappingProxyType({"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0})
# "ms" is listed before "m" so that "5ms" is not read as five minutes and a stray "s".
_DURATION_PART = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h|d)")
_LISTEN = re.compile(r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)

_SCHEMA: tuple[_Key, ...] = (
    _Key("Server", "Address", _parse_address, ("address",), default="http://localhost:4242"),
    _Key("Server", "DataDir", _parse_path, ("data_dir",), default="/var/lib/rstudio-pm"),
    _Key("Server", "SockFileDir", _parse_path, ("sock_file_dir",), default="/var/run/rstudio-pm"),
    _Key("HTTP", "Listen", _parse_listen, ("listen_host", "listen_port"), default=":4242"),
    _Key("HTTP", "AccessLog", _parse_path, ("access_log",), default=_access_log_default),
    _Key(
        "HTTPS",
        "Listen",
        _parse_listen,
        ("https_listen_host", "https_listen_port"),
        default=_no_listener,
        needs=("Certificate", "Key"),
    ),
    _Key("HTTPS", "Certificate", _parse_path, ("https_certificate",), needs=("Listen",)),
    _Key("HTTPS", "Key", _parse_path, ("https_key",), needs=("Listen",)),
    _Key(
        "HTTPS",
        "Permanent",
        _parse_bool,
        ("https_permanent",),
        default="false",
        bare="true",
        needs=("Listen",),
    ),
    _Key("Database", "Provider", _parse_provider, ("provider",), default="sqlite"),
    _Key("SQLite", "Dir", _parse_path, ("sqlite_dir",), default=_sqlite_dir_default),
    _Key(
        "Postgres",
        "URL",
        _parse_postgres_url,
        ("postgres_url",),
        required_when=("provider", "postgres"),
        secret=True,
    ),
    _Key(
        "Authentication",
        "APITokenAuth",
        _parse_bool,
        ("api_token_auth",),
        default="false",
        bare="true",
    ),
    _Key(
        "Authentication",
        "NewReposAuthByDefault",
        _parse_bool,
        ("new_repos_auth_by_default",),
        default="false",
        bare="true",
    ),
    _Key("Storage", "TempMaxAge", _parse_interval, ("temp_max_age",), default="1h"),
    _Key("Storage", "CleanupInterval", _parse_interval, ("cleanup_interval",), default="10m"),
    _Key("Signatures", "TrustedKeys", _parse_path, ("trusted_keys",), repeatable=True),
    _Key("Cache", "MaxSize", _parse_cache_size, ("cache_max_size",), default="64MiB"),
    _Key("Limits", "MaxUploadSize", _size_at_least(1024), ("max_upload_size",),
         default="16GiB"),
    _Key("Limits", "MaxFieldSize", _size_at_least(1024), ("max_field_size",), default="1MiB"),
    # The file, its signature and the fields twine always sends fit in 30 parts.
    _Key("Limits", "MaxFormParts", _count_at_least(30), ("max_form_parts",), default="1000"),
    _Key("Limits", "MaxHeaderSize", _size_at_least(4096), ("max_header_size",),
         default="16KiB"),
    _Key("Limits", "HeaderTimeout", _parse_interval, ("header_timeout",), default="30s"),
    _Key("Limits", "IdleTimeout", _parse_interval, ("idle_timeout",), default="5m"),
    _Key("Limits", "MinBodyRate", _size_at_least(0), ("min_body_rate",), default="1KiB"),
    _Key("Limits", "MaxUploads", _count_at_least(0), ("max_uploads",), default="128"),
    _Key("Limits", "MaxUploadsPerToken", _count_at_least(0), ("max_uploads_per_token",),
         default="64"),
)

_KEYS = MappingProxyType({(key.section.lower(), key.name.lower()): key for key in _SCHEMA})
_SECTIONS = MappingProxyType({key.section.lower(): key.section for key in _SCHEMA})


def _section(name: str, subsection: str | None, where: str) -> str:
    """The schema's spelling of section ``name``, or ConfigError if unknown."""
    header = f"[{name}]" if subsection is None else f"[{name} {gcfg.quote(subsection)}]"
    section = _SECTIONS.get(name.lower())
    if section is None:
        known = ", ".join(sorted(_SECTIONS.values()))
        raise ConfigError(f"{where} {header}: unknown section (known: {known})")
    if subsection is not None:
        raise ConfigError(f"{where} {header}: [{section}] takes no subsection")
    return section


def _lookup(entry: gcfg.Entry, filename: str) -> _Key:
    """The schema row for ``entry``, or ConfigError if there is none."""
    where = f"{filename}:{entry.line}:"
    section = _section(entry.section, entry.subsection, where)
    key = _KEYS.get((entry.section.lower(), entry.key.lower()))
    if key is None:
        known = ", ".join(k.name for k in _SCHEMA if k.section == section)
        raise ConfigError(
            f"{where} [{section}] {entry.key}: unknown key (known in [{section}]: {known})"
        )
    return key
