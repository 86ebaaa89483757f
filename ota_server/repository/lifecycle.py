"""Create the repositories, keep their signatures fresh, and report their state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from securesystemslib.signer import SSlibKey

from ota_server.errors import KeyStoreError, RepositoryStateError
from ota_server.keys.store import TOP_LEVEL_ROLES
from ota_server.repository.home import RepositoryHome
from ota_server.repository.store import FileRepository, root_versions, writing

ONLINE_ROLES = ("snapshot", "timestamp")


def init_repositories(homes: Sequence[RepositoryHome], *, now: datetime | None = None) -> None:
    """Write version 1 of each repository's metadata from the keys in its key ring.

    The Image repository gets all four top-level roles; the Director only its root (it signs
    targets, snapshot and timestamp per vehicle). Every key file of every repository is read
    (and decrypted) before the first write, the lock files included.
    """
    keys = {}
    for home in homes:
        if root_versions(home.files.metadata):
            raise RepositoryStateError(f"{home.files.served} already holds a repository")
        keys[home.name] = _public_keys(home)
    for home in homes:
        public, thresholds = keys[home.name]
        if home.name == "image":
            home.files.targets.mkdir(parents=True, exist_ok=True)
        with writing(home, create=True, now=now) as (repo, _txn):
            with repo.edit_root() as root:
                for role in TOP_LEVEL_ROLES:
                    for key in public[role]:
                        root.add_key(key, role)
                    root.roles[role].threshold = thresholds[role]
            if home.name == "image":
                with repo.edit_targets():
                    pass
                repo.do_snapshot()
                repo.do_timestamp()


def _public_keys(home: RepositoryHome) -> tuple[dict[str, list[SSlibKey]], dict[str, int]]:
    """Each top-level role's public keys and threshold, once every private key has loaded."""
    keys = home.keys
    roles = keys.roles()
    if missing := [r for r in TOP_LEVEL_ROLES if r not in roles]:
        raise RepositoryStateError(f"the key ring has no keys for {', '.join(missing)}")
    public = {role: [keys.public_key(role, k) for k in roles[role].keyids] for role in roles}
    for role in TOP_LEVEL_ROLES:
        signers = [keys.signer(role, keyid) for keyid in roles[role].keyids]
        if sum(signer is not None for signer in signers) < roles[role].threshold:
            raise KeyStoreError(
                f"cannot sign {home.name} {role}: it needs {roles[role].threshold} of its keys "
                f"and only {sum(signer is not None for signer in signers)} are here"
            )
    return public, {role: roles[role].threshold for role in TOP_LEVEL_ROLES}


@dataclass
class RefreshReport:
    resigned: dict[str, int] = field(default_factory=dict)  # role -> new version
    skipped: list[str] = field(default_factory=list)  # due, but its keys are offline


def refresh_repository(
    home: RepositoryHome,
    *,
    force: bool = False,
    online_only: bool = False,
    now: datetime | None = None,
    wait: float = 30.0,
) -> RefreshReport:
    """Re-sign every role whose expiry is inside its refresh window (all of them with force)."""
    report = RefreshReport()
    policy = home.policy
    with writing(home, now=now, wait=wait) as (repo, _txn):

        def due(role: str) -> bool:
            return force or policy.is_due(role, repo.signed(role).expires, repo.now)

        if not online_only:
            offline = [r.name for r in repo.delegated_roles()] + ["targets", "root"]
            for role in filter(due, offline):
                if repo.can_sign(role):
                    with repo.edit(role):
                        pass
                else:
                    report.skipped.append(role)
        repo.do_snapshot(force=due("snapshot"))
        repo.do_timestamp(force=due("timestamp"))
        for role in repo.changed_roles():
            report.resigned[role] = repo.signed(role).version
    return report


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime
    threshold: int
    keys: int
    keys_here: int


def repository_status(home: RepositoryHome, now: datetime) -> list[RoleStatus]:
    repo = FileRepository.load(home, now)
    out = []
    for role in [*TOP_LEVEL_ROLES, *(r.name for r in repo.delegated_roles())]:
        signed = repo.signed(role)
        wanted = repo.delegator(role).get_delegated_role(role)
        out.append(
            RoleStatus(
                role=role,
                version=signed.version,
                expires=signed.expires,
                threshold=wanted.threshold,
                keys=len(wanted.keyids),
                keys_here=sum(home.keys.has_private(role, k) for k in wanted.keyids),
            )
        )
    return out
