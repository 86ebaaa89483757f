"""The vehicle's one HTTP transport: metadata, images, reports and health probes (aiohttp).

One client library, one SSL context (the configured CA; the vehicle's client certificate for
mutual TLS), one connection pool, driven from synchronous code through a private event loop.
Every request has a total deadline, a stall timeout and a minimum speed over a window, so a
mirror trickling 10 B/s cannot hold an update (or the data-directory lock) for hours. Every
response is drained or its connection closed, so the next request on a kept-alive connection
never reads an old body as its status line. Every length is capped: a body longer than its
cap is endless data (a security failure), not a transport error.

``download`` resumes from ``start`` bytes (HTTP ``Range`` with ``If-Range`` on the earlier
response's validator, so a changed file restarts from zero instead of being spliced) and
reports durable checkpoints, so a power cut loses at most one checkpoint of work.

``Transport`` is the interface the agent uses; tests plug in an in-process one.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import aiohttp

from ota_client import __version__
from ota_client.config import NetworkConfig
from ota_client.errors import ConfigError, HttpStatusError, SecurityError, TransportError
from ota_client.strict import FormatError, read_bounded

CHUNK = 4 << 20  # bytes per read: fewer event-loop turns (256 KiB: 20-30% slower)
DRAIN = 64 << 10  # error bodies up to this size are read so the connection can be reused
MAX_PEM = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
T = TypeVar("T")

Checkpoint = Callable[[int, "str | None"], None]  # (bytes durably held, validator)


class SlowRetrievalError(TransportError):
    """The server sends too slowly to finish in time (Uptane's slow retrieval attack)."""


class EndlessDataError(SecurityError):
    """The server sent more than the signed or allowed length."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...
    def sync(self) -> None: ...
    def restart(self) -> None: ...


class Transport(Protocol):
    def get(self, url: str, *, max_length: int) -> bytes:
        """The body of a 200 answer, at most ``max_length`` bytes."""

    def revalidate(
        self, url: str, *, max_length: int, etag: str | None
    ) -> tuple[bytes | None, str | None]:
        """As ``get`` with ``If-None-Match: etag``: (None, etag) when the server answers 304
        Not Modified, else the body and its new ETag."""

    def download(
        self,
        url: str,
        sink: Sink,
        *,
        start: int,
        length: int,
        etag: str | None,
        checkpoint: Checkpoint,
    ) -> int:
        """Fetch into ``sink`` from ``start``; returns ``length`` once complete."""

    def post_json(self, url: str, body: bytes) -> int:
        """POST a JSON body; returns the status."""

    def probe(self, url: str, *, timeout: float) -> int:
        """GET for a health check; returns the status."""

    def close(self) -> None: ...


def ssl_context(net: NetworkConfig) -> ssl.SSLContext:
    """The one SSL context: the configured CA (or the system's) and the client certificate."""
    try:
        cadata = None
        if net.ca_file is not None:
            cadata = read_bounded(net.ca_file, MAX_PEM, f"ca_file {net.ca_file}").decode("ascii")
        context = ssl.create_default_context(cadata=cadata)
        if net.client_cert is not None and net.client_key is not None:
            for path in (net.client_cert, net.client_key):
                read_bounded(path, MAX_PEM)
            context.load_cert_chain(net.client_cert, net.client_key)
    except FileNotFoundError as e:
        raise ConfigError(f"cannot read {e.filename}: no such file") from None
    except (FormatError, UnicodeDecodeError, ssl.SSLError, OSError, ValueError) as e:
        raise ConfigError(f"cannot load the TLS files: {e}") from None
    return context


class _Meter:
    """Raises SlowRetrievalError when the average over a window falls below the minimum."""

    def __init__(self, url: str, net: NetworkConfig) -> None:
        self.url, self.min_speed, self.window = url, net.min_speed, net.speed_window
        self.start, self.bytes = time.monotonic(), 0

    def add(self, count: int) -> None:
        self.bytes += count
        elapsed = time.monotonic() - self.start
        if elapsed >= self.window:
            if self.bytes / elapsed < self.min_speed:
                raise SlowRetrievalError(
                    f"{self.url}: {self.bytes / elapsed:.0f} bytes/s is below the minimum of "
                    f"{self.min_speed:.0f}"
                )
            self.start, self.bytes = time.monotonic(), 0


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read a short body to its end (the connection is reused); close the connection else."""
    try:
        left = DRAIN
        while left > 0:
            chunk = await response.content.read(min(left, CHUNK))
            if not chunk:
                return
            left -= len(chunk)
    except (aiohttp.ClientError, OSError):
        pass
    response.close()


class HttpTransport:
    """The real transport over aiohttp; not thread-safe (one agent, one thread)."""

    def __init__(self, net: NetworkConfig, *, checkpoint_bytes: int | None = None) -> None:
        self.net = net
        self.checkpoint_bytes = checkpoint_bytes or net.checkpoint_interval
        self._ssl = ssl_context(net)
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"User-Agent": f"ota-client/{__version__}"}

    # -- plumbing ---------------------------------------------------------------------------

    async def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                sock_connect=self.net.connect_timeout, sock_read=self.net.stall_timeout
            )
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=4)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=connector, read_bufsize=CHUNK, trust_env=False
            )
        return self._session

    def _run(self, url: str, deadline: float, work: Callable[[], Awaitable[T]]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(deadline):
                return await work()

        try:
            return self._loop.run_until_complete(bounded())
        except TimeoutError:
            raise SlowRetrievalError(f"{url}: no complete answer within {deadline:.0f} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            detail = str(e) or type(e).__name__
            raise TransportError(f"{url}: {detail}") from None

    def close(self) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
            self._session = None
        self._loop.close()

    # -- requests ---------------------------------------------------------------------------

    def get(self, url: str, *, max_length: int) -> bytes:
        async def work() -> bytes:
            session = await self._session_()
            async with session.get(url, headers=self._headers, allow_redirects=False) as r:
                return await self._body(url, r, max_length)

        return self._run(url, self.net.request_deadline, work)

    async def _body(self, url: str, r: aiohttp.ClientResponse, max_length: int) -> bytes:
        """The body of a 200 answer, read with the caps and the speed meter."""
        if r.status != 200:
            await _drain(r)
            raise HttpStatusError(f"{url}: HTTP {r.status}", r.status)
        if r.content_length is not None and r.content_length > max_length:
            r.close()
            raise EndlessDataError(f"{url}: longer than the allowed {max_length} bytes")
        meter, body = _Meter(url, self.net), bytearray()
        async for chunk in r.content.iter_any():
            body += chunk
            if len(body) > max_length:
                r.close()
                raise EndlessDataError(
                    f"{url}: the server sent more than the allowed {max_length} bytes"
                )
            meter.add(len(chunk))
        return bytes(body)

    def revalidate(
        self, url: str, *, max_length: int, etag: str | None
    ) -> tuple[bytes | None, str | None]:
        headers = dict(self._headers) if etag is None else {**self._headers, "If-None-Match": etag}

        async def work() -> tuple[bytes | None, str | None]:
            session = await self._session_()
            async with session.get(url, headers=headers, allow_redirects=False) as r:
                if r.status == 304 and etag is not None:
                    await _drain(r)
                    return None, etag
                return await self._body(url, r, max_length), r.headers.get("ETag")

        return self._run(url, self.net.request_deadline, work)

    def post_json(self, url: str, body: bytes) -> int:
        async def work() -> int:
            session = await self._session_()
            headers = {**self._headers, "Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                await _drain(r)
                return r.status

        return self._run(url, self.net.request_deadline, work)

    def probe(self, url: str, *, timeout: float) -> int:
        async def work() -> int:
            session = await self._session_()
            async with session.get(url, headers=self._headers, allow_redirects=False) as r:
                await _drain(r)
                return r.status

        return self._run(url, min(timeout, self.net.request_deadline), work)

    def download(
        self,
        url: str,
        sink: Sink,
        *,
        start: int,
        length: int,
        etag: str | None,
        checkpoint: Checkpoint,
    ) -> int:
        got = self._run(
            url,
            self.net.download_deadline,
            lambda: self._download(url, sink, start, length, etag, checkpoint),
        )
        if got < length:
            raise TransportError(f"{url}: the connection closed after {got} of {length} bytes")
        return got

    async def _download(
        self,
        url: str,
        sink: Sink,
        start: int,
        length: int,
        etag: str | None,
        checkpoint: Checkpoint,
    ) -> int:
        headers = dict(self._headers)
        if start:
            headers["Range"] = f"bytes={start}-"
            if etag:
                headers["If-Range"] = etag
        session = await self._session_()
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            position = start
            if start and response.status == 416 and start == length:
                await _drain(response)
                return start
            if response.status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != start:
                    response.close()
                    raise TransportError(f"{url}: the server answered a different range")
            elif response.status == 200:
                if start:
                    sink.restart()  # the file changed or ranges are unsupported: from zero
                    position = 0
            else:
                await _drain(response)
                raise HttpStatusError(f"{url}: HTTP {response.status}", response.status)
            validator = response.headers.get("ETag")
            meter = _Meter(url, self.net)
            last = position
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    if position + len(chunk) > length:
                        response.close()
                        raise EndlessDataError(
                            f"{url}: the server sent more than the signed {length} bytes"
                        )
                    sink.write(chunk)
                    position += len(chunk)
                    meter.add(len(chunk))
                    if position - last >= self.checkpoint_bytes:
                        sink.sync()
                        checkpoint(position, validator)
                        last = position
            finally:
                # Whatever stopped the transfer, what arrived is a valid prefix: keep it.
                if position != last:
                    sink.sync()
                    checkpoint(position, validator)
            return position
