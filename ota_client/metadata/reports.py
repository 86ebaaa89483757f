"""The vehicle's progress report (``POST /api/v1/vehicles/<id>/events``): one schema, both sides.

The client builds reports and keeps them in its outbox until the server has them; the server
parses them with ``Report.from_dict`` and stores each id once (a vehicle resends after a power
cut, with the same id). Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ota_client.metadata.errors import MetadataFormatError
from ota_client.metadata.fields import check_version
from ota_client.metadata.names import check_identifier, check_target_path

EVENTS = ("commit", "rollback", "update_failed", "security", "state_reset")
KINDS = ("transport", "device", "security", "bad_data", "config")
MAX_ERROR = 1000
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Report:
    id: str  # 32 hex digits, the same across retries
    vehicle_id: str
    ecu: str  # ECU serial
    event: str
    time: float  # seconds since the epoch, on the vehicle's clock
    bundle: str | None = None
    target: str | None = None
    version: str | None = None
    release_counter: int | None = None
    installed: str | None = None  # version running after the event
    error: str | None = None
    kind: str | None = None  # cause of an error, one of KINDS

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise MetadataFormatError("report id must be 32 lower-case hex digits")
        check_identifier("vehicle id", self.vehicle_id)
        check_identifier("ECU serial", self.ecu)
        if self.event not in EVENTS:
            raise MetadataFormatError(f"event must be one of {', '.join(EVENTS)}")
        t = self.time
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise MetadataFormatError("time must be a finite number")
        if not 0 <= t < 1e11:
            raise MetadataFormatError("time is out of range")
        if self.bundle is not None:
            check_identifier("bundle", self.bundle)
        if self.target is not None:
            check_target_path(self.target)
        for version in (self.version, self.installed):
            if version is not None:
                check_version(version)
        rc = self.release_counter
        bad_rc = isinstance(rc, bool) or not isinstance(rc, int) or not 0 <= rc < 2**63
        if rc is not None and bad_rc:
            raise MetadataFormatError("release_counter must be an integer >= 0")
        e = self.error
        if e is not None and (not isinstance(e, str) or len(e) > MAX_ERROR):
            raise MetadataFormatError(f"error must be a string of at most {MAX_ERROR} characters")
        if self.kind is not None and self.kind not in KINDS:
            raise MetadataFormatError(f"kind must be one of {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: object) -> Report:
        if not isinstance(data, Mapping):
            raise MetadataFormatError("a report must be an object")
        names = set(cls.__dataclass_fields__)
        if unknown := set(data) - names:
            raise MetadataFormatError(f"unknown report field {str(sorted(unknown)[0])[:64]!r}")
        for key in ("id", "vehicle_id", "ecu", "event", "time"):
            if key not in data:
                raise MetadataFormatError(f"a report needs {key}")
        try:
            return cls(**{k: data[k] for k in names if k in data})
        except TypeError as e:  # pragma: no cover - names are checked above
            raise MetadataFormatError(str(e)) from None


def clip_error(text: str) -> str:
    """An error message cut to what a report may carry."""
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
