"""``GET /director/<VIN>/metadata/<file>``: one vehicle's Director metadata.

Only that vehicle may read it: over TLS, the client certificate the server's CA issued it
(subject CN = VIN, ``http.identity``); a revoked or unknown vehicle gets nothing. The root
chain (``N.root.json``) is the Director's files, the same for every vehicle; ``timestamp.json``,
``N.snapshot.json`` and ``N.targets.json`` are the vehicle's own, current versions only,
from ``director.service``. Every reply carries a content ETag; a poll that sends it back in
``If-None-Match`` and finds nothing new gets a bodiless 304 (well under 1 KiB on the wire).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime

from aiohttp import web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.director.service import vehicle_metadata
from ota_server.http.appkeys import (
    CONFIG,
    DATABASE,
    DIRECTOR,
    ETAGS,
    IMAGE_CATALOG,
    PROXY,
    TLS,
)
from ota_server.http.conditional import plan_reply
from ota_server.http.identity import vehicle_identity
from ota_server.http.static import resolve, send_file

_ROLE_FILE = re.compile(r"([1-9][0-9]{0,18})\.(snapshot|targets)\.json")


def is_vehicle(request: web.Request, vin: str) -> bool:
    """Whether the caller is vehicle ``vin``: its certificate (or its trusted proxy's header);
    on a server started with --insecure-http and no proxy, every caller is."""
    proxy = request.app.get(PROXY)
    if not request.app[TLS] and proxy is None:
        return True
    return vehicle_identity(request, proxy) == vin


def check_vehicle(request: web.Request, vin: str) -> None:
    if not is_vehicle(request, vin):
        raise web.HTTPForbidden(text="this certificate is not the vehicle's")


def vin_of(request: web.Request) -> str:
    """The path's VIN, and only for that vehicle's own certificate."""
    try:
        vin = check_identifier("vehicle id", request.match_info["vin"])
    except MetadataFormatError:
        raise web.HTTPNotFound() from None
    check_vehicle(request, vin)
    return vin


async def metadata(request: web.Request) -> web.StreamResponse:
    vin = vin_of(request)
    name = request.match_info["name"]
    if name.endswith(".root.json"):
        root_dir = request.app[CONFIG].layout.director.metadata
        path = resolve(root_dir, name, max_segments=1)
        if path is None:
            raise web.HTTPNotFound()
        return await send_file(request, path, request.app[ETAGS])
    match = _ROLE_FILE.fullmatch(name)
    if name != "timestamp.json" and match is None:
        raise web.HTTPNotFound()
    if DIRECTOR not in request.app:
        raise web.HTTPServiceUnavailable(text="the Director's keys are not loaded on this server")
    catalog = request.app[IMAGE_CATALOG]
    await asyncio.to_thread(catalog.current)  # file reads, only when the repository changed
    database = request.app[DATABASE]
    async with database.reaching(), database.sessions() as session:
        poll = await vehicle_metadata(
            session, request.app[DIRECTOR], catalog, vin, datetime.now(UTC)
        )
    if poll is None or poll.vehicle.revoked:
        raise web.HTTPNotFound() if poll is None else web.HTTPForbidden(text="revoked")
    signed = poll.signed
    if match is None:
        data = signed.timestamp
    elif int(match.group(1)) != signed.version:
        raise web.HTTPNotFound()  # only the current versions are kept
    else:
        data = signed.role(match.group(2))
    reply = plan_reply(
        request.headers,
        size=len(data),
        etag=hashlib.sha256(data).hexdigest()[:32],
        mtime=int(signed.signed_at.timestamp()),
    )
    headers = {k: v for k, v in reply.headers.items() if k in ("ETag", "Last-Modified")}
    headers["Cache-Control"] = "no-store"  # per vehicle: never in a shared cache
    if reply.status == 304:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type="application/json", headers=headers)
