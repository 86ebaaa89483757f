"""Who is calling: a vehicle's identity from its TLS client certificate.

``ota serve`` asks every TLS client for a certificate and verifies it against the home's CA
(``fleet.ca``); a vehicle's certificate names its VIN as subject CN. The TLS layer has
already checked the chain and validity when ``getpeercert`` returns one; this only reads it.
Behind a TLS-terminating proxy that verified the certificate itself, the CN comes from the
header ``[serve] identity_header`` — believed only on connections from ``trusted_proxies``,
and never in place of a certificate on a direct TLS connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from aiohttp import web


@dataclass(frozen=True)
class ProxyTrust:
    header: str
    networks: tuple[IPv4Network | IPv6Network, ...]

    @classmethod
    def of(cls, header: str | None, proxies: tuple[str, ...]) -> ProxyTrust | None:
        if header is None:
            return None
        return cls(header, tuple(ip_network(p, strict=False) for p in proxies))

    def identity(self, request: web.Request) -> str | None:
        try:
            peer = ip_address(request.remote or "")
        except ValueError:
            return None
        if not any(peer in network for network in self.networks):
            return None
        values = request.headers.getall(self.header, [])
        return values[0] if len(values) == 1 else None  # two headers: someone added one


def vehicle_identity(request: web.Request, proxy: ProxyTrust | None = None) -> str | None:
    """The CN of the verified client certificate (or, from a trusted proxy, its header)."""
    found = _certificate_cn(request)
    if found is None and proxy is not None:
        return proxy.identity(request)
    return found


def _certificate_cn(request: web.Request) -> str | None:
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
