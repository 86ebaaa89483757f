"""Back-off for a release that failed: exponential with jitter, then given up. Pure.

A failure of the same release (same images for the same ECUs: ``machine.plan_key``) doubles
the wait, from ``first`` up to ``cap``, times a jitter factor in [0.5, 1.5) so a fleet that
failed together does not retry together. The ``max_attempts``-th failure gives the release up:
it is reported and never tried again. A kill or power cut is no failure: it produces no event.
"""

from __future__ import annotations

from ota_client.agent.records import Retry


def next_retry(
    previous: Retry | None,
    key: str,
    now: float,
    *,
    first: float,
    cap: float,
    max_attempts: int,
    jitter: float,
) -> Retry | None:
    """The back-off after one more failure of ``key``, or None when it is given up."""
    attempts = (previous.attempts if previous is not None and previous.key == key else 0) + 1
    if attempts >= max_attempts:
        return None
    delay = min(max(cap, first), first * 2 ** min(attempts - 1, 60))
    return Retry(key, attempts, now + delay * (0.5 + min(max(jitter, 0.0), 0.999)))


def waiting(retry: Retry | None, key: str, now: float) -> bool:
    """Whether ``key`` is still inside its back-off."""
    return retry is not None and retry.key == key and retry.not_before > now
