"""Command-line parameter types that refuse what the operating system would choke on later.

click checks types and ranges, but a path with a NUL character (possible in-process, or from a
file of arguments) passes ``click.Path`` untouched and then fails deep inside ``os`` with a
ValueError; ``click.FloatRange`` lets NaN through (every comparison with NaN is false). These
types refuse both up front, with click's own one-line usage error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ota_client.strict import MAX_STRING, show


class SafePath(click.Path):
    """``click.Path`` that also refuses NUL characters and absurdly long names."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | bytes):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if "\0" in text:
                self.fail(f"{show(text)} holds a NUL character", param, ctx)
            if len(text) > MAX_STRING:
                self.fail(f"the path is longer than {MAX_STRING} characters", param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` without NaN or infinities."""

    name = "float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{show(value)} is not a finite number", param, ctx)
        return number


class Text(click.types.StringParamType):
    """A string argument without NUL and of bounded length (names, patterns, hosts)."""

    name = "text"

    def __init__(self, max_len: int = 255) -> None:
        self.max_len = max_len

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = super().convert(value, param, ctx)
        if "\0" in text:
            self.fail(f"{show(text)} holds a NUL character", param, ctx)
        if len(text) > self.max_len:
            self.fail(f"{show(text)} is longer than {self.max_len} characters", param, ctx)
        return text


def file_path() -> SafePath:
    """An input or output file (not a directory)."""
    return SafePath(dir_okay=False, path_type=Path)
