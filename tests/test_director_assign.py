"""The Director's assignment planner (pure), and its agreement with the vehicle's own check."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota_client.metadata import SourceInfo, TargetCustom
from ota_client.verify.uptane import ImageTarget, check_assignment
from ota_server.director.assign import EcuInventory, Installed, plan_assignment
from ota_server.errors import InputError
from ota_server.repository.catalog import CatalogEntry, Release


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image(hwids: tuple[str, ...], version: str, counter: int, length: int = 1000) -> CatalogEntry:
    path = f"{hwids[0]}/fw-{version}.bin"
    custom = TargetCustom(hwids, counter, version, "car", hwids[0])
    return CatalogEntry(path, "targets", length, {"sha256": _sha(path)}, custom)


def delta(of: CatalogEntry, source: CatalogEntry, length: int) -> CatalogEntry:
    path = f"{of.path}.from-{source.custom.version}.{length}.delta"
    custom = TargetCustom(
        of.custom.hardware_ids, of.custom.release_counter, of.custom.version, "car",
        of.custom.ecu, "delta", of.path,
        SourceInfo(source.length, {"sha256": source.hashes["sha256"]}),
    )  # fmt: skip
    return CatalogEntry(path, "targets", length, {"sha256": _sha(path)}, custom)


def installed(entry: CatalogEntry) -> Installed:
    return Installed(entry.path, entry.length, entry.hashes["sha256"], entry.custom.release_counter)


OLD_BCM, OLD_TCU = image(("bcm",), "1.0", 3), image(("tcu",), "1.0", 3)
BCM, TCU = image(("bcm",), "2.0", 4), image(("tcu", "tcu-b"), "2.0", 4)


def test_each_ecu_gets_its_image_and_the_smallest_delta_from_what_it_runs() -> None:
    deltas = (delta(BCM, OLD_BCM, 300), delta(BCM, OLD_BCM, 200), delta(TCU, OLD_BCM, 10))
    release = Release("car", "2.0", (BCM, TCU), deltas)
    ecus = [
        EcuInventory("S2", "tcu-b", installed(OLD_TCU)),  # no delta from its image: full
        EcuInventory("S1", "bcm", installed(OLD_BCM)),
        EcuInventory("S3", "radio"),  # not in the release: not named
    ]
    a = plan_assignment("VIN1", ecus, release)
    assert a.vehicle == "VIN1" and a.release == "car@2.0"
    assert [(e.serial, e.target, e.payload.kind, e.payload.length) for e in a.ecus] == [
        ("S1", BCM.path, "delta", 200),
        ("S2", TCU.path, "full", TCU.length),
    ]


def test_a_release_that_does_not_fit_is_refused() -> None:
    release = Release("car", "2.0", (BCM, TCU))
    with pytest.raises(InputError, match="no ECU has hardware tcu or tcu-b"):
        plan_assignment("VIN1", [EcuInventory("S1", "bcm")], release)
    both = image(("bcm", "tcu"), "2.0", 4)
    with pytest.raises(InputError, match="fits both"):
        plan_assignment("VIN1", [EcuInventory("S1", "bcm")], Release("car", "2.0", (BCM, both)))


def test_no_release_counter_goes_backwards() -> None:
    newer = image(("bcm",), "3.0", 9)
    with pytest.raises(InputError, match="back from release counter 9 to 4"):
        plan_assignment(
            "VIN1", [EcuInventory("S1", "bcm", installed(newer))], Release("car", "2.0", (BCM,))
        )
    same = plan_assignment(  # the same counter is allowed: the ECU already runs it
        "VIN1", [EcuInventory("S1", "bcm", installed(BCM))], Release("car", "2.0", (BCM,))
    )
    assert same.ecus[0].payload.kind == "full"


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[EcuInventory], Release, list[CatalogEntry]]:
    hwids = ["a", "b", "c"]
    olds = {h: image((h,), "1.0", draw(st.integers(0, 5))) for h in hwids}
    news = {h: image((h,), "2.0", draw(st.integers(0, 5))) for h in hwids}
    chosen = draw(st.lists(st.sampled_from(hwids), min_size=1, unique=True))
    deltas = [delta(news[h], olds[h], draw(st.integers(1, 2000))) for h in chosen]
    ecus = [
        EcuInventory(
            f"S{i}", h, draw(st.sampled_from([None, installed(olds[h]), installed(news[h])]))
        )
        for i, h in enumerate(draw(st.lists(st.sampled_from(hwids), min_size=1, max_size=4)))
    ]
    release = Release("car", "2.0", tuple(news[h] for h in chosen), tuple(deltas))
    return ecus, release, [*olds.values(), *news.values(), *deltas]


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_whatever_the_director_assigns_the_vehicle_accepts(fleet) -> None:  # type: ignore[no-untyped-def]
    ecus, release, catalog = fleet
    try:
        a = plan_assignment("VIN1", ecus, release)
    except InputError:
        return
    images = {e.path: ImageTarget(e.path, e.length, e.hashes, e.custom) for e in catalog}
    floors = {e.serial: e.installed.release_counter for e in ecus if e.installed}
    check_assignment(a, "VIN1", {e.serial: e.hardware_id for e in ecus}, images.get, floors)
    assert {e.serial for e in a.ecus} == {
        e.serial
        for e in ecus
        if any(e.hardware_id in i.custom.hardware_ids for i in release.images)
    }
