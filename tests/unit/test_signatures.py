"""Unit tests for pm.signatures.SignatureChecker against the real gpg binary."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pm.errors import BadUpload
from pm.signatures import SignatureChecker, SignatureInfo

GPG_TIMEOUT = 60


def _short_home(prefix: str) -> Path:
    # gpg-agent's socket lives in the home; its path has a length limit that
    # pytest's tmp_path can exceed, so homes go directly under /tmp.
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(home, 0o700)
    return home


def _kill_agents(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=False,
        capture_output=True,
        timeout=GPG_TIMEOUT,
    )


@dataclass(frozen=True)
class Signer:
    """A throwaway key pair in its own GnuPG home."""

    home: Path
    fingerprint: str
    public_key: Path

    @property
    def keyid(self) -> str:
        return self.fingerprint[-16:]

    def gpg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
             *args],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            check=True,
            capture_output=True,
            timeout=GPG_TIMEOUT,
        )

    def detach_sign(self, path: Path) -> bytes:
        out = path.with_name(path.name + ".asc")
        self.gpg("--detach-sign", "--armor", "--output", str(out), str(path))
        return out.read_bytes()


def _make_signer(home: Path, uid: str, out_dir: Path) -> Signer:
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
        env=env, check=True, capture_output=True, timeout=GPG_TIMEOUT,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys"],
        env=env, check=True, capture_output=True, text=True, timeout=GPG_TIMEOUT,
    ).stdout
    fingerprints = [line.split(":")[9] for line in listing.splitlines()
                    if line.startswith("fpr:")]
    assert len(fingerprints) == 1, listing
    exported = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", fingerprints[0]],
        env=env, check=True, capture_output=True, timeout=GPG_TIMEOUT,
    ).stdout
    assert b"BEGIN PGP PUBLIC KEY BLOCK" in exported
    public_key = out_dir / f"{fingerprints[0]}.asc"
    public_key.write_bytes(exported)
    return Signer(home, fingerprints[0], public_key)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where exported public keys and signed files live for the module."""
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def homes() -> Iterator[list[Path]]:
    """Short GnuPG homes made during the module; their agents are killed at the end."""
    made: list[Path] = []
    yield made
    for home in made:
        _kill_agents(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def signer(homes: list[Path], keys_dir: Path) -> Signer:
    """The key a server would trust."""
    home = _short_home("pmsig")
    homes.append(home)
    return _make_signer(home, "Test <t@example.com>", keys_dir)


@pytest.fixture(scope="module")
def stranger(homes: list[Path], keys_dir: Path) -> Signer:
    """A second key the server has never heard of."""
    home = _short_home("pmsig")
    homes.append(home)
    return _make_signer(home, "Stranger <s@example.com>", keys_dir)


@pytest.fixture
def checker_home(homes: list[Path]) -> Path:
    """A not-yet-existing GnuPG home for a checker (prepare() creates it)."""
    parent = _short_home("pmchk")
    homes.append(parent)
    return parent / "gnupg"


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    """A file standing in for an uploaded distribution."""
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 pretend this is a wheel\n" * 100)
    return path


@pytest.fixture
def trusting(checker_home: Path, signer: Signer) -> SignatureChecker:
    """A prepared checker that trusts `signer`."""
    checker = SignatureChecker(checker_home, [signer.public_key])
    assert checker.prepare() == 1
    return checker


@pytest.fixture
def trusting_nobody(checker_home: Path) -> SignatureChecker:
    """A prepared checker with no trusted keys."""
    checker = SignatureChecker(checker_home, [])
    assert checker.prepare() == 0
    return checker


def test_signature_by_a_trusted_key_is_trusted(
    trusting: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """A valid detached signature by a trusted key gives trusted=True and its key id."""
    signature = signer.detach_sign(upload)
    info = trusting.check(upload, signature)
    assert info == SignatureInfo(keyid=signer.keyid, trusted=True)


def test_binary_detached_signature_is_accepted(
    trusting: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """A non-armored (binary) detached signature is as good as an armored one."""
    out = upload.with_name("binary.sig")
    signer.gpg("--detach-sign", "--output", str(out), str(upload))
    assert trusting.check(upload, out.read_bytes()) == SignatureInfo(signer.keyid, True)


def test_signature_with_no_trusted_keys_is_kept_untrusted(
    trusting_nobody: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """Without the signer's key the signature is untrusted, with the signer's key id."""
    signature = signer.detach_sign(upload)
    info = trusting_nobody.check(upload, signature)
    assert info == SignatureInfo(keyid=signer.keyid, trusted=False)


def test_signature_by_an_unknown_key_is_untrusted(
    trusting: SignatureChecker, stranger: Signer, upload: Path
) -> None:
    """A signature by a key other than the trusted ones is untrusted, with its own key id."""
    info = trusting.check(upload, stranger.detach_sign(upload))
    assert info == SignatureInfo(keyid=stranger.keyid, trusted=False)


def test_trusted_signature_over_different_data_is_refused(
    trusting: SignatureChecker, signer: Signer, upload: Path, tmp_path: Path
) -> None:
    """A trusted key's signature that does not match the file raises BadUpload naming the key."""
    other = tmp_path / "other.txt"
    other.write_bytes(b"not the uploaded file")
    signature = signer.detach_sign(other)
    with pytest.raises(BadUpload, match="does not verify") as caught:
        trusting.check(upload, signature)
    assert signer.keyid in caught.value.message


def test_trusted_signature_over_a_modified_file_is_refused(
    trusting: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """Changing one byte of the signed file after signing makes the signature refused."""
    signature = signer.detach_sign(upload)
    data = bytearray(upload.read_bytes())
    data[-1] ^= 1
    upload.write_bytes(bytes(data))
    with pytest.raises(BadUpload, match="Invalid signature"):
        trusting.check(upload, signature)


@pytest.mark.parametrize(
    "garbage",
    [b"garbage bytes, not a signature", b"\x00\x01\x02\xff" * 40,
     b"-----BEGIN PGP SIGNATURE-----\n\nnot base64 !!\n-----END PGP SIGNATURE-----\n"],
)
def test_garbage_is_not_a_signature(
    trusting: SignatureChecker, upload: Path, garbage: bytes
) -> None:
    """Bytes that are not OpenPGP data raise BadUpload saying so."""
    with pytest.raises(BadUpload, match="not an OpenPGP detached signature"):
        trusting.check(upload, garbage)


@pytest.mark.parametrize("empty", [b"", b"   \n\t\n"])
def test_empty_signature_is_refused(
    trusting: SignatureChecker, upload: Path, empty: bytes
) -> None:
    """An empty (or blank) gpg_signature part raises BadUpload saying it is empty."""
    with pytest.raises(BadUpload, match="empty"):
        trusting.check(upload, empty)


@pytest.mark.parametrize("mode", ["--sign", "--clearsign"])
def test_inline_signed_message_is_not_a_detached_signature(
    trusting: SignatureChecker, signer: Signer, upload: Path, tmp_path: Path, mode: str
) -> None:
    """A good inline or clear-signed message by the trusted key is not accepted for a file."""
    other = tmp_path / "message.txt"
    other.write_bytes(b"something else entirely\n")
    out = tmp_path / "message.txt.signed"
    signer.gpg(mode, "--armor", "--output", str(out), str(other))
    with pytest.raises(BadUpload, match="Invalid signature"):
        trusting.check(upload, out.read_bytes())


def test_public_key_is_not_a_signature(
    trusting: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """A public key block sent as a signature is refused, not trusted."""
    with pytest.raises(BadUpload, match="Invalid signature"):
        trusting.check(upload, signer.public_key.read_bytes())


def test_check_leaves_no_temp_file_next_to_the_upload(
    trusting: SignatureChecker, signer: Signer, upload: Path
) -> None:
    """The signature's temp file is removed after the check, whatever the outcome."""
    signature = signer.detach_sign(upload)
    before = sorted(upload.parent.iterdir())
    trusting.check(upload, signature)
    with pytest.raises(BadUpload):
        trusting.check(upload, b"garbage")
    assert sorted(upload.parent.iterdir()) == before


def test_check_before_prepare_is_an_error(
    checker_home: Path, signer: Signer, upload: Path
) -> None:
    """check() on an unprepared checker fails loudly instead of trusting anything."""
    checker = SignatureChecker(checker_home, [signer.public_key])
    with pytest.raises(RuntimeError, match="prepare"):
        checker.check(upload, b"anything")


def test_prepare_creates_a_private_home_and_counts_keys(
    checker_home: Path, signer: Signer, stranger: Signer
) -> None:
    """prepare() creates the home with mode 0700 and returns how many keys it imported."""
    checker = SignatureChecker(checker_home, [signer.public_key, stranger.public_key])
    assert checker.prepare() == 2
    assert checker_home.is_dir()
    assert checker_home.stat().st_mode & 0o777 == 0o700


def test_prepare_with_a_file_that_is_not_a_key_fails(
    checker_home: Path, tmp_path: Path
) -> None:
    """A trusted-keys file holding no OpenPGP key raises ValueError naming the file."""
    not_a_key = tmp_path / "not-a-key.asc"
    not_a_key.write_text("this is just text\n")
    checker = SignatureChecker(checker_home, [not_a_key])
    with pytest.raises(ValueError, match="no OpenPGP public key") as caught:
        checker.prepare()
    assert str(not_a_key) in str(caught.value)


def test_prepare_with_a_missing_key_file_fails(checker_home: Path, tmp_path: Path) -> None:
    """A trusted-keys path that does not exist is an error at prepare(), not later."""
    checker = SignatureChecker(checker_home, [tmp_path / "missing.asc"])
    with pytest.raises(OSError):
        checker.prepare()
