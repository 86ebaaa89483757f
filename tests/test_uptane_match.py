"""The Director/Image match (Uptane full verification step 10) and the Director's encoding.

Pure tests. A consistent vehicle (ECUs, an Image repository holding their images and
deltas, the Director's assignment of them) passes; every single-field change that an attacker
holding one repository's keys could make is refused, whichever ECU it touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import DelegatedRole, Delegations, TargetFile, Targets

from ota_client.errors import SecurityError
from ota_client.metadata import MetadataFormatError, SourceInfo, TargetCustom
from ota_client.metadata.assignment import Assignment, EcuAssignment, Payload
from ota_client.metadata.director_json import decode_targets, encode_targets
from ota_client.verify.director import verify_assignment
from ota_client.verify.repository import VerifiedTarget
from ota_client.verify.uptane import ImageTarget, check_assignment

VIN = "VIN-0001"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class World:
    ecus: dict[str, str]  # serial -> hardware id
    images: dict[str, ImageTarget]
    assignment: Assignment
    floors: dict[str, int]

    def lookup(self, path: str) -> ImageTarget | None:
        return self.images.get(path)

    def check(self, assignment: Assignment | None = None) -> None:
        check_assignment(assignment or self.assignment, VIN, self.ecus, self.lookup, self.floors)


def world(count: int = 2, *, delta: bool = True, counter: int = 7) -> World:
    ecus, images, assigned = {}, {}, []
    for n in range(count):
        serial, hwid = f"ECU-{n}", f"hw-{n}"
        ecus[serial] = hwid
        path = f"{hwid}/fw-2.0.bin"
        custom = TargetCustom((hwid,), counter, "2.0", "car", f"role{n}")
        images[path] = ImageTarget(path, 1000 + n, {"sha256": _sha(path)}, custom)
        payload = Payload(path, 1000 + n, _sha(path), "full")
        if delta and n == 0:
            dpath = f"{hwid}/fw-2.0.from-1.0.delta"
            dcustom = TargetCustom(
                (hwid,), counter, "2.0", "car", f"role{n}", "delta", path,
                SourceInfo(900, {"sha256": _sha("old")}),
            )  # fmt: skip
            images[dpath] = ImageTarget(dpath, 50, {"sha256": _sha(dpath)}, dcustom)
            payload = Payload(dpath, 50, _sha(dpath), "delta")
        assigned.append(
            EcuAssignment(serial, path, 1000 + n, {"sha256": _sha(path)}, (hwid,), counter, payload)
        )
    return World(ecus, images, Assignment(VIN, tuple(assigned), "car@2.0"), {"ECU-0": 5})


def _replace_ecu(a: Assignment, index: int, **changes: object) -> Assignment:
    ecus = list(a.ecus)
    ecus[index] = dataclasses.replace(ecus[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(a, ecus=tuple(ecus))


def test_a_consistent_assignment_passes() -> None:
    world().check()
    world(delta=False).check()
    world(0).check()  # nothing assigned


# Each attack changes one thing the Director (or the network) controls.
DIRECTOR_ATTACKS = {
    "arbitrary software (not in the Image repository)": dict(
        target="hw-1/evil.bin",
        payload=Payload("hw-1/evil.bin", 1001, _sha("hw-1/fw-2.0.bin"), "full"),
    ),
    "another length": dict(
        length=1002, payload=Payload("hw-1/fw-2.0.bin", 1002, _sha("hw-1/fw-2.0.bin"), "full")
    ),
    "other hashes": dict(
        hashes={"sha256": _sha("x")}, payload=Payload("hw-1/fw-2.0.bin", 1001, _sha("x"), "full")
    ),
    "an extra hash": dict(hashes={"sha256": _sha("hw-1/fw-2.0.bin"), "sha512": "0" * 128}),
    "other hardware ids": dict(hardware_ids=("hw-1", "hw-9")),
    "a counter that differs": dict(release_counter=8),
}  # fmt: skip


@pytest.mark.parametrize("attack", sorted(DIRECTOR_ATTACKS))
def test_each_director_field_must_match_the_image_repository(attack: str) -> None:
    w = world()
    with pytest.raises(SecurityError):
        w.check(_replace_ecu(w.assignment, 1, **DIRECTOR_ATTACKS[attack]))


def test_an_image_for_other_hardware_is_refused() -> None:
    w = world()
    w.ecus["ECU-1"] = "hw-other"
    with pytest.raises(SecurityError, match="not for hardware hw-other"):
        w.check()


def test_the_release_counter_never_goes_backwards() -> None:
    w = world(counter=4)  # the Image repository signs 4 too: only the floor (5) refuses it
    with pytest.raises(SecurityError, match="rollback"):
        w.check()
    w.floors = {"ECU-0": 4}
    w.check()


def test_another_vehicles_metadata_and_unknown_ecus_are_refused() -> None:
    w = world()
    with pytest.raises(SecurityError, match="for vehicle"):
        w.check(dataclasses.replace(w.assignment, vehicle="VIN-0002"))
    with pytest.raises(SecurityError, match="for vehicle"):
        w.check(Assignment("VIN-0002"))  # an empty assignment still names its vehicle
    del w.ecus["ECU-1"]
    with pytest.raises(SecurityError, match="not an ECU here"):
        w.check()


def test_a_delta_must_be_the_image_repositorys_delta_for_that_image() -> None:
    w = world()
    good = w.assignment.ecus[0].payload
    for payload in (
        dataclasses.replace(good, sha256=_sha("other")),
        dataclasses.replace(good, length=51),
        dataclasses.replace(good, path="hw-0/unknown.delta"),
        Payload("hw-1/fw-2.0.bin", 1001, _sha("hw-1/fw-2.0.bin"), "delta"),  # not a delta
    ):
        with pytest.raises(SecurityError, match="delta"):
            w.check(_replace_ecu(w.assignment, 0, payload=payload))
    # A delta the Image repository made for another image is refused too.
    w.images["hw-0/fw-2.0.from-1.0.delta"] = dataclasses.replace(
        w.images["hw-0/fw-2.0.from-1.0.delta"],
        custom=dataclasses.replace(
            w.images["hw-0/fw-2.0.from-1.0.delta"].custom, image="hw-0/fw-1.9.bin"
        ),
    )
    with pytest.raises(SecurityError, match="delta"):
        w.check()


def test_an_image_repository_delta_cannot_stand_for_an_image() -> None:
    w = world()
    dpath = "hw-0/fw-2.0.from-1.0.delta"
    d = w.images[dpath]
    full = Payload(dpath, d.length, d.hashes["sha256"], "full")
    forged = EcuAssignment("ECU-0", dpath, d.length, d.hashes, ("hw-0",), 7, full)
    with pytest.raises(SecurityError, match="is a delta"):
        w.check(dataclasses.replace(w.assignment, ecus=(forged, w.assignment.ecus[1])))


def test_an_assignment_is_well_formed_or_does_not_exist() -> None:
    ecu = world().assignment.ecus[1]
    with pytest.raises(MetadataFormatError, match="twice"):
        Assignment(VIN, (ecu, ecu))
    with pytest.raises(MetadataFormatError, match="full payload"):
        dataclasses.replace(ecu, payload=dataclasses.replace(ecu.payload, length=1))
    with pytest.raises(MetadataFormatError):
        dataclasses.replace(ecu, serial="../x")
    with pytest.raises(MetadataFormatError):
        Assignment(VIN, release="no-version")


def _targets(a: Assignment) -> Targets:
    t = Targets(version=3, expires=datetime(2030, 1, 1, tzinfo=UTC))
    encode_targets(a, t)
    return Targets.from_dict(t.to_dict())  # through the wire form


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 5), delta=st.booleans(), counter=st.integers(0, 2**63 - 1))
def test_the_encoding_round_trips(count: int, delta: bool, counter: int) -> None:
    a = world(count, delta=delta, counter=counter).assignment
    assert decode_targets(_targets(a)) == a


def test_two_identical_ecus_share_one_target_entry() -> None:
    w = world(1, delta=False)
    twin = dataclasses.replace(w.assignment.ecus[0], serial="ECU-1")
    a = dataclasses.replace(w.assignment, ecus=(w.assignment.ecus[0], twin))
    t = _targets(a)
    assert list(t.targets) == ["hw-0/fw-2.0.bin"]
    assert decode_targets(t) == a


def _wire(a: Assignment) -> dict:  # type: ignore[type-arg]
    return _targets(a).to_dict()


ROLE = {"name": "x", "keyids": [], "threshold": 1, "terminating": True, "paths": ["*"]}


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["custom"].pop("vehicle"),
        lambda d: d["custom"].update(extra=1),
        lambda d: d.update(other=1),
        lambda d: d.update(delegations={"keys": {}, "roles": [ROLE]}),
        lambda d: next(iter(d["targets"].values()))["custom"].update(version="2"),
        lambda d: next(iter(d["targets"].values()))["custom"]["ecus"].clear(),
        lambda d: next(iter(d["targets"].values()))["custom"].update(hardware_ids="hw-0"),
        lambda d: next(iter(d["targets"].values()))["custom"].update(release_counter=-1),
        lambda d: next(iter(d["targets"].values())).pop("custom"),
        lambda d: next(iter(next(iter(d["targets"].values()))["custom"]["ecus"].values()))[
            "payload"
        ].update(kind="patch"),
    ],
)  # fmt: skip
def test_decoding_is_strict(damage) -> None:  # type: ignore[no-untyped-def]
    data = _wire(world().assignment)
    damage(data)
    with pytest.raises(MetadataFormatError):
        decode_targets(Targets.from_dict(data))


def test_an_ecu_named_under_two_targets_is_refused() -> None:
    data = _wire(world(delta=False).assignment)
    second = list(data["targets"].values())[1]
    second["custom"]["ecus"]["ECU-0"] = second["custom"]["ecus"]["ECU-1"]
    with pytest.raises(MetadataFormatError, match="twice"):
        decode_targets(Targets.from_dict(data))


def test_director_targets_that_delegate_are_refused() -> None:
    t = _targets(world().assignment)
    t.delegations = Delegations({}, {"x": DelegatedRole("x", [], 1, True, ["*"])})
    with pytest.raises(MetadataFormatError, match="delegate"):
        decode_targets(t)


class StubRepository:
    """A verified repository as ``verify_assignment`` sees it: refresh and lookup only."""

    def __init__(self, assignment: Assignment | None = None, w: World | None = None) -> None:
        self._assignment, self.world, self.refreshed = assignment, w, 0

    def assignment(self) -> Assignment:
        assert self._assignment is not None
        return self._assignment

    def refresh(self) -> None:
        self.refreshed += 1

    def lookup(self, path: str) -> object:
        assert self.world is not None
        found = self.world.images.get(path)
        if found is None:
            return None
        info = TargetFile(found.length, dict(found.hashes), path)
        return VerifiedTarget(info, found.custom)


def test_every_director_target_is_matched_not_only_the_new_ones() -> None:
    """U-136 (the Primary matches *all* Director targets) and U-132 (nothing new: stop)."""
    w = world()
    installed = {"ECU-0": None, "ECU-1": w.assignment.ecus[1].sha256}  # ECU-1 runs its image
    image = StubRepository(w=w)
    verified = verify_assignment(
        StubRepository(w.assignment),
        image,
        VIN,
        w.ecus,
        installed,
        w.floors,  # type: ignore[arg-type]
    )
    assert set(verified.images) >= {e.target for e in w.assignment.ecus} and image.refreshed == 1
    # The ECU that already runs its image no longer matches the Image repository: refused.
    w.images["hw-1/fw-2.0.bin"] = dataclasses.replace(w.images["hw-1/fw-2.0.bin"], length=1)
    with pytest.raises(SecurityError, match="ECU-1"):
        verify_assignment(StubRepository(w.assignment), StubRepository(w=w), VIN, w.ecus,  # type: ignore[arg-type]
                          installed, w.floors)  # fmt: skip
    # Every ECU runs its image: the Image repository is not even asked.
    everything = {e.serial: e.sha256 for e in w.assignment.ecus}
    idle = StubRepository(w=w)
    verify_assignment(StubRepository(w.assignment), idle, VIN, w.ecus, everything, w.floors)  # type: ignore[arg-type]
    assert idle.refreshed == 0
