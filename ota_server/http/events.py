"""Vehicle progress reports: ``POST/GET /api/v1/vehicles/<vehicle_id>/events``.

Thin: read the body (at most ``ReportLimits.body_bytes``, whatever Content-Length says), let
``fleet.report_policy`` judge it and ``fleet.events`` store it in the fleet database. Answers:
202 stored, 200 a duplicate (this report id is already stored, by any server process), 400 not
a report of this vehicle, 413 too large, 507 the store is full (the vehicle keeps the report
and retries), 503 the database is unavailable (``DatabaseError``, mapped by the app's
middleware). No body, however hostile, gets another 5xx. GET lists the vehicle's stored
reports, oldest first, each with ``received`` (seconds since the epoch, server clock).

Only the vehicle itself may post its reports (its certificate, as for its Director metadata:
403 otherwise); GET is for the vehicle itself or an operator's token (read-only role or more).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.fleet.report_policy import ReportError, parse_report
from ota_server.http.appkeys import EVENTS
from ota_server.http.body import read_body
from ota_server.http.director import check_vehicle, is_vehicle
from ota_server.http.operators import operator


def _vehicle(request: web.Request) -> str:
    try:
        return check_identifier("vehicle id", request.match_info["vehicle_id"])
    except MetadataFormatError:
        raise web.HTTPBadRequest(
            text="the vehicle id must be 1-64 ASCII letters, digits and . _ -"
        ) from None


async def post_event(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    check_vehicle(request, vehicle)
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
    """The vehicle's own reports: for the vehicle itself, or an operator's token."""
    vehicle = _vehicle(request)
    if not is_vehicle(request, vehicle):
        await operator(request, "read-only")
    return web.json_response(list(await request.app[EVENTS].records(vehicle)))
