"""Persistence for the agent: the state file and the outbox of reports, both atomic JSON.

A state file that cannot be read is not guessed at: the agent stops with a clear error and
the active slot is left alone (the bootloader keeps booting it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ota_client.agent.machine import UpdateState
from ota_client.atomic import write_atomic
from ota_client.locking import file_lock


class StateError(Exception):
    """The persisted state is unreadable or inconsistent (bad data on the vehicle)."""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> UpdateState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return UpdateState()
        except OSError as e:
            raise StateError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            return UpdateState.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(
                f"{self.path} is unreadable ({e}); the active slot is untouched. "
                "Inspect it, then remove it to start over"
            ) from None

    def save(self, state: UpdateState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(state.to_json(), indent=1).encode())


class Outbox:
    """Reports waiting for delivery, oldest first; capped so a long offline spell stays bounded."""

    LIMIT = 256

    def __init__(self, path: Path) -> None:
        self.path = path

    def items(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # a damaged outbox loses reports, never the vehicle
        return data if isinstance(data, list) else []

    def put(self, report: dict[str, Any]) -> None:
        self._write([*self.items(), report][-self.LIMIT :])

    def drop(self, count: int) -> None:
        self._write(self.items()[count:])

    def _write(self, items: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(items, indent=1).encode())


@contextmanager
def exclusive(data_dir: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the client's lock (``data_dir/lock``): one process drives the slots at a time."""
    with file_lock(data_dir / "lock", wait=wait) as held:
        if not held:
            raise StateError(
                "another ota-client is working on this vehicle; try again when it is done"
            )
        yield
