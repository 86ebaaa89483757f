"""The Image repository on disk, as a python-tuf ``Repository``.

``FileRepository`` loads the current, committed metadata (the version chain that
``timestamp.json`` points to), lets callers edit roles through python-tuf's ``edit_*`` context
managers, signs each closed role with the keys the key store holds, and on ``save`` stages the
new versioned files into a ``Transaction`` in an order that keeps the repository consistent for
clients reading it meanwhile: targets files, targets metadata, snapshot, timestamp, root.

Files written (consistent snapshots, DESIGN §7): ``metadata/N.root.json``, ``N.targets.json``,
``N.<delegated>.json``, ``N.snapshot.json``, ``timestamp.json``; ``targets/<dir>/<sha256>.<name>``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    DelegatedRole,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from ota_client.locking import file_lock
from ota_client.strict import FormatError, parse_json, printable, read_bounded, show
from ota_server.config import RepositoryFiles
from ota_server.errors import RepositoryStateError
from ota_server.keys.store import TOP_LEVEL_ROLES
from ota_server.repository.home import RepositoryHome
from ota_server.repository.signing import Delegator, RoleSigning
from ota_server.repository.transaction import Transaction, recover

AnyMetadata = Metadata[Any]
SPEC_VERSION = "1.0.31"
_ROOT_FILE = re.compile(r"([1-9][0-9]{0,9})\.root\.json")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as ota_client.metadata.check_identifier
MAX_METADATA_BYTES = 32 << 20  # one metadata file (targets of ~50,000 images and deltas)
_SERIALIZER = JSONSerializer(compact=True)


def metadata_bytes(md: AnyMetadata) -> bytes:
    return md.to_bytes(_SERIALIZER)


def _meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile.from_data(version, data, ["sha256"])


def _read_metadata(path: Path, kind: type[Signed], version: int | None = None) -> AnyMetadata:
    """One committed metadata file: bounded read, parsed, of the expected role and version."""
    try:
        data = read_bounded(path, MAX_METADATA_BYTES, f"repository metadata {path.name}")
    except FileNotFoundError:
        raise RepositoryStateError(f"repository metadata {path.name} is missing") from None
    except FormatError as e:
        raise RepositoryStateError(str(e)) from None
    try:
        # The strict reader first (no NaN, depth cap): python-tuf's own JSON reading accepts
        # NaN and infinities, which then fail only when the metadata is written back.
        doc = parse_json(data, path.name, limit=MAX_METADATA_BYTES)
        _canonical(doc, path.name)
        md = Metadata.from_dict(doc)
    except FormatError as e:
        raise RepositoryStateError(f"repository metadata {e}; restore it from a backup") from None
    except Exception as e:  # from_dict raises any type; python-tuf's deserializer catches all
        reason = printable(f"{type(e).__name__}: {e}", 120)
        raise RepositoryStateError(
            f"repository metadata {path.name} is damaged ({reason}); restore it from a backup"
        ) from None
    if not isinstance(md.signed, kind):
        raise RepositoryStateError(
            f"repository metadata {path.name} holds {md.signed.type}, not {kind.type} metadata"
        )
    _check_keys(path.name, md.signed)
    if version is not None and md.signed.version != version:
        raise RepositoryStateError(
            f"repository metadata {path.name} holds version {md.signed.version}, not {version}"
        )
    return md


def _canonical(doc: object, name: str) -> None:
    """Refuse what canonical JSON cannot sign (floats): else re-signing fails much later."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            raise FormatError(f"{name} holds a number that is not an integer")
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_keys(name: str, signed: Signed) -> None:
    """Every role names keys the metadata holds, and delegated role names are plain names
    (they become file names): python-tuf leaves both to the verifier."""
    if isinstance(signed, Root):
        roles, keys = signed.roles.items(), signed.keys
    elif isinstance(signed, Targets) and signed.delegations is not None:
        roles, keys = (signed.delegations.roles or {}).items(), signed.delegations.keys
        for role in dict(roles):
            if not isinstance(role, str) or not _ROLE.fullmatch(role) or role in TOP_LEVEL_ROLES:
                raise RepositoryStateError(
                    f"repository metadata {name} delegates to a bad role name {show(role)}"
                )
    else:
        return
    for role, entry in roles:
        if missing := [k for k in entry.keyids if k not in keys]:
            raise RepositoryStateError(
                f"repository metadata {name} is damaged: {role} names the unknown key "
                f"{printable(str(missing[0]), 16)}"
            )


def root_versions(metadata_dir: Path) -> list[int]:
    try:
        names = os.listdir(metadata_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _ROOT_FILE.fullmatch(n)))


def latest_root(files: RepositoryFiles) -> Root:
    """The newest root of a repository (the Director's is all it keeps in files)."""
    versions = root_versions(files.metadata)
    if not versions:
        raise RepositoryStateError(f"no repository in {files.served}: run 'ota repo init' first")
    root = _read_metadata(files.metadata / f"{versions[-1]}.root.json", Root, versions[-1]).signed
    assert isinstance(root, Root)
    return root


class FileRepository(Repository):
    """Edits on the committed repository state; nothing touches disk until ``save``."""

    def __init__(self, home: RepositoryHome, now: datetime) -> None:
        self.home = home
        self.files = home.files
        self.policy = home.policy
        self.signing = RoleSigning(home.keys)
        self.now = now.replace(microsecond=0)
        self._md: dict[str, AnyMetadata] = {}
        self._bytes: dict[str, bytes] = {}
        self._changed: list[str] = []
        self._previous_root: Root | None = None
        self._creating = False

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def create(cls, home: RepositoryHome, now: datetime) -> FileRepository:
        """An empty repository: every role opens as a new version 1."""
        repo = cls(home, now)
        repo._creating = True
        return repo

    @classmethod
    def load(cls, home: RepositoryHome, now: datetime) -> FileRepository:
        repo = cls(home, now)
        files = home.files
        versions = root_versions(files.metadata)
        if not versions:
            raise RepositoryStateError(
                f"no repository in {files.served}: run 'ota repo init' first"
            )
        md_dir = files.metadata
        repo._put("root", _read_metadata(md_dir / f"{versions[-1]}.root.json", Root, versions[-1]))
        if files.name == "director":
            return repo  # its other roles are per vehicle, in the fleet database
        timestamp = _read_metadata(md_dir / "timestamp.json", Timestamp)
        repo._put("timestamp", timestamp)
        assert isinstance(timestamp.signed, Timestamp)
        snap_version = timestamp.signed.snapshot_meta.version
        snapshot = _read_metadata(md_dir / f"{snap_version}.snapshot.json", Snapshot, snap_version)
        repo._put("snapshot", snapshot)
        assert isinstance(snapshot.signed, Snapshot)
        snapshot_file = f"{snap_version}.snapshot.json"
        if "targets.json" not in snapshot.signed.meta:
            raise RepositoryStateError(f"repository metadata {snapshot_file} lists no targets")
        for name, meta in snapshot.signed.meta.items():
            role = name.removesuffix(".json")
            bad = not name.endswith(".json") or not _ROLE.fullmatch(role)
            if bad or role in ("root", "snapshot", "timestamp"):
                raise RepositoryStateError(
                    f"repository metadata {snapshot_file} names a bad role {printable(name, 80)}"
                )
            md_file = md_dir / f"{meta.version}.{role}.json"
            repo._put(role, _read_metadata(md_file, Targets, meta.version))
        return repo

    def _put(self, role: str, md: AnyMetadata) -> None:
        self._md[role] = md
        self._bytes[role] = metadata_bytes(md)

    # -- python-tuf Repository interface -------------------------------------------------------

    # Read-only accessors: the base class deep-copies on every call (open), which made
    # publishing quadratic in the number of targets. Callers must not modify what these return.

    def signed(self, role: str) -> Signed:
        if role not in self._md:
            raise RepositoryStateError(f"the repository has no role {role!r}")
        signed: Signed = self._md[role].signed
        return signed

    def root(self) -> Root:
        root = self.signed("root")
        assert isinstance(root, Root)
        return root

    def targets(self, rolename: str = "targets") -> Targets:
        targets = self.signed(rolename)
        assert isinstance(targets, Targets)
        return targets

    def open(self, role: str) -> AnyMetadata:
        if role in self._md:
            return copy.deepcopy(self._md[role])
        new_delegated = "targets" in self._md and role in {r.name for r in self.delegated_roles()}
        if not (self._creating or new_delegated):
            raise RepositoryStateError(f"the repository has no role {role!r}")
        expires = self.now
        signed: Root | Targets | Snapshot | Timestamp
        if role == "root":
            signed = Root(version=1, expires=expires, consistent_snapshot=True)
        elif role == "timestamp":
            signed = Timestamp(version=1, expires=expires)
        elif role == "snapshot":
            signed = Snapshot(version=1, expires=expires)
        else:
            signed = Targets(version=1, expires=expires)
        signed.spec_version = SPEC_VERSION
        return Metadata(signed)

    def close(self, role: str, md: AnyMetadata) -> None:
        if role in self._md:  # a new role keeps the version 1 that open() gave it
            md.signed.version += 1
        md.signed.expires = self.now + self.policy.lifetime(role)
        if role == "root":
            if self._previous_root is None and "root" in self._md:
                root = self._md["root"].signed
                assert isinstance(root, Root)
                self._previous_root = root
            assert isinstance(md.signed, Root)
            delegators: list[Delegator] = [md.signed]
            if self._previous_root is not None:
                delegators.append(self._previous_root)
        else:
            delegators = [self.delegator(role)]
        self.signing.sign(role, md, delegators)
        self._put(role, md)
        if role not in self._changed:
            self._changed.append(role)

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {
            f"{role}.json": _meta_file(md.signed.version, self._bytes[role])
            for role, md in self._md.items()
            if isinstance(md.signed, Targets)
        }

    @property
    def snapshot_info(self) -> MetaFile:
        return _meta_file(self._md["snapshot"].signed.version, self._bytes["snapshot"])

    # -- helpers ------------------------------------------------------------------------------

    def delegator(self, role: str) -> Delegator:
        holder = "root" if role in TOP_LEVEL_ROLES else "targets"
        signed = self._md[holder].signed
        assert isinstance(signed, Root | Targets)
        return signed

    def can_sign(self, role: str) -> bool:
        """Whether the key store holds enough private keys to sign ``role`` now."""
        return self.signing.can_sign(role, self.delegator(role))

    def require_signing(self, role: str) -> None:
        """Load ``role``'s signers now (asking for the passphrase) or fail before any work."""
        self.signing.require(role, self.delegator(role))

    def role_for_path(self, path: str) -> str:
        """The targets role that signs ``path``: the first matching delegation, else top-level."""
        delegations = self.targets().delegations
        if delegations is not None:
            for name, _terminating in delegations.get_roles_for_target(path):
                return name
        return "targets"

    def delegated_roles(self) -> list[DelegatedRole]:
        targets = self.targets()
        if targets.delegations is None or targets.delegations.roles is None:
            return []
        return list(targets.delegations.roles.values())

    def all_targets(self) -> dict[str, Targets]:
        """Every targets role by name, top-level first."""
        out = {"targets": self.targets()}
        for role in self.delegated_roles():
            out[role.name] = self.targets(role.name)
        return out

    def root_version(self) -> int:
        return self.root().version

    def changed_roles(self) -> list[str]:
        """Roles closed (re-signed) since loading and not yet saved."""
        return list(self._changed)

    # -- saving -------------------------------------------------------------------------------

    def save(self, txn: Transaction) -> None:
        """Stage every changed role into ``txn`` in a client-safe order (root last)."""
        md_dir = self.files.metadata
        order = sorted(
            self._changed,
            key=lambda r: {"snapshot": 2, "timestamp": 3, "root": 4}.get(
                r, 1 if r == "targets" else 0
            ),
        )
        for role in order:
            md = self._md[role]
            if role == "timestamp":
                txn.write(md_dir / "timestamp.json", self._bytes[role], replace=True)
            else:
                txn.write(md_dir / f"{md.signed.version}.{role}.json", self._bytes[role])
        self._changed.clear()


@contextmanager
def writing(
    home: RepositoryHome,
    *,
    create: bool = False,
    now: datetime | None = None,
    wait: float = 30.0,
) -> Iterator[tuple[FileRepository, Transaction]]:
    """Hold the lock, finish any interrupted change, and yield a repository plus transaction.

    The caller edits the repository, stages files into the transaction and returns; the change
    is then saved and committed as one unit. Any exception leaves the repository untouched.
    """
    files = home.files
    with file_lock(files.state / "lock", wait=wait) as held:
        if not held:
            raise RepositoryStateError(
                "another ota command is changing this repository; try again when it is done"
            )
        recover(files.state, files.served)
        clock = now or datetime.now(UTC)
        repo = (FileRepository.create if create else FileRepository.load)(home, clock)
        txn = Transaction(files.state, files.served)
        try:
            yield repo, txn
            repo.save(txn)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
