"""Health checks run in a trial boot: commands and HTTP probes, each with a timeout, all within
one deadline. A check that hangs is killed (its whole process group) and counts as failed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from ota_client.config import HealthCheck


def run_check(check: HealthCheck, budget: float) -> str | None:
    """None if the check passed, else why it failed."""
    timeout = max(0.1, min(check.timeout, budget))
    if check.command is not None:
        try:
            proc = subprocess.Popen(
                check.command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            return f"{check.label}: cannot run ({e.strerror})"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"{check.label}: no answer within {timeout:.0f} s"
        return None if code == 0 else f"{check.label}: exit status {code}"
    assert check.http is not None
    try:
        with urllib.request.urlopen(check.http, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        return f"{check.label}: {getattr(e, 'reason', e)}"
    return None if status == check.expect_status else f"{check.label}: HTTP {status}"


def run_checks(checks: tuple[HealthCheck, ...], deadline: float) -> str | None:
    """Run every check within ``deadline`` seconds; the first failure's reason, or None."""
    end = time.monotonic() + deadline
    for check in checks:
        budget = end - time.monotonic()
        if budget <= 0:
            return f"the health checks did not finish within {deadline:.0f} s"
        failure = run_check(check, budget)
        if failure is not None:
            return failure
    return None
