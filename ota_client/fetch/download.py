"""Resumable, length-capped, streamed downloads (aiohttp).

``download`` continues from ``start`` bytes already written (HTTP ``Range`` with ``If-Range``
on the validator of the earlier response, so a changed file restarts from zero instead of
being spliced), never accepts more than the signed length (endless data), gives up when the
server stalls (``timeout``) or trickles (below ``min_speed`` over a minute: slow retrieval),
and reports durable checkpoints so a power cut loses at most one checkpoint of work. The
caller hashes as it goes and compares with the signed hash at the end.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from ota_client import __version__

CHUNK = 256 << 10
CHECKPOINT = 32 << 20
SPEED_WINDOW = 60.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(Exception):
    """The server could not be reached, failed, or stopped sending (retry later)."""


class SlowRetrievalError(DownloadError):
    """The server sends too slowly to finish (Uptane's slow retrieval attack)."""


class EndlessDataError(Exception):
    """The server sent more than the signed length (bad data)."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...
    def sync(self) -> None: ...
    def restart(self) -> None: ...


@dataclass(frozen=True)
class Transport:
    timeout: float = 30.0
    min_speed: float = 512.0
    ca_file: Path | None = None
    speed_window: float = SPEED_WINDOW

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))


Checkpoint = Callable[[int, "str | None"], None]


async def _download(
    url: str,
    sink: Sink,
    start: int,
    length: int,
    etag: str | None,
    transport: Transport,
    checkpoint: Checkpoint,
) -> int:
    headers = {"User-Agent": f"ota-client/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if etag:
            headers["If-Range"] = etag
    timeout = aiohttp.ClientTimeout(sock_connect=transport.timeout, sock_read=transport.timeout)
    connector = aiohttp.TCPConnector(ssl=transport.ssl_context())
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector, read_bufsize=CHUNK) as session,
        session.get(url, headers=headers, allow_redirects=False) as response,
    ):
        position = start
        if start and response.status == 416 and start == length:
            return start
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != start:
                raise DownloadError(f"{url}: the server answered a different range")
        elif response.status == 200:
            if start:
                sink.restart()  # the file changed or ranges are unsupported: from zero
                position = 0
        else:
            raise DownloadError(f"{url}: HTTP {response.status}")
        etag = response.headers.get("ETag")
        window_start, window_bytes = time.monotonic(), 0
        last_checkpoint = position
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                if position + len(chunk) > length:
                    raise EndlessDataError(
                        f"{url}: the server sent more than the signed {length} bytes"
                    )
                sink.write(chunk)
                position += len(chunk)
                window_bytes += len(chunk)
                elapsed = time.monotonic() - window_start
                if elapsed >= transport.speed_window:
                    if window_bytes / elapsed < transport.min_speed:
                        raise SlowRetrievalError(
                            f"{url}: {window_bytes / elapsed:.0f} bytes/s is below the "
                            f"minimum of {transport.min_speed:.0f}"
                        )
                    window_start, window_bytes = time.monotonic(), 0
                if position - last_checkpoint >= CHECKPOINT:
                    sink.sync()
                    checkpoint(position, etag)
                    last_checkpoint = position
        finally:
            # Whatever stopped the transfer, what arrived is a valid prefix: keep it.
            if position != last_checkpoint:
                sink.sync()
                checkpoint(position, etag)
        return position


def download(
    url: str,
    sink: Sink,
    *,
    start: int,
    length: int,
    etag: str | None,
    transport: Transport,
    checkpoint: Checkpoint,
) -> int:
    """Fetch ``url`` into ``sink`` from ``start``; returns the bytes now held (== length
    when complete). Raises DownloadError (retry later) or EndlessDataError (bad data)."""
    try:
        got = asyncio.run(_download(url, sink, start, length, etag, transport, checkpoint))
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        detail = str(e) or type(e).__name__
        raise DownloadError(f"{url}: {detail}") from None
    if got < length:
        raise DownloadError(f"{url}: the connection closed after {got} of {length} bytes")
    return got
