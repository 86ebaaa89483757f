"""The operator API: vehicles and their assignments, behind API tokens with roles.

``Authorization: Bearer <token>`` (``ota token create``). 401 without a valid token, 403 when
its role does not allow the action (``fleet.tokens.ROLES``). Handlers are thin: the same
functions as the command line (``fleet.inventory``, ``director.service``).

    GET    /api/v1/vehicles[?after=VIN&limit=N]      read-only
    GET    /api/v1/vehicles/<VIN>                    read-only
    PUT    /api/v1/vehicles/<VIN>/assignment         fleet-operator   {"release": "B@V"}
    DELETE /api/v1/vehicles/<VIN>/assignment         fleet-operator
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.strict import FormatError, parse_json
from ota_server.director import service
from ota_server.fleet import inventory, tokens
from ota_server.http.appkeys import DATABASE, IMAGE_CATALOG
from ota_server.http.body import read_body

MAX_BODY = 4096


async def operator(request: web.Request, needed: str) -> tokens.Operator:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    database = request.app[DATABASE]
    found = None
    if scheme.lower() == "bearer" and presented:
        async with database.reaching(), database.sessions() as session:
            found = await tokens.authenticate(session, presented.strip())
    if found is None:
        raise web.HTTPUnauthorized(
            text="an operator token is needed (ota token create)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not tokens.allows(found.role, needed):
        raise web.HTTPForbidden(text=f"the token's role ({found.role}) does not allow this")
    return found


def _vin(request: web.Request) -> str:
    try:
        return check_identifier("vehicle id", request.match_info["vin"])
    except MetadataFormatError:
        raise web.HTTPNotFound() from None


async def list_vehicles(request: web.Request) -> web.Response:
    await operator(request, "read-only")
    after = request.query.get("after", "")
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number") from None
    if not 1 <= limit <= 10_000 or len(after) > 64:
        raise web.HTTPBadRequest(text="limit must be 1-10000, after at most 64 characters")
    database = request.app[DATABASE]
    async with database.reaching(), database.sessions() as session:
        rows = await inventory.vehicles(session, after=after, limit=limit)
    return web.json_response(
        [
            {
                "vin": vin,
                "created": c.isoformat(),
                "revoked": r.isoformat() if r else None,
                "ecus": n,
            }
            for vin, c, r, n in rows
        ]
    )


async def show_vehicle(request: web.Request) -> web.Response:
    await operator(request, "read-only")
    vin = _vin(request)
    database = request.app[DATABASE]
    async with database.reaching(), database.sessions() as session:
        view = await inventory.vehicle(session, vin)
    if view is None:
        raise web.HTTPNotFound(text=f"no vehicle {vin}")
    return web.json_response(view.to_json())


async def put_assignment(request: web.Request) -> web.Response:
    who = await operator(request, "fleet-operator")
    vin = _vin(request)
    try:
        doc = parse_json(await read_body(request, MAX_BODY), "the body", limit=MAX_BODY)
    except FormatError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    if not isinstance(doc, dict) or set(doc) != {"release"} or not isinstance(doc["release"], str):
        raise web.HTTPBadRequest(text='send {"release": "BUNDLE@VERSION"}')
    catalog = request.app[IMAGE_CATALOG]
    await asyncio.to_thread(catalog.current)
    database = request.app[DATABASE]
    async with database.reaching(), database.sessions() as session, session.begin():
        planned = await service.assign(
            session, catalog, vin, doc["release"], actor=f"token:{who.name}", now=datetime.now(UTC)
        )
    return web.json_response(
        {
            "vin": vin,
            "release": planned.release,
            "ecus": [
                {"serial": e.serial, "target": e.target, "payload": e.payload.kind}
                for e in planned.ecus
            ],
        }
    )


async def delete_assignment(request: web.Request) -> web.Response:
    await operator(request, "fleet-operator")
    vin = _vin(request)
    database = request.app[DATABASE]
    async with database.reaching(), database.sessions() as session, session.begin():
        changed = await service.unassign(session, vin)
    return web.json_response({"vin": vin, "unassigned": changed})


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/vehicles", list_vehicles)
    app.router.add_get("/api/v1/vehicles/{vin}", show_vehicle)
    app.router.add_put("/api/v1/vehicles/{vin}/assignment", put_assignment)
    app.router.add_delete("/api/v1/vehicles/{vin}/assignment", delete_assignment)
