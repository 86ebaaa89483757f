"""The boot-control contract as plain data: environment variables and the bootloader's rule.

All backends keep the same variables (GRUB env block, U-Boot env, or a JSON file):

    ota_active    a|b       the committed slot, booted when no trial is armed
    ota_trial     a|b|""    the slot to try
    ota_tries     N         boot attempts left for the trial slot
    ota_state_a   good|bad|trial|""   per slot; "bad" is never booted
    ota_state_b

The bootloader (GRUB script, U-Boot script — see README — or ``next_boot`` here, which the
simulated backend and the test emulators run) decides at every boot:

    trial armed, tries left, trial slot not bad -> tries - 1, boot the trial slot
    trial armed, no tries left                  -> disarm, boot the active slot
    otherwise                                   -> boot the active slot

The client only arms, commits and marks bad; the bootloader counts. Each client verb is one
write of the environment, so a power cut leaves either the old or the new decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ota_client.errors import DeviceError

SLOTS = ("a", "b")
Env = dict[str, str]


class BootError(DeviceError):
    """Boot control failed or its state is inconsistent (a device problem)."""


@dataclass(frozen=True)
class BootFacts:
    """What one ECU's boot control says right now: the input of every after-boot decision."""

    booted: str  # the slot running
    active: str  # the committed slot
    trial: str | None = None  # the slot armed for a trial, if any
    tries: int = 0  # boot attempts left for it


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise BootError(f"unknown slot {slot!r} (slots are a and b)")
    return slot


def initial_env(active: str = "a") -> Env:
    return {
        "ota_active": check_slot(active),
        "ota_trial": "",
        "ota_tries": "0",
        "ota_state_a": "good" if active == "a" else "",
        "ota_state_b": "good" if active == "b" else "",
    }


def active(env: Mapping[str, str]) -> str:
    return check_slot(env.get("ota_active", "a") or "a")


def arm(env: Mapping[str, str], slot: str, attempts: int) -> Env:
    """Changes that make the next boots try ``slot`` up to ``attempts`` times."""
    check_slot(slot)
    if slot == active(env):
        raise BootError(f"slot {slot} is the active slot; only the other slot can be tried")
    if attempts < 1:
        raise BootError("a trial needs at least one boot attempt")
    return {"ota_trial": slot, "ota_tries": str(attempts), f"ota_state_{slot}": "trial"}


def commit(slot: str) -> Env:
    """Changes that make ``slot`` the active, good slot and end any trial."""
    return {
        "ota_active": check_slot(slot),
        "ota_trial": "",
        "ota_tries": "0",
        f"ota_state_{slot}": "good",
    }


def mark_bad(env: Mapping[str, str], slot: str) -> Env:
    """Changes that keep ``slot`` from ever being booted until it is armed again."""
    check_slot(slot)
    if slot == active(env):
        raise BootError(f"refusing to mark the active slot {slot} bad")
    changes = {f"ota_state_{slot}": "bad"}
    if env.get("ota_trial") == slot:
        changes.update({"ota_trial": "", "ota_tries": "0"})
    return changes


def tries(env: Mapping[str, str]) -> int:
    """Boot attempts left for the trial slot (a damaged counter counts as none, as in GRUB)."""
    value = env.get("ota_tries", "0") or "0"
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 3 else 0


def trial(env: Mapping[str, str]) -> str | None:
    slot = env.get("ota_trial", "")
    return slot if slot in SLOTS else None


def next_boot(env: Mapping[str, str]) -> tuple[Env, str]:
    """The bootloader's decision: (changes to save, slot that boots)."""
    slot, left = trial(env), tries(env)
    if slot is not None and env.get(f"ota_state_{slot}") != "bad":
        if left > 0:
            return {"ota_tries": str(left - 1)}, slot
        return {"ota_trial": "", "ota_tries": "0"}, active(env)
    return {}, active(env)
