"""The vehicle's update cycle as a pure state machine: a table of allowed transitions.

    IDLE -> CHECK -> DOWNLOAD -> INSTALL -> ARM -> REBOOT -> TRIAL -> COMMIT -> IDLE
                        |           |        |        \\        \\
                        +-----------+--------+-------> ROLLBACK <-+ -> IDLE

One cycle belongs to the vehicle: CHECK makes one plan (a ``Job`` per ECU of one bundle);
each later phase advances only when *every* job has done its step (all downloaded, all
installed, all armed); one reboot; the trial passes only if every ECU's checks pass; COMMIT
commits every ECU, and anything that fails from DOWNLOAD on rolls *every* ECU back.

``step`` returns the next ``VehicleState`` or raises ``IllegalTransition`` and changes nothing.
The shell persists every state before acting on it, and saves a state that moves past a step
only once that step's effects are durable, so after a power cut it resumes the step it was in.
Nothing here does I/O or reads the clock: times come in on events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ota_client.agent.records import (
    MAX_REJECTED,
    MAX_SECURITY,
    EcuRecord,
    Fetch,
    Image,
    Job,
    Phase,
    Retry,
    SecurityEvent,
    Step,
    VehicleState,
)

__all__ = ["TABLE", "IllegalTransition", "Phase", "Step", "VehicleState", "plan_key", "step"]


class IllegalTransition(Exception):
    """An event that the current state does not allow (a bug in the shell)."""


def plan_key(jobs: tuple[Job, ...] | list[Job]) -> str:
    """Names a release for one vehicle: back-off and give-up apply to exactly these images."""
    text = ",".join(sorted(f"{j.serial}={j.target.sha256}" for j in jobs))
    return hashlib.sha256(text.encode()).hexdigest()


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Planned:
    cycle: str
    bundle: str
    version: str
    jobs: tuple[Job, ...]
    installed: Mapping[str, Image | None]  # what CHECK found each ECU running


@dataclass(frozen=True)
class NothingToDo:
    installed: Mapping[str, Image | None]
    waiting: bool = False  # an update exists, but its back-off has not ended


@dataclass(frozen=True)
class Progress:
    serial: str
    received: int
    etag: str | None = None


@dataclass(frozen=True)
class Restart:
    """A resumed download did not match its hash: start it over from zero (once)."""

    serial: str
    reason: str


@dataclass(frozen=True)
class Downloaded:
    serial: str


@dataclass(frozen=True)
class FallBack:
    """The delta does not fit the running image: fetch the full image instead."""

    serial: str
    reason: str


@dataclass(frozen=True)
class Installed:
    serial: str


@dataclass(frozen=True)
class Armed:
    serial: str


@dataclass(frozen=True)
class Booted:
    """Every ECU booted the slot it was to try."""

    now: float


@dataclass(frozen=True)
class BootedOld:
    """An ECU's bootloader fell back to the good slot."""

    serial: str
    reason: str


@dataclass(frozen=True)
class TrialPassed:
    pass


@dataclass(frozen=True)
class TrialFailed:
    serial: str
    reason: str


@dataclass(frozen=True)
class Committed:
    serial: str


@dataclass(frozen=True)
class Restored:
    serial: str


@dataclass(frozen=True)
class Done:
    """COMMIT or ROLLBACK finished for every ECU, reports queued: back to IDLE."""


@dataclass(frozen=True)
class Failed:
    """The step failed. ``retry`` is the back-off, or None when the release is given up."""

    reason: str
    kind: str
    retry: Retry | None
    now: float


@dataclass(frozen=True)
class Interrupted:
    """A download stopped for a transport reason: keep its progress, resume later."""

    reason: str
    retry: Retry


Event = (
    Start
    | Planned
    | NothingToDo
    | Progress
    | Restart
    | Downloaded
    | FallBack
    | Installed
    | Armed
    | Booted
    | BootedOld
    | TrialPassed
    | TrialFailed
    | Committed
    | Restored
    | Done
    | Failed
    | Interrupted
)


# -- transitions -------------------------------------------------------------------------------

Handler = Callable[[VehicleState, Any], VehicleState]


def _idle(s: VehicleState, **changes: Any) -> VehicleState:
    base: dict[str, Any] = {
        "phase": Phase.IDLE,
        "cycle": None,
        "bundle": None,
        "version": None,
        "jobs": (),
        "outcome": None,
        "give_up": False,
        "trial_started": None,
        "interrupted": None,
    }
    return replace(s, **{**base, **changes})


def _learned(s: VehicleState, installed: Mapping[str, Image | None]) -> dict[str, EcuRecord]:
    ecus = dict(s.ecus)
    for serial, image in installed.items():
        if image is not None:
            ecus[serial] = replace(s.record(serial), installed=image)
    return ecus


def _planned(s: VehicleState, e: Planned) -> VehicleState:
    if not e.jobs:
        raise IllegalTransition("a plan needs at least one job")
    for job in e.jobs:
        record = s.record(job.serial)
        if job.target.release_counter <= record.max_counter:
            raise IllegalTransition(
                f"{job.serial}: release counter {job.target.release_counter} is not above "
                f"{record.max_counter}"
            )
        if job.target.sha256 in record.rejected:
            raise IllegalTransition(f"{job.serial}: this image was rejected before")
        if job.step is not Step.PENDING or job.slot == job.good:
            raise IllegalTransition(f"{job.serial}: a new job starts pending, off the good slot")
    retry = s.retry if s.retry is not None and s.retry.key == plan_key(e.jobs) else None
    return replace(
        s,
        phase=Phase.DOWNLOAD,
        cycle=e.cycle,
        bundle=e.bundle,
        version=e.version,
        jobs=e.jobs,
        ecus=_learned(s, e.installed),
        retry=retry,
        error=None,
        error_kind=None,
        interrupted=None,
    )


def _nothing(s: VehicleState, e: NothingToDo) -> VehicleState:
    if e.waiting:
        return _idle(s, ecus=_learned(s, e.installed))
    return _idle(s, ecus=_learned(s, e.installed), error=None, error_kind=None, retry=None)


def _advance(s: VehicleState, serial: str, want: Step, new: Step, nxt: Phase) -> VehicleState:
    """Move one job from ``want`` to ``new``; when every job is there, go to phase ``nxt``."""
    job = s.job(serial)
    if job.step is not want:
        raise IllegalTransition(f"{serial} is {job.step}, not {want}")
    s = s.with_job(replace(job, step=new))
    if all(j.step is new for j in s.jobs):
        s = replace(s, phase=nxt)
    return s


def _progress(s: VehicleState, e: Progress) -> VehicleState:
    job = s.job(e.serial)
    if job.step is not Step.PENDING or not 0 <= e.received <= job.fetch.length:
        raise IllegalTransition(f"{e.serial}: no download in progress at {e.received}")
    return s.with_job(replace(job, fetch=replace(job.fetch, received=e.received, etag=e.etag)))


def _restart(s: VehicleState, e: Restart) -> VehicleState:
    job = s.job(e.serial)
    if job.step is not Step.PENDING:
        raise IllegalTransition(f"{e.serial}: nothing to restart")
    s = s.with_job(replace(job, fetch=replace(job.fetch, received=0, etag=None)))
    return replace(s, error=e.reason, error_kind="transport")


def _fall_back(s: VehicleState, e: FallBack) -> VehicleState:
    job = s.job(e.serial)
    if job.fetch.kind != "delta" or job.step not in (Step.PENDING, Step.DOWNLOADED):
        raise IllegalTransition(f"{e.serial}: no delta to fall back from")
    s = s.with_job(replace(job, fetch=job.full, step=Step.PENDING))
    return replace(s, phase=Phase.DOWNLOAD, error=e.reason, error_kind="bad_data")


def _booted(s: VehicleState, e: Booted) -> VehicleState:
    started = s.trial_started if s.trial_started is not None else e.now
    return replace(s, phase=Phase.TRIAL, trial_started=started)


def _to_rollback(s: VehicleState, reason: str, kind: str | None) -> VehicleState:
    return replace(
        s, phase=Phase.ROLLBACK, outcome="rollback", give_up=True, error=reason, error_kind=kind
    )


def _failed(s: VehicleState, e: Failed) -> VehicleState:
    security = s.security
    if e.kind == "security":
        security = (*security, SecurityEvent(e.now, e.reason))[-MAX_SECURITY:]
    changes: dict[str, Any] = {
        "error": e.reason,
        "error_kind": e.kind,
        "security": security,
        "retry": e.retry,
    }
    if s.phase == Phase.CHECK:
        return _idle(s, **changes)
    return replace(
        s, phase=Phase.ROLLBACK, outcome="update_failed", give_up=e.retry is None, **changes
    )


def _interrupted(s: VehicleState, e: Interrupted) -> VehicleState:
    return replace(s, interrupted=e.reason, error=e.reason, error_kind="transport", retry=e.retry)


def _committed(s: VehicleState, _e: Done) -> VehicleState:
    if not all(j.step is Step.COMMITTED for j in s.jobs):
        raise IllegalTransition("not every ECU is committed")
    ecus = dict(s.ecus)
    for job in s.jobs:
        record = s.record(job.serial)
        ecus[job.serial] = replace(
            record,
            installed=job.target,
            max_counter=max(record.max_counter, job.target.release_counter),
        )
    return _idle(s, ecus=ecus, error=None, error_kind=None, retry=None)


def _rolled_back(s: VehicleState, _e: Done) -> VehicleState:
    if not all(j.step is Step.RESTORED for j in s.jobs):
        raise IllegalTransition("not every ECU is restored")
    ecus = dict(s.ecus)
    if s.give_up:
        for job in s.jobs:
            record = s.record(job.serial)
            rejected = (*record.rejected, job.target.sha256)[-MAX_REJECTED:]
            ecus[job.serial] = replace(record, rejected=rejected)
    return _idle(s, ecus=ecus, retry=None if s.give_up else s.retry)


def _restore(s: VehicleState, e: Restored) -> VehicleState:
    job = s.job(e.serial)
    if job.step is Step.RESTORED:
        raise IllegalTransition(f"{e.serial} is restored already")
    return s.with_job(replace(job, step=Step.RESTORED))


def _commit_one(s: VehicleState, e: Committed) -> VehicleState:
    job = s.job(e.serial)
    if job.step not in (Step.ARMED, Step.COMMITTED):
        raise IllegalTransition(f"{e.serial} is {job.step}, not armed")
    return s.with_job(replace(job, step=Step.COMMITTED))


TABLE: dict[tuple[Phase, type], Handler] = {
    (Phase.IDLE, Start): lambda s, e: replace(s, phase=Phase.CHECK),
    (Phase.CHECK, Planned): _planned,
    (Phase.CHECK, NothingToDo): _nothing,
    (Phase.CHECK, Failed): _failed,
    (Phase.DOWNLOAD, Progress): _progress,
    (Phase.DOWNLOAD, Restart): _restart,
    (Phase.DOWNLOAD, Downloaded): lambda s, e: _advance(
        s, e.serial, Step.PENDING, Step.DOWNLOADED, Phase.INSTALL
    ),
    (Phase.DOWNLOAD, FallBack): _fall_back,
    (Phase.DOWNLOAD, Failed): _failed,
    (Phase.DOWNLOAD, Interrupted): _interrupted,
    (Phase.INSTALL, Installed): lambda s, e: _advance(
        s, e.serial, Step.DOWNLOADED, Step.INSTALLED, Phase.ARM
    ),
    (Phase.INSTALL, FallBack): _fall_back,
    (Phase.INSTALL, Failed): _failed,
    (Phase.ARM, Armed): lambda s, e: _advance(
        s, e.serial, Step.INSTALLED, Step.ARMED, Phase.REBOOT
    ),
    (Phase.ARM, Failed): _failed,
    (Phase.REBOOT, Booted): _booted,
    (Phase.REBOOT, BootedOld): lambda s, e: _to_rollback(s, e.reason, "device"),
    (Phase.TRIAL, Booted): _booted,  # rebooted again during the trial: continue it
    (Phase.TRIAL, BootedOld): lambda s, e: _to_rollback(s, e.reason, "device"),
    (Phase.TRIAL, TrialPassed): lambda s, e: replace(s, phase=Phase.COMMIT),
    (Phase.TRIAL, TrialFailed): lambda s, e: _to_rollback(s, f"{e.serial}: {e.reason}", None),
    (Phase.COMMIT, Committed): _commit_one,
    (Phase.COMMIT, BootedOld): lambda s, e: _to_rollback(s, e.reason, "device"),
    (Phase.COMMIT, Done): _committed,
    (Phase.ROLLBACK, Restored): _restore,
    (Phase.ROLLBACK, Done): _rolled_back,
}


def step(state: VehicleState, event: Event) -> VehicleState:
    handler = TABLE.get((state.phase, type(event)))
    if handler is None:
        raise IllegalTransition(f"{type(event).__name__} is not allowed in {state.phase}")
    return handler(state, event)


def pending(state: VehicleState, step_: Step) -> Job | None:
    """The first job still at ``step_`` (the shell works through them in order)."""
    return next((j for j in state.jobs if j.step is step_), None)


def full_fetch(image: Image) -> Fetch:
    return Fetch(image.path, image.length, image.sha256, "full")
