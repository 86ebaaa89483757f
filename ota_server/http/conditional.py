"""HTTP conditional and range requests for static files (RFC 9110 §13, §14), pure.

Vehicles resume interrupted downloads with ``Range`` plus ``If-Range: <etag>``; caches
revalidate with ``If-None-Match``. aiohttp's own file response understands only the date form
of ``If-Range`` and makes ETags from mtimes (which differ between replicas), so the decision is
made here from a content ETag, and the shell only streams the bytes it is told to.

Deliberately not supported: multipart ``multipart/byteranges`` replies (a request for several
ranges gets the whole file, which RFC 9110 allows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
_ETAG = re.compile(r'(W/)?"([^"]*)"')


@dataclass(frozen=True)
class FileReply:
    status: int  # 200, 206, 304 or 416
    start: int = 0
    length: int = 0  # bytes of body to send (0 for HEAD is decided by the shell)
    headers: Mapping[str, str] = field(default_factory=dict)


def _etags(value: str) -> list[tuple[bool, str]]:
    """Parse an entity-tag list into (weak, opaque-tag) pairs; ``*`` is ("*")."""
    if value.strip() == "*":
        return [(False, "*")]
    return [(bool(m.group(1)), m.group(2)) for m in _ETAG.finditer(value)]


def parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range → (start, length); None if the header is to be ignored;
    "unsatisfiable" for a valid range outside the file."""
    m = _RANGE.fullmatch(value.strip())
    if m is None:
        return None  # malformed, other units or several ranges: ignore the header
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        n = min(n, size)
        return size - n, n
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if last and int(last) < start:
        return None  # syntactically invalid: ignore
    if start >= size:
        return "unsatisfiable"
    return start, end - start + 1


def _if_range_holds(value: str, etag: str, mtime: int) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        tags = _etags(value)
        return len(tags) == 1 and not tags[0][0] and tags[0][1] == etag
    try:
        return int(parsedate_to_datetime(value).timestamp()) == mtime
    except (TypeError, ValueError):
        return False


def plan_reply(headers: Mapping[str, str], *, size: int, etag: str, mtime: int) -> FileReply:
    """Decide the status, byte window and validator headers for a GET/HEAD of a file.

    ``etag`` is the opaque tag without quotes (a content hash); ``mtime`` in whole seconds.
    """
    base = {
        "ETag": f'"{etag}"',
        "Last-Modified": formatdate(mtime, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and any(
        tag in ("*", etag) for _weak, tag in _etags(if_none_match)
    ):
        return FileReply(304, headers=base)
    range_header = headers.get("Range")
    if range_header is not None:
        if_range = headers.get("If-Range")
        if if_range is None or _if_range_holds(if_range, etag, mtime):
            window = parse_range(range_header, size)
            if window == "unsatisfiable":
                return FileReply(416, headers={**base, "Content-Range": f"bytes */{size}"})
            if isinstance(window, tuple):
                start, length = window
                return FileReply(
                    206,
                    start,
                    length,
                    {**base, "Content-Range": f"bytes {start}-{start + length - 1}/{size}"},
                )
    return FileReply(200, 0, size, base)
