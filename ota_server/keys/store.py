"""On-disk key store of one repository: ``keys/<repository>/<role>/<keyid>.pem`` plus a public
``keyring.json``.

Private keys are ed25519 in PKCS#8 PEM, encrypted with a passphrase (``OTA_KEY_PASSPHRASE`` or a
prompt, supplied by the caller as a function so nothing here reads the environment). ``--dev``
keys are unencrypted and the keyring says so. Public halves sit next to them (``.pub``) so that
listing keys or building root metadata never needs the passphrase.

The keyring records which keys belong to which role and each role's threshold. It seeds root
metadata at ``repo init``; after that, root metadata is the truth and rotations update both.

Every file here is read bounded and checked (``ota_client.strict``): the keyring against its
schema, key files by size and type, and a key file's path is only ever built from a checked
role name and a 64-hex key id, whatever metadata or the keyring say. A damaged file is one
``KeyStoreError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey

from ota_client.atomic import fsync_dir, write_atomic
from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.strict import FormatError, Reader, load_json, printable, read_bounded, show
from ota_server.errors import KeyStoreError

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
RESERVED_NAMES = {*TOP_LEVEL_ROLES, "retired", "keyring"}
KEYRING = "keyring.json"
MAX_KEYRING_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 16 << 10
MAX_ROLES = 1024
MAX_KEYS_PER_ROLE = 64
_KEYID = re.compile(r"[0-9a-f]{64}")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

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
    except MetadataFormatError:
        raise KeyStoreError(
            f"invalid role name {show(name)}: use 1-64 ASCII letters, digits and . _ -, "
            "starting with a letter or digit"
        ) from None
    if name in RESERVED_NAMES or name.lower() != name:
        raise KeyStoreError(f"role name {show(name)} is reserved or not lower case")
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

    def _read_keyring(self) -> tuple[dict[str, RoleKeys], bool]:
        where = printable(str(self.keyring_path))
        try:
            data = load_json(self.keyring_path, where, limit=MAX_KEYRING_BYTES)
        except FileNotFoundError:
            raise KeyStoreError(
                f"no keys in {printable(str(self.directory))}: run 'ota keys init' first"
            ) from None
        except FormatError as e:
            raise KeyStoreError(f"damaged key ring: {e}") from None
        try:
            return parse_keyring(data)
        except FormatError as e:
            raise KeyStoreError(f"damaged key ring {where}: {e}") from None

    def roles(self) -> dict[str, RoleKeys]:
        return self._read_keyring()[0]

    @property
    def dev(self) -> bool:
        return self._read_keyring()[1]

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
        """Where a key's files are; only from a checked role name and key id (class 2)."""
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise KeyStoreError(f"bad role name {show(role)} in the key ring or metadata")
        if not isinstance(keyid, str) or not _KEYID.fullmatch(keyid):
            raise KeyStoreError(f"bad key id {show(keyid)} for {role} in the key ring or metadata")
        folder = self.directory / role
        return folder / f"{keyid}.pem", folder / f"{keyid}.pub"

    def _read_key_file(self, path: Path) -> bytes:
        try:
            return read_bounded(path, MAX_KEY_FILE_BYTES, printable(str(path)))
        except FormatError as e:
            raise KeyStoreError(str(e)) from None

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
        # mkdir applies the mode only to the last folder: create each one, private.
        self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.directory, priv_path.parent):
            folder.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_atomic(priv_path, pem, mode=0o600)
        write_atomic(pub_path, pub)
        self._signers[public.keyid] = CryptoSigner(private, public)
        return public

    def public_key(self, role: str, keyid: str) -> SSlibKey:
        _, pub_path = self._paths(role, keyid)
        try:
            pem = self._read_key_file(pub_path)
        except FileNotFoundError:
            raise KeyStoreError(f"public key {keyid[:12]}… of {role} is missing") from None
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyStoreError(f"{printable(str(pub_path))} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyStoreError(f"{printable(str(pub_path))} is not an ed25519 key")
        public = SSlibKey.from_crypto(key)
        if public.keyid != keyid:
            raise KeyStoreError(f"{printable(str(pub_path))} does not hold key {keyid[:12]}…")
        return public

    def has_private(self, role: str, keyid: str) -> bool:
        return keyid in self._signers or self._paths(role, keyid)[0].is_file()

    def signer(self, role: str, keyid: str) -> Signer | None:
        """The signer for ``keyid`` if its private key is here (offline keys may not be)."""
        if keyid in self._signers:
            return self._signers[keyid]
        priv_path, _ = self._paths(role, keyid)
        where = printable(str(priv_path))
        try:
            pem = self._read_key_file(priv_path)
        except FileNotFoundError:
            return None
        try:
            try:
                private = serialization.load_pem_private_key(pem, password=None)
            except TypeError:  # encrypted: needs the passphrase
                private = serialization.load_pem_private_key(pem, password=self._passphrase(False))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyStoreError(
                f"cannot decrypt {role} key {keyid[:12]}…: wrong passphrase or damaged key file"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyStoreError(f"{where} is not an ed25519 key")
        signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
        if signer.public_key.keyid != keyid:
            raise KeyStoreError(f"{where} does not hold key {keyid[:12]}…")
        self._signers[keyid] = signer
        return signer

    def discard(self, role: str, keyid: str) -> None:
        """Delete a key that never made it into metadata (a ceremony that failed)."""
        for path in self._paths(role, keyid):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the role's folder, if that key made it
            (self.directory / role).rmdir()
        self._signers.pop(keyid, None)

    def check_retire(self, role: str, keyids: tuple[str, ...] | list[str]) -> None:
        """Fail now, before a ceremony writes anything, if ``retire`` could not move these."""
        for keyid in keyids:
            self._paths(role, keyid)
        for folder in (self.directory / "retired", self.directory / "retired" / role):
            if folder.exists() and not folder.is_dir():
                raise KeyStoreError(f"{printable(str(folder))} is not a directory")

    def retire(self, role: str, keyid: str) -> None:
        """Move a replaced key out of service (kept for audit, never used to sign again)."""
        target = self.directory / "retired" / role
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self._paths(role, keyid):
            if path.exists():
                shutil.move(path, target / path.name)
        fsync_dir(target)
        self._signers.pop(keyid, None)


def parse_keyring(data: object) -> tuple[dict[str, RoleKeys], bool]:
    """The key ring's roles and ``dev`` flag, checked against its schema (pure)."""
    r = Reader(data)
    dev = r.boolean("dev", False)
    table = r.table("roles")
    r.done()
    if len(table.data) > MAX_ROLES:
        raise FormatError(f"more than {MAX_ROLES} roles")
    roles: dict[str, RoleKeys] = {}
    for name in list(table.data):
        if not _ROLE.fullmatch(name):
            raise FormatError(f"bad role name {show(name)}")
        entry = table.table(name)
        keyids = entry.strings("keyids", max_items=MAX_KEYS_PER_ROLE)
        for keyid in keyids:
            if not _KEYID.fullmatch(keyid):
                raise entry.fail("keyids", f"holds {show(keyid)}, not a 64-hex key id")
        if len(set(keyids)) != len(keyids):
            raise entry.fail("keyids", "lists a key twice")
        threshold = entry.integer("threshold", low=1, high=len(keyids))
        entry.done()
        roles[name] = RoleKeys(threshold, keyids)
    if missing := [role for role in TOP_LEVEL_ROLES if role not in roles]:
        raise FormatError(f"roles lacks {', '.join(missing)}")
    return roles, dev
