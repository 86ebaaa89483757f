"""Release manifests: strict parsing, one clear error per mistake."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota_server.errors import InputError
from ota_server.repository.manifest import manifest_from_data, parse_manifest

GOOD = """
bundle = "body"
version = "1.2.0"
[[images]]
ecu = "bcm"
file = "bcm.bin"
hardware_ids = ["bcm-s32k", "bcm-s32k-b"]
"""


def test_good_manifest() -> None:
    m = parse_manifest(GOOD)
    assert (m.bundle, m.version) == ("body", "1.2.0")
    (image,) = m.images
    assert image.name == "bcm" and image.hardware_ids == ("bcm-s32k", "bcm-s32k-b")
    assert image.release_counter is None and image.suffix == ".bin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bundle = ", "malformed TOML"),
        (GOOD + "colour = 'red'\n", "unknown setting images[0].colour"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "bcm"\nsize = 3'), "unknown setting images[0].size"),
        ('bundle = "b"\nversion = "1.0"\n', "the bundle is empty"),
        ('bundle = "b"\nversion = "1.0"\nimages = []\n', "the bundle is empty"),
        (GOOD.replace('version = "1.2.0"', ""), "missing version"),
        (GOOD.replace('version = "1.2.0"', 'version = "one"'), "not a comparable version"),
        (GOOD.replace('version = "1.2.0"', 'version = "1.0/../2"'), "invalid version"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "../bcm"'), "images[0].ecu is not a valid ECU role"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "bcm"\nname = "/abs"'), "not a valid image name"),
        (GOOD.replace('"bcm-s32k",', '"bсm",'), "hardware_ids[0] is not a valid"),  # Cyrillic
        (GOOD.replace('bundle = "body"', 'bundle = "bo dy"'), "bundle is not a valid bundle name"),
        (GOOD.replace('["bcm-s32k", "bcm-s32k-b"]', "[]"), "hardware_ids must be a list of 1-32"),
        (GOOD.replace('"bcm-s32k-b"', '"bcm-s32k"'), "lists an id twice"),
        (GOOD.replace('file = "bcm.bin"', "file = 3"), "images[0].file must be a string"),
        (GOOD + GOOD[GOOD.index("[[images]]") :], "ECU role 'bcm' appears twice"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "bcm"\nrelease_counter = -1'), "release_counter"),
        ("x" * (1 << 21), "larger than"),
        (GOOD.replace('file = "bcm.bin"', 'file = ""'), "images[0].file must be a non-empty path"),
        (GOOD.replace('file = "bcm.bin"', 'file = "a\\u0000b"'), "images[0].file holds a NUL"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "bcm"\nrelease_counter = 2e3'), "release_counter"),
        (GOOD.replace('ecu = "bcm"', 'ecu = "bcm"\nrelease_counter = 1' + "0" * 30), "integer 0-"),
        ("x = " + "[" * 40 + "]" * 40, "nested more than"),
        (".".join(["k"] * 40) + " = 1", "dotted parts"),
    ],
)
def test_bad_manifests(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_manifest(text)


@given(st.text(max_size=400))
def test_arbitrary_text_gives_input_error_or_manifest(text: str) -> None:
    try:
        parse_manifest(text)
    except InputError:
        pass


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(st.sampled_from(["bundle", "version", "images", "x"]), VALUES, max_size=4),
    st.dictionaries(
        st.sampled_from(["ecu", "name", "file", "hardware_ids", "release_counter", "y"]),
        VALUES,
        max_size=6,
    ),
)
def test_arbitrary_documents_give_a_manifest_or_input_error(top: dict, image: dict) -> None:  # type: ignore[type-arg]
    for doc in (
        top,
        {**top, "images": [image]},
        {"bundle": "b", "version": "1", "images": [image]},
    ):
        try:
            manifest_from_data(doc)
        except InputError:
            pass
