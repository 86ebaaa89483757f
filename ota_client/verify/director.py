"""Uptane full verification for the whole vehicle: the Director's chain, then the Image's.

``DirectorRepository`` is the vehicle's own Director metadata (``<server>/director/<VIN>/``),
with Uptane-sized caps (the Director signs one small file per role per vehicle); its targets
are decoded strictly into an ``Assignment``. ``verify_assignment`` runs the Director chain
(root, timestamp, snapshot, targets — python-tuf), and when the assignment asks for anything
new, the Image repository's chain and then the match of **every** Director target
(``verify.uptane``). When every ECU already runs what it is assigned there is nothing to
install, and the Image repository is not asked (Uptane: no new targets, stop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tuf.ngclient import UpdaterConfig

from ota_client.errors import SecurityError
from ota_client.metadata import MetadataFormatError
from ota_client.metadata.assignment import Assignment
from ota_client.metadata.director_json import decode_targets
from ota_client.verify.repository import TufRepository, VerifiedTarget
from ota_client.verify.uptane import ImageTarget, check_addressee, check_assignment

DIRECTOR_CONFIG = UpdaterConfig(
    max_root_rotations=64,
    timestamp_max_length=16 << 10,
    snapshot_max_length=64 << 10,
    targets_max_length=256 << 10,
)


class DirectorRepository(TufRepository):
    def assignment(self) -> Assignment:
        """Refresh the Director chain and decode this vehicle's targets."""
        self.refresh()
        try:
            return decode_targets(self._trusted("targets"))
        except MetadataFormatError as e:
            raise SecurityError(f"the Director's targets are not an assignment: {e}") from None


@dataclass(frozen=True)
class VerifiedAssignment:
    assignment: Assignment
    images: Mapping[str, VerifiedTarget] = field(default_factory=dict)  # by target name


def verify_assignment(
    director: DirectorRepository,
    image: TufRepository,
    vehicle: str,
    ecus: Mapping[str, str],
    installed: Mapping[str, str | None],
    floors: Mapping[str, int],
) -> VerifiedAssignment:
    """The vehicle's assignment, fully verified, with the Image entries it names.

    ``ecus`` maps serials to hardware ids, ``installed`` to the sha256 each ECU runs (None:
    unknown), ``floors`` to each ECU's highest release counter so far.
    """
    assignment = director.assignment()
    check_addressee(assignment, vehicle, ecus)
    if all(installed.get(e.serial) == e.sha256 for e in assignment.ecus):
        return VerifiedAssignment(assignment)
    image.refresh()
    found: dict[str, VerifiedTarget] = {}

    def lookup(path: str) -> ImageTarget | None:
        target = found.get(path) or image.lookup(path)
        if target is None:
            return None
        found[path] = target
        return ImageTarget(path, target.info.length, target.info.hashes, target.custom)

    check_assignment(assignment, vehicle, ecus, lookup, floors)
    return VerifiedAssignment(assignment, found)
