"""What the vehicle agent persists, as frozen values with one strict loader (schema 1).

One file holds the whole vehicle (``state.json``): the update in progress — its phase, the
bundle, and one ``Job`` per ECU that takes part — and what each ECU has committed (installed
image, release-counter floor, images never to retry). One file, written atomically, means the
vehicle-level record and the ECUs' records can never disagree after a power cut.

``VehicleState.from_json`` trusts nothing: every field is type- and range-checked, every digest
is 64 hex digits (digests name staged files), every target path follows the shared rule. A file
that fails is moved aside by the store, never guessed at. Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ota_client.boot.rules import SLOTS
from ota_client.metadata import MetadataFormatError, check_identifier, check_target_path
from ota_client.metadata.fields import check_version
from ota_client.metadata.reports import KINDS
from ota_client.strict import FormatError, Reader

SCHEMA = 1
MAX_REJECTED = 32
MAX_SECURITY = 16
MAX_LENGTH = 1 << 50
MAX_COUNTER = 2**63 - 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CYCLE = re.compile(r"[0-9a-f]{32}")


class Phase(enum.StrEnum):
    IDLE = "IDLE"
    CHECK = "CHECK"
    DOWNLOAD = "DOWNLOAD"
    INSTALL = "INSTALL"
    ARM = "ARM"
    REBOOT = "REBOOT"
    TRIAL = "TRIAL"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"


class Step(enum.StrEnum):
    """One ECU's progress through RAUC's bracket, then through commit or rollback."""

    PENDING = "pending"  # planned; downloading
    DOWNLOADED = "downloaded"  # payload complete and verified (in the slot or staged)
    INSTALLED = "installed"  # slot written, read back, verified
    ARMED = "armed"  # the bootloader will try the slot
    COMMITTED = "committed"  # the slot is the active, good slot
    RESTORED = "restored"  # rollback: the bootloader boots the good slot again


@dataclass(frozen=True)
class Image:
    """A verified image: what is installed, or what is being installed."""

    path: str
    length: int
    sha256: str
    version: str
    release_counter: int


@dataclass(frozen=True)
class Fetch:
    """What is downloaded to build the image: the image itself or a delta."""

    path: str
    length: int
    sha256: str
    kind: str  # "full" or "delta"
    received: int = 0  # bytes durably written so far (resume point)
    etag: str | None = None  # validator of the partial download
    source_length: int | None = None  # delta: bytes of the running slot it reads


@dataclass(frozen=True)
class Job:
    """One ECU's part of the update in progress."""

    serial: str
    target: Image
    fetch: Fetch
    full: Fetch  # the fallback when a delta does not fit the running image
    slot: str  # the slot written and tried
    good: str  # the slot that ran when the update was planned, booted again on rollback
    step: Step = Step.PENDING


@dataclass(frozen=True)
class EcuRecord:
    installed: Image | None = None  # what the active slot holds, when known
    max_counter: int = 0  # highest release counter ever committed: never go below it
    rejected: tuple[str, ...] = ()  # sha256 of images never to try again


@dataclass(frozen=True)
class Retry:
    """Back-off for the release that failed last (``key`` names it)."""

    key: str
    attempts: int
    not_before: float


@dataclass(frozen=True)
class SecurityEvent:
    time: float
    message: str


@dataclass(frozen=True)
class VehicleState:
    phase: Phase = Phase.IDLE
    cycle: str | None = None  # id of the update in progress (report ids derive from it)
    bundle: str | None = None
    version: str | None = None
    jobs: tuple[Job, ...] = ()
    ecus: Mapping[str, EcuRecord] = field(default_factory=dict)
    outcome: str | None = None  # ROLLBACK: "rollback" (trial failed) or "update_failed"
    give_up: bool = False  # ROLLBACK: the release is never retried
    error: str | None = None
    error_kind: str | None = None
    retry: Retry | None = None
    trial_started: float | None = None
    interrupted: str | None = None  # why the last cycle stopped early; the next resumes
    security: tuple[SecurityEvent, ...] = ()

    def record(self, serial: str) -> EcuRecord:
        return self.ecus.get(serial, EcuRecord())

    def job(self, serial: str) -> Job:
        for job in self.jobs:
            if job.serial == serial:
                return job
        raise KeyError(serial)

    def with_job(self, job: Job) -> VehicleState:
        return replace(self, jobs=tuple(job if j.serial == job.serial else j for j in self.jobs))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ecus"] = {k: asdict(v) for k, v in self.ecus.items()}
        return {"schema": SCHEMA, **out}

    @classmethod
    def from_json(cls, data: object) -> VehicleState:
        """Parse a persisted state strictly; FormatError names the bad field."""
        r = Reader(data, "state")
        schema = r.integer("schema", low=0, high=1 << 16)
        if schema != SCHEMA:
            raise FormatError(f"state: schema {schema} is not {SCHEMA}")
        ecus = r.table("ecus", {})
        if len(ecus.data) > 64:
            raise FormatError("state.ecus lists more than 64 ECUs")
        state = cls(
            phase=Phase(r.string("phase", choices=list(Phase))),
            cycle=r.string("cycle", None, check=_cycle),
            bundle=r.identifier("bundle", "bundle", None),
            version=r.string("version", None, check=check_version),
            jobs=tuple(_job(j) for j in r.tables("jobs", max_items=64)),
            ecus={checked_identifier("ECU serial", k): _record(ecus.table(k)) for k in ecus.data},
            outcome=r.string("outcome", None, choices=("rollback", "update_failed")),
            give_up=r.boolean("give_up", False),
            error=r.string("error", None),
            error_kind=r.string("error_kind", None, choices=(*KINDS, "error")),
            retry=None if r.data.get("retry") is None else _retry(r.table("retry")),
            trial_started=_time(r, "trial_started"),
            interrupted=r.string("interrupted", None),
            security=tuple(
                SecurityEvent(_time(s, "time") or 0.0, s.string("message"))
                for s in r.tables("security", max_items=MAX_SECURITY)
            ),
        )
        r.used.add("retry")
        r.done()
        if state.phase == Phase.IDLE and state.jobs:
            raise FormatError("state: an idle vehicle has no jobs")
        if state.phase not in (Phase.IDLE, Phase.CHECK) and not state.jobs:
            raise FormatError(f"state: phase {state.phase} needs jobs")
        if len({j.serial for j in state.jobs}) != len(state.jobs):
            raise FormatError("state: two jobs for one ECU")
        return state


# -- strict parts ---------------------------------------------------------------------------


def _sha256(value: str) -> None:
    if not _SHA256.fullmatch(value):
        raise FormatError("must be 64 lower-case hex digits")


def _cycle(value: str) -> None:
    if not _CYCLE.fullmatch(value):
        raise FormatError("must be 32 lower-case hex digits")


def _time(r: Reader, key: str) -> float | None:
    value: float | None = r.number(key, None, low=0, high=1e11)
    return value


def _image(r: Reader) -> Image:
    image = Image(
        path=r.string("path", check=check_target_path),
        length=r.integer("length", low=0, high=MAX_LENGTH),
        sha256=r.string("sha256", check=_sha256),
        version=r.string("version", check=check_version),
        release_counter=r.integer("release_counter", low=0, high=MAX_COUNTER),
    )
    r.done()
    return image


def parse_image(data: object, where: str) -> Image:
    return _image(Reader(data, where))


def _fetch(r: Reader) -> Fetch:
    fetch = Fetch(
        path=r.string("path", check=check_target_path),
        length=r.integer("length", low=0, high=MAX_LENGTH),
        sha256=r.string("sha256", check=_sha256),
        kind=r.string("kind", choices=("full", "delta")),
        received=r.integer("received", 0, low=0, high=MAX_LENGTH),
        etag=r.string("etag", None, max_len=256),
        source_length=r.integer("source_length", None, low=0, high=MAX_LENGTH),
    )
    r.done()
    if fetch.received > fetch.length:
        raise FormatError(f"{r.where}: received more than the length")
    if (fetch.kind == "delta") != (fetch.source_length is not None):
        raise FormatError(f"{r.where}: a delta (and only a delta) has a source_length")
    return fetch


def _job(r: Reader) -> Job:
    job = Job(
        serial=r.identifier("serial", "ECU serial"),
        target=_image(r.table("target")),
        fetch=_fetch(r.table("fetch")),
        full=_fetch(r.table("full")),
        slot=r.string("slot", choices=SLOTS),
        good=r.string("good", choices=SLOTS),
        step=Step(r.string("step", choices=list(Step))),
    )
    r.done()
    if job.slot == job.good:
        raise FormatError(f"{r.where}: the slot written is the good slot")
    if job.full.kind != "full" or (job.full.path, job.full.sha256) != (
        job.target.path,
        job.target.sha256,
    ):
        raise FormatError(f"{r.where}: the fallback is not the target's full image")
    return job


def _record(r: Reader) -> EcuRecord:
    record = EcuRecord(
        installed=None if r.data.get("installed") is None else _image(r.table("installed")),
        max_counter=r.integer("max_counter", 0, low=0, high=MAX_COUNTER),
        rejected=r.strings("rejected", (), max_items=MAX_REJECTED, min_items=0),
    )
    for digest in record.rejected:
        try:
            _sha256(digest)
        except FormatError:
            raise FormatError(f"{r.where}.rejected holds a malformed digest") from None
    r.used.add("installed")
    r.done()
    return record


def _retry(r: Reader) -> Retry:
    retry = Retry(
        key=r.string("key", check=_sha256),
        attempts=r.integer("attempts", low=0, high=1 << 20),
        not_before=r.number("not_before", low=0, high=1e11),
    )
    r.done()
    return retry


def checked_identifier(kind: str, value: str) -> str:
    try:
        return check_identifier(kind, value)
    except MetadataFormatError as e:
        raise FormatError(str(e)) from None
