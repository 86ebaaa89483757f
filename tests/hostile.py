"""What a clean refusal is, for both hostile-input suites (client and server).

A case passes when its input is refused cleanly — a non-zero exit, exactly one short
``Error:`` line, no traceback, no "internal error" — or, for the mutations that leave an input
valid, when the command succeeds cleanly; and when nothing it must not touch changed
(``snapshot`` before and after). ``deadline`` fails a case that hangs; ``place`` puts a
special file (FIFO, /dev/zero, a 3 GiB sparse file, a symlink loop ...) where a file is read.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

ERROR_LINE = 1100  # characters: one readable line, whatever the input
cases = [0]  # cases checked in this run (both suites print their count)


def refused(result: Result, label: str) -> str:
    """Assert a clean refusal and return its one ``Error:`` line."""
    cases[0] += 1
    text = result.output
    assert "Traceback" not in text, f"{label}: {text[-3000:]}"
    assert "internal error" not in text, f"{label}: {text[-3000:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{label}: {result.exception!r}"
    )
    assert result.exit_code != 0, f"{label}: accepted: {text[-500:]}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"{label}: {result.stderr[-3000:]}"
    assert len(errors[0]) <= ERROR_LINE, f"{label}: a {len(errors[0])}-character error line"
    return errors[0]


def clean(result: Result, label: str) -> bool:
    """Assert a clean success or a clean refusal; True if it succeeded."""
    if result.exit_code == 0:
        cases[0] += 1
        assert result.exception is None, f"{label}: {result.exception!r}"
        assert "Traceback" not in result.output and "internal error" not in result.output, label
        return True
    refused(result, label)
    return False


class CaseTimeout(BaseException):  # not an Exception: no catch-all may swallow it
    pass


@contextlib.contextmanager
def deadline(seconds: float, label: str) -> Iterator[None]:
    """Fail a case that hangs (SIGALRM interrupts a blocking open or read, too)."""

    def expire(_signum: int, _frame: object) -> None:
        raise CaseTimeout(f"{label}: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``root``; directories and symlinks count too and
    nothing is followed; huge (sparse) files by size and mtime. (os.scandir, not pathlib: it
    runs several times per case.)"""
    out: dict[str, str] = {}
    base = len(str(root)) + 1
    folders = [str(root)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                st_ = entry.stat(follow_symlinks=False)
                name, mode = entry.path[base:], st_.st_mode
                if stat.S_ISLNK(mode):
                    out[name] = f"link {os.readlink(entry.path)}"
                elif stat.S_ISREG(mode) and st_.st_size > 32 << 20:
                    out[name] = f"big {st_.st_size} {st_.st_mtime_ns} {mode:o}"
                elif stat.S_ISREG(mode):
                    with open(entry.path, "rb") as f:
                        out[name] = f"{hashlib.sha256(f.read()).hexdigest()} {mode:o}"
                else:
                    if stat.S_ISDIR(mode):
                        folders.append(entry.path)
                    out[name] = f"{stat.S_IFMT(mode):o} {mode:o}"
    return out


def campaign_fixture(name: str) -> Any:
    """A module fixture for a hostile suite: it prints how many cases ran, and fails if a case
    wrote outside its temporary folders (the suites may run as root: the working directory and
    /etc must stay as they were)."""

    @pytest.fixture(scope="module", autouse=True)
    def campaign(request: pytest.FixtureRequest) -> Iterator[None]:
        def files() -> list[str]:
            return sorted(e.name for e in os.scandir(".") if e.is_file(follow_symlinks=False))

        cwd, start = files(), cases[0]
        watched = [p for p in ("/etc/passwd", "/etc/hosts", "/etc/shadow") if os.path.exists(p)]
        etc = {p: os.stat(p).st_mtime_ns for p in watched}
        yield
        assert files() == cwd, "a case wrote into the working directory"
        assert {p: os.stat(p).st_mtime_ns for p in etc} == etc, "a case wrote into /etc"
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\n{name}: {cases[0] - start} hostile cases")

    return campaign


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:10]


class Special(enum.Enum):
    MISSING = "missing"
    FIFO = "fifo"
    DEV_ZERO = "/dev/zero"
    DEV_NULL = "/dev/null"
    DIRECTORY = "directory"
    SPARSE = "3 GiB sparse file"
    LOOP = "symlink loop"
    DANGLING = "dangling symlink"


SPECIALS = list(Special)
Content = bytes | Special


def remove(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def place(path: Path, content: Content) -> None:
    """Put ``content`` (bytes or a special file) at ``path``."""
    remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is Special.FIFO:
        os.mkfifo(path)
    elif content in (Special.DEV_ZERO, Special.DEV_NULL):
        path.symlink_to(content.value)
    elif content is Special.DIRECTORY:
        path.mkdir()
        (path / "inner").write_text("x")
    elif content is Special.SPARSE:
        with open(path, "wb") as f:
            f.truncate(3 << 30)
    elif content is Special.LOOP:
        path.symlink_to(path.name)
    elif content is Special.DANGLING:
        path.symlink_to(path.parent / "nowhere")
