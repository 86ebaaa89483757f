"""Strict, bounded reading of every file and body either side parses (TOML and JSON).

Configs, manifests, state files, keyrings and request bodies come from people and disks that
make mistakes, and sometimes from attackers. Whatever they hold, reading them must end in a
value or one ``FormatError`` that names the bad field — never a traceback, a hang or a memory
blow-up. So, in one place for client and server:

* ``read_bounded`` opens without blocking (a FIFO never hangs), accepts regular files only (no
  ``/dev/zero``) and reads at most a cap;
* ``parse_toml`` / ``parse_json`` cap the size, refuse the inputs the standard parsers handle
  badly (deep nesting: RecursionError; huge integers: ValueError; long dotted keys: quadratic
  time and memory in tomllib; NaN and infinities in JSON) and cap the nesting depth;
* ``Reader`` takes typed fields out of a parsed table: finite numbers inside a range, strings
  without NUL and with a length cap, safe identifiers, paths, URLs that parse; unknown keys are
  errors; messages quote at most ~80 characters of a bad value.

Pure apart from ``read_bounded``. Each side wraps ``FormatError`` into its own error family.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.metadata.errors import MAX_SHOWN as MAX_SHOWN
from ota_client.metadata.errors import show as show

MAX_DEPTH = 32  # nesting of tables and arrays in any file we read
MAX_STRING = 4096  # characters in one string value (paths, commands, URLs)
# 33 or more dotted key parts. Possessive quantifiers and the look-behind (a bare key starts
# only where a run of key characters starts) keep the search linear: a plain ``[...]+`` here
# backtracks over every suffix of a long word (a 256 KB value took minutes).
_DOTTED = re.compile(
    r"""(?<![A-Za-z0-9_-])(?:(?:[A-Za-z0-9_-]++|"[^"\n]*+"|'[^'\n]*+')[ \t]*+\.[ \t]*+){32}"""
)

T = TypeVar("T")


class FormatError(ValueError):
    """Input that does not follow its format or schema; the message names where."""


def printable(text: str, limit: int = 200) -> str:
    """``text`` with control characters replaced and cut to ``limit`` characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


# -- bytes ------------------------------------------------------------------------------------


def read_bounded(path: Path, limit: int, what: str = "") -> bytes:
    """The content of the regular file ``path`` if it is at most ``limit`` bytes.

    Raises FileNotFoundError if it does not exist (callers decide whether that is normal) and
    FormatError for everything else: unreadable, not a regular file, too large.
    """
    name = what or printable(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise FormatError(f"cannot read {name}: {_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{name} is not a regular file")
        if st.st_size > limit:
            raise FormatError(f"{name} is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise FormatError(f"cannot read {name}: {_reason(e)}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise FormatError(f"{name} is larger than {limit} bytes")
    return b"".join(chunks)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or errno.errorcode.get(e.errno or 0, str(e))
    return "the path holds a NUL character" if "null" in str(e) else str(e)


def decode_text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not UTF-8 text") from None


# -- documents --------------------------------------------------------------------------------


def parse_toml(data: bytes | str, what: str, *, limit: int = 256 << 10) -> dict[str, Any]:
    """A TOML document as a dict, or FormatError (size, syntax, depth, hostile shapes)."""
    text = data if isinstance(data, str) else decode_text(data, what)
    if len(text) > limit:
        raise FormatError(f"{what} is larger than {limit} bytes")
    if _DOTTED.search(text):
        raise FormatError(f"{what}: a key has more than 32 dotted parts")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FormatError(f"{what}: malformed TOML: {_first_line(e)}") from None
    except (RecursionError, ValueError, MemoryError) as e:
        raise FormatError(f"{what}: malformed TOML ({type(e).__name__})") from None
    check_depth(doc, what)
    return doc


def _reject_constant(name: str) -> Any:
    raise FormatError(f"{name} is not a number")


def parse_json(data: bytes | str, what: str, *, limit: int = 1 << 20) -> Any:
    """A JSON document, or FormatError (size, syntax, NaN/Infinity, depth)."""
    if len(data) > limit:
        raise FormatError(f"{what} is larger than {limit} bytes")
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None
    except (RecursionError, ValueError, MemoryError) as e:
        reason = _first_line(e) if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise FormatError(f"{what}: malformed JSON ({reason})") from None
    check_depth(doc, what)
    return doc


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def check_depth(doc: object, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than ``max_depth`` (iteratively: no recursion)."""
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= max_depth:
                raise FormatError(f"{what} is nested more than {max_depth} levels deep")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def load_toml(path: Path, what: str, *, limit: int = 256 << 10) -> dict[str, Any]:
    return parse_toml(read_bounded(path, limit, what), what, limit=limit)


def load_json(path: Path, what: str, *, limit: int = 1 << 20) -> Any:
    return parse_json(read_bounded(path, limit, what), what, limit=limit)


# -- fields -----------------------------------------------------------------------------------

_MISSING: Any = object()


class Reader:
    """Typed, range-checked access to one table; ``done()`` refuses keys nobody asked for.

    ``where`` prefixes every message (``ecus[0].slots``), so an error names the bad key.
    """

    def __init__(self, data: object, where: str = "", base: Path | None = None) -> None:
        if not isinstance(data, Mapping):
            raise FormatError(f"{where or 'the document'} must be a table")
        self.data, self.where, self.base = data, where, base
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        key = key if len(key) <= MAX_SHOWN else key[: MAX_SHOWN - 1] + "…"
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> FormatError:
        return FormatError(f"{self.name(key)} {message}")

    def _raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise FormatError(f"missing {self.name(key)}")
            return default
        return self.data[key]

    def _absent(self, key: str, default: Any) -> bool:
        """Whether ``key`` takes its default: missing, or JSON null where None is the default."""
        return key not in self.data or (default is None and self.data[key] is None)

    def has(self, key: str) -> bool:
        return key in self.data

    def string(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        max_len: int = MAX_STRING,
        choices: Sequence[str] | None = None,
        check: Callable[[str], object] | None = None,
    ) -> Any:
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        return self.check_string(key, value, max_len=max_len, choices=choices, check=check)

    def check_string(
        self,
        key: str,
        value: object,
        *,
        max_len: int = MAX_STRING,
        choices: Sequence[str] | None = None,
        check: Callable[[str], object] | None = None,
    ) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {show(value)}")
        if "\0" in value:
            raise self.fail(key, "holds a NUL character")
        if len(value) > max_len:
            raise self.fail(key, f"is longer than {max_len} characters")
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {show(value)}")
        if check is not None:
            try:
                check(value)
            except (FormatError, MetadataFormatError, ValueError) as e:
                raise self.fail(key, f"is invalid: {e}") from None
        return value

    def identifier(self, key: str, kind: str, default: Any = _MISSING) -> Any:
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        try:
            if not isinstance(value, str):
                raise MetadataFormatError(kind)
            return check_identifier(kind, value)
        except MetadataFormatError:
            raise self.fail(
                key,
                f"is not a valid {kind}: use 1-64 ASCII letters, digits and . _ -, "
                f"starting with a letter or digit (got {show(value)})",
            ) from None

    def integer(self, key: str, default: Any = _MISSING, *, low: int, high: int) -> Any:
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer {low}-{high}, not {show(value)}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, low: float, high: float) -> Any:
        """A finite number with ``low <= value <= high`` (as float)."""
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or not low <= value <= high
        ):
            raise self.fail(key, f"must be a number from {low:g} to {high:g}, not {show(value)}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {show(value)}")
        return value

    def path(self, key: str, default: Any = _MISSING) -> Any:
        """A path (relative ones are relative to ``base``)."""
        value = self.string(key, default)
        if self._absent(key, default):
            return default
        if not value:
            raise self.fail(key, "must not be empty")
        return (self.base / value) if self.base is not None else Path(value)

    def url(self, key: str, default: Any = _MISSING, *, schemes: Sequence[str]) -> Any:
        value = self.string(key, default)
        if self._absent(key, default):
            return default
        try:
            return check_url(value, schemes)
        except FormatError as e:
            raise self.fail(key, str(e)) from None

    def strings(
        self, key: str, default: Any = _MISSING, *, max_items: int = 64, min_items: int = 1
    ) -> Any:
        value = self._raw(key, default)
        if self._absent(key, default):
            return default
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise self.fail(key, f"must be a list of {min_items}-{max_items} strings")
        return tuple(self.check_string(f"{key}[{i}]", v) for i, v in enumerate(value))

    def table(self, key: str, default: Any = _MISSING) -> Reader:
        value = self._raw(key, default)
        return Reader(value, self.name(key), self.base)

    def tables(self, key: str, *, max_items: int, min_items: int = 0) -> list[Reader]:
        value = self._raw(key, [])
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            raise self.fail(key, f"must be a list of {min_items}-{max_items} tables")
        return [Reader(v, f"{self.name(key)}[{i}]", self.base) for i, v in enumerate(value)]

    def done(self) -> None:
        if unknown := set(self.data) - self.used:
            key = str(sorted(unknown)[0])
            raise FormatError(f"unknown setting {self.name(key[:MAX_SHOWN])}")


def check_url(value: str, schemes: Sequence[str]) -> str:
    """``value`` if it is an absolute URL with one of ``schemes``, a host and a valid port."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise FormatError(f"is not a valid URL ({e})") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise FormatError(f"must be a {'/'.join(schemes)} URL with a host, not {show(value)}")
    if port == 0 or any(c.isspace() or ord(c) < 32 for c in value):
        raise FormatError(f"is not a valid URL: {show(value)}")
    return value
