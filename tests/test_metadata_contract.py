"""Target names and custom fields: the contract both sides of the wire rely on."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota_client.metadata import MetadataFormatError, SourceInfo, TargetCustom, check_target_path

SAFE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,20}", fullmatch=True)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a/./b",
        "a//b",
        ".hidden",
        "a/",
        "a\\b",
        "bсm/x.bin",  # Cyrillic 'с'
        "café/x",
        "x\u200b",
        "a/b/c/d/e",
        "x#y",
        "x?y",
        "x%2e",
        "x y",
        "a" * 256,
        "x\x00",
    ],
)
def test_unsafe_target_paths_are_rejected(bad: str) -> None:
    with pytest.raises(MetadataFormatError):
        check_target_path(bad)


@given(st.text(max_size=80))
def test_any_accepted_path_stays_inside_its_root(text: str) -> None:
    try:
        path = check_target_path(text)
    except MetadataFormatError:
        return
    assert path.isascii()
    assert not posixpath.isabs(path)
    normalized = posixpath.normpath(path)
    assert normalized == path and not normalized.startswith("..")
    assert all(not seg.startswith(".") for seg in path.split("/"))


@given(st.lists(SAFE, min_size=1, max_size=4))
def test_plain_names_are_accepted(segments: list[str]) -> None:
    path = "/".join(segments)
    if len(path) <= 255:
        assert check_target_path(path) == path


CUSTOM = st.builds(
    TargetCustom,
    hardware_ids=st.lists(
        st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True),
        min_size=1,
        max_size=5,
        unique=True,
    ).map(tuple),
    release_counter=st.integers(0, 2**63 - 1),
    version=st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
    bundle=SAFE.filter(lambda s: "+" not in s),
    ecu=SAFE.filter(lambda s: "+" not in s),
)


@given(CUSTOM)
def test_custom_fields_round_trip(custom: TargetCustom) -> None:
    assert TargetCustom.from_dict(custom.to_dict()) == custom


def test_delta_fields_round_trip() -> None:
    delta = TargetCustom(
        ("ecu-a",),
        3,
        "1.1.0",
        "b",
        "e",
        kind="delta",
        image="ecu-a/e-1.1.0.bin",
        source=SourceInfo(10, {"sha256": "0" * 64}),
    )
    assert TargetCustom.from_dict(delta.to_dict()) == delta


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("release_counter"),
        lambda d: d.update(release_counter=-1),
        lambda d: d.update(release_counter=True),
        lambda d: d.update(release_counter="3"),
        lambda d: d.update(hardware_ids=[]),
        lambda d: d.update(hardware_ids=["a", "a"]),
        lambda d: d.update(hardware_ids="ecu-a"),
        lambda d: d.update(hardware_ids=["../x"]),
        lambda d: d.update(kind="patch"),
        lambda d: d.update(kind="delta"),
        lambda d: d.update(image="ecu-a/x"),
        lambda d: d.update(extra=1),
        lambda d: d.update(version="1.0 beta"),
    ],
)
def test_malformed_custom_fields_are_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    data = TargetCustom(("ecu-a",), 1, "1.0.0", "b", "e").to_dict()
    mutate(data)
    with pytest.raises(MetadataFormatError):
        TargetCustom.from_dict(data)
