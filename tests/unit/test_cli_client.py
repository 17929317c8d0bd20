"""Unit tests for cli.client and rspm's global options, against a fake server.

The fake (tests/support/fakeserver.py) runs in a thread on 127.0.0.1, on a
unix socket or over TLS; rspm runs in-process through click's CliRunner.
"""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.client import TLS_HINT, ApiClient, ApiError, CliError, Target, connection_factory
from pm import __version__
from tests.support.fakeserver import (
    TOKEN,
    FakeRequest,
    FakeServer,
    Reply,
    error,
    free_port,
    rspm,
    socket_config,
)

SOURCES = [{"name": "src", "type": "local-python", "guid": "g-1", "created": 0}]


def client(server: FakeServer) -> ApiClient:
    target = Target(address=server.address, token=TOKEN)
    return ApiClient(target, connection_factory(target))


def one_error_line(stderr: str) -> str:
    """The single line of stderr, checked to be a clean error."""
    assert stderr.startswith("Error: "), stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert "Traceback" not in stderr
    return stderr.strip()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to ~107 bytes."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


# Cannot reach the server ----------------------------------------------------------------


def test_refused_connection_names_the_address_and_a_hint() -> None:
    """Nothing listening at the address: one line naming it, why, and what to check."""
    address = f"http://127.0.0.1:{free_port()}"
    result = rspm("--address", address, "list", env={"PACKAGEMANAGER_TOKEN": TOKEN})
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"Error: cannot reach the server at {address} (Connection refused); check --address "
        "(or PACKAGEMANAGER_ADDRESS) and that the server is running")
    assert result.stdout == ""


def test_missing_admin_socket_names_the_socket(short_dir: Path) -> None:
    """No server on the admin socket the config names: the socket path and 'running'."""
    config = socket_config(short_dir)
    result = rspm("--config", str(config), "list")
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"Error: cannot reach the server at the admin socket {short_dir / 'rstudio-pm.sock'} "
        "(No such file or directory); is the Package Manager server running?")


def test_missing_config_file_is_named(short_dir: Path) -> None:
    """Without an address, an unreadable config file is reported by path, with the way out."""
    missing = short_dir / "nope.gcfg"
    result = rspm("list", env={"PACKAGEMANAGER_CONFIG": str(missing)})
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert str(missing) in line and "--config" in line and "--address" in line


def test_address_without_token_is_refused_before_connecting() -> None:
    """An address but no PACKAGEMANAGER_TOKEN: a clear error and no request at all."""
    with FakeServer() as server:
        result = rspm("list", "tokens", env={"PACKAGEMANAGER_ADDRESS": server.address})
    assert result.exit_code == 1
    assert "PACKAGEMANAGER_TOKEN" in one_error_line(result.stderr)
    assert server.requests == []


@pytest.mark.parametrize("address", ["ftp://pm.example", "pm.example:4242",
                                     "http://127.0.0.1:http"])
def test_malformed_address_is_refused(address: str) -> None:
    """An address that is not http(s)://host[:port] is an error naming it."""
    result = rspm("-a", address, "status", env={"PACKAGEMANAGER_TOKEN": TOKEN})
    assert result.exit_code == 1
    assert repr(address) in one_error_line(result.stderr)


# The admin socket ------------------------------------------------------------------------


def test_admin_socket_carries_requests_without_a_token(short_dir: Path) -> None:
    """Without an address rspm uses the config's admin socket, sends no token, one connection."""
    config = socket_config(short_dir)
    with FakeServer(unix_socket=short_dir / "rstudio-pm.sock") as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        result = rspm("-c", str(config), "list", "sources",
                      env={"PACKAGEMANAGER_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["NAME", "TYPE", "GUID", "CREATED"]
    assert "src" in result.stdout
    assert [r.path for r in server.requests] == ["/__api__/sources", "/__api__/status"]
    assert all(r.headers.get("Authorization") is None for r in server.requests)
    assert server.connections() == [1, 1]


def test_config_option_beats_the_environment(short_dir: Path) -> None:
    """--config (here after the command) wins over PACKAGEMANAGER_CONFIG."""
    config = socket_config(short_dir)
    with FakeServer(unix_socket=short_dir / "rstudio-pm.sock") as server:
        server.on("GET", "/__api__/sources", Reply(200, []))
        result = rspm("list", "sources", "--config", str(config),
                      env={"PACKAGEMANAGER_CONFIG": str(short_dir / "elsewhere.gcfg")})
    assert result.exit_code == 0, result.output
    assert result.stdout == "(none)\n"


# Server errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "expected"), [
    (error(403, "this needs a global:admin token"), "Error: this needs a global:admin token"),
    (error(401, "the token was revoked"),
     "Error: the server refused the token: the token was revoked"),
    (error(503, "the database is unavailable"), "Error: the database is unavailable"),
    (Reply(502, raw=b"<html>bad gateway</html>", content_type="text/html", reason="Bad Gateway"),
     "Error: the server answered 502 Bad Gateway"),
])
def test_server_errors_are_one_line_with_the_reason(reply: Reply, expected: str) -> None:
    """A 4xx/5xx answer prints its JSON "error" (or the status line), exit status 1."""
    with FakeServer() as server:
        server.on("GET", "/__api__/tokens", reply)
        result = rspm("list", "tokens", server=server)
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == expected
    assert result.stdout == ""
    assert TOKEN not in result.stderr


def test_an_answer_that_is_not_json_is_an_error() -> None:
    """Something answering 200 with HTML is not taken for a Package Manager server."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(200, raw=b"<html></html>",
                                                   content_type="text/html"))
        result = rspm("list", "sources", server=server)
    assert result.exit_code == 1
    assert "is not JSON" in one_error_line(result.stderr)


def test_a_redirect_is_reported_with_its_location() -> None:
    """A redirect (say to https) is not followed silently: the error names the new place."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(
            301, raw=b"", reason="Moved Permanently",
            headers=(("Location", "https://pm.example/__api__/sources"),)))
        result = rspm("list", "sources", server=server)
    assert result.exit_code == 1
    assert "'https://pm.example/__api__/sources'" in one_error_line(result.stderr)


def test_api_error_carries_the_status() -> None:
    """ApiError keeps the status, so commands can tell a 409 from other refusals."""
    with FakeServer() as server:
        server.on("POST", "/__api__/sources", error(409, "source 'src' already exists"))
        api = client(server)
        with pytest.raises(ApiError) as info:
            api.post("/__api__/sources", {"name": "src", "type": "local"})
        api.close()
    assert (info.value.status, info.value.message) == (409, "source 'src' already exists")


# Tokens, verbose output, keep-alive ------------------------------------------------------


def test_token_is_a_bearer_and_verbose_never_shows_it() -> None:
    """The token goes as 'Authorization: Bearer'; -v prints method, URL and status only."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        result = rspm("-v", "list", "sources", server=server)
    assert result.exit_code == 0, result.output
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.stderr.splitlines() == [
        f"GET {server.address}/__api__/sources -> 200 OK",
        f"GET {server.address}/__api__/status -> 200 OK",
    ]
    assert TOKEN not in result.output


def test_requests_of_one_client_share_one_connection() -> None:
    """Every request of one command goes over the same kept-alive connection."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        api = client(server)
        for _ in range(3):
            assert api.get("/__api__/sources") == SOURCES
        api.close()
    assert server.connections() == [1, 1, 1, 1]


def test_connection_close_is_honoured() -> None:
    """After an answer with 'Connection: close' the next request opens a new connection."""
    with FakeServer() as server:
        server.on("GET", "/a", Reply(200, {}, close=True))
        server.on("GET", "/b", Reply(200, {}))
        api = client(server)
        api.get("/a")
        api.get("/b")
        api.close()
    assert [(r.path, r.connection) for r in server.requests] == [
        ("/a", 1), ("/__api__/status", 2), ("/b", 2)]


def test_a_kept_alive_connection_the_server_closed_is_retried_once() -> None:
    """The server hanging up an idle connection is not an error: the request is resent."""
    with FakeServer() as server:
        server.on("GET", "/a", Reply(200, {"a": 1}, hang_up=True))
        server.on("GET", "/b", Reply(200, {"b": 2}))
        api = client(server)
        assert api.get("/a") == {"a": 1}
        assert api.get("/b") == {"b": 2}
        api.close()
    assert [(r.path, r.connection) for r in server.requests] == [
        ("/a", 1), ("/__api__/status", 2), ("/b", 2)]


def _drop(request: FakeRequest) -> Reply:
    request.drop(0)
    raise AssertionError("drop raises")


def test_a_connection_lost_mid_request_is_an_error() -> None:
    """A fresh connection cut before the answer: one attempt, an error naming the request."""
    with FakeServer() as server:
        server.on("POST", "/x", _drop)
        api = client(server)
        with pytest.raises(CliError) as info:
            api.post("/x", {"n": 1})
        api.close()
    assert str(info.value).startswith(
        f"the connection to {server.address} was lost during POST /x (")
    assert len(server.made("POST", "/x")) == 1


def test_a_connection_lost_again_after_the_retry_is_an_error() -> None:
    """On a reused connection the request is tried twice, then reported."""
    with FakeServer() as server:
        server.on("POST", "/x", _drop)
        api = client(server)
        api.get("/__api__/status")
        with pytest.raises(CliError, match="was lost during POST /x"):
            api.post("/x", {"n": 1})
        api.close()
    assert [r.connection for r in server.made("POST", "/x")] == [1, 2]


def test_address_path_prefix_is_kept() -> None:
    """A server behind a proxy at /pm/: every request goes under that prefix."""
    with FakeServer() as server:
        server.on("GET", "/pm/__api__/sources", Reply(200, []))
        result = rspm("list", "sources", server=server,
                      env={"PACKAGEMANAGER_ADDRESS": server.address + "/pm/"})
    assert result.exit_code == 0, result.output
    assert [r.path for r in server.requests] == ["/pm/__api__/sources", "/pm/__api__/status"]


def test_names_are_quoted_in_paths() -> None:
    """A name with '/' or spaces stays one path segment."""
    with FakeServer() as server:
        server.on("DELETE", "/__api__/sources/a%20b%2Fc", Reply(200, {"name": "a b/c"}))
        result = rspm("delete", "source", "--name=a b/c", server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Source 'a b/c' deleted\n"


# The version check ---------------------------------------------------------------------------


def test_a_different_server_version_is_warned_about_once() -> None:
    """Another major.minor on the server: one warning on stderr, one extra request."""
    with FakeServer() as server:
        server.on("GET", "/__api__/status", Reply(200, {"version": "9.4.0"}))
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        server.on("GET", "/__api__/repos", Reply(200, []))
        result = rspm("list", "sources", server=server)
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"Warning: the server runs Package Manager 9.4.0 and this rspm is "
                             f"{__version__}; commands may fail or behave differently until "
                             "their versions match\n")
    assert [r.path for r in server.requests] == ["/__api__/sources", "/__api__/status"]


def test_the_status_command_checks_the_version_without_an_extra_request() -> None:
    """`rspm status` already asked for the version: no second request."""
    with FakeServer() as server:
        server.on("GET", "/__api__/status", Reply(200, {"version": "9.4.0", "uptime": 3}))
        result = rspm("status", server=server)
    assert result.exit_code == 0
    assert result.stdout == "version: 9.4.0\nuptime: 3\n"
    assert "Warning: the server runs Package Manager 9.4.0" in result.stderr
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [
    Reply(200, {"version": __version__.rsplit(".", 1)[0] + ".99"}),
    error(404, "no such route"),
    Reply(200, {"database": "sqlite"}),
])
def test_no_warning_for_a_patch_difference_or_an_unknown_version(status: Reply) -> None:
    """Same major.minor, or a server that does not say: nothing on stderr."""
    with FakeServer() as server:
        server.on("GET", "/__api__/status", status)
        server.on("GET", "/__api__/sources", Reply(200, []))
        result = rspm("list", "sources", server=server)
    assert result.exit_code == 0
    assert result.stderr == ""


def test_version_flag() -> None:
    """-V and --version print 'rspm <version>' and talk to no server."""
    for flag in ("-V", "--version"):
        result = rspm(flag)
        assert result.exit_code == 0
        assert result.stdout == f"rspm {__version__}\n"


# Global options, as Posit's rspm takes them ---------------------------------------------------


@pytest.mark.parametrize("args", [
    ("--output-format=json", "list", "sources"),
    ("-o", "json", "list", "sources"),
    ("list", "sources", "--output-format", "json"),
    ("list", "-o", "json", "sources"),
])
def test_output_format_may_come_before_or_after_the_command(args: tuple[str, ...]) -> None:
    """Global options are accepted wherever Posit's rspm accepts them."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        result = rspm(*args, server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[\n")


@pytest.mark.parametrize("fmt", ["human", "text"])
def test_text_is_human(fmt: str) -> None:
    """--output-format=text is kept as another name for human."""
    with FakeServer() as server:
        server.on("GET", "/__api__/repos", Reply(200, [
            {"name": "python", "type": "python", "sources": ["a", "b"], "description": "x",
             "authenticated": True}]))
        result = rspm(f"--output-format={fmt}", "list", server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["NAME    TYPE    AUTHENTICATED  SOURCES  DESCRIPTION",
                                          "python  python  yes            a, b     x"]


def test_address_option_beats_the_environment() -> None:
    """-a after the command wins over PACKAGEMANAGER_ADDRESS."""
    with FakeServer() as server:
        server.on("GET", "/__api__/sources", Reply(200, []))
        result = rspm("list", "sources", "-a", server.address,
                      env={"PACKAGEMANAGER_ADDRESS": f"http://127.0.0.1:{free_port()}",
                           "PACKAGEMANAGER_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output


def test_create_token_prints_the_notice_on_stderr_and_the_token_alone() -> None:
    """Unchanged from before: notice on stderr, the token alone on stdout; --quiet drops the
    notice."""
    with FakeServer() as server:
        server.on("POST", "/__api__/tokens", Reply(201, {"token": "a.b.c", "guid": "g"}))
        loud = rspm("create", "token", "--sources=src", server=server)
        quiet = rspm("create", "token", "--quiet", "--sources=src", server=server)
    assert loud.stdout == quiet.stdout == "a.b.c\n"
    assert "record this token immediately" in loud.stderr
    assert quiet.stderr == ""
    assert server.made("POST", "/__api__/tokens")[0].json() == {
        "description": "", "sources": "src", "repos": "", "expires": "never",
        "scope": "sources:write"}


# --succeed-on-existing -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "path"), [("source", "/__api__/sources"),
                                            ("repo", "/__api__/repos")])
def test_succeed_on_existing(kind: str, path: str) -> None:
    """A 409 'already exists' is success with --succeed-on-existing, an error without."""
    with FakeServer() as server:
        server.on("POST", path, error(409, f"{kind} 'x' already exists"))
        refused = rspm("create", kind, "--name=x", "--type=python", server=server)
        accepted = rspm("create", kind, "--name=x", "--type=python", "--succeed-on-existing",
                        server=server)
        as_json = rspm("-o", "json", "create", kind, "--name=x", "--type=python",
                       "--succeed-on-existing", server=server)
    assert refused.exit_code == 1
    assert one_error_line(refused.stderr) == f"Error: {kind} 'x' already exists"
    assert accepted.exit_code == 0
    assert accepted.stdout == f"{kind.capitalize()} 'x' already exists\n"
    assert as_json.exit_code == 0
    assert '"already_exists": true' in as_json.stdout


def test_succeed_on_existing_does_not_hide_other_errors() -> None:
    """Only a 409 is forgiven: a bad type still fails."""
    with FakeServer() as server:
        server.on("POST", "/__api__/sources", error(400, "type must be local, local-python"))
        result = rspm("create", "source", "--name=x", "--type=cran", "--succeed-on-existing",
                      server=server)
    assert result.exit_code == 1
    assert "local, local-python" in result.stderr


# TLS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, its own CA."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rspm test server")])
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


def test_tls_verification_failure_says_what_to_do(certificate: Certificate) -> None:
    """A certificate no trusted CA signed: one line with the reason and the two ways out."""
    with FakeServer(tls=certificate.server_context()) as server:
        result = rspm("list", "sources", server=server)
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert line.startswith(f"Error: TLS verification of {server.address} failed (")
    assert line.endswith(TLS_HINT)
    assert "SSL_CERT_FILE" in TLS_HINT and "--insecure-ssl-skip-verify" in TLS_HINT


def test_ssl_cert_file_is_honoured(certificate: Certificate) -> None:
    """SSL_CERT_FILE naming the CA makes the same server trusted."""
    with FakeServer(tls=certificate.server_context()) as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        result = rspm("list", "sources", server=server,
                      env={"SSL_CERT_FILE": str(certificate.cert)})
    assert result.exit_code == 0, result.output
    assert "src" in result.stdout


def test_insecure_ssl_skip_verify(certificate: Certificate) -> None:
    """--insecure-ssl-skip-verify talks to the untrusted server anyway."""
    with FakeServer(tls=certificate.server_context()) as server:
        server.on("GET", "/__api__/sources", Reply(200, SOURCES))
        result = rspm("list", "sources", "--insecure-ssl-skip-verify", server=server)
    assert result.exit_code == 0, result.output


def test_https_to_a_plain_http_server_is_explained() -> None:
    """https:// to a server speaking plain HTTP: a handshake error, not a traceback."""
    with FakeServer() as server:
        address = server.address.replace("http://", "https://")
        result = rspm("list", "sources", env={"PACKAGEMANAGER_ADDRESS": address,
                                              "PACKAGEMANAGER_TOKEN": TOKEN})
    assert result.exit_code == 1
    assert one_error_line(result.stderr).startswith(f"Error: TLS handshake with {address} failed")
