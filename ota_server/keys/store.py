"""On-disk key store: ``$OTA_HOME/keys/<role>/<keyid>.pem`` plus a public ``keyring.json``.

Private keys are ed25519 in PKCS#8 PEM, encrypted with a passphrase (``OTA_KEY_PASSPHRASE`` or a
prompt, supplied by the caller as a function so nothing here reads the environment). ``--dev``
keys are unencrypted and the keyring says so. Public halves sit next to them (``.pub``) so that
listing keys or building root metadata never needs the passphrase.

The keyring records which keys belong to which role and each role's threshold. It seeds root
metadata at ``repo init``; after that, root metadata is the truth and rotations update both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey

from ota_client.atomic import fsync_dir, write_atomic
from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.errors import KeyStoreError

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
RESERVED_NAMES = {*TOP_LEVEL_ROLES, "retired", "keyring"}
KEYRING = "keyring.json"

PassphraseSource = Callable[[bool], bytes]
"""Returns the passphrase; the argument says whether it is for new keys (confirm it)."""


@dataclass(frozen=True)
class RoleKeys:
    threshold: int
    keyids: tuple[str, ...]


def check_role_name(name: str) -> str:
    """A delegated (supplier) role name: an identifier that is not a top-level role."""
    try:
        check_identifier("role name", name)
    except MetadataFormatError as e:
        raise KeyStoreError(str(e)) from e
    if name in RESERVED_NAMES or name.lower() != name:
        raise KeyStoreError(f"role name {name!r} is reserved or not lower case")
    return name


def check_threshold(role: str, threshold: int, count: int) -> None:
    if threshold < 1:
        raise KeyStoreError(f"{role}: threshold must be at least 1")
    if count < threshold:
        raise KeyStoreError(
            f"{role}: a threshold of {threshold} can never be met with {count} key(s)"
        )


class KeyStore:
    """Keys of one server home. Loaded signers are cached for the life of the object."""

    def __init__(self, directory: Path, passphrase: PassphraseSource) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._signers: dict[str, Signer] = {}

    # -- keyring ------------------------------------------------------------------------------

    @property
    def keyring_path(self) -> Path:
        return self.directory / KEYRING

    def exists(self) -> bool:
        return self.keyring_path.is_file()

    def _read_keyring(self) -> dict[str, Any]:
        try:
            data = json.loads(self.keyring_path.read_bytes())
        except FileNotFoundError:
            raise KeyStoreError(f"no keys in {self.directory}: run 'ota keys init' first") from None
        except (OSError, ValueError) as e:
            raise KeyStoreError(f"cannot read {self.keyring_path}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
            raise KeyStoreError(f"{self.keyring_path} is malformed")
        return data

    def roles(self) -> dict[str, RoleKeys]:
        roles: dict[str, RoleKeys] = {}
        for name, entry in self._read_keyring()["roles"].items():
            try:
                roles[name] = RoleKeys(int(entry["threshold"]), tuple(entry["keyids"]))
            except (KeyError, TypeError, ValueError) as e:
                raise KeyStoreError(f"{self.keyring_path}: bad entry for {name}") from e
        return roles

    @property
    def dev(self) -> bool:
        return bool(self._read_keyring().get("dev", False))

    def write_keyring(self, roles: Mapping[str, RoleKeys], *, dev: bool) -> None:
        data = {
            "dev": dev,
            "roles": {
                name: {"threshold": rk.threshold, "keyids": list(rk.keyids)}
                for name, rk in sorted(roles.items())
            },
        }
        write_atomic(self.keyring_path, json.dumps(data, indent=2).encode() + b"\n")

    # -- key files ----------------------------------------------------------------------------

    def _paths(self, role: str, keyid: str) -> tuple[Path, Path]:
        folder = self.directory / role
        return folder / f"{keyid}.pem", folder / f"{keyid}.pub"

    def generate(self, role: str, *, encrypted: bool) -> SSlibKey:
        """Create an ed25519 key for ``role`` and store it, encrypted unless told otherwise."""
        private = Ed25519PrivateKey.generate()
        public = SSlibKey.from_crypto(private.public_key())
        if encrypted:
            encryption: serialization.KeySerializationEncryption = (
                serialization.BestAvailableEncryption(self._passphrase(True))
            )
        else:
            encryption = serialization.NoEncryption()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        pub = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        priv_path, pub_path = self._paths(role, public.keyid)
        priv_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_atomic(priv_path, pem, mode=0o600)
        write_atomic(pub_path, pub)
        self._signers[public.keyid] = CryptoSigner(private, public)
        return public

    def public_key(self, role: str, keyid: str) -> SSlibKey:
        _, pub_path = self._paths(role, keyid)
        try:
            key = serialization.load_pem_public_key(pub_path.read_bytes())
        except FileNotFoundError:
            raise KeyStoreError(f"public key {keyid[:12]}… of {role} is missing") from None
        except (OSError, ValueError) as e:
            raise KeyStoreError(f"cannot read {pub_path}: {e}") from e
        if not isinstance(key, Ed25519PublicKey):
            raise KeyStoreError(f"{pub_path} is not an ed25519 key")
        return SSlibKey.from_crypto(key)

    def has_private(self, role: str, keyid: str) -> bool:
        return keyid in self._signers or self._paths(role, keyid)[0].is_file()

    def signer(self, role: str, keyid: str) -> Signer | None:
        """The signer for ``keyid`` if its private key is here (offline keys may not be)."""
        if keyid in self._signers:
            return self._signers[keyid]
        priv_path, _ = self._paths(role, keyid)
        try:
            pem = priv_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise KeyStoreError(f"cannot read {priv_path}: {e}") from e
        try:
            try:
                private = serialization.load_pem_private_key(pem, password=None)
            except TypeError:  # encrypted: needs the passphrase
                private = serialization.load_pem_private_key(pem, password=self._passphrase(False))
        except ValueError as e:
            raise KeyStoreError(
                f"cannot decrypt {role} key {keyid[:12]}…: wrong passphrase or damaged key file"
            ) from e
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyStoreError(f"{priv_path} is not an ed25519 key")
        signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
        if signer.public_key.keyid != keyid:
            raise KeyStoreError(f"{priv_path} does not hold key {keyid[:12]}…")
        self._signers[keyid] = signer
        return signer

    def discard(self, role: str, keyid: str) -> None:
        """Delete a key that never made it into metadata (a ceremony that failed)."""
        for path in self._paths(role, keyid):
            path.unlink(missing_ok=True)
        self._signers.pop(keyid, None)

    def retire(self, role: str, keyid: str) -> None:
        """Move a replaced key out of service (kept for audit, never used to sign again)."""
        target = self.directory / "retired" / role
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self._paths(role, keyid):
            if path.exists():
                shutil.move(path, target / path.name)
        fsync_dir(target)
        self._signers.pop(keyid, None)
