"""Downloads against hostile and broken servers: endless data, trickling, stalls, ignored ranges."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from ota_client.fetch.download import (
    DownloadError,
    EndlessDataError,
    SlowRetrievalError,
    Transport,
    download,
)
from ota_client.slots import ReadBackWriter

DATA = os.urandom(3 << 20)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextmanager
def server(handler: Handler) -> Iterator[str]:
    """A real aiohttp server on loopback, in a thread, with one misbehaving handler."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/f", handler)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}/f"
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(30)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)


def fetch(
    url: str,
    path: Path,
    *,
    start: int = 0,
    etag: str | None = None,
    transport: Transport | None = None,
) -> tuple[int, str]:
    sink = ReadBackWriter(path, start)
    checkpoints: list[int] = []
    try:
        got = download(
            url,
            sink,
            start=start,
            length=len(DATA),
            etag=etag,
            transport=transport or Transport(timeout=2),
            checkpoint=lambda n, _e: checkpoints.append(n),
        )
        return got, sink.finish()
    finally:
        sink.close()


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    while True:
        await response.write(b"x" * 65536)


async def trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(0, len(DATA), 64):
        await response.write(DATA[i : i + 64])
        await asyncio.sleep(0.05)
    return response


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
    await response.prepare(request)
    await response.write(DATA[:1000])
    await asyncio.sleep(3)
    return response


async def no_ranges(request: web.Request) -> web.Response:
    return web.Response(body=DATA, headers={"ETag": '"same"'})


def honest(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return handler


def test_endless_data_is_cut_at_the_signed_length(tmp_path: Path) -> None:
    with server(endless) as url, pytest.raises(EndlessDataError, match="more than the signed"):
        fetch(url, tmp_path / "out")
    assert (tmp_path / "out").stat().st_size <= len(DATA)


def test_trickling_server_is_slow_retrieval(tmp_path: Path) -> None:
    slow = Transport(timeout=5, min_speed=10_000, speed_window=0.5)
    with server(trickle) as url, pytest.raises(SlowRetrievalError, match="below the minimum"):
        fetch(url, tmp_path / "out", transport=slow)


def test_stalled_server_times_out_and_keeps_what_arrived(tmp_path: Path) -> None:
    with server(stall) as url, pytest.raises(DownloadError):
        fetch(url, tmp_path / "out", transport=Transport(timeout=1))
    assert (tmp_path / "out").read_bytes() == DATA[:1000]


def test_resume_from_a_server_that_ignores_ranges_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"garbage that is not a prefix of the file")
    with server(no_ranges) as url:
        got, digest = fetch(url, out, start=20, etag='"same"')
    assert got == len(DATA) and digest == hashlib.sha256(DATA).hexdigest()
    assert out.read_bytes()[: len(DATA)] == DATA


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    source = tmp_path / "served"
    source.write_bytes(DATA)
    out = tmp_path / "out"
    out.write_bytes(DATA[: 1 << 20])
    with server(honest(source)) as url:
        got, digest = fetch(url, out, start=1 << 20)
    assert got == len(DATA) and digest == hashlib.sha256(DATA).hexdigest()
