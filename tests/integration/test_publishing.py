"""Publishing with the clients users have (twine, uv) and installing with pip and uv.

Each way of configuring twine from the seed is used for real: TWINE_* variables,
a .pypirc with -r, keyring, --sign with a throwaway key, and a pre-signed .asc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packages import build_sdist, build_wheel
from tests.support.server import BIN, ServerProcess

TWINE = str(BIN / "twine")


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
         input_: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, input=input_, capture_output=True,
                          text=True, timeout=300)


def _client_env(server: ServerProcess, home: Path, **extra: str) -> dict[str, str]:
    env = server.env(HOME=str(home), NO_COLOR="1", PIP_CONFIG_FILE="/dev/null",
                     UV_NO_CONFIG="1", **extra)
    env.pop("PACKAGEMANAGER_CONFIG")
    return env


def _upload_url(server: ServerProcess, source: str = "local-python-src") -> str:
    return server.url(f"/upload/pypi/{source}")


def _index_url(server: ServerProcess, repo: str = "python") -> str:
    return server.url(f"/{repo}/latest/simple/")


def _fresh_venv(where: Path) -> Path:
    venv.create(where, with_pip=True, clear=True)
    return where / "bin" / "python"


def _pip_install(server: ServerProcess, home: Path, *requirements: str) -> Path:
    python = _fresh_venv(home / "pip-venv")
    result = _run([str(python), "-m", "pip", "install", "--no-cache-dir", "--index-url",
                   _index_url(server), *requirements], env=_client_env(server, home))
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def _uv_install(server: ServerProcess, home: Path, *requirements: str) -> Path:
    env = _client_env(server, home)
    target = home / "uv-venv"
    assert _run([str(BIN / "uv"), "venv", "--python", str(BIN / "python"), str(target)],
                env=env).returncode == 0
    result = _run([str(BIN / "uv"), "pip", "install", "--no-cache", "--python",
                   str(target / "bin" / "python"), "--index-url", _index_url(server),
                   *requirements], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return target / "bin" / "python"


@pytest.fixture
def home() -> Iterator[Path]:
    """A throwaway HOME, so no real ~/.pypirc, keyring or pip config is touched."""
    path = Path(tempfile.mkdtemp(prefix="pm-home-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gnupg(home: Path) -> Iterator[tuple[dict[str, str], str, Path]]:
    """A throwaway signing key: (env with GNUPGHOME, key fingerprint, exported public key)."""
    gnupghome = Path(tempfile.mkdtemp(prefix="pm-gpg-"))
    env = {**os.environ, "GNUPGHOME": str(gnupghome)}
    created = _run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "Release Bot <release@example.com>", "ed25519", "sign", "never"], env=env)
    assert created.returncode == 0, created.stderr
    listing = _run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                       if line.startswith("fpr:"))
    public = home / "release-key.asc"
    public.write_text(_run(["gpg", "--batch", "--armor", "--export", fingerprint],
                           env=env).stdout)
    yield env, fingerprint, public
    _run(["gpgconf", "--kill", "all"], env=env)
    shutil.rmtree(gnupghome, ignore_errors=True)


@pytest.fixture
def published(server: ServerProcess, home: Path) -> tuple[ServerProcess, str]:
    """A running server with local-python-src in repo 'python', and a write token."""
    return server, server.setup_python()


def test_twine_env_vars_then_pip_and_uv_install(published: tuple[ServerProcess, str],
                                                home: Path, tmp_path: Path) -> None:
    """twine with TWINE_* variables publishes; pip and uv install it into fresh venvs."""
    server, token = published
    dist = tmp_path / "dist"
    dist.mkdir()
    build_wheel(dist, "example-package", "1.0.0")
    build_sdist(dist, "example-package", "1.0.0")
    env = _client_env(server, home, TWINE_REPOSITORY_URL=_upload_url(server),
                      TWINE_USERNAME="__token__", TWINE_PASSWORD=token)
    files = sorted(str(p) for p in dist.iterdir())
    result = _run([TWINE, "upload", "--non-interactive", *files], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # CI re-runs upload the same files again: that must pass, not fail.
    again = _run([TWINE, "upload", "--non-interactive", *files], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert token not in server.log() + server.access_log()

    for install in (_pip_install, _uv_install):
        python = install(server, home, "example-package==1.0.0")
        out = _run([str(python), "-c", "import example_package; print(example_package.VERSION)"])
        assert out.stdout.strip() == "1.0.0", out.stderr


def test_pypirc_with_repository_flag(published: tuple[ServerProcess, str], home: Path,
                                     tmp_path: Path) -> None:
    """A .pypirc entry used with `twine upload -r package-manager` publishes."""
    server, token = published
    (home / ".pypirc").write_text(
        "[distutils]\nindex-servers =\n   package-manager\n\n[package-manager]\n"
        f"repository = {_upload_url(server)}\nusername = __token__\npassword = {token}\n"
    )
    wheel = build_wheel(tmp_path, "pypirc-demo", "0.1")
    result = _run([TWINE, "upload", "--non-interactive", "-r", "package-manager", str(wheel)],
                  env=_client_env(server, home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pypirc_demo-0.1-py3-none-any.whl" in server.get(
        "/python/latest/simple/pypirc-demo/").body.decode()


def test_keyring_holds_the_token(published: tuple[ServerProcess, str], home: Path,
                                 tmp_path: Path) -> None:
    """`keyring set URL __token__` then twine -r with a password-less .pypirc publishes."""
    server, token = published
    url = _upload_url(server)
    env = _client_env(server, home,
                      PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring")
    stored = _run([str(BIN / "keyring"), "set", url, "__token__"], env=env, input_=token + "\n")
    assert stored.returncode == 0, stored.stderr
    (home / ".pypirc").write_text(
        "[distutils]\nindex-servers =\n   package-manager\n\n"
        f"[package-manager]\nrepository = {url}\n"
    )
    wheel = build_wheel(tmp_path, "keyring-demo", "0.1")
    # As in the seed, twine asks for the username and finds the password in the keyring.
    result = _run([TWINE, "upload", "-r", "package-manager", str(wheel)], env=env,
                  input_="__token__\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.get("/python/latest/simple/keyring-demo/").status == 200


def test_twine_sign_stores_a_verifiable_signature(
        make_server: type[ServerProcess], home: Path, tmp_path: Path,
        gnupg: tuple[dict[str, str], str, Path]) -> None:
    """twine --sign uploads an .asc that the index flags and serves, and that verifies."""
    gpg_env, fingerprint, public = gnupg
    server = make_server(extra_config=f"[Signatures]\nTrustedKeys = {public}\n").start()
    token = server.setup_python()
    wheel = build_wheel(tmp_path, "signed-demo", "1.0")
    env = {**_client_env(server, home, TWINE_REPOSITORY_URL=_upload_url(server),
                         TWINE_USERNAME="__token__", TWINE_PASSWORD=token),
           "GNUPGHOME": gpg_env["GNUPGHOME"]}
    result = _run([TWINE, "upload", "--non-interactive", "--sign", "--identity", fingerprint,
                   str(wheel)], env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    page = server.get("/python/latest/simple/signed-demo/").body.decode()
    assert 'data-gpg-sig="true"' in page
    signature = server.get(f"/python/latest/files/{wheel.name}.asc")
    assert signature.status == 200 and signature.body.startswith(b"-----BEGIN PGP SIGNATURE")
    sig_path = tmp_path / "downloaded.asc"
    sig_path.write_bytes(signature.body)
    verified = _run(["gpg", "--batch", "--verify", str(sig_path), str(wheel)], env=gpg_env)
    assert verified.returncode == 0, verified.stderr


def test_presigned_asc_beside_the_file(published: tuple[ServerProcess, str], home: Path,
                                       tmp_path: Path,
                                       gnupg: tuple[dict[str, str], str, Path]) -> None:
    """`twine upload dist/*` picks up a pre-made .asc and the server stores it."""
    server, token = published
    gpg_env, fingerprint, _ = gnupg
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = build_wheel(dist, "presigned-demo", "2.0")
    signed = _run(["gpg", "--batch", "--local-user", fingerprint, "--detach-sign", "--armor",
                   str(wheel)], env=gpg_env)
    assert signed.returncode == 0, signed.stderr
    env = _client_env(server, home, TWINE_REPOSITORY_URL=_upload_url(server),
                      TWINE_USERNAME="__token__", TWINE_PASSWORD=token)
    result = _run([TWINE, "upload", "--non-interactive", str(wheel), f"{wheel}.asc"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    served = server.get(f"/python/latest/files/{wheel.name}.asc")
    assert served.body == Path(f"{wheel}.asc").read_bytes()


def test_bad_signature_by_a_trusted_key_is_refused(
        make_server: type[ServerProcess], home: Path, tmp_path: Path,
        gnupg: tuple[dict[str, str], str, Path]) -> None:
    """A signature by a trusted key over other bytes is refused; nothing is kept."""
    gpg_env, fingerprint, public = gnupg
    server = make_server(extra_config=f"[Signatures]\nTrustedKeys = {public}\n").start()
    token = server.setup_python()
    wheel = build_wheel(tmp_path, "tampered", "1.0")
    other = tmp_path / "other.bin"
    other.write_bytes(b"not the wheel")
    _run(["gpg", "--batch", "--local-user", fingerprint, "--detach-sign", "--armor",
          "--output", f"{wheel}.asc", str(other)], env=gpg_env)
    env = _client_env(server, home, TWINE_REPOSITORY_URL=_upload_url(server),
                      TWINE_USERNAME="__token__", TWINE_PASSWORD=token)
    result = _run([TWINE, "upload", "--non-interactive", str(wheel), f"{wheel}.asc"], env=env)
    assert result.returncode != 0
    assert "does not verify" in result.stdout + result.stderr
    assert server.get("/python/latest/simple/tampered/").status == 404
    files = server.data_dir / "files"  # type: ignore[operator]
    assert not [p for p in files.rglob("*") if p.is_file()]

    # Taken out of TrustedKeys, the key is unknown after a restart: its signature is
    # no longer checked against it, so the same upload is kept (as untrusted).
    assert server.stop() == 0
    server.extra_config = ""
    server.write_config()
    server.start()
    kept = _run([TWINE, "upload", "--non-interactive", str(wheel), f"{wheel}.asc"], env=env)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert 'data-gpg-sig="true"' in server.get("/python/latest/simple/tampered/").body.decode()


def test_uv_publish_and_a_local_version(published: tuple[ServerProcess, str], home: Path,
                                        tmp_path: Path) -> None:
    """uv publish works too; a local version label (2.13.0+cpu) installs with pip."""
    server, token = published
    wheel = build_wheel(tmp_path, "torchish", "2.13.0+cpu")
    result = _run([str(BIN / "uv"), "publish", "--publish-url", _upload_url(server),
                   "--username", "__token__", "--password", token, str(wheel)],
                  env=_client_env(server, home))
    assert result.returncode == 0, result.stdout + result.stderr
    python = _pip_install(server, home, "torchish==2.13.0+cpu")
    out = _run([str(python), "-c", "import torchish; print(torchish.VERSION)"])
    assert out.stdout.strip() == "2.13.0+cpu"


def test_twine_shows_why_an_upload_was_refused(published: tuple[ServerProcess, str],
                                               home: Path, tmp_path: Path) -> None:
    """Refusals reach twine's output: a changed file under a taken name, a wrong token."""
    server, token = published
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    build_wheel(first, "clash", "1.0")
    changed = build_wheel(second, "clash", "1.0", requires_python=">=3.10")
    env = _client_env(server, home, TWINE_REPOSITORY_URL=_upload_url(server),
                      TWINE_USERNAME="__token__", TWINE_PASSWORD=token)
    assert _run([TWINE, "upload", "--non-interactive", *map(str, first.iterdir())],
                env=env).returncode == 0
    clash = _run([TWINE, "upload", "--non-interactive", str(changed)], env=env)
    assert clash.returncode != 0 and "File already exists" in clash.stdout + clash.stderr

    env["TWINE_PASSWORD"] = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    forged = _run([TWINE, "upload", "--non-interactive", str(changed)], env=env)
    assert forged.returncode != 0 and "401" in forged.stdout + forged.stderr

    server.rspm("create", "source", "--name=cran-local", "--type=local")
    env["TWINE_PASSWORD"] = server.rspm("create", "token", "--quiet", "--sources=*",
                                        "--scope=sources:write").stdout.strip()
    env["TWINE_REPOSITORY_URL"] = _upload_url(server, "cran-local")
    r_source = _run([TWINE, "upload", "--non-interactive", str(changed)], env=env)
    assert r_source.returncode != 0 and "local-python" in r_source.stdout + r_source.stderr
