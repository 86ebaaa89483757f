"""Vehicle progress reports: ``POST/GET /api/v1/vehicles/<vehicle_id>/events``.

Reports (commit, rollback, update_failed) are appended to one JSON-lines file per vehicle
under ``state/events/`` with the time they arrived; a report id seen before is acknowledged
and not stored twice (vehicles resend after a power cut). Bodies are capped and validated.

Deliberately minimal until the fleet database and vehicle authentication land: it trusts
the vehicle id in the path, as DESIGN §6 will not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.http.appkeys import CONFIG

MAX_BODY = 16 << 10
EVENTS = {"commit", "rollback", "update_failed"}
FIELDS = {
    "id",
    "vehicle_id",
    "ecu",
    "event",
    "time",
    "target",
    "version",
    "release_counter",
    "installed",
    "error",
}


def _vehicle(request: web.Request) -> str:
    try:
        return check_identifier("vehicle id", request.match_info["vehicle_id"])
    except MetadataFormatError as e:
        raise web.HTTPBadRequest(text=str(e)) from None


def _file(request: web.Request, vehicle: str) -> Path:
    return request.app[CONFIG].layout.state / "events" / f"{vehicle}.jsonl"


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


async def post_event(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    if request.content_length is None or request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY, actual_size=request.content_length or 0
        )
    try:
        event = json.loads(await request.read())
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        raise web.HTTPBadRequest(text=f"event must be one of {', '.join(sorted(EVENTS))}")
    if unknown := set(event) - FIELDS:
        raise web.HTTPBadRequest(text=f"unknown field {sorted(unknown)[0]}")
    if event.get("vehicle_id", vehicle) != vehicle or not isinstance(event.get("id"), str):
        raise web.HTTPBadRequest(text="a report needs an id and the vehicle's own id")
    path = _file(request, vehicle)
    path.parent.mkdir(parents=True, exist_ok=True)
    if any(e.get("id") == event["id"] for e in _read(path)):
        return web.json_response({"stored": False, "duplicate": True}, status=200)
    with open(path, "a") as f:
        f.write(json.dumps({**event, "received": time.time()}) + "\n")
    return web.json_response({"stored": True}, status=202)


async def get_events(request: web.Request) -> web.Response:
    vehicle = _vehicle(request)
    return web.json_response(_read(_file(request, vehicle)))
