"""One repository of a server home (Image or Director): its files, its keys, its expiry policy.

Uptane needs two TUF repositories with separate trust roots. Everything that changes a
repository takes one ``RepositoryHome`` rather than the files, keys and policy separately, so
the same ceremonies, signing and refresh serve both.

Homes from before the Director kept the Image repository's keys directly in ``keys/``;
``open_home`` moves them to ``keys/image/`` the first time the home is used, in two renames
that a power cut cannot leave half done (the next use finishes the move).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ota_client.atomic import fsync_dir
from ota_server.config import ExpiryPolicy, Layout, RepositoryFiles, ServerConfig
from ota_server.errors import KeyStoreError
from ota_server.keys.store import KEYRING, KeyStore, PassphraseSource

MOVING = "keys.moving-to-image"  # the old keys folder while it moves under keys/image/


@dataclass(frozen=True)
class RepositoryHome:
    files: RepositoryFiles
    keys: KeyStore
    policy: ExpiryPolicy

    @property
    def name(self) -> str:
        return self.files.name


def migrate_keys(layout: Layout) -> bool:
    """Move a single-repository home's ``keys/`` to ``keys/image/``; True if anything moved."""
    moving = layout.home / MOVING
    if not moving.exists():
        if not (layout.keys / KEYRING).is_file():
            return False
        os.rename(layout.keys, moving)
        fsync_dir(layout.home)
    layout.keys.mkdir(mode=0o700, exist_ok=True)
    os.rename(moving, layout.image.keys)
    fsync_dir(layout.keys)
    fsync_dir(layout.home)
    return True


def open_home(
    config: ServerConfig,
    repository: str,
    passphrase: PassphraseSource,
    notice: Callable[[str], None] | None = None,
) -> RepositoryHome:
    """The ``repository`` ("image" or "director") of the home, its keys migrated if need be."""
    layout = config.layout
    if migrate_keys(layout) and notice is not None:
        notice(f"moved the Image repository's keys to {layout.image.keys} (two repositories)")
    files = layout.repository(repository)
    policy = config.expiry if repository == "image" else config.director_expiry
    return RepositoryHome(files, KeyStore(files.keys, passphrase), policy)


def _no_passphrase(_new: bool) -> bytes:
    raise KeyStoreError("this repository was opened to be read, not signed")


def reading(files: RepositoryFiles, policy: ExpiryPolicy) -> RepositoryHome:
    """A repository opened to read its metadata: asking for a key to sign is an error."""
    return RepositoryHome(files, KeyStore(files.keys, _no_passphrase), policy)
