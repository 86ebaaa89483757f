"""The boot-control interface and its three backends: simulated, GRUB, U-Boot.

One set of verbs (RAUC-style): ``active_slot``, ``booted_slot``, ``arm_trial``, ``mark_good``,
``mark_bad``. Every backend stores the variables of ``rules`` and differs only in where:

* ``SimulatedBoot`` — a JSON file written atomically; ``reboot()`` applies the bootloader rule.
  The default for demos and tests.
* ``GrubBoot`` — two GRUB environment blocks through the real ``grub-editenv``: a power cut
  during a write leaves the decision in force intact (``redundant.py``).
* ``UBootBoot`` — a U-Boot environment (redundant copies) through the real ``fw_printenv`` /
  ``fw_setenv -s`` (one write for several variables).

The booted slot of a real system comes from the kernel command line (``ota.slot=a``), written
by the bootloader script; ``cmdline`` points at it (``/proc/cmdline`` on a vehicle, a plain
file in tests, where ``emulate_reboot`` plays the bootloader with the real tools).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from ota_client.atomic import fsync_dir, replace_durably, write_atomic
from ota_client.boot import redundant, rules
from ota_client.boot.rules import BootError, Env
from ota_client.strict import FormatError, load_json, read_bounded

_CMDLINE_SLOT = re.compile(r"(?:^|\s)ota\.slot=([ab])(?:\s|$)")
TOOL_TIMEOUT = 30
MAX_CMDLINE = 64 << 10
MAX_ENV = 64 << 10


class BootControl(ABC):
    name = "abstract"

    @abstractmethod
    def read_env(self) -> Env: ...

    @abstractmethod
    def write_env(self, changes: Mapping[str, str]) -> None:
        """Apply ``changes`` in one write."""

    @abstractmethod
    def booted_slot(self) -> str: ...

    def active_slot(self) -> str:
        return rules.active(self.read_env())

    def ensure(self) -> None:
        """Create the environment with the initial variables if it does not exist yet.

        Only commands that change the vehicle call this: reading never writes."""
        return None

    def arm_trial(self, slot: str, attempts: int) -> None:
        self.write_env(rules.arm(self.read_env(), slot, attempts))

    def mark_good(self, slot: str) -> None:
        self.write_env(rules.commit(slot))

    def mark_bad(self, slot: str) -> None:
        self.write_env(rules.mark_bad(self.read_env(), slot))

    def facts(self) -> rules.BootFacts:
        env = self.read_env()
        return rules.BootFacts(
            self.booted_slot(), rules.active(env), rules.trial(env), rules.tries(env)
        )

    def emulate_reboot(self) -> str:
        """Play the bootloader: apply the boot rule, record the booted slot. Returns it."""
        changes, slot = rules.next_boot(self.read_env())
        if changes:
            self.write_env(changes)
        self._set_booted(slot)
        return slot

    @abstractmethod
    def _set_booted(self, slot: str) -> None: ...


class CmdlineBooted:
    """Reads ``ota.slot=`` from a kernel command line file (``/proc/cmdline``)."""

    def __init__(self, cmdline: Path) -> None:
        self.cmdline = cmdline

    def booted_slot(self) -> str:
        try:
            text = read_bounded(self.cmdline, MAX_CMDLINE).decode("utf-8", "replace")
        except FileNotFoundError:
            raise BootError(f"cannot read {self.cmdline}: no such file") from None
        except FormatError as e:
            raise BootError(str(e)) from None
        match = _CMDLINE_SLOT.search(text)
        if match is None:
            raise BootError(
                f"{self.cmdline} names no ota.slot= (is the bootloader script installed?)"
            )
        return match.group(1)

    def _set_booted(self, slot: str) -> None:
        write_atomic(self.cmdline, f"ota.slot={slot}\n".encode())


class SimulatedBoot(BootControl):
    """Boot control in a JSON file, with a bootloader simulation for ``reboot``."""

    name = "simulated"

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_env(self) -> Env:
        try:
            data = load_json(self.path, f"boot state {self.path}", limit=MAX_ENV)
        except FileNotFoundError:
            return {**rules.initial_env(), "booted": "a"}
        except FormatError as e:
            raise BootError(str(e)) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 64 for k, v in data.items()
        ):
            raise BootError(f"malformed boot state {self.path}: expected names and short values")
        return data

    def write_env(self, changes: Mapping[str, str]) -> None:
        env = {**self.read_env(), **changes}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(env, indent=1, sort_keys=True).encode())
        except OSError as e:
            raise BootError(f"cannot write {self.path}: {e.strerror}") from None

    def booted_slot(self) -> str:
        return rules.check_slot(self.read_env().get("booted", "a"))

    def _set_booted(self, slot: str) -> None:
        self.write_env({"booted": slot})


class SymlinkBoot(SimulatedBoot):
    """Boot control for directory slots (application bundles): the same rules, where "booting"
    a slot is pointing the ``current`` symlink at it (atomically) and restarting the app."""

    name = "symlink"

    def __init__(
        self,
        path: Path,
        current: Path,
        slots: Mapping[str, Path],
        restart: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(path)
        self.current, self.slots, self.restart = current, slots, restart

    def booted_slot(self) -> str:
        try:
            target = os.readlink(self.current)
        except OSError:
            return super().booted_slot()
        for slot, path in self.slots.items():
            if Path(target) == path:
                return slot
        raise BootError(f"{self.current} points at {target}, which is no slot")

    def _set_booted(self, slot: str) -> None:
        tmp = self.current.with_name(f".{self.current.name}.new")
        tmp.unlink(missing_ok=True)
        os.symlink(self.slots[slot], tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.current.parent)
        super()._set_booted(slot)
        if self.restart:
            _run(list(self.restart), "restart the application")


def _run(args: list[str], what: str) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except FileNotFoundError:
        raise BootError(f"{args[0]} is not installed ({what})") from None
    except subprocess.TimeoutExpired:
        raise BootError(f"{args[0]} hung ({what})") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BootError(f"{args[0]} failed ({what}): {detail[-1] if detail else result.returncode}")
    return result.stdout


def _parse_env(text: str) -> Env:
    env: Env = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


class GrubBoot(CmdlineBooted, BootControl):
    """Two GRUB environment blocks (``ota-env.0``, ``ota-env.1`` next to ``ota.cfg``) through
    ``grub-editenv``: every write replaces the older copy (``boot/redundant.py``), written as a
    new file, synced and renamed over it, so no power cut can take the decision in force."""

    name = "grub"

    def __init__(self, directory: Path, cmdline: Path, *, tool: str = "grub-editenv") -> None:
        super().__init__(cmdline)
        self.copies = (directory / "ota-env.0", directory / "ota-env.1")
        self.tool = tool

    def _copy(self, path: Path) -> Env | None:
        """One copy's variables, or None if it is missing, torn or has no valid number."""
        if not path.is_file():
            return None
        try:
            env = _parse_env(_run([self.tool, str(path), "list"], "read the environment"))
        except BootError:
            return None  # an invalid block: GRUB ignores it too
        return env if env.get(redundant.SEQ) in redundant.SEQS else None

    def _in_force(self) -> tuple[int | None, Env | None]:
        envs = [self._copy(path) for path in self.copies]
        index = redundant.in_force(*(e.get(redundant.SEQ) if e else None for e in envs))
        return index, None if index is None else envs[index]

    def ensure(self) -> None:
        """Make both copies valid, so GRUB always has an older copy to save into. The first
        time, they start from a one-file ``grubenv`` of an older client, if there is one."""
        index, _env = self._in_force()
        if index is None:
            start = {**rules.initial_env(), **self._legacy()}
            self._write(self.copies[0], {**start, redundant.SEQ: "0"})
            self._write(self.copies[1], {**start, redundant.SEQ: "1"})
        elif self._copy(self.copies[1 - index]) is None:
            self.write_env({})

    def _legacy(self) -> Env:
        legacy = self.copies[0].parent / "grubenv"
        if not legacy.is_file():
            return {}
        try:
            env = _parse_env(_run([self.tool, str(legacy), "list"], "read the old environment"))
        except BootError:
            return {}
        return {k: v for k, v in env.items() if k in rules.initial_env()}

    def read_env(self) -> Env:
        _index, env = self._in_force()
        if env is None:
            return rules.initial_env()  # what ensure() will write; nothing is written here
        return {k: v for k, v in env.items() if k != redundant.SEQ}

    def write_env(self, changes: Mapping[str, str]) -> None:
        index, env = self._in_force()
        current = env or {**rules.initial_env(), redundant.SEQ: "2"}
        new = {**current, **changes, redundant.SEQ: redundant.next_seq(current[redundant.SEQ])}
        self._write(self.copies[0 if index is None else 1 - index], new)

    def _write(self, path: Path, env: Mapping[str, str]) -> None:
        """Replace one copy: a new block in a new file, synced, renamed over the old one."""
        tmp = path.with_name(f".{path.name}.new")
        try:
            tmp.unlink(missing_ok=True)
            _run([self.tool, str(tmp), "create"], "create the environment")
            _run([self.tool, str(tmp), "set", *(f"{k}={v}" for k, v in env.items())],
                 "write the environment")  # fmt: skip
            replace_durably(tmp, path, whole_fs=True)  # the boot partition is often FAT
        except OSError as e:
            raise BootError(f"cannot write {path}: {e.strerror}") from None


REQUIRED_UBOOT = ("bootcmd",)  # what a board needs in its environment to boot at all
MAX_DEFAULTS = 256 << 10


class UBootBoot(CmdlineBooted, BootControl):
    """A U-Boot environment through ``fw_printenv``/``fw_setenv -s`` (one write per verb).

    ``board_defaults`` is the board's own default environment (``name=value`` lines: what
    ``env export -t`` prints on a board that booted with its defaults, or ``u-boot-initial-env``
    from the U-Boot build) and must hold ``bootcmd``. libubootenv uses ``-f`` only when the
    environment cannot be read (a blank or corrupted pair): the first write then starts from
    the board's whole environment plus the OTA variables — never from the OTA variables alone,
    which would leave a board that stops at its prompt. No write goes to an environment that
    lacks what the board needs to boot.
    """

    name = "uboot"

    def __init__(self, config: Path, cmdline: Path, board_defaults: Path, defaults: Path) -> None:
        super().__init__(cmdline)
        self.config = config
        self.board_defaults = board_defaults
        self.defaults = defaults  # board defaults + the initial OTA variables, made by ensure()

    def _board(self) -> Env:
        try:
            text = read_bounded(self.board_defaults, MAX_DEFAULTS).decode("utf-8", "replace")
        except FileNotFoundError:
            raise BootError(
                f"the board's default U-Boot environment {self.board_defaults} is missing"
            ) from None
        except FormatError as e:
            raise BootError(str(e)) from None
        env = _parse_env(text)
        if missing := [k for k in REQUIRED_UBOOT if not env.get(k)]:
            raise BootError(
                f"{self.board_defaults} lacks {', '.join(missing)}: refusing to write a U-Boot "
                "environment the board cannot boot from"
            )
        return env

    def ensure(self) -> None:
        board = self._board()
        env = {**board, **rules.initial_env()}
        text = "".join(f"{k}={v}\n" for k, v in env.items())
        try:
            if not self.defaults.is_file() or self.defaults.read_text() != text:
                self.defaults.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.defaults, text.encode())
        except OSError as e:
            raise BootError(f"cannot write {self.defaults}: {e.strerror}") from None
        current = self._read()
        if current is None or "ota_active" not in current:
            self.write_env(rules.initial_env())

    def _read(self) -> Env | None:
        """The environment, or None while it is blank (never written)."""
        try:
            out = _run(["fw_printenv", "-c", str(self.config)], "read the environment")
        except BootError as e:
            if "Cannot read environment" in str(e) or "Cannot read default" in str(e):
                return None
            raise
        return _parse_env(out)

    def read_env(self) -> Env:
        env = self._read()
        return rules.initial_env() if env is None else env  # blank: what ensure() writes

    def write_env(self, changes: Mapping[str, str]) -> None:
        current = self._read()
        base = self._board() if current is None else current  # blank: the board's defaults
        if missing := [k for k in REQUIRED_UBOOT if not base.get(k)]:
            raise BootError(
                f"the U-Boot environment lacks {', '.join(missing)}: refusing to write it "
                "(the board would stop at its prompt)"
            )
        if current is None and not self.defaults.is_file():
            raise BootError("the U-Boot environment is blank: run ensure() first")
        script = "".join(f"{k}={v}\n" for k, v in changes.items())
        with tempfile.NamedTemporaryFile("w", suffix=".ota-env") as f:
            f.write(script)
            f.flush()
            _run(
                ["fw_setenv", "-c", str(self.config), "-f", str(self.defaults), "-s", f.name],
                "write the environment",
            )
