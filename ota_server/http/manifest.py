"""``POST /api/v1/vehicles/<VIN>/manifest``: a vehicle's signed version manifest.

Thin: the vehicle's own certificate (as for its Director metadata), a bounded body, then
``fleet.manifests`` verifies every signature against the inventory and stores what each ECU
runs. 200 ``{"stored": N}`` accepted; 400 refused (bad signature, unknown ECU, replayed
counter), with the reason; 403 another vehicle's certificate or a revoked vehicle; 413 too
large.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from ota_client.metadata.manifest import MAX_MANIFEST_BYTES
from ota_server.errors import RevokedError
from ota_server.fleet.manifests import accept_manifest
from ota_server.http.appkeys import DATABASE, IMAGE_CATALOG
from ota_server.http.body import read_body
from ota_server.http.director import vin_of


async def post_manifest(request: web.Request) -> web.Response:
    vin = vin_of(request)
    body = await read_body(request, MAX_MANIFEST_BYTES)
    catalog = await asyncio.to_thread(request.app[IMAGE_CATALOG].current)
    database = request.app[DATABASE]
    try:
        async with database.reaching(), database.sessions() as session, session.begin():
            stored = await accept_manifest(session, vin, body, catalog, datetime.now(UTC))
    except RevokedError as e:
        raise web.HTTPForbidden(text=str(e)) from None
    return web.json_response({"stored": stored}, status=200)
