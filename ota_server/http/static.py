"""Serve repository files: safe path resolution, content ETags, ranges, cache headers.

Hash-prefixed targets and versioned metadata never change, so they are cacheable forever and
their ETag is their hash; ``timestamp.json`` changes in place and must be revalidated.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ota_server.http.conditional import plan_reply

CHUNK = 1 << 20
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
_HASH_PREFIXED = re.compile(r"([0-9a-f]{64})\..+")
_VERSIONED = re.compile(r"[1-9][0-9]*\..+")


def resolve(root: Path, relative: str, max_segments: int = 5) -> Path | None:
    """``root/relative`` if every segment is a plain name and it is a regular file inside root."""
    segments = relative.split("/")
    if len(segments) > max_segments or not all(_SEGMENT.fullmatch(s) for s in segments):
        return None
    path = root.joinpath(*segments)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # no directories, devices or symlinks
    return path


@dataclass
class _Digest:
    key: tuple[int, int, int]
    etag: str


class EtagCache:
    """Content hashes of mutable small files, recomputed only when the file changes.

    Holds at most ``limit`` files (forgetting all at once when full: they are few and cheap)."""

    def __init__(self, limit: int = 4096) -> None:
        self._cache: dict[Path, _Digest] = {}
        self.limit = limit

    def etag(self, path: Path, st: os.stat_result) -> str:
        hashed = _HASH_PREFIXED.fullmatch(path.name)
        if hashed:
            return hashed.group(1)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is None or cached.key != key:
            with open(path, "rb") as f:
                cached = _Digest(key, hashlib.file_digest(f, "sha256").hexdigest())
            if len(self._cache) >= self.limit:
                self._cache.clear()
            self._cache[path] = cached
        return cached.etag


def cache_control(path: Path) -> str:
    name = path.name
    return IMMUTABLE if _HASH_PREFIXED.fullmatch(name) or _VERSIONED.fullmatch(name) else REVALIDATE


async def send_file(request: web.Request, path: Path, etags: EtagCache) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    try:  # no symlinks, and a FIFO swapped in after resolve() must not block the loop
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise web.HTTPNotFound() from None
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise web.HTTPNotFound()
        etag = await loop.run_in_executor(None, etags.etag, path, st)
        reply = plan_reply(request.headers, size=st.st_size, etag=etag, mtime=int(st.st_mtime))
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.headers["Cache-Control"] = cache_control(path)
        if reply.status in (200, 206):
            response.content_type = (
                "application/json" if path.suffix == ".json" else "application/octet-stream"
            )
            response.content_length = reply.length
        await response.prepare(request)
        if request.method == "HEAD" or reply.status not in (200, 206):
            return response
        f.seek(reply.start)
        remaining = reply.length
        while remaining > 0:
            chunk = await loop.run_in_executor(None, f.read, min(CHUNK, remaining))
            if not chunk:
                break  # file shrank underneath us: the client sees a short body
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write_eof()
        return response
    finally:
        f.close()
