"""Vehicle progress reports: ``POST/GET /api/v1/vehicles/<vehicle_id>/events``.

Thin: read the body (at most ``ReportLimits.body_bytes``, whatever Content-Length says), let
``fleet.report_policy`` judge it and ``fleet.events`` store it in the fleet database. Answers:
202 stored, 200 a duplicate (this report id is already stored, by any server process), 400 not
a report of this vehicle, 413 too large, 507 the store is full (the vehicle keeps the report
and retries), 503 the database is unavailable (``DatabaseError``, mapped by the app's
middleware). No body, however hostile, gets another 5xx. GET lists the vehicle's stored
reports, oldest first, each with ``received`` (seconds since the epoch, server clock).

Deliberately minimal until vehicle authentication lands: it trusts the vehicle id in the path,
as DESIGN §6 will not.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import ClientPayloadError, web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.fleet.report_policy import ReportError, parse_report
from ota_server.http.appkeys import EVENTS


def _vehicle(request: web.Request) -> str:
    try:
        return check_identifier("vehicle id", request.match_info["vehicle_id"])
    except MetadataFormatError:
        raise web.HTTPBadRequest(
            text="the vehicle id must be 1-64 ASCII letters, digits and . _ -"
        ) from None


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
    except (ConnectionError, ClientPayloadError):
        raise web.HTTPBadRequest(text="the body ended before its declared length") from None
    return b"".join(chunks)


async def post_event(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    store = request.app[EVENTS]
    body = await read_body(request, store.limits.body_bytes)
    try:
        report = parse_report(body, vehicle, store.limits)
    except ReportError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    added = await store.add(report, received=datetime.now(UTC))
    if added.action == "duplicate":
        return web.json_response({"stored": False, "duplicate": True}, status=200)
    if added.action == "refused":
        raise web.HTTPInsufficientStorage(text=added.reason)
    return web.json_response({"stored": True}, status=202)


async def get_events(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    return web.json_response(list(await request.app[EVENTS].records(vehicle)))
