"""The ``ota serve`` application: factory, routes, error mapping, background re-signing.

Routes (DESIGN §7): ``/repo/metadata/<file>`` and ``/repo/targets/<path>`` serve the Image
repository as static files (nginx or a CDN can serve the same directory instead, see
README); ``/api/v1/vehicles/<id>/events`` takes vehicle reports (``events``); ``/healthz``
answers liveness probes. No request, however hostile, is answered with a 5xx: bad input is
a 4xx, and only a failing disk, repository or fleet database is a 503. The fleet database is
opened (and the embedded one upgraded, ``fleet.db``) before the first request and disposed of
at shutdown; an old JSON-lines report store is imported into it once. A background task
re-signs the online roles (snapshot, timestamp) before they expire, if their keys can be
loaded without a prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ota_client.metadata.manifest import MAX_MANIFEST_BYTES
from ota_server.config import ServerConfig
from ota_server.director.service import DirectorKeys, ImageCatalog
from ota_server.errors import (
    DatabaseError,
    InputError,
    KeyStoreError,
    OtaError,
    RepositoryStateError,
)
from ota_server.fleet.db import open_database, shown, url_for
from ota_server.fleet.events import EventStore
from ota_server.fleet.jsonl_import import import_jsonl
from ota_server.fleet.report_policy import ReportLimits
from ota_server.http import director as director_http
from ota_server.http import events, manifest, operators
from ota_server.http.appkeys import (
    CONFIG,
    DATABASE,
    DIRECTOR,
    ETAGS,
    EVENTS,
    IMAGE,
    IMAGE_CATALOG,
    PROXY,
    TLS,
)
from ota_server.http.identity import ProxyTrust
from ota_server.http.static import EtagCache, resolve, send_file
from ota_server.repository.home import RepositoryHome, reading
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
    except (RepositoryStateError, KeyStoreError) as e:  # e.g. keys that cannot be loaded now
        log.error("%s %s: %s", request.method, request.path, e)
        raise web.HTTPServiceUnavailable(text="the server cannot serve this now") from None
    except DatabaseError as e:
        log.error("%s %s: %s", request.method, request.path, e)
        raise web.HTTPServiceUnavailable(
            text="the fleet database is unavailable; retry later"
        ) from None
    except OtaError as e:
        log.error("%s %s: %s", request.method, request.path, e)
        raise web.HTTPInternalServerError(text="internal error") from None


async def metadata(request: web.Request) -> web.StreamResponse:
    root = request.app[CONFIG].layout.image.metadata
    path = resolve(root, request.match_info["name"], max_segments=1)
    if path is None or path.suffix != ".json":
        raise web.HTTPNotFound()
    return await send_file(request, path, request.app[ETAGS])


async def targets(request: web.Request) -> web.StreamResponse:
    path = resolve(request.app[CONFIG].layout.image.targets, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return await send_file(request, path, request.app[ETAGS])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def refresh_once(image: RepositoryHome) -> None:
    """Re-sign due online roles; a busy lock or missing keys are logged, never fatal."""
    try:
        report = refresh_repository(image, online_only=True, wait=0)
    except (OtaError, OSError) as e:  # a damaged repository or disk: try again next time
        log.warning("online re-signing skipped: %s", e)
        return
    if report.resigned:
        log.info("re-signed %s", ", ".join(f"{r} v{v}" for r, v in report.resigned.items()))


async def _refresher(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]

    async def loop() -> None:
        while True:
            await asyncio.to_thread(refresh_once, app[IMAGE])
            await asyncio.sleep(config.serve.refresh_interval)

    task = asyncio.create_task(loop()) if IMAGE in app else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _fleet(limits: ReportLimits) -> Callable[[web.Application], AsyncIterator[None]]:
    async def fleet(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        database = await open_database(url_for(config))
        try:
            log.info("fleet database: %s", shown(database.url))
            store = EventStore(database, limits)
            await import_jsonl(config.layout.state, store)
            app[DATABASE] = database
            app[EVENTS] = store
            yield
        finally:
            await database.dispose()

    return fleet


def create_app(
    config: ServerConfig,
    image: RepositoryHome | None = None,
    *,
    reports: ReportLimits | None = None,
    director: RepositoryHome | None = None,
    tls: bool = False,
) -> web.Application:
    limits = reports or ReportLimits()
    # No route takes a body larger than a report or a manifest (each route caps its own);
    # aiohttp refuses larger ones with 413.
    largest = max(limits.body_bytes, MAX_MANIFEST_BYTES)
    app = web.Application(middlewares=[errors_middleware], client_max_size=largest)
    app[CONFIG] = config
    app[ETAGS] = EtagCache()
    if image is not None:
        app[IMAGE] = image
    if director is not None:
        app[DIRECTOR] = DirectorKeys(director)
    app[IMAGE_CATALOG] = ImageCatalog(image or reading(config.layout.image, config.expiry))
    app[TLS] = tls
    proxy = ProxyTrust.of(config.serve.identity_header, config.serve.trusted_proxies)
    if proxy is not None:
        app[PROXY] = proxy
    app.router.add_get("/repo/metadata/{name}", metadata)
    app.router.add_get("/repo/targets/{path:.+}", targets)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/director/{vin}/metadata/{name}", director_http.metadata)
    app.router.add_post("/api/v1/vehicles/{vin}/manifest", manifest.post_manifest)
    operators.routes(app)
    app.router.add_post("/api/v1/vehicles/{vehicle_id}/events", events.post_event)
    app.router.add_get("/api/v1/vehicles/{vehicle_id}/events", events.get_events)
    app.cleanup_ctx.append(_fleet(limits))
    app.cleanup_ctx.append(_refresher)
    return app
