"""Runs inside the QEMU guest (tests/guest.py): the client's GRUB backend changes the boot
environment op after op, and says on the serial port when each op is durable, so the host can
kill the guest in the middle of any write and know which states the environment may hold.

    python -m tests.guest_ops --dir /mnt/boot/grub --seed 7 --count 40
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from ota_client.boot import rules
from ota_client.boot.control import GrubBoot
from ota_client.boot.rules import Env


def verbs(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    return [rnd.choice(["arm", "commit", "bad"]) for _ in range(count)]


def changes(env: Env, verb: str) -> Env:
    """What one op writes (the host computes the same to know the states it may see)."""
    active = rules.active(env)
    spare = rules.other(active)
    if verb == "arm":
        return rules.arm(env, spare, 3)
    if verb == "commit":
        return rules.commit(rules.trial(env) or active)
    return rules.mark_bad(env, spare)


def states(start: Env, seed: int, count: int) -> list[Env]:
    """Every environment the ops pass through, the starting one first."""
    out = [start]
    for verb in verbs(seed, count):
        out.append({**out[-1], **changes(out[-1], verb)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    boot = GrubBoot(args.dir, Path("/proc/cmdline"))
    print("OTA-OPS start", flush=True)
    for i, verb in enumerate(verbs(args.seed, args.count)):
        boot.write_env(changes(boot.read_env(), verb))
        print(f"OTA-OP {i} done", flush=True)


if __name__ == "__main__":
    main()
