"""The vehicle's one transport against hostile and broken servers (real sockets on loopback).

Endless data, trickling and stalled servers, servers that ignore ranges, error bodies that
arrive late on a kept-alive connection, metadata that trickles at 10 B/s, and mutual TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from ota_client.config import NetworkConfig
from ota_client.errors import ConfigError, HttpStatusError, TransportError
from ota_client.fetch.transport import EndlessDataError, HttpTransport, SlowRetrievalError
from ota_client.slots.raw import ReadBackWriter
from tests.helpers import make_tls

DATA = os.urandom(3 << 20)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Loop:
    """An event loop in a thread, for servers the test controls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Awaitable[object]) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextmanager
def server(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real aiohttp server on loopback with one misbehaving handler at /f."""
    loop = Loop()
    app = web.Application()
    app.router.add_get("/f", handler)
    runner = web.AppRunner(app, shutdown_timeout=1)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        return runner.addresses[0][1]  # type: ignore[no-any-return]

    port = loop.run(start())
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/f"
    finally:
        loop.run(runner.cleanup())
        loop.stop()


def net(**kw: object) -> NetworkConfig:
    return NetworkConfig(**{"stall_timeout": 2.0, "allow_insecure_http": True, **kw})  # type: ignore[arg-type]


def fetch(url: str, path: Path, *, start: int = 0, etag: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    transport = HttpTransport(net(**kw), checkpoint_bytes=1 << 20)
    sink = ReadBackWriter(path, start)
    checkpoints: list[int] = []
    try:
        got = transport.download(
            url,
            sink,
            start=start,
            length=len(DATA),
            etag=etag,
            checkpoint=lambda n, _e: checkpoints.append(n),
        )
        return got, sink.finish(), checkpoints
    finally:
        sink.close()
        transport.close()


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    while True:
        await response.write(b"x" * 65536)


async def trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "1000"})
    await response.prepare(request)
    for _ in range(100):
        await response.write(b"0123456789")  # 10 bytes a second
        await asyncio.sleep(1)
    return response


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
    await response.prepare(request)
    await response.write(DATA[:1000])
    await asyncio.sleep(5)
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


def test_endless_metadata_is_a_security_failure_not_a_retry(tmp_path: Path) -> None:
    with server(endless) as url:
        transport = HttpTransport(net())
        with pytest.raises(EndlessDataError, match="allowed 4096 bytes"):
            transport.get(url, max_length=4096)
        transport.close()


def test_trickling_download_is_slow_retrieval(tmp_path: Path) -> None:
    with server(trickle) as url, pytest.raises(SlowRetrievalError, match="below the minimum"):
        fetch(url, tmp_path / "out", min_speed=10_000, speed_window=1.5)


def test_metadata_trickling_at_10_bytes_a_second_is_abandoned_at_the_deadline() -> None:
    """No minimum speed at all: the total deadline alone ends the request."""
    with server(trickle) as url:
        transport = HttpTransport(net(min_speed=0, request_deadline=3))
        started = time.monotonic()
        with pytest.raises(SlowRetrievalError, match="within 3 s"):
            transport.get(url, max_length=4096)
        assert time.monotonic() - started < 60  # not the 100 s the trickle would take
        transport.close()


def test_stalled_server_times_out_and_keeps_what_arrived(tmp_path: Path) -> None:
    with server(stall) as url, pytest.raises(TransportError):
        fetch(url, tmp_path / "out", stall_timeout=1.0)
    assert (tmp_path / "out").read_bytes() == DATA[:1000]


def test_resume_from_a_server_that_ignores_ranges_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"garbage that is not a prefix of the file")
    with server(no_ranges) as url:
        got, digest, _ = fetch(url, out, start=20, etag='"same"')
    assert got == len(DATA) and digest == hashlib.sha256(DATA).hexdigest()
    assert out.read_bytes()[: len(DATA)] == DATA


def test_resume_continues_where_it_stopped_with_durable_checkpoints(tmp_path: Path) -> None:
    source = tmp_path / "served"
    source.write_bytes(DATA)
    out = tmp_path / "out"
    out.write_bytes(DATA[: 1 << 20])
    with server(honest(source)) as url:
        got, digest, checkpoints = fetch(url, out, start=1 << 20)
    assert got == len(DATA) and digest == hashlib.sha256(DATA).hexdigest()
    assert len(checkpoints) == 2 and checkpoints[0] >= 2 << 20 and checkpoints[1] == len(DATA)


# -- a raw HTTP/1.1 server: error bodies that arrive late on a kept-alive connection -----------


@contextmanager
def raw_server(answer: Callable[[int], list[tuple[float, bytes]]]) -> Iterator[tuple[str, list]]:  # type: ignore[type-arg]
    """Answers the n-th request (of all) with timed pieces; counts connections."""
    loop = Loop()
    connections: list[int] = []
    requests: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                requests.append(1)
                for delay, piece in answer(len(requests) - 1):
                    await asyncio.sleep(delay)
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def start() -> asyncio.AbstractServer:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    srv = loop.run(start())
    port = srv.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:

        async def close() -> None:  # in the loop's thread: Server.close is not thread-safe
            srv.close()

        loop.run(close())
        loop.stop()


def test_a_404_whose_body_arrives_late_then_another_request_on_the_connection() -> None:
    """python-tuf ends every root lookup with a 404: the next request must not read its body."""

    def answer(n: int) -> list[tuple[float, bytes]]:
        if n == 0:
            return [
                (0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n"),
                (1.0, b"404: Not Found"),
            ]
        body = b'{"signed": {}}'
        return [(0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))]

    with raw_server(answer) as (base, connections):
        transport = HttpTransport(net())
        with pytest.raises(HttpStatusError) as error:
            transport.get(f"{base}/metadata/2.root.json", max_length=1 << 20)
        assert error.value.status == 404
        assert transport.get(f"{base}/metadata/timestamp.json", max_length=1 << 20) == (
            b'{"signed": {}}'
        )
        transport.close()
    assert len(connections) == 1  # the 404 body was read, the connection kept


def test_a_long_error_body_closes_the_connection_instead() -> None:
    def answer(n: int) -> list[tuple[float, bytes]]:
        if n == 0:
            big = b"x" * (1 << 20)
            return [(0, b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))]
        return [(0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]

    with raw_server(answer) as (base, connections):
        transport = HttpTransport(net())
        with pytest.raises(HttpStatusError):
            transport.get(f"{base}/a", max_length=1 << 20)
        assert transport.get(f"{base}/b", max_length=10) == b"ok"
        transport.close()
    assert len(connections) == 2


# -- TLS ----------------------------------------------------------------------------------------


def _server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=b"hello")


def test_mutual_tls_with_one_ssl_context(tmp_path: Path) -> None:
    server_tls, client_tls = make_tls(tmp_path / "s"), make_tls(tmp_path / "c")
    context = _server_context(server_tls.cert, server_tls.key, client_ca=client_tls.cert)
    with server(hello, context) as url:
        good = HttpTransport(
            net(ca_file=server_tls.cert, client_cert=client_tls.cert, client_key=client_tls.key)
        )
        assert good.get(url, max_length=100) == b"hello"
        good.close()
        anonymous = HttpTransport(net(ca_file=server_tls.cert))
        with pytest.raises(TransportError):
            anonymous.get(url, max_length=100)
        anonymous.close()
        stranger = HttpTransport(net())  # the system's CAs do not know this server
        with pytest.raises(TransportError):
            stranger.get(url, max_length=100)
        stranger.close()


@pytest.mark.parametrize("bad", ["/dev/zero", "missing.pem", "garbage"])
def test_unreadable_tls_files_are_a_config_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "garbage").write_text("not a certificate")
    path = Path(bad) if bad.startswith("/") else tmp_path / bad
    with pytest.raises(ConfigError):
        HttpTransport(net(ca_file=path))
