"""Prove a payload builds its image: apply it with the vehicle's own code, and compare."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path

from ota_client.payload.apply import apply_payload


class _Discard:
    """Output sink: the applier already hashes what it writes."""

    def write(self, data: bytes) -> int:
        return len(data)


def verify_payload(payload: Path, target: Path, source: Path | None = None) -> None:
    """Raise PayloadError unless ``payload`` (applied to ``source``) builds ``target`` exactly."""
    with open(target, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
        size = f.tell()
    with open(payload, "rb") as p, open(source, "rb") if source else nullcontext() as s:
        apply_payload(p, _Discard(), s, expect_size=size, expect_sha256=digest)
