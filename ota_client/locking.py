"""One writer at a time: an advisory ``flock`` on a lock file, with an optional wait.

The kernel releases it when the holder dies, so a power cut or SIGKILL never leaves it stuck.
Used by the client (one process drives the slots) and the server (one repository writer).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, *, wait: float = 0.0) -> Iterator[bool]:
    """Yield True once ``path`` is locked, or False if ``wait`` seconds passed (0: no wait)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
