"""Release planning against what is already published (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Targets

from ota_server.errors import InputError
from ota_server.repository.catalog import Catalog
from ota_server.repository.manifest import ImageSpec, ReleaseManifest
from ota_server.repository.plan import ReleasePlan, plan_release


def manifest(version: str, *images: ImageSpec, bundle: str = "b") -> ReleaseManifest:
    return ReleaseManifest(bundle, version, images)


def image(
    ecu: str = "e",
    hwids: tuple[str, ...] = ("hw-a",),
    counter: int | None = None,
    name: str | None = None,
) -> ImageSpec:
    return ImageSpec(ecu, name or ecu, f"{ecu}.bin", hwids, counter)


def apply(catalog_targets: Targets, plan: ReleasePlan) -> None:
    """What publishing does to the metadata, minus files and signatures."""
    from tuf.api.metadata import TargetFile

    for p in plan.images:
        t = TargetFile(p.length, {"sha256": "0" * 64}, p.path)
        t.unrecognized_fields["custom"] = p.custom.to_dict()
        catalog_targets.targets[p.path] = t


def publish(targets: Targets, m: ReleaseManifest) -> ReleasePlan:
    plan = plan_release(
        m, [10] * len(m.images), Catalog.from_targets({"targets": targets}), lambda _path: "targets"
    )
    apply(targets, plan)
    return plan


def test_counters_increase_per_hardware_id() -> None:
    t = Targets()
    p1 = publish(t, manifest("1.0", image("x", ("hw-a",)), image("y", ("hw-b",))))
    assert [i.custom.release_counter for i in p1.images] == [1, 1]
    p2 = publish(t, manifest("1.1", image("x", ("hw-a",))))
    assert p2.images[0].custom.release_counter == 2
    # An image for hw-b and hw-c starts above the highest of both.
    p3 = publish(t, manifest("2.0", image("y", ("hw-b", "hw-c"))))
    assert p3.images[0].custom.release_counter == 2
    p4 = publish(t, manifest("1.0", image("z", ("hw-a", "hw-c")), bundle="other"))
    assert p4.images[0].custom.release_counter == 3
    assert p4.images[0].path == "hw-a/z-1.0.bin"


def test_explicit_counter_may_jump_but_never_go_back() -> None:
    t = Targets()
    publish(t, manifest("1.0", image(counter=10)))
    with pytest.raises(InputError, match="goes backwards"):
        publish(t, manifest("1.1", image(counter=10)))
    with pytest.raises(InputError, match="goes backwards"):
        publish(t, manifest("1.1", image(counter=3)))
    assert publish(t, manifest("1.1", image())).images[0].custom.release_counter == 11


@pytest.mark.parametrize("version", ["1.0", "1.0.0", "0.9", "1.0rc1"])
def test_version_must_be_newer(version: str) -> None:
    t = Targets()
    publish(t, manifest("1.0", image()))
    with pytest.raises(InputError, match="is not newer"):
        publish(t, manifest(version, image()))


def test_duplicate_target_names() -> None:
    t = Targets()
    with pytest.raises(InputError, match="already exists"):
        publish(t, manifest("1.0", image("a", name="same"), image("b", name="same")))
    publish(t, manifest("1.0", image("a")))
    with pytest.raises(InputError, match="already exists"):  # another bundle, same path
        publish(t, manifest("1.0", image("a"), bundle="other"))


@given(
    st.lists(
        st.tuples(st.sampled_from(["hw-a", "hw-b", "hw-c"]), st.booleans()), min_size=1, max_size=12
    )
)
def test_counter_never_goes_backwards_for_any_hardware_id(steps: list[tuple[str, bool]]) -> None:
    t = Targets()
    latest: dict[str, int] = {}
    for n, (hwid, two) in enumerate(steps):
        hwids = (hwid, "hw-z") if two else (hwid,)
        plan = publish(t, manifest(f"{n + 1}.0", image(hwids=hwids)))
        counter = plan.images[0].custom.release_counter
        for h in hwids:
            assert counter > latest.get(h, 0)
            latest[h] = counter
