"""Regenerate the small synthetic ECU images the example manifests publish.

Deterministic (seeded), so the committed files can be checked with ``--check``. Consecutive
versions share most of their bytes — code blocks moved, patched and inserted, zero padding —
the way real firmware changes, so they also exercise delta payloads.

    python manifests/examples/make_images.py [--check]
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

HERE = Path(__file__).parent / "images"
BLOCK = 4096


def base_image(seed: int, blocks: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(blocks):
        if i % 7 == 6:
            out.append(bytes(BLOCK))  # erased flash / padding
        else:
            # code-like: a small alphabet repeated with variation compresses a bit, like firmware
            words = [rng.getrandbits(32).to_bytes(4, "little") for _ in range(64)]
            out.append(b"".join(rng.choice(words) for _ in range(BLOCK // 4)))
    return out


def next_version(blocks: list[bytes], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    new = list(blocks)
    for _ in range(max(1, len(new) // 16)):  # patch a few bytes in some blocks
        i = rng.randrange(len(new))
        b = bytearray(new[i])
        for _ in range(8):
            b[rng.randrange(BLOCK)] = rng.randrange(256)
        new[i] = bytes(b)
    at = rng.randrange(len(new))  # insert new code, shifting the rest
    new[at:at] = [rng.randbytes(BLOCK) for _ in range(2)]
    return new


IMAGES = {
    # file name: (seed, blocks, derived-from, derivation seed)
    "bcm-1.0.0.bin": (1, 48, None, 0),
    "bcm-1.1.0.bin": (0, 0, "bcm-1.0.0.bin", 11),
    "head-unit-2.0.0.img": (2, 96, None, 0),
    "head-unit-2.1.0.img": (0, 0, "head-unit-2.0.0.img", 21),
    "telematics-2.0.0.bin": (3, 32, None, 0),
    "telematics-2.1.0.bin": (0, 0, "telematics-2.0.0.bin", 31),
}


def build() -> dict[str, bytes]:
    blocks: dict[str, list[bytes]] = {}
    for name, (seed, count, parent, derive) in IMAGES.items():
        blocks[name] = (
            base_image(seed, count) if parent is None else next_version(blocks[parent], derive)
        )
    return {name: b"".join(parts) for name, parts in blocks.items()}


def main() -> int:
    images = build()
    if "--check" in sys.argv:
        bad = [n for n, data in images.items() if (HERE / n).read_bytes() != data]
        for n in bad:
            print(f"{n} differs from what make_images.py builds")
        return 1 if bad else 0
    HERE.mkdir(exist_ok=True)
    for name, data in images.items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
