"""Signing metadata with one repository's keys, apart from where the metadata is stored.

The Image repository keeps its metadata in files (``store.FileRepository``); the Director signs
per-vehicle metadata that lives in the fleet database. Both sign through ``RoleSigning``: every
key of the role whose private half is here signs, and the result must meet the threshold of
each delegator (for a new root: the old root and the new one), else nothing is signed and the
error says which keys to bring back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets

from ota_server.errors import KeyStoreError
from ota_server.keys.store import KeyStore

Delegator = Root | Targets


class RoleSigning:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def sign(self, role: str, md: Metadata[Any], delegators: Sequence[Delegator]) -> None:
        """Replace ``md``'s signatures with those of every key of ``role`` held here."""
        md.signatures.clear()
        for keyid in sorted({k for d in delegators for k in d.get_delegated_role(role).keyids}):
            signer = self.keys.signer(role, keyid)
            if signer is not None:
                md.sign(signer, append=True)
        for delegator in delegators:
            try:
                delegator.verify_delegate(role, md.signed_bytes, md.signatures)
            except UnsignedMetadataError:
                wanted = delegator.get_delegated_role(role)
                raise self._short(role, wanted.threshold, len(md.signatures)) from None

    def can_sign(self, role: str, delegator: Delegator) -> bool:
        """Whether enough private keys of ``role`` are here (without loading them)."""
        wanted = delegator.get_delegated_role(role)
        have = sum(self.keys.has_private(role, k) for k in wanted.keyids)
        return have >= wanted.threshold

    def require(self, role: str, delegator: Delegator) -> None:
        """Load ``role``'s signers now (asking for the passphrase) or fail before any work."""
        wanted = delegator.get_delegated_role(role)
        loaded = sum(self.keys.signer(role, keyid) is not None for keyid in wanted.keyids)
        if loaded < wanted.threshold:
            raise self._short(role, wanted.threshold, loaded)

    def _short(self, role: str, threshold: int, have: int) -> KeyStoreError:
        return KeyStoreError(
            f"cannot sign {role}: it needs {threshold} of its keys and only {have} are in "
            f"{self.keys.directory / role} (bring the offline keys back for this ceremony)"
        )
