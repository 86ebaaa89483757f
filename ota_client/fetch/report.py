"""Deliver queued reports to the server (``POST /api/v1/vehicles/<id>/events``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ota_client.config import ClientConfig
from ota_client.fetch.download import Transport

log = logging.getLogger("ota.client")


async def _post_all(url: str, items: list[dict[str, Any]], transport: Transport) -> int:
    timeout = aiohttp.ClientTimeout(total=transport.timeout)
    connector = aiohttp.TCPConnector(ssl=transport.ssl_context())
    sent = 0
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for item in items:
            async with session.post(url, json=item) as response:
                if response.status >= 500:
                    break  # the server is unwell: keep the rest for later
                if response.status >= 400:
                    log.warning("report %s refused: HTTP %s", item.get("id"), response.status)
            sent += 1
    return sent


def deliver(config: ClientConfig, items: list[dict[str, Any]], transport: Transport) -> int:
    """Send reports oldest first; returns how many were handled (the rest stay queued)."""
    url = f"{config.server.rstrip('/')}/api/v1/vehicles/{config.vehicle_id}/events"
    try:
        return asyncio.run(_post_all(url, items, transport))
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        log.info("reports stay queued: %s", e)
        return 0
