"""python-tuf's fetcher over the vehicle's one transport.

python-tuf asks for metadata with ``download_bytes(url, max_length)``; the cap goes to the
transport, so an oversized answer is refused as it arrives (endless data: a security failure,
not a retry), and python-tuf sees the HTTP status it needs (it ends every root lookup at 404).
"""

from __future__ import annotations

from collections.abc import Iterator

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from ota_client.errors import HttpStatusError, TransportError
from ota_client.fetch.transport import Transport

DEFAULT_CAP = 16 << 20


class TransportFetcher(FetcherInterface):
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def download_bytes(self, url: str, max_length: int) -> bytes:
        try:
            return self.transport.get(url, max_length=max_length)
        except HttpStatusError as e:
            raise exceptions.DownloadHTTPError(str(e), e.status) from None
        except TransportError as e:
            raise exceptions.DownloadError(str(e)) from None

    def _fetch(self, url: str) -> Iterator[bytes]:
        yield self.download_bytes(url, DEFAULT_CAP)
