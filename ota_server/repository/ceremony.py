"""Key ceremonies that change who may sign: first keys, rotations, supplier delegations.

Rotations follow TUF: the new root version is signed by a threshold of the old root's keys
*and* of the new one, so clients holding any earlier root can walk the chain forward. New key
files are written before the metadata that names them; if the change fails they are removed,
and the replaced keys are retired (kept, never used again) only once it has committed.

Every input (config, key ring, metadata, key files, passphrase) is read and checked before the
first durable write; the key ring is read under the repository lock, so the update written
after the commit starts from what was checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from securesystemslib.signer import SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations

from ota_client.strict import show
from ota_server.errors import InputError, KeyStoreError
from ota_server.keys.store import (
    TOP_LEVEL_ROLES,
    KeyStore,
    RoleKeys,
    check_role_name,
    check_threshold,
)
from ota_server.repository.home import RepositoryHome
from ota_server.repository.store import writing

_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9*][A-Za-z0-9._*-]{0,63}")


def init_keys(
    keys: KeyStore, *, root_keys: int = 1, root_threshold: int = 1, dev: bool
) -> dict[str, RoleKeys]:
    """Generate the four top-level roles' keys: ``root_keys`` for root, one for each other role."""
    if keys.exists():
        raise KeyStoreError(f"{keys.directory} already holds keys (use 'ota keys rotate')")
    check_threshold("root", root_threshold, root_keys)
    roles: dict[str, RoleKeys] = {}
    made: list[tuple[str, str]] = []
    try:
        for role in TOP_LEVEL_ROLES:
            count, threshold = (root_keys, root_threshold) if role == "root" else (1, 1)
            new = []
            for _ in range(count):
                new.append(keys.generate(role, encrypted=not dev))
                made.append((role, new[-1].keyid))
            roles[role] = RoleKeys(threshold, tuple(k.keyid for k in new))
        keys.write_keyring(roles, dev=dev)
    except BaseException:
        for role, keyid in made:
            keys.discard(role, keyid)
        raise
    return roles


def check_path_pattern(pattern: str) -> str:
    segments = pattern.split("/")
    if len(segments) > 4 or not all(_PATTERN_SEGMENT.fullmatch(s) for s in segments):
        raise InputError(
            f"path pattern {show(pattern)}: use up to 4 segments of letters, digits, . _ - and *"
        )
    return pattern


@dataclass(frozen=True)
class RotationReport:
    role: str
    old_keyids: tuple[str, ...]
    new_keyids: tuple[str, ...]
    threshold: int
    root_version: int


def _new_keys(keys: KeyStore, role: str, count: int, *, dev: bool, into: list[SSlibKey]) -> None:
    """Generate ``count`` keys for ``role`` into ``into`` (so a failure part-way can undo)."""
    for _ in range(count):
        into.append(keys.generate(role, encrypted=not dev))


def rotate_keys(
    home: RepositoryHome,
    role: str,
    *,
    count: int | None = None,
    threshold: int | None = None,
    now: datetime | None = None,
) -> RotationReport:
    """Replace every key of ``role`` (top-level or supplier) with new ones."""
    keys = home.keys
    new: list[SSlibKey] = []
    try:
        with writing(home, now=now) as (repo, _txn):
            roles, dev = keys.roles(), keys.dev  # checked before anything is written
            top_level = role in TOP_LEVEL_ROLES
            director = home.name == "director"
            if director and not top_level:
                raise InputError(
                    f"no role {show(role)} in the Director (roles: {', '.join(TOP_LEVEL_ROLES)})"
                )
            delegator = repo.delegator(role) if top_level else repo.targets()
            if not top_level and role not in {r.name for r in repo.delegated_roles()}:
                raise InputError(
                    f"no role {show(role)} (roles: {', '.join(TOP_LEVEL_ROLES)} or a supplier)"
                )
            old = delegator.get_delegated_role(role)
            count = count or len(old.keyids)
            threshold = threshold or min(old.threshold, count)
            check_threshold(role, threshold, count)
            # The delegator's current keys must sign the change (for root: the old root keys).
            repo.require_signing("root" if top_level else "targets")
            keys.check_retire(role, old.keyids)
            _new_keys(keys, role, count, dev=dev, into=new)
            if top_level:
                with repo.edit_root() as root:
                    for keyid in old.keyids:
                        root.revoke_key(keyid, role)
                    for key in new:
                        root.add_key(key, role)
                    root.roles[role].threshold = threshold
                if role == "targets" and not director:
                    with repo.edit_targets():
                        pass
            else:
                with repo.edit_targets() as targets:
                    for keyid in old.keyids:
                        targets.revoke_key(keyid, role)
                    for key in new:
                        targets.add_key(key, role)
                    assert targets.delegations is not None and targets.delegations.roles
                    targets.delegations.roles[role].threshold = threshold
                with repo.edit_targets(role):
                    pass
            # The Director signs its other roles per vehicle: a new root has every vehicle's
            # metadata signed again (with the new keys) at its next poll.
            if not director:
                repo.do_snapshot(force=role == "snapshot")
                repo.do_timestamp(force=role in ("snapshot", "timestamp"))
            root_version = repo.root_version()
    except BaseException:
        for key in new:
            keys.discard(role, key.keyid)
        raise
    for keyid in old.keyids:
        keys.retire(role, keyid)
    roles[role] = RoleKeys(threshold, tuple(k.keyid for k in new))
    keys.write_keyring(roles, dev=dev)
    return RotationReport(role, tuple(old.keyids), roles[role].keyids, threshold, root_version)


def add_delegation(
    home: RepositoryHome,
    name: str,
    paths: Sequence[str],
    *,
    count: int = 1,
    threshold: int = 1,
    now: datetime | None = None,
) -> RoleKeys:
    """Delegate target paths (e.g. ``<hardware id>/*``) to a supplier role with its own keys."""
    check_role_name(name)
    if not paths:
        raise InputError("a delegation needs at least one path pattern")
    patterns = [check_path_pattern(p) for p in paths]
    check_threshold(name, threshold, count)
    keys = home.keys
    new: list[SSlibKey] = []
    try:
        with writing(home, now=now) as (repo, _txn):
            roles, dev = keys.roles(), keys.dev  # checked before anything is written
            if name in {r.name for r in repo.delegated_roles()}:
                raise InputError(f"role {name!r} already exists (use 'ota keys rotate {name}')")
            repo.require_signing("targets")
            _new_keys(keys, name, count, dev=dev, into=new)
            with repo.edit_targets() as targets:
                if targets.delegations is None:
                    targets.delegations = Delegations(keys={}, roles={})
                assert targets.delegations.roles is not None
                targets.delegations.roles[name] = DelegatedRole(
                    name, [], threshold, terminating=True, paths=patterns
                )
                for key in new:
                    targets.add_key(key, name)
            with repo.edit_targets(name):
                pass
            repo.do_snapshot()
            repo.do_timestamp()
    except BaseException:
        for key in new:
            keys.discard(name, key.keyid)
        raise
    roles[name] = RoleKeys(threshold, tuple(k.keyid for k in new))
    keys.write_keyring(roles, dev=dev)
    return roles[name]
