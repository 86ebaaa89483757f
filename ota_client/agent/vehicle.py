"""The agent's shell: one update cycle for the whole vehicle, as a table of work functions.

``WORK`` maps each phase to a function that does one unit of that phase's work — one ECU's
download, one ECU's install, one boot-control write — and returns the event it produced; the
pure machine (``machine.step``) decides what that event means, the shell persists the new state
and goes on. Nothing here keeps a second copy of the state machine, and the state is never
reloaded from disk in the middle of a cycle.

One rule closes the crash windows: **no state that moves the vehicle past a step is saved
until that step's effects are durable.** A staged payload is kept until the state after ARM is
saved; the bootloader is pointed back at the good slot before a rollback is recorded; the slot
written is chosen from the *booted* slot, and checked right before it is opened not to be the
booted slot or the root device, whatever a state file says. After asking for a real reboot the
shell stops; ``start`` (``ota-client boot`` at the next start-up) observes what booted and
decides with ``recovery.after_boot``. A kill at any point produces no event: the next start
resumes the step it was in, and a kill never becomes a reported failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ota_client.agent import backoff, recovery
from ota_client.agent import machine as m
from ota_client.agent.health import run_checks
from ota_client.agent.manifest import ManifestMaker
from ota_client.agent.plan import Candidate, EcuFacts, InstallPlan, plan_assigned, plan_install
from ota_client.agent.records import Image, Job, Phase, Step, VehicleState
from ota_client.agent.store import Outbox, StateStore, clean_staged, clean_temporaries
from ota_client.boot.control import BootControl, GrubBoot, SimulatedBoot, SymlinkBoot, UBootBoot
from ota_client.boot.rules import BootFacts
from ota_client.config import ClientConfig, EcuConfig
from ota_client.errors import ClientError, DeviceError, SecurityError, TransportError
from ota_client.fetch.transport import HttpTransport, Transport
from ota_client.metadata.reports import Report, clip_error
from ota_client.payload.format import PayloadError
from ota_client.slots import Slot, make_slot
from ota_client.slots.guard import check_writable
from ota_client.slots.raw import ReadBackWriter
from ota_client.verify.director import DIRECTOR_CONFIG, DirectorRepository, verify_assignment
from ota_client.verify.repository import TufRepository, read_trust_root

log = logging.getLogger("ota.client")


@dataclass(frozen=True)
class Wait:
    """The cycle stops before IDLE: for a real reboot, a back-off, or the network."""

    reason: str  # "reboot" | "backoff" | "interrupted"


def make_boot(ecu: EcuConfig, data_dir: Path) -> BootControl:
    b = ecu.boot
    if b.backend == "grub":
        assert b.dir is not None and b.cmdline is not None
        return GrubBoot(b.dir, b.cmdline)
    if b.backend == "uboot":
        assert b.config is not None and b.cmdline is not None and b.defaults is not None
        generated = data_dir / f"uboot-defaults-{ecu.serial}.env"
        return UBootBoot(b.config, b.cmdline, b.defaults, generated)
    assert b.state is not None
    if b.backend == "symlink":
        assert ecu.slots.current is not None
        return SymlinkBoot(
            b.state, ecu.slots.current, {"a": ecu.slots.a, "b": ecu.slots.b}, b.restart
        )
    return SimulatedBoot(b.state)


def report_id(*parts: str) -> str:
    """The same report gets the same id however often a step is repeated."""
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


class VehicleAgent:
    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        emulate_reboot: bool | None = None,
    ) -> None:
        self.config, self.clock = config, clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        data = config.data_dir
        self.ecus = {e.serial: e for e in config.ecus}
        self.boots = {e.serial: make_boot(e, data) for e in config.ecus}
        self.store = StateStore(data / "state.json")
        self.outbox = Outbox(data / "outbox.json")
        self.staging = data / "downloads"
        simulated = all(e.boot.backend in ("simulated", "symlink") for e in config.ecus)
        self.emulate = simulated if emulate_reboot is None else emulate_reboot
        self.force = False
        self.state = VehicleState()
        self._transport = transport
        self._repo: TufRepository | None = None
        self._director: DirectorRepository | None = None
        self.manifests = ManifestMaker(config)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = HttpTransport(self.config.network)
        return self._transport

    @property
    def repo(self) -> TufRepository:
        if self._repo is None:
            root = read_trust_root(self.config.trust_root)
            self._repo = TufRepository(
                self.config.repo_url, self.config.data_dir / "tuf", root, self.transport
            )
        return self._repo

    @property
    def director(self) -> DirectorRepository:
        if self._director is None:
            assert self.config.director_root is not None  # director mode requires it
            root = read_trust_root(self.config.director_root)
            self._director = DirectorRepository(
                self.config.director_url,
                self.config.data_dir / "tuf-director",
                root,
                self.transport,
                DIRECTOR_CONFIG,
            )
        return self._director

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def apply(self, event: m.Event) -> VehicleState:
        """Step the machine, persist the new state, and only then let work go on."""
        old, new = self.state, m.step(self.state, event)
        self.store.save(new)
        self.state = new
        if new.phase != old.phase:
            extra = f" ({new.error})" if new.error and new.error != old.error else ""
            log.info("vehicle: %s -> %s%s", old.phase, new.phase, extra)
        if new.phase in (Phase.REBOOT, Phase.IDLE):
            clean_staged(self.staging, self._needed())
        return new

    def facts(self) -> dict[str, BootFacts]:
        return {serial: boot.facts() for serial, boot in self.boots.items()}

    def slot(self, serial: str, name: str) -> Slot:
        return make_slot(self.ecus[serial].slots, name)

    def staged(self, job: Job) -> Path:
        """Where a delta or bundle waits between DOWNLOAD and INSTALL (named by its digest)."""
        return self.staging / f"{job.fetch.sha256}.{job.fetch.kind}"

    def _needed(self) -> set[str]:
        steps = (Step.PENDING, Step.DOWNLOADED)
        return {self.staged(j).name for j in self.state.jobs if j.step in steps}

    def _streams_into_slot(self, job: Job) -> bool:
        return job.fetch.kind == "full" and self.slot(job.serial, job.slot).streams_full_images

    # -- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check every input, then load (or reset) the state, prepare boot control, and learn
        what booted. Nothing is written before the trust root and TLS files passed."""
        _ = self.repo  # reads the trust root and the TLS files: refused before any write
        data = self.config.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceError(f"cannot create {data}: {e.strerror}") from None
        clean_temporaries(data)
        now = self.clock()
        self.state, notice = self.store.load_or_reset(now)
        if notice is not None:
            self._queue_notice("state_reset", notice, "bad_data")
        for boot in self.boots.values():
            boot.ensure()
        event = recovery.after_boot(self.state, self.facts(), now)
        if event is not None:
            self.apply(event)
        clean_staged(self.staging, self._needed())

    # -- the cycle --------------------------------------------------------------------------

    def cycle(self, *, force: bool = False) -> Wait | None:
        """One update cycle, from wherever the last one stopped, until IDLE or a Wait."""
        self.force = force
        self.start()
        s = self.state
        if s.phase == Phase.IDLE:
            self.flush()
            self.apply(m.Start())
        elif (
            s.phase == Phase.DOWNLOAD
            and not force
            and backoff.waiting(s.retry, m.plan_key(s.jobs), self.clock())
        ):
            return Wait("backoff")
        result = self.drive()
        self.flush()
        return result

    def boot(self) -> Wait | None:
        """At start-up: finish a trial, a commit or a rollback the last boot left."""
        self.start()
        if self.state.phase not in (Phase.TRIAL, Phase.COMMIT, Phase.ROLLBACK):
            return None
        result = self.drive()
        self.flush()
        return result

    def drive(self) -> Wait | None:
        while self.state.phase != Phase.IDLE:
            result = WORK[self.state.phase](self)
            if isinstance(result, Wait):
                return result
            self.apply(result)
            if isinstance(result, m.Interrupted):
                return Wait("interrupted")
        return None

    def failed(self, error: ClientError) -> m.Failed:
        """The event for a failed step, with the release's back-off (or its giving up)."""
        s, now = self.state, self.clock()
        retry = s.retry
        if s.phase != Phase.CHECK:
            retry = None
            if not isinstance(error, SecurityError):  # a security failure is never retried
                retry = backoff.next_retry(
                    s.retry,
                    m.plan_key(s.jobs),
                    now,
                    first=self.config.retry_delay,
                    cap=self.config.poll_interval,
                    max_attempts=self.config.max_attempts,
                    jitter=self.rng.random(),
                )
        given_up = retry is None and s.phase != Phase.CHECK
        return m.Failed(f"{error}; given up" if given_up else str(error), error.kind, retry, now)

    # -- CHECK ------------------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        self.repo.refresh()
        return [
            Candidate(t.info.path, t.info.length, t.sha256, t.custom)
            for t in self.repo.all_targets()
        ]

    def installed(self, serial: str, active: str, pool: list[Candidate]) -> Image | None:
        """What the ECU's active slot holds: the record, else what the slot says it holds."""
        known = self.state.record(serial).installed
        if known is not None:
            return known
        hwid = self.ecus[serial].hardware_id
        fulls = [c for c in pool if c.custom.kind == "full" and hwid in c.custom.hardware_ids]
        fulls.sort(key=lambda c: -c.custom.release_counter)
        return self.slot(serial, active).running([c.image for c in fulls])

    def ecu_facts(self, facts: Mapping[str, BootFacts], pool: list[Candidate]) -> list[EcuFacts]:
        out = []
        for serial, ecu in self.ecus.items():
            booted = facts[serial].booted
            room = self.slot(serial, "b" if booted == "a" else "a").capacity()
            out.append(
                EcuFacts(
                    serial,
                    ecu.hardware_id,
                    ecu.role,
                    ecu.slots.type == "directory",
                    booted,
                    room,
                    self.installed(serial, facts[serial].active, pool),
                    self.state.record(serial),
                )
            )
        return out

    def check(self) -> tuple[list[EcuFacts], m.Planned | m.NothingToDo]:
        """What every ECU runs and what the next cycle would do (writes nothing)."""
        facts = self.facts()
        problems, _stray = recovery.preflight(facts)
        if problems:
            raise DeviceError("; ".join(problems))
        if self.config.mode == "director":
            ecus, plan = self.assigned(facts)
        else:
            pool = self.candidates()
            ecus = self.ecu_facts(facts, pool)
            plan = plan_install(pool, ecus)
        installed = {e.serial: e.installed for e in ecus}
        if plan is None:
            return ecus, m.NothingToDo(installed)
        key = m.plan_key(plan.jobs)
        if not self.force and backoff.waiting(self.state.retry, key, self.clock()):
            return ecus, m.NothingToDo(installed, waiting=True)
        return ecus, m.Planned(uuid.uuid4().hex, plan.bundle, plan.version, plan.jobs, installed)

    def assigned(self, facts: Mapping[str, BootFacts]) -> tuple[list[EcuFacts], InstallPlan | None]:
        """Uptane full verification of the Director's assignment, then its plan."""
        known = {serial: self.state.record(serial).installed for serial in self.ecus}
        floors = {
            serial: max(self.state.record(serial).max_counter, i.release_counter if i else 0)
            for serial, i in known.items()
        }
        verified = verify_assignment(
            self.director,
            self.repo,
            self.config.vehicle_id,
            {serial: ecu.hardware_id for serial, ecu in self.ecus.items()},
            {serial: i.sha256 if i else None for serial, i in known.items()},
            floors,
        )
        images = {
            path: Candidate(path, t.info.length, t.sha256, t.custom)
            for path, t in verified.images.items()
        }
        ecus = self.ecu_facts(facts, list(images.values()))
        return ecus, plan_assigned(verified.assignment, images, ecus)

    def work_check(self) -> m.Event:
        try:
            for serial, slot in recovery.preflight(self.facts())[1]:
                log.warning("%s: disarming a trial of slot %s left armed", serial, slot)
                self.boots[serial].mark_bad(slot)
            return self.check()[1]
        except ClientError as e:
            if isinstance(e, SecurityError):
                self._queue_notice("security", str(e), "security")
            return self.failed(e)

    # -- DOWNLOAD / INSTALL / ARM -----------------------------------------------------------

    def work_download(self) -> m.Event:
        job = m.pending(self.state, Step.PENDING)
        assert job is not None
        try:
            if self._streams_into_slot(job):
                self.boots[job.serial].mark_bad(job.slot)  # the slot is written from here on
                path = self.slot(job.serial, job.slot).path
                self._check_writable(job, path)
            else:
                self.staging.mkdir(parents=True, exist_ok=True)
                path = self.staged(job)
            return self._fetch(job, path)
        except TransportError as e:
            failed = self.failed(e)
            if failed.retry is None:
                return failed  # interrupted too often: given up
            return m.Interrupted(f"download interrupted, will resume: {e}", failed.retry)
        except OSError as e:
            return self.failed(DeviceError(f"{self.staging}: {e.strerror}"))
        except ClientError as e:
            return self.failed(e)

    def _check_writable(self, job: Job, path: Path) -> None:
        booted = self.boots[job.serial].booted_slot()
        check_writable(path, self.slot(job.serial, booted).path)
        if booted == job.slot:
            raise DeviceError(f"{job.serial}: refusing to write slot {job.slot}: it is booted")

    def _fetch(self, job: Job, path: Path) -> m.Event:
        f = job.fetch
        info = self.repo.target(f.path)
        if info.info.length != f.length or info.sha256 != f.sha256:
            raise SecurityError(f"{f.path} changed in the repository since the check")
        sink = ReadBackWriter(path, f.received)

        def checkpoint(received: int, etag: str | None) -> None:
            self.apply(m.Progress(job.serial, received, etag))

        try:
            self.transport.download(
                self.repo.target_url(info.info),
                sink,
                start=f.received,
                length=f.length,
                etag=f.etag,
                checkpoint=checkpoint,
            )
            written = sink.finish()
        finally:
            sink.close()
        if written == f.sha256:
            return m.Downloaded(job.serial)
        if f.received and not sink.restarted:
            return m.Restart(job.serial, f"{f.path}: a resumed download did not match; restarting")
        raise SecurityError(f"{f.path}: the download does not match its signed hash")

    def work_install(self) -> m.Event:
        job = m.pending(self.state, Step.DOWNLOADED)
        assert job is not None
        slot = self.slot(job.serial, job.slot)
        try:
            self.boots[job.serial].mark_bad(job.slot)  # RAUC's bracket: bad first, then write
            self._check_writable(job, slot.path)
            if not self._streams_into_slot(job):  # a streamed image was read back already
                source = self.slot(job.serial, job.good).path
                slot.install(self.staged(job), job.target, source, job.fetch.source_length)
            return m.Installed(job.serial)
        except PayloadError as e:
            return m.FallBack(job.serial, f"the delta does not fit ({e}); fetching the full image")
        except ClientError as e:
            return self.failed(e)

    def work_arm(self) -> m.Event:
        job = m.pending(self.state, Step.INSTALLED)
        assert job is not None
        try:
            self.boots[job.serial].arm_trial(job.slot, self.ecus[job.serial].boot.attempts)
            return m.Armed(job.serial)
        except ClientError as e:
            return self.failed(e)

    # -- REBOOT / TRIAL / COMMIT / ROLLBACK -------------------------------------------------

    def reboot(self) -> Wait | None:
        """Reboot the vehicle: played in-process when emulated, else asked of the system."""
        if self.emulate:
            for serial, boot in self.boots.items():
                log.info("%s: booted slot %s", serial, boot.emulate_reboot())
            return None
        log.warning("rebooting the vehicle: %s", " ".join(self.config.reboot_command))
        try:
            subprocess.run(list(self.config.reboot_command), check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DeviceError(f"cannot reboot: {e}") from None
        return Wait("reboot")

    def work_reboot(self) -> m.Event | Wait:
        wait = self.reboot()
        if wait is not None:
            return wait
        event = recovery.after_boot(self.state, self.facts(), self.clock())
        if event is None:
            raise DeviceError("the bootloader did not boot the armed slots")
        return event

    def work_trial(self) -> m.Event:
        now = self.clock()
        for job in self.state.jobs:
            ecu = self.ecus[job.serial]
            budget = recovery.trial_budget(self.state, ecu.trial_deadline, now)
            if budget <= 0:
                return m.TrialFailed(job.serial, "the trial deadline passed")
            failure = run_checks(ecu.health, budget, self.transport)
            if failure is not None:
                return m.TrialFailed(job.serial, failure)
        return m.TrialPassed()

    def work_commit(self) -> m.Event:
        job = next((j for j in self.state.jobs if j.step is not Step.COMMITTED), None)
        if job is not None:
            self.boots[job.serial].mark_good(job.slot)
            return m.Committed(job.serial)
        self._queue_outcome("commit")
        return m.Done()

    def work_rollback(self) -> m.Event | Wait:
        job = next((j for j in self.state.jobs if j.step is not Step.RESTORED), None)
        if job is not None:
            boot = self.boots[job.serial]
            if boot.active_slot() == job.slot:  # committed already: the good slot again
                boot.mark_good(job.good)
            boot.mark_bad(job.slot)
            return m.Restored(job.serial)
        self._queue_outcome(self.state.outcome or "update_failed")
        if recovery.needs_reboot(self.state, self.facts()):
            wait = self.reboot()
            if wait is not None:
                return wait
            if recovery.needs_reboot(self.state, self.facts()):
                raise DeviceError("the bootloader did not boot the good slots")
        return m.Done()

    # -- reports ----------------------------------------------------------------------------

    def _queue_outcome(self, event: str) -> None:
        s, now = self.state, self.clock()
        assert s.cycle is not None
        reports = []
        for job in s.jobs:
            running = job.target if event == "commit" else s.record(job.serial).installed
            reports.append(
                Report(
                    report_id(s.cycle, job.serial, event),
                    self.config.vehicle_id,
                    job.serial,
                    event,
                    now,
                    bundle=s.bundle,
                    target=job.target.path,
                    version=job.target.version,
                    release_counter=job.target.release_counter,
                    installed=running.version if running else None,
                    error=None if event == "commit" or s.error is None else clip_error(s.error),
                    kind=None if event == "commit" else s.error_kind,
                )
            )
        self.outbox.put(reports, now)

    def _queue_notice(self, event: str, message: str, kind: str) -> None:
        """A report about the vehicle rather than an update (sent as its first ECU)."""
        now = self.clock()
        report = Report(
            report_id(event, str(now), message),
            self.config.vehicle_id,
            self.config.ecus[0].serial,
            event,
            now,
            error=clip_error(message),
            kind=kind,
        )
        self.outbox.put([report], now)

    def flush(self) -> None:
        """Deliver queued reports, oldest first (what the server did not take stays queued),
        then, in director mode, the signed version manifest of what every ECU runs now."""
        self._flush_reports()
        if self.config.mode == "director":
            try:
                body = self.manifests.make(self.state, self.clock())
                status = self.transport.post_json(self.config.manifest_url, body)
                if status >= 400:
                    log.warning("version manifest refused: HTTP %s", status)
            except ClientError as e:
                log.info("version manifest not sent: %s", e)

    def _flush_reports(self) -> None:
        now = self.clock()
        reports = self.outbox.items(now)
        if not reports:
            return
        sent: set[str] = set()
        try:
            for report in reports:
                body = json.dumps(report.to_dict()).encode()
                status = self.transport.post_json(self.config.events_url, body)
                if status >= 500:
                    break  # the server is unwell: keep the rest for later
                if status >= 400:
                    log.warning("report %s refused: HTTP %s", report.id, status)
                sent.add(report.id)
        except ClientError as e:
            log.info("reports stay queued: %s", e)
        self.outbox.drop(sent, now)


WORK: dict[Phase, Callable[[VehicleAgent], m.Event | Wait]] = {
    Phase.CHECK: VehicleAgent.work_check,
    Phase.DOWNLOAD: VehicleAgent.work_download,
    Phase.INSTALL: VehicleAgent.work_install,
    Phase.ARM: VehicleAgent.work_arm,
    Phase.REBOOT: VehicleAgent.work_reboot,
    Phase.TRIAL: VehicleAgent.work_trial,
    Phase.COMMIT: VehicleAgent.work_commit,
    Phase.ROLLBACK: VehicleAgent.work_rollback,
}
