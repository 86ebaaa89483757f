"""The update cycle as a pure state machine: a table of allowed transitions, fed events.

    IDLE -> CHECK -> DOWNLOAD -> INSTALL -> ARM -> REBOOT -> TRIAL -> COMMIT  -> IDLE
                                                        \\        \\-> ROLLBACK -> IDLE
                                                         \\-> ROLLBACK (the bootloader fell back)
    CHECK/DOWNLOAD/INSTALL/ARM --failed--> IDLE (active slot untouched; error kept)
    DOWNLOAD --interrupted--> DOWNLOAD (progress kept; resumed by the next cycle)
    DOWNLOAD/INSTALL --source mismatch--> DOWNLOAD of the full image

``step`` returns the next ``UpdateState`` or raises ``IllegalTransition`` and changes
nothing. The shell persists every state before acting on it, so after a power cut it resumes
the step it was in. Nothing here does I/O or reads the clock: times come in on events.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any


class State(enum.StrEnum):
    IDLE = "IDLE"
    CHECK = "CHECK"
    DOWNLOAD = "DOWNLOAD"
    INSTALL = "INSTALL"
    ARM = "ARM"
    REBOOT = "REBOOT"
    TRIAL = "TRIAL"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"


class IllegalTransition(Exception):
    """An event that the current state does not allow (a bug in the shell)."""


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


@dataclass(frozen=True)
class UpdateState:
    state: State = State.IDLE
    target: Image | None = None
    fetch: Fetch | None = None
    slot: str | None = None  # the slot being written and tried
    installed: Image | None = None  # what the active slot holds, when known
    max_counter: int = 0  # highest release counter ever committed: never go below it
    rejected: tuple[str, ...] = ()  # sha256 of images that failed a trial: never retry them
    failures: int = 0  # consecutive failed attempts at the current target
    error: str | None = None
    trial_started: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpdateState:
        def image(v: Any) -> Image | None:
            return None if v is None else Image(**v)

        return cls(
            state=State(data["state"]),
            target=image(data.get("target")),
            fetch=None if data.get("fetch") is None else Fetch(**data["fetch"]),
            slot=data.get("slot"),
            installed=image(data.get("installed")),
            max_counter=int(data.get("max_counter", 0)),
            rejected=tuple(data.get("rejected", ())),
            failures=int(data.get("failures", 0)),
            error=data.get("error"),
            trial_started=data.get("trial_started"),
        )


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class UpdateFound:
    target: Image
    fetch: Fetch
    slot: str
    installed: Image | None = None  # what the check found installed, if it learned it


@dataclass(frozen=True)
class NoUpdate:
    installed: Image | None = None  # what the check found installed, if it learned it


@dataclass(frozen=True)
class Progress:
    received: int
    etag: str | None = None


@dataclass(frozen=True)
class Downloaded:
    pass


@dataclass(frozen=True)
class SourceMismatch:
    full: Fetch  # the full image to fetch instead
    reason: str


@dataclass(frozen=True)
class Installed:
    pass


@dataclass(frozen=True)
class Armed:
    pass


@dataclass(frozen=True)
class BootedTrial:
    now: float


@dataclass(frozen=True)
class BootedOld:
    pass


@dataclass(frozen=True)
class HealthOk:
    pass


@dataclass(frozen=True)
class HealthFailed:
    reason: str


@dataclass(frozen=True)
class Reported:
    pass


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Interrupted:
    """A download stopped for a transport reason: keep its progress, resume later."""

    reason: str


Event = (
    Start
    | UpdateFound
    | NoUpdate
    | Progress
    | Downloaded
    | SourceMismatch
    | Installed
    | Armed
    | BootedTrial
    | BootedOld
    | HealthOk
    | HealthFailed
    | Reported
    | Failed
    | Interrupted
)


# -- transitions -------------------------------------------------------------------------------

Handler = Callable[[UpdateState, Any], UpdateState]


def _idle(s: UpdateState, **changes: Any) -> UpdateState:
    return replace(
        s, state=State.IDLE, target=None, fetch=None, slot=None, trial_started=None, **changes
    )


def _failed(s: UpdateState, e: Failed) -> UpdateState:
    return _idle(s, failures=s.failures + 1, error=e.reason)


def _committed(s: UpdateState, _e: Reported) -> UpdateState:
    assert s.target is not None
    return _idle(
        s,
        installed=s.target,
        max_counter=max(s.max_counter, s.target.release_counter),
        failures=0,
        error=None,
    )


def _rolled_back(s: UpdateState, _e: Reported) -> UpdateState:
    assert s.target is not None
    return _idle(s, rejected=(*s.rejected, s.target.sha256)[-32:], failures=0)


def _fetch(s: UpdateState) -> Fetch:
    assert s.fetch is not None
    return s.fetch


def _found(s: UpdateState, e: UpdateFound) -> UpdateState:
    if e.target.release_counter <= s.max_counter:
        raise IllegalTransition(
            f"release counter {e.target.release_counter} is not above {s.max_counter}"
        )
    if e.target.sha256 in s.rejected:
        raise IllegalTransition("this image already failed a trial")
    return replace(
        s,
        state=State.DOWNLOAD,
        target=e.target,
        fetch=e.fetch,
        slot=e.slot,
        installed=e.installed or s.installed,
        error=None,
        failures=0,
    )


TABLE: dict[tuple[State, type], Handler] = {
    (State.IDLE, Start): lambda s, e: replace(s, state=State.CHECK),
    (State.CHECK, UpdateFound): _found,
    (State.CHECK, NoUpdate): lambda s, e: _idle(
        s, installed=e.installed or s.installed, error=None, failures=0
    ),
    (State.CHECK, Failed): _failed,
    (State.DOWNLOAD, Progress): lambda s, e: replace(
        s, fetch=replace(_fetch(s), received=e.received, etag=e.etag)
    ),
    (State.DOWNLOAD, Downloaded): lambda s, e: replace(s, state=State.INSTALL),
    (State.DOWNLOAD, SourceMismatch): lambda s, e: replace(s, fetch=e.full, error=e.reason),
    (State.DOWNLOAD, Failed): _failed,
    (State.DOWNLOAD, Interrupted): lambda s, e: replace(s, error=e.reason, failures=s.failures + 1),
    (State.INSTALL, Installed): lambda s, e: replace(s, state=State.ARM),
    (State.INSTALL, SourceMismatch): lambda s, e: replace(
        s, state=State.DOWNLOAD, fetch=e.full, error=e.reason
    ),
    (State.INSTALL, Failed): _failed,
    (State.ARM, Armed): lambda s, e: replace(s, state=State.REBOOT),
    (State.ARM, Failed): _failed,
    (State.REBOOT, BootedTrial): lambda s, e: replace(s, state=State.TRIAL, trial_started=e.now),
    (State.REBOOT, BootedOld): lambda s, e: replace(
        s, state=State.ROLLBACK, error="the new slot did not boot; the bootloader fell back"
    ),
    (State.TRIAL, BootedTrial): lambda s, e: s,  # rebooted again during the trial: continue it
    (State.TRIAL, BootedOld): lambda s, e: replace(
        s, state=State.ROLLBACK, error="the trial boot failed; the bootloader fell back"
    ),
    (State.TRIAL, HealthOk): lambda s, e: replace(s, state=State.COMMIT, error=None),
    (State.TRIAL, HealthFailed): lambda s, e: replace(s, state=State.ROLLBACK, error=e.reason),
    (State.COMMIT, Reported): _committed,
    (State.ROLLBACK, Reported): _rolled_back,
}


def step(state: UpdateState, event: Event) -> UpdateState:
    handler = TABLE.get((state.state, type(event)))
    if handler is None:
        raise IllegalTransition(f"{type(event).__name__} is not allowed in {state.state}")
    return handler(state, event)
