"""Per-vehicle Director metadata: targets, snapshot and timestamp, signed on demand.

The Director's root lives in files (``director/metadata/N.root.json``, offline keys, shared
by every vehicle); the three online roles are signed per vehicle from its ``Assignment`` with
the keys that root names, and stored in the fleet database by the caller. ``sign_vehicle`` is
the one place that decides when a vehicle's metadata is signed again: when its assignment's
content changed, when any role is inside its refresh window, or when the root changed (new
online keys). All three roles then get a new version, so a vehicle never sees a version go
backwards, and the timestamp names the snapshot by length and sha256 (Uptane U-35).
No I/O here: time, keys and the previous state are parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from ota_client.metadata.assignment import Assignment
from ota_client.metadata.director_json import encode_targets
from ota_server.config import ExpiryPolicy
from ota_server.repository.signing import RoleSigning

ONLINE = ("targets", "snapshot", "timestamp")
SPEC_VERSION = "1.0.31"
_SERIALIZER = JSONSerializer(compact=True)


@dataclass(frozen=True)
class SignedVehicle:
    """A vehicle's current Director metadata, as served."""

    version: int  # of all three roles
    targets: bytes
    snapshot: bytes
    timestamp: bytes
    signed_at: datetime
    content: str  # sha256 of the assignment's encoding: whether it changed
    root_version: int

    def role(self, name: str) -> bytes:
        return {"targets": self.targets, "snapshot": self.snapshot, "timestamp": self.timestamp}[
            name
        ]


def content_digest(assignment: Assignment) -> str:
    targets = Targets(version=1, expires=datetime(2000, 1, 1, tzinfo=UTC))
    encode_targets(assignment, targets)
    doc = targets.to_dict()
    doc.pop("version"), doc.pop("expires")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def is_current(
    previous: SignedVehicle | None,
    assignment: Assignment,
    root: Root,
    policy: ExpiryPolicy,
    now: datetime,
) -> bool:
    """Whether ``previous`` may still be served as it is."""
    if previous is None or previous.root_version != root.version:
        return False
    if previous.content != content_digest(assignment):
        return False
    return not any(
        policy.is_due(role, previous.signed_at + policy.lifetime(role), now) for role in ONLINE
    )


def sign_vehicle(
    assignment: Assignment,
    previous: SignedVehicle | None,
    root: Root,
    signing: RoleSigning,
    policy: ExpiryPolicy,
    now: datetime,
) -> SignedVehicle:
    """The vehicle's metadata, re-signed unless ``previous`` is still current."""
    if previous is not None and is_current(previous, assignment, root, policy, now):
        return previous
    now = now.replace(microsecond=0)
    version = 1 if previous is None else previous.version + 1

    def expires(role: str) -> datetime:
        return now + policy.lifetime(role)

    targets = Targets(version=version, spec_version=SPEC_VERSION, expires=expires("targets"))
    encode_targets(assignment, targets)
    targets_bytes = _signed(signing, root, "targets", targets)
    snapshot = Snapshot(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires("snapshot"),
        meta={"targets.json": MetaFile(version)},
    )
    snapshot_bytes = _signed(signing, root, "snapshot", snapshot)
    timestamp = Timestamp(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires("timestamp"),
        snapshot_meta=MetaFile.from_data(version, snapshot_bytes, ["sha256"]),
    )
    return SignedVehicle(
        version=version,
        targets=targets_bytes,
        snapshot=snapshot_bytes,
        timestamp=_signed(signing, root, "timestamp", timestamp),
        signed_at=now,
        content=content_digest(assignment),
        root_version=root.version,
    )


def _signed(
    signing: RoleSigning, root: Root, role: str, signed: Targets | Snapshot | Timestamp
) -> bytes:
    md: Metadata[Any] = Metadata(signed)
    signing.sign(role, md, [root])
    return md.to_bytes(_SERIALIZER)
