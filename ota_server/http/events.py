"""Vehicle progress reports: ``POST/GET /api/v1/vehicles/<vehicle_id>/events``.

Thin: read the body (at most ``ReportLimits.body_bytes``, whatever Content-Length says), let
``fleet.report_policy`` judge and decide, and run the file work of ``fleet.report_log`` in a
worker thread. Answers: 202 stored, 200 a duplicate (already stored), 400 not a report of this
vehicle, 413 too large, 507 the store is full (the vehicle keeps the report and retries), 503
the disk failed. No body, however hostile, gets a 5xx.

Deliberately minimal until the fleet database and vehicle authentication land: it trusts
the vehicle id in the path, as DESIGN §6 will not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from aiohttp import ClientPayloadError, web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.fleet.report_policy import ReportError, decide, parse_report, record_line, records
from ota_server.http.appkeys import REPORTS

log = logging.getLogger("ota.serve")


def _vehicle(request: web.Request) -> str:
    try:
        return check_identifier("vehicle id", request.match_info["vehicle_id"])
    except MetadataFormatError:
        raise web.HTTPBadRequest(
            text="the vehicle id must be 1-64 ASCII letters, digits and . _ -"
        ) from None


async def _body(request: web.Request, limit: int) -> bytes:
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


def _storage_failed(e: OSError) -> web.HTTPServiceUnavailable:
    log.error("cannot use the report store: %s", e)
    return web.HTTPServiceUnavailable(text="the report store is unavailable; retry later")


async def post_event(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    store = request.app[REPORTS]
    body = await _body(request, store.limits.body_bytes)
    try:
        report = parse_report(body, vehicle, store.limits)
    except ReportError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    line = record_line(report, time.time())
    async with store.lock(vehicle):
        try:
            contents = await asyncio.to_thread(store.read, vehicle)
            decision = decide(
                report, contents, line_bytes=len(line), usage=store.usage, limits=store.limits
            )
            if decision.action == "duplicate":
                return web.json_response({"stored": False, "duplicate": True}, status=200)
            if decision.action == "refuse":
                raise web.HTTPInsufficientStorage(text=decision.reason)
            grown = await asyncio.to_thread(
                store.append, vehicle, contents, line, decision.drop, decision.rewrite
            )
        except OSError as e:
            raise _storage_failed(e) from None
        store.usage = replace(
            store.usage,
            vehicles=store.usage.vehicles + (not contents.exists),
            total_bytes=max(0, store.usage.total_bytes + grown),
        )
    return web.json_response({"stored": True}, status=202)


async def get_events(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    store = request.app[REPORTS]
    try:
        contents = await asyncio.to_thread(store.read, vehicle)
    except OSError as e:
        raise _storage_failed(e) from None
    return web.json_response(records(contents))
