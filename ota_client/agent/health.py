"""Health checks run in a trial boot: commands and HTTP probes, each with a timeout, all within
one budget. A check that hangs is killed (its whole process group) and counts as failed.

Commands run in a process group of their own (so a timeout kills everything they started) but
in the client's session, so whatever stops the client's session — a power cut, systemd
stopping the unit — stops them too. HTTP probes go through the vehicle's one transport.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ota_client.config import HealthCheck
from ota_client.errors import TransportError
from ota_client.fetch.transport import Transport


def run_check(check: HealthCheck, budget: float, transport: Transport) -> str | None:
    """None if the check passed, else why it failed."""
    timeout = max(0.1, min(check.timeout, budget))
    if check.command is not None:
        try:
            proc = subprocess.Popen(
                check.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=0,
            )
        except (OSError, ValueError) as e:
            return f"{check.label}: cannot run ({getattr(e, 'strerror', None) or e})"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"{check.label}: no answer within {timeout:.0f} s"
        return None if code == 0 else f"{check.label}: exit status {code}"
    assert check.http is not None
    try:
        status = transport.probe(check.http, timeout=timeout)
    except TransportError as e:
        return f"{check.label}: {e}"
    return None if status == check.expect_status else f"{check.label}: HTTP {status}"


def run_checks(checks: tuple[HealthCheck, ...], budget: float, transport: Transport) -> str | None:
    """Run every check within ``budget`` seconds; the first failure's reason, or None."""
    end = time.monotonic() + budget
    for check in checks:
        left = end - time.monotonic()
        if left <= 0:
            return "the health checks did not finish within the trial deadline"
        failure = run_check(check, left, transport)
        if failure is not None:
            return failure
    return None
