"""The agent's shell: performs each state's work and feeds the result to the state machine.

Every transition is persisted (atomically) before the next piece of work starts, so a power
cut anywhere resumes the step that was running: a download continues from its last durable
checkpoint, an install starts over (its slot is still marked bad), a trial boot re-runs its
health checks, a commit or rollback is repeated (both are idempotent). The active slot is never
written; the slot being written is marked bad first and only armed after it was read back and
matched the signed hash. Success is reported only after COMMIT.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ota_client.agent import machine as m
from ota_client.agent.health import run_checks
from ota_client.agent.select import Candidate, Choice, choose, identify, installed_lengths
from ota_client.agent.store import Outbox, StateStore
from ota_client.boot.control import BootControl, GrubBoot, SimulatedBoot, SymlinkBoot, UBootBoot
from ota_client.boot.rules import BootError, other
from ota_client.config import ClientConfig, EcuConfig
from ota_client.fetch.download import (
    DownloadError,
    EndlessDataError,
    Transport,
    download,
)
from ota_client.fetch.report import deliver
from ota_client.fetch.tuf_fetcher import HttpFetcher
from ota_client.payload.apply import apply_payload
from ota_client.payload.format import PayloadError, SourceMismatchError
from ota_client.slots import (
    ReadBackWriter,
    SlotError,
    SlotWriter,
    bundle_marker,
    capacity,
    digest,
    extract_bundle,
)
from ota_client.verify.image_repo import ImageRepository, TransportError, VerificationError

log = logging.getLogger("ota.client")


class AgentError(Exception):
    """The cycle stopped on an error the operator should see (after recording it)."""


def make_boot(ecu: EcuConfig, data_dir: Path) -> BootControl:
    b = ecu.boot
    if b.backend == "grub":
        assert b.env is not None and b.cmdline is not None
        grub = GrubBoot(b.env, b.cmdline)
        grub.ensure()
        return grub
    if b.backend == "uboot":
        assert b.config is not None and b.cmdline is not None
        uboot = UBootBoot(b.config, b.cmdline, data_dir / f"uboot-defaults-{ecu.serial}.env")
        uboot.ensure()
        return uboot
    assert b.state is not None
    if b.backend == "symlink":
        assert ecu.slots.current is not None
        return SymlinkBoot(
            b.state, ecu.slots.current, {"a": ecu.slots.a, "b": ecu.slots.b}, b.restart
        )
    return SimulatedBoot(b.state)


class Agent:
    def __init__(
        self,
        config: ClientConfig,
        ecu: EcuConfig,
        *,
        clock: Callable[[], float] = time.time,
        emulate_reboot: bool | None = None,
    ) -> None:
        self.config, self.ecu, self.clock = config, ecu, clock
        data = config.data_dir
        self.store = StateStore(data / f"state-{ecu.serial}.json")
        self.outbox = Outbox(data / "outbox.json")
        self.downloads = data / "downloads"
        self.boot = make_boot(ecu, data)
        self.bundles = ecu.slots.type == "directory"
        simulated = ecu.boot.backend in ("simulated", "symlink")  # a flip, not a real reboot
        self.emulate = simulated if emulate_reboot is None else emulate_reboot
        self._repo: ImageRepository | None = None
        self._last: m.Event | None = None
        self.transport = Transport(
            config.download_timeout, config.min_download_speed, config.ca_file
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def repo(self) -> ImageRepository:
        if self._repo is None:
            try:
                root = self.config.trust_root.read_bytes()
            except OSError as e:
                raise VerificationError(
                    f"cannot read the trust root {self.config.trust_root}: {e.strerror}"
                ) from None
            self._repo = ImageRepository(
                self.config.repo_url,
                self.config.data_dir / "tuf",
                root,
                fetcher=HttpFetcher(
                    ca_file=self.config.ca_file, timeout=self.config.download_timeout
                ),
            )
        return self._repo

    def _go(self, state: m.UpdateState, event: m.Event) -> m.UpdateState:
        new = m.step(state, event)
        self._last = event
        self.store.save(new)
        if new.state != state.state:
            log.info(
                "%s: %s -> %s%s",
                self.ecu.serial,
                state.state,
                new.state,
                f" ({new.error})" if new.error and new.error != state.error else "",
            )
        return new

    def _report(self, event: str, state: m.UpdateState, **extra: Any) -> None:
        target = state.target
        self.outbox.put(
            {
                "id": uuid.uuid4().hex,
                "vehicle_id": self.config.vehicle_id,
                "ecu": self.ecu.serial,
                "event": event,
                "time": self.clock(),
                "target": target.path if target else None,
                "version": target.version if target else None,
                "release_counter": target.release_counter if target else None,
                "installed": state.installed.version if state.installed else None,
                "error": state.error,
                **extra,
            }
        )
        self.flush_reports()

    def flush_reports(self) -> None:
        items = self.outbox.items()
        if items:
            sent = deliver(self.config, items, self.transport)
            if sent:
                self.outbox.drop(sent)

    # -- the cycle --------------------------------------------------------------------------

    def status(self) -> m.UpdateState:
        return self.store.load()

    def cycle(self) -> m.UpdateState:
        """One update cycle, from wherever the last one stopped, until IDLE (or a real reboot)."""
        s = self.store.load()
        if s.state == m.State.IDLE:
            self.flush_reports()
            s = self._go(s, m.Start())
        return self._drive(s)

    def on_boot(self) -> m.UpdateState:
        """Run at start-up: finish a trial, a commit or a rollback the last boot left."""
        s = self.store.load()
        if s.state in (m.State.ARM, m.State.REBOOT, m.State.TRIAL):
            s = self._after_boot(s)
        if s.state in (m.State.TRIAL, m.State.COMMIT, m.State.ROLLBACK):
            return self._drive(s)
        return s

    def _drive(self, s: m.UpdateState) -> m.UpdateState:
        while s.state != m.State.IDLE:
            before = s
            s = self._work(s)
            if s is before or isinstance(self._last, m.Interrupted):
                return s  # waiting for a real reboot, or for the network to come back
        return s

    def _work(self, s: m.UpdateState) -> m.UpdateState:
        state = s.state
        if state == m.State.CHECK:
            return self._check(s)
        if state == m.State.DOWNLOAD:
            return self._download(s)
        if state == m.State.INSTALL:
            return self._install(s)
        if state == m.State.ARM:
            return self._guard(s, lambda: self._arm(s))
        if state == m.State.REBOOT:
            if not self._reboot():
                return s
            return self._after_boot(s)
        if state == m.State.TRIAL:
            failure = run_checks(self.ecu.health, self.ecu.trial_deadline)
            return self._go(s, m.HealthOk() if failure is None else m.HealthFailed(failure))
        if state == m.State.COMMIT:
            assert s.slot is not None
            self.boot.mark_good(s.slot)
            self._report("commit", s)
            return self._go(s, m.Reported())
        if state == m.State.ROLLBACK:
            return self._rollback(s)
        raise AgentError(f"no work for state {state}")

    def _arm(self, s: m.UpdateState) -> m.Event:
        assert s.slot is not None
        self.boot.arm_trial(s.slot, self.ecu.boot.attempts)
        return m.Armed()

    def _guard(self, s: m.UpdateState, work: Callable[[], m.Event]) -> m.UpdateState:
        """Run one step; errors become a Failed event (recorded, reported), never a crash."""
        event: m.Event
        try:
            event = work()
        except (TransportError, DownloadError) as e:
            if s.state == m.State.DOWNLOAD:
                event = m.Interrupted(f"download interrupted, will resume: {e}")
            else:
                event = m.Failed(f"download failed: {e}")
        except (VerificationError, EndlessDataError, PayloadError) as e:
            event = m.Failed(f"verification failed: {e}")
        except (SlotError, BootError, OSError) as e:
            event = m.Failed(f"device error: {e}")
        # Work may have persisted progress (download checkpoints): continue from the store.
        new = self._go(self.store.load(), event)
        if isinstance(event, m.Failed):
            self._report("update_failed", replace(new, target=s.target))
        return new

    # -- CHECK ------------------------------------------------------------------------------

    def _candidates(self) -> list[Candidate]:
        self.repo.refresh()
        return [
            Candidate(t.info.path, t.info.length, t.info.hashes["sha256"], t.custom)
            for t in self.repo.all_targets()
            if "sha256" in t.info.hashes
        ]

    def _installed(self, s: m.UpdateState, pool: list[Candidate]) -> m.Image | None:
        if s.installed is not None:
            return s.installed
        active = self.ecu.slots.path(self.boot.active_slot())
        if self.bundles:
            marker = bundle_marker(active)
            try:
                return None if marker is None else m.Image(**marker)  # type: ignore[arg-type]
            except TypeError:
                return None
        digests = {}
        for length in installed_lengths(pool, self.ecu.hardware_id):
            try:
                digests[length] = digest(active, length).hexdigest()
            except SlotError:
                continue
        return identify(pool, self.ecu.hardware_id, digests)

    def _choose(
        self, pool: list[Candidate], installed: m.Image | None, s: m.UpdateState
    ) -> Choice | None:
        choice = choose(pool, self.ecu.hardware_id, installed, s.max_counter, s.rejected)
        if choice is not None and self.bundles:
            return replace(choice, fetch=choice.full)  # bundles are extracted, not patched
        return choice

    def check(self, s: m.UpdateState | None = None) -> tuple[m.Image | None, Choice | None]:
        """What is installed and what would be installed next (no state change)."""
        s = s or self.store.load()
        pool = self._candidates()
        installed = self._installed(s, pool)
        return installed, self._choose(pool, installed, s)

    def _check(self, s: m.UpdateState) -> m.UpdateState:
        def work() -> m.Event:
            installed, choice = self.check(s)
            if choice is None:
                return m.NoUpdate(installed)
            slot = other(self.boot.active_slot())
            room = capacity(self.ecu.slots, slot)
            if room is not None and choice.target.length > room:
                raise SlotError(
                    f"slot {slot} holds {room} bytes; the image needs {choice.target.length}"
                )
            return m.UpdateFound(choice.target, choice.fetch, slot, installed)

        return self._guard(s, work)

    # -- DOWNLOAD / INSTALL -------------------------------------------------------------------

    def _fetch_into(self, s: m.UpdateState, path: Path) -> m.UpdateState:
        """Download s.fetch into ``path`` (a slot or a file), resuming; verify the hash."""
        f = s.fetch
        assert f is not None
        start = f.received
        sink = ReadBackWriter(path, start)
        state = [s]

        def checkpoint(received: int, etag: str | None) -> None:
            state[0] = self._go(state[0], m.Progress(received, etag))

        info = self.repo.target(f.path).info
        if info.length != f.length or info.hashes.get("sha256") != f.sha256:
            raise VerificationError(f"{f.path} changed in the repository since the check")
        try:
            download(
                self.repo.target_url(info),
                sink,
                start=start,
                length=f.length,
                etag=f.etag,
                transport=self.transport,
                checkpoint=checkpoint,
            )
            written = sink.finish()
        finally:
            sink.close()
        if written != f.sha256:
            state[0] = self._go(state[0], m.Progress(0, None))  # start over next time
            raise VerificationError(f"{f.path}: the download does not match its signed hash")
        return state[0]

    def _download(self, s: m.UpdateState) -> m.UpdateState:
        f, slot = s.fetch, s.slot
        assert f is not None and slot is not None

        def work() -> m.Event:
            nonlocal s
            if f.kind == "full" and not self.bundles:
                self.boot.mark_bad(slot)  # the slot is written from here on
                s = self._fetch_into(s, self.ecu.slots.path(slot))
            else:
                self.downloads.mkdir(parents=True, exist_ok=True)
                s = self._fetch_into(s, self._staged(f))
            return m.Downloaded()

        return self._guard(s, work)

    def _install(self, s: m.UpdateState) -> m.UpdateState:
        f, slot, target = s.fetch, s.slot, s.target
        assert f is not None and slot is not None and target is not None
        path = self.ecu.slots.path(slot)

        def work() -> m.Event:
            self.boot.mark_bad(slot)
            if self.bundles:
                archive = self._staged(f)
                extract_bundle(archive, path, asdict(target))
                archive.unlink(missing_ok=True)
            elif f.kind == "delta":
                payload = self._staged(f)
                active = self.ecu.slots.path(other(slot))
                try:
                    with (
                        open(payload, "rb") as p,
                        open(active, "rb") as src,
                        SlotWriter(path) as out,
                    ):
                        apply_payload(
                            p,
                            out,
                            src,
                            expect_size=target.length,
                            expect_sha256=bytes.fromhex(target.sha256),
                        )
                        out.sync()
                except SourceMismatchError as e:
                    return m.SourceMismatch(
                        m.Fetch(target.path, target.length, target.sha256, "full"),
                        f"delta does not fit the installed image ({e}); fetching the full image",
                    )
                finally:
                    payload.unlink(missing_ok=True)
                # A delta was written here: read the whole slot back. (A full image was read
                # back from the slot as it was downloaded.)
                if digest(path, target.length).hexdigest() != target.sha256:
                    raise VerificationError(f"slot {slot} does not hold the signed image")
            return m.Installed()

        return self._guard(s, work)

    def _staged(self, f: m.Fetch) -> Path:
        """Where a delta payload or a bundle archive waits between DOWNLOAD and INSTALL."""
        return self.downloads / f"{f.sha256}.{f.kind}"

    # -- REBOOT / TRIAL / ROLLBACK ----------------------------------------------------------

    def _reboot(self) -> bool:
        """Reboot into the armed slot. True if it happened in-process (emulated)."""
        if self.emulate:
            self.boot.emulate_reboot()
            return True
        log.info("%s: rebooting into the new slot", self.ecu.serial)
        subprocess.run(["systemctl", "reboot"], check=False)
        return False

    def _after_boot(self, s: m.UpdateState) -> m.UpdateState:
        booted = self.boot.booted_slot()
        trial = self.boot.trial()
        if s.state == m.State.ARM:
            if trial is None and booted != s.slot:
                return s  # never armed: ARM runs again
            s = self._go(s, m.Armed())
        if booted == s.slot:
            return self._go(s, m.BootedTrial(self.clock()))
        if trial is not None and trial[0] == s.slot and trial[1] > 0:
            return s  # armed but not booted yet (power cut before the reboot): reboot again
        return self._go(s, m.BootedOld())

    def _rollback(self, s: m.UpdateState) -> m.UpdateState:
        assert s.slot is not None
        if self.boot.active_slot() != s.slot:
            self.boot.mark_bad(s.slot)
        self._report("rollback", s)
        new = self._go(s, m.Reported())
        if self.boot.booted_slot() == s.slot:  # running the rejected image: go back now
            if self.emulate:
                self.boot.emulate_reboot()
            else:
                subprocess.run(["systemctl", "reboot"], check=False)
        return new


def agents(config: ClientConfig, *, emulate_reboot: bool | None = None) -> list[Agent]:
    os.makedirs(config.data_dir, exist_ok=True)
    return [Agent(config, ecu, emulate_reboot=emulate_reboot) for ecu in config.ecus]
