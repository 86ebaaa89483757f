"""A/B slots: one interface, a raw (file or block device) and a directory implementation.

The agent brackets every write (RAUC): mark the slot bad → ``guard.check_writable`` → write
(stream a full image in, or ``install`` a staged payload) → read back and verify → arm. A slot
never decides *when* it is written; it only knows *how*, and what it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the config imports slots.guard: no cycle at run time
    from ota_client.agent.records import Image
    from ota_client.config import SlotConfig


class Slot(Protocol):
    path: Path
    streams_full_images: bool  # full images are downloaded straight into the slot

    def capacity(self) -> int | None:
        """Bytes it can hold, or None when unknown."""

    def running(self, images: list[Image]) -> Image | None:
        """Which of ``images`` the slot holds (by content), or None."""

    def install(self, staged: Path, target: Image, source: Path, source_length: int | None) -> None:
        """Write the staged payload (a delta over ``source``, or a bundle), then verify it."""


def make_slot(config: SlotConfig, name: str) -> Slot:
    from ota_client.slots.directory import DirectorySlot
    from ota_client.slots.raw import RawSlot

    path = config.path(name)
    if config.type == "directory":
        return DirectorySlot(path)
    return RawSlot(path, config.size)
