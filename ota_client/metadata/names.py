"""Names that cross from signed metadata to a disk: target paths and identifiers.

A target path becomes a file name on the server and on the vehicle, so it is checked by one
strict rule on both sides: 1 to 4 ``/``-separated segments, each an ASCII letter or digit
followed by letters, digits and ``. _ + -``. That rules out ``..``, absolute paths, hidden
files, backslashes, URL metacharacters (``# ? %``) and look-alike Unicode by construction,
rather than by a list of known-bad inputs.
"""

from __future__ import annotations

import re

from ota_client.metadata.errors import MetadataFormatError, show

MAX_TARGET_PATH = 255
MAX_SEGMENTS = 4
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_target_path(path: object) -> str:
    """Return ``path`` if it is a valid target path, else raise MetadataFormatError."""
    if not isinstance(path, str):
        raise MetadataFormatError(f"target path must be a string, not {type(path).__name__}")
    if not path or len(path) > MAX_TARGET_PATH:
        raise MetadataFormatError(
            f"target path must be 1-{MAX_TARGET_PATH} characters: {show(path)}"
        )
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise MetadataFormatError(
            f"target path has more than {MAX_SEGMENTS} segments: {show(path)}"
        )
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise MetadataFormatError(
                f"invalid target path {show(path)}: each segment must start with a letter or digit "
                "and hold only ASCII letters, digits and . _ + -"
            )
    return path


def check_identifier(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid identifier (hardware id, bundle, ECU role, role name)."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise MetadataFormatError(
            f"invalid {kind} {show(value)}: use 1-64 ASCII letters, digits and . _ -, "
            "starting with a letter or digit"
        )
    return value
