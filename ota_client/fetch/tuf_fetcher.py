"""The fetcher python-tuf's Updater uses on a vehicle.

Differs from python-tuf's default in what a vehicle needs: an explicit CA bundle for the
server (not the operating system's store), a connect/read timeout, no proxy environment,
and a User-Agent naming the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from ota_client import __version__


class HttpFetcher(FetcherInterface):
    def __init__(
        self, *, ca_file: Path | None = None, timeout: float = 30.0, chunk_size: int = 1 << 16
    ) -> None:
        kwargs: dict[str, object] = {"headers": {"User-Agent": f"ota-client/{__version__}"}}
        if ca_file is not None:
            kwargs["ca_certs"] = str(ca_file)
            kwargs["cert_reqs"] = "CERT_REQUIRED"
        self._pool = urllib3.PoolManager(retries=False, **kwargs)  # type: ignore[arg-type]
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._chunk_size = chunk_size

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._pool.request("GET", url, preload_content=False, timeout=self._timeout)
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError(f"{url}: timed out") from e
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(f"{url}: {e}") from e
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        return self._chunks(response)

    def _chunks(self, response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from response.stream(self._chunk_size)
        except urllib3.exceptions.TimeoutError as e:
            raise exceptions.SlowRetrievalError("read timed out") from e
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(str(e)) from e
        finally:
            response.release_conn()
