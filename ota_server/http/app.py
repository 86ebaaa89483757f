"""The ``ota serve`` application: factory, routes, error mapping, background re-signing.

Routes (DESIGN §7): ``/repo/metadata/<file>`` and ``/repo/targets/<path>`` serve the Image
repository as static files (nginx or a CDN can serve the same directory instead, see
README); ``/api/v1/vehicles/<id>/events`` takes vehicle reports (``events``); ``/healthz``
answers liveness probes. No request, however hostile, is answered with a 5xx: bad input is
a 4xx, and only a failing disk or repository is a 503. A background task re-signs the online roles
(snapshot, timestamp) before they expire, if their keys can be loaded without a prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ota_server.config import ServerConfig
from ota_server.errors import InputError, OtaError, RepositoryStateError
from ota_server.fleet.report_log import ReportStore
from ota_server.fleet.report_policy import ReportLimits
from ota_server.http import events
from ota_server.http.appkeys import CONFIG, ETAGS, KEYS, REPORTS
from ota_server.http.static import EtagCache, resolve, send_file
from ota_server.keys.store import KeyStore
from ota_server.repository.lifecycle import refresh_repository

log = logging.getLogger("ota.serve")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors to HTTP; everything else is a 500 with the detail only in the log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except InputError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    except RepositoryStateError as e:
        raise web.HTTPServiceUnavailable(text=str(e)) from None
    except OtaError as e:
        log.error("%s %s: %s", request.method, request.path, e)
        raise web.HTTPInternalServerError(text="internal error") from None


async def metadata(request: web.Request) -> web.StreamResponse:
    root = request.app[CONFIG].layout.metadata
    path = resolve(root, request.match_info["name"], max_segments=1)
    if path is None or path.suffix != ".json":
        raise web.HTTPNotFound()
    return await send_file(request, path, request.app[ETAGS])


async def targets(request: web.Request) -> web.StreamResponse:
    path = resolve(request.app[CONFIG].layout.targets, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return await send_file(request, path, request.app[ETAGS])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def refresh_once(config: ServerConfig, keys: KeyStore) -> None:
    """Re-sign due online roles; a busy lock or missing keys are logged, never fatal."""
    try:
        report = refresh_repository(config.layout, keys, config.expiry, online_only=True, wait=0)
    except (OtaError, OSError) as e:  # a damaged repository or disk: try again next time
        log.warning("online re-signing skipped: %s", e)
        return
    if report.resigned:
        log.info("re-signed %s", ", ".join(f"{r} v{v}" for r, v in report.resigned.items()))


async def _refresher(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]

    async def loop() -> None:
        while True:
            await asyncio.to_thread(refresh_once, config, app[KEYS])
            await asyncio.sleep(config.serve.refresh_interval)

    task = asyncio.create_task(loop()) if KEYS in app else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _report_usage(app: web.Application) -> AsyncIterator[None]:
    store = app[REPORTS]
    store.usage = await asyncio.to_thread(store.count)
    yield


def create_app(
    config: ServerConfig, keys: KeyStore | None = None, *, reports: ReportLimits | None = None
) -> web.Application:
    limits = reports or ReportLimits()
    # No route takes a body larger than a report; aiohttp refuses larger ones with 413.
    app = web.Application(middlewares=[errors_middleware], client_max_size=limits.body_bytes)
    app[CONFIG] = config
    app[ETAGS] = EtagCache()
    app[REPORTS] = ReportStore(config.layout.state / "events", limits)
    if keys is not None:
        app[KEYS] = keys
    app.router.add_get("/repo/metadata/{name}", metadata)
    app.router.add_get("/repo/targets/{path:.+}", targets)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/vehicles/{vehicle_id}/events", events.post_event)
    app.router.add_get("/api/v1/vehicles/{vehicle_id}/events", events.get_events)
    app.cleanup_ctx.append(_report_usage)
    app.cleanup_ctx.append(_refresher)
    return app
