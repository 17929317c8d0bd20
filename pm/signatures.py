"""OpenPGP detached signatures of uploads, checked with python-gnupg.

Each server process gets a fresh GnuPG home holding exactly the keys named by
``[Signatures] TrustedKeys`` at its start: a key taken out of the config is no
longer trusted after a restart, and nodes sharing DataDir share no keyring. A
signature by a trusted key must verify; a signature by an unknown key is kept
and its key id recorded.
Everything here blocks (it runs ``gpg``): call it in a thread.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gnupg

from pm.errors import BadUpload

MAX_SIGNATURE = 64 * 1024


@dataclass(frozen=True)
class SignatureInfo:
    keyid: str
    trusted: bool


class SignatureChecker:
    def __init__(self, home: Path, trusted_keys: Sequence[Path]) -> None:
        self._home = home
        self._trusted_keys = tuple(trusted_keys)
        self._gpg: gnupg.GPG | None = None

    def prepare(self) -> int:
        """Create the GnuPG home and import the trusted keys; return how many."""
        self._home.mkdir(parents=True, exist_ok=True)
        os.chmod(self._home, 0o700)
        gpg = gnupg.GPG(gnupghome=str(self._home))
        imported = 0
        for path in self._trusted_keys:
            result = gpg.import_keys(path.read_bytes())
            if not result.fingerprints:
                raise ValueError(f"{path}: no OpenPGP public key could be imported")
            imported += len(result.fingerprints)
        self._gpg = gpg
        return imported

    def check(self, signed_file: Path, signature: bytes) -> SignatureInfo:
        """Verify ``signature`` over ``signed_file``; BadUpload if it is not acceptable."""
        if self._gpg is None:
            raise RuntimeError("SignatureChecker.prepare() was not called")
        if not signature.strip():
            raise BadUpload("Invalid signature: the gpg_signature part is empty.")
        with tempfile.NamedTemporaryFile(dir=signed_file.parent, suffix=".asc.part") as sig:
            sig.write(signature)
            sig.flush()
            verified = self._gpg.verify_file(sig.name, data_filename=str(signed_file))
        keyid = verified.key_id or verified.fingerprint
        if verified.valid and keyid:
            return SignatureInfo(keyid=str(keyid), trusted=True)
        if keyid and verified.status == "no public key":
            return SignatureInfo(keyid=str(keyid), trusted=False)
        if keyid:
            raise BadUpload(
                f"Invalid signature: it does not verify for key {keyid} ({verified.status})."
            )
        raise BadUpload("Invalid signature: gpg_signature is not an OpenPGP detached signature.")
