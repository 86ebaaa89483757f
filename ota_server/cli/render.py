"""Output helpers shared by commands: JSON for scripts, aligned tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(map(str, header)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def warn(message: str) -> None:
    click.secho(message, fg="yellow", bold=True, err=True)


class Progress:
    """Advances a click progress bar (or nothing); the total may be learned late."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.length = max(total, 1)


@contextmanager
def progress(total: int, label: str, *, enabled: bool = True) -> Iterator[Progress]:
    """A byte-count progress bar on stderr."""
    if not enabled:
        yield Progress()
        return
    with click.progressbar(
        length=max(total, 1), label=label, file=sys.stderr, show_percent=True, show_pos=False
    ) as bar:
        yield Progress(bar)
