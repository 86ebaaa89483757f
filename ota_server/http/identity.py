"""Who is calling: a vehicle's identity from its TLS client certificate.

``ota serve`` asks every TLS client for a certificate and verifies it against the home's CA
(``fleet.ca``); a vehicle's certificate names its VIN as subject CN. The TLS layer has
already checked the chain and validity when ``getpeercert`` returns one; this only reads it.
"""

from __future__ import annotations

import ssl

from aiohttp import web


def vehicle_identity(request: web.Request) -> str | None:
    """The CN of the verified client certificate, or None without one."""
    transport = request.transport
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName" and isinstance(attribute[1], str):
                return attribute[1]
    return None
