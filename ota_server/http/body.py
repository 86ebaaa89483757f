"""Reading a request body with a cap, whatever Content-Length says (shared by the handlers)."""

from __future__ import annotations

from aiohttp import ClientPayloadError, web


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
