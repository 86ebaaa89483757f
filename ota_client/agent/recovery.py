"""What to do when the agent starts, from the persisted state and what the bootloaders say. Pure.

The agent may start after a reboot, after a power cut at any instant, or after a crash with no
reboot at all (systemd ``Restart=on-failure``). It never assumes which: it asks each ECU's boot
control which slot is running, which is committed and what is armed, and decides here.

* ``after_boot`` — the event that the start-up observations mean for the update in progress.
* ``preflight`` — before a new update: every ECU must run its committed slot (else the vehicle
  needs a reboot first: writing ``other(active)`` could then hit the running slot), and a trial
  armed with no update in progress (a state file moved aside, an older client) is disarmed.
* ``trial_budget`` — seconds left for an ECU's health checks; the trial deadline counts from
  the persisted start of the trial, not from this boot.
"""

from __future__ import annotations

from collections.abc import Mapping

from ota_client.agent import machine as m
from ota_client.agent.records import Phase, Step, VehicleState
from ota_client.boot.rules import BootFacts


def after_boot(s: VehicleState, facts: Mapping[str, BootFacts], now: float) -> m.Event | None:
    """The event for the update in progress, or None when there is nothing to observe."""
    if s.phase == Phase.REBOOT:
        waiting = False
        for job in s.jobs:
            f = facts[job.serial]
            if f.booted == job.slot:
                continue
            if f.trial == job.slot and f.tries > 0:
                waiting = True  # armed, not booted yet (no reboot happened): reboot again
            else:
                return m.BootedOld(job.serial, f"{job.serial}: the new slot did not boot")
        return None if waiting else m.Booted(now)
    if s.phase in (Phase.TRIAL, Phase.COMMIT):
        for job in s.jobs:
            if job.step is not Step.COMMITTED and facts[job.serial].booted != job.slot:
                return m.BootedOld(
                    job.serial, f"{job.serial}: the trial boot failed; the bootloader fell back"
                )
    return None


def preflight(facts: Mapping[str, BootFacts]) -> tuple[list[str], list[tuple[str, str]]]:
    """(problems that forbid a new update, stray trials to disarm as (serial, slot))."""
    problems, stray = [], []
    for serial, f in facts.items():
        if f.booted != f.active:
            problems.append(
                f"{serial} runs slot {f.booted} but slot {f.active} is committed: "
                "it returns to the committed slot at the next reboot"
            )
        if f.trial is not None and f.trial != f.active:
            stray.append((serial, f.trial))
    return problems, stray


def trial_budget(s: VehicleState, deadline: float, now: float) -> float:
    started = s.trial_started if s.trial_started is not None else now
    return deadline - max(0.0, now - started)


def needs_reboot(s: VehicleState, facts: Mapping[str, BootFacts]) -> bool:
    """ROLLBACK: some ECU still runs the slot it is leaving."""
    return any(facts[j.serial].booted != j.good for j in s.jobs)
